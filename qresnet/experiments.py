"""Sweeps: residual configurations x {trainable, frozen} x backends, each a training run, resumable.

    qresnet compare                       # the quick preset: embedded digits, both backends
    qresnet compare --preset paper --backends aer --jobs 2
    qresnet compare --preset paper-quantum --backends aer --jobs 2   # quantum head, linear head beside it

Every run is a ``qresnet train`` run directory under ``OUT/runs/<backend>/<config>-<trainable|frozen>[-quantum-head]``;
a sweep started again with the same ``--out`` reuses finished runs and resumes unfinished ones.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from qresnet.errors import QresnetError
from qresnet.nn import ResidualSpec
from qresnet.train import HEADS, TrainConfig, train

PRESETS: dict[str, dict[str, Any]] = {
    # the README's main job: minutes on the embedded 8x8 digits, both backends
    "quick": {"dataset": "digits", "classes": None, "per_class": 30, "layers": 2, "configs": "paper",
              "backends": ("aer", "aer:fake_torino"), "epochs": 6, "batch_size": 16, "lr": 0.03},
    # the paper's classical-head study: MNIST, 10 classes x 200 (1600 train / 400 test), 30 epochs, Adam 0.01
    "paper": {"dataset": "mnist", "classes": None, "per_class": 200, "layers": 2, "configs": "paper",
              "backends": ("aer", "aer:fake_torino"), "epochs": 30, "batch_size": 16, "lr": 0.01},
    # the paper's quantum-head study, classical head beside it: MNIST 0-3 x 200 (640 train / 160 test)
    "paper-quantum": {"dataset": "mnist", "classes": (0, 1, 2, 3), "per_class": 200, "layers": 2, "configs": "paper",
                      "backends": ("aer", "aer:fake_torino"), "heads": ("quantum", "linear"), "epochs": 30,
                      "batch_size": 16, "lr": 0.01},
    # its quick variant on the embedded digits
    "quick-quantum": {"dataset": "digits", "classes": (0, 1, 2, 3), "per_class": 40, "layers": 2, "configs": "paper",
                      "backends": ("aer", "aer:fake_torino"), "heads": ("quantum", "linear"), "epochs": 6,
                      "batch_size": 16, "lr": 0.03},
    # the paper's single-layer trainable vs frozen experiment
    "single": {"dataset": "mnist", "classes": None, "per_class": 200, "layers": 1, "configs": "none",
               "backends": ("aer", "aer:fake_torino"), "epochs": 30, "batch_size": 16, "lr": 0.01},
}


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the shared training settings, the configurations, the backends."""

    preset: str = "quick"
    dataset: str = "digits"
    data_dir: str | None = None
    classes: tuple[int, ...] | None = None
    per_class: int | None = 30
    layers: int = 2
    configs: tuple[str, ...] = ()
    backends: tuple[str, ...] = ("aer", "aer:fake_torino")
    heads: tuple[str, ...] = ("linear",)
    frozen_modes: tuple[bool, ...] = (False, True)
    epochs: int = 6
    batch_size: int = 16
    lr: float = 0.03
    seed: int = 0

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> SweepConfig:
        if preset not in PRESETS:
            raise QresnetError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
        values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        values["configs"] = resolve_configs(values["configs"], values["layers"])
        values["backends"] = tuple(values["backends"])
        values["heads"] = tuple(values.get("heads", ("linear",)))
        for head in values["heads"]:
            if head not in HEADS:
                raise QresnetError(f"unknown head {head!r}; heads: {', '.join(HEADS)}")
        return cls(preset=preset, **values)

    def runs(self) -> list[tuple[str, str, str, bool, TrainConfig]]:
        """(backend, head, configuration, frozen, training config) for every run of the sweep."""
        out = []
        for head in self.heads:
            for backend in self.backends:
                for residual in self.configs:
                    for frozen in self.frozen_modes:
                        config = TrainConfig(
                            dataset=self.dataset, data_dir=self.data_dir, classes=self.classes, per_class=self.per_class,
                            layers=self.layers, residual=residual, head=head, frozen=frozen, backend=backend,
                            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed)
                        out.append((backend, head, residual, frozen, config))
        return out

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["classes"] = list(self.classes) if self.classes is not None else None
        return out


def resolve_configs(configs: str | tuple[str, ...], layers: int) -> tuple[str, ...]:
    """``paper`` | ``all`` | ``none`` | configurations separated by ';' -> canonical notations."""
    if isinstance(configs, tuple):
        specs = [ResidualSpec.coerce(c, layers) for c in configs]
    elif configs == "paper":
        specs = ResidualSpec.paper(layers) if layers in (2, 3) else [ResidualSpec.coerce("none", layers)]
    elif configs == "all":
        specs = ResidualSpec.enumerate(layers)
    else:
        specs = [ResidualSpec.coerce(c, layers) for c in configs.split(";")]
    return tuple(dict.fromkeys(s.notation for s in specs))


def slug(config: str) -> str:
    """A directory name for a configuration: ``(X+O1)+O2`` -> ``pX_O1q_O2``."""
    return re.sub(r"[^A-Za-z0-9_]", "", config.replace("(", "p").replace(")", "q").replace("+", "_").replace(", ", "__"))


def run_dir(out: Path, backend: str, config: str, frozen: bool, head: str = "linear") -> Path:
    name = f"{slug(config)}-{'frozen' if frozen else 'trainable'}" + ("" if head == "linear" else f"-{head}-head")
    return out / "runs" / backend.replace(":", "_") / name


def _run_one(config: TrainConfig, directory: str) -> dict[str, Any]:
    """One run in a worker process: reuse it if finished, resume it if started."""
    path = Path(directory)
    summary_path = path / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("epochs_completed") == config.epochs:
            return {**summary, "reused": True}
    started = any((path / "checkpoints").glob("epoch_*.pt")) if (path / "checkpoints").is_dir() else False
    summary = train(config, path, resume=started, progress=False)
    return {**summary, "reused": False}


def run_sweep(sweep: SweepConfig, out: str | Path, jobs: int = 1, progress: bool = True) -> list[dict[str, Any]]:
    """Every run of the sweep (in ``jobs`` processes); returns one result row per run."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(sweep.to_dict(), indent=2))
    plan = sweep.runs()
    rows: list[dict[str, Any] | None] = [None] * len(plan)
    began = time.perf_counter()
    bar = tqdm(total=len(plan), desc="compare", unit="run", disable=not progress)

    def record(i: int, summary: dict[str, Any]) -> None:
        backend, head, residual, frozen, config = plan[i]
        rows[i] = {"backend": backend, "config": residual, "frozen": frozen, **summary, "head": head,
                   "predicted_reach": list(ResidualSpec.coerce(residual, config.layers).reaches)}
        bar.update(1)
        bar.set_postfix_str(f"{backend} {head} head {residual} {'frozen' if frozen else 'trainable'}: "
                            f"{summary['final_test_acc']:.3f}")

    if jobs <= 1:
        for i, (backend, head, residual, frozen, config) in enumerate(plan):
            record(i, _run_one(config, str(run_dir(out, backend, residual, frozen, head))))
    else:
        context = multiprocessing.get_context("spawn")  # torch and the simulators do not survive fork well
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(_run_one, config, str(run_dir(out, backend, residual, frozen, head))): i
                       for i, (backend, head, residual, frozen, config) in enumerate(plan)}
            for future in as_completed(futures):
                record(futures[future], future.result())
    bar.close()
    wall = time.perf_counter() - began
    for row in rows:
        row["sweep_wall_time_s"] = wall
    return [row for row in rows if row is not None]
