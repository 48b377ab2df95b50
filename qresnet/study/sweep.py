"""Sweeps: residual configurations x {trainable, frozen} x backends, each a training run, resumable.

    qresnet compare                       # the quick preset: embedded digits, both backends
    qresnet compare --preset paper --backends aer --jobs 2
    qresnet compare --preset paper-quantum --backends aer --jobs 2   # quantum head, linear head beside it

Every run is a ``qresnet train`` run directory under ``OUT/runs/<backend>/<config>-<trainable|frozen>[-quantum-head]``;
a sweep started again with the same ``--out`` reuses finished runs and resumes unfinished ones.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from qresnet.backends import resolve_backend
from qresnet.backends.options import BackendOptions
from qresnet.backends.spec import BackendSpec
from qresnet.run.build import build_model, check_layout_width, filter_notes
from qresnet.run.cost import HEAD_QUBITS
from qresnet.choices import EXECUTORS, FILTER_KINDS, HEADS
from qresnet.circuits import FilterSpec
from qresnet.config import TrainConfig
from qresnet.data import Dataset, load_dataset
from qresnet.errors import ConfigError, ResultError, RunDirError, SweepError
from qresnet.residual import ResidualSpec
from qresnet.run.figures import plot_curves
from qresnet.run.integrity import integrity_problems
from qresnet.run.lock import OutputLock
from qresnet.run.result import RunResult
from qresnet.run.rundir import RunDir, atomic_write_json, identity_differences
from qresnet.run.stack import default_stack_size, stack_key, stackable, train_stack
from qresnet.run.train import train
from qresnet.study.execute import Work, execute
from qresnet.values import checked_int

# SweepConfig fields a sweep.json of an earlier version lacks, at what that version did
ADDED_FIELDS: dict[str, Any] = {"filters": ["quantum"], "quanv": None, "image_size": None, "run_curves": True}

PRESETS: dict[str, dict[str, Any]] = {
    # the README's main job: minutes on the embedded 8x8 digits, both backends
    # (40 per class with a quarter held out: 100 test images, so one image is 1% of accuracy; 3 seeds)
    "quick": {"dataset": "digits", "classes": None, "per_class": 40, "test_fraction": 0.25, "layers": 2,
              "configs": "paper", "backends": ("aer", "aer:fake_torino"), "epochs": 6, "batch_size": 16, "lr": 0.03,
              "seeds": (0, 1, 2)},
    # the paper's classical-head study: MNIST, 10 classes x 200 (1600 train / 400 test), 30 epochs, Adam 0.01
    "paper": {"dataset": "mnist", "classes": None, "per_class": 200, "layers": 2, "configs": "paper",
              "backends": ("aer", "aer:fake_torino"), "epochs": 30, "batch_size": 16, "lr": 0.01, "seeds": (0, 1, 2)},
    # the paper's quantum-head study, classical head beside it: MNIST 0-3 x 200 (640 train / 160 test)
    "paper-quantum": {"dataset": "mnist", "classes": (0, 1, 2, 3), "per_class": 200, "layers": 2, "configs": "paper",
                      "backends": ("aer", "aer:fake_torino"), "heads": ("quantum", "linear"), "epochs": 30,
                      "batch_size": 16, "lr": 0.01, "seeds": (0, 1, 2)},
    # its quick variant on the embedded digits
    "quick-quantum": {"dataset": "digits", "classes": (0, 1, 2, 3), "per_class": 40, "layers": 2, "configs": "paper",
                      "backends": ("aer", "aer:fake_torino"), "heads": ("quantum", "linear"), "epochs": 6,
                      "batch_size": 16, "lr": 0.03, "seeds": (0, 1, 2)},
    # the paper's single-layer trainable vs frozen experiment
    "single": {"dataset": "mnist", "classes": None, "per_class": 200, "layers": 1, "configs": "none",
               "backends": ("aer", "aer:fake_torino"), "epochs": 30, "batch_size": 16, "lr": 0.01, "seeds": (0, 1, 2)},
}


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: where it runs, with which head and configuration, trainable or frozen, its seed."""

    backend: BackendSpec
    head: str
    residual: ResidualSpec
    frozen: bool
    seed: int
    config: TrainConfig
    filter: str = "quantum"

    def directory(self, out: Path) -> Path:
        return run_dir(out, self.backend, self.residual, self.frozen, self.head, self.seed, self.filter)

    def describe(self) -> str:
        return (f"{self.backend} {self.head} head {self.residual.notation} "
                f"{'frozen' if self.frozen else 'trainable'}" + ("" if self.filter == "quantum" else f" {self.filter}")
                + f" seed {self.seed}")


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the shared training settings, the configurations, the backends and their options, the seeds.

    Every configuration x {trainable, frozen} x backend x head x filter runs once per seed. A seed fixes
    the data split and the initial weights, so a trainable run and its frozen benchmark with the same
    seed form a pair, and so do the same run on two backends, and a quantum run and its classical control.
    ``filters`` are ``quantum`` (the circuit) and ``classical`` (the control of the same size, Q6).
    ``run_curves`` draws each run's ``curves.png`` (``TrainConfig.curves``): off by default, as the report's
    ``curves.png`` shows every run's curves and a run's figure costs more than its training in a small sweep.
    """

    preset: str = "quick"
    dataset: str = "digits"
    data_dir: str | None = None
    classes: tuple[int, ...] | None = None
    per_class: int | None = 30
    test_fraction: float = 0.2
    layers: int = 2
    configs: tuple[ResidualSpec, ...] = ()
    backends: tuple[BackendSpec, ...] = ("aer", "aer:fake_torino")
    heads: tuple[str, ...] = ("linear",)
    frozen_modes: tuple[bool, ...] = (False, True)
    epochs: int = 6
    batch_size: int = 16
    lr: float = 0.03
    seeds: tuple[int, ...] = (0,)
    backend_options: BackendOptions = field(default_factory=BackendOptions)
    filters: tuple[str, ...] = ("quantum",)
    quanv: FilterSpec | dict | None = None  # the filter of every run (TrainConfig.quanv); None: today's
    image_size: int | None = None
    run_curves: bool = False

    def __post_init__(self) -> None:
        seeds = tuple(checked_int(k, "seed", 0) for k in self.seeds)
        if not seeds or len(set(seeds)) < len(seeds):
            raise ConfigError(f"seeds={self.seeds!r} must be distinct integers, e.g. 0-4 or 0,3,7")
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "configs", resolve_configs(self.configs, self.layers))
        object.__setattr__(self, "backends", tuple(BackendSpec.coerce(b) for b in self.backends))
        object.__setattr__(self, "heads", tuple(self.heads))
        object.__setattr__(self, "backend_options", BackendOptions.coerce(self.backend_options))
        for head in self.heads:
            if head not in HEADS:
                raise ConfigError(f"unknown head {head!r}; heads: {', '.join(HEADS)}")
        object.__setattr__(self, "quanv", FilterSpec.coerce(self.quanv))
        object.__setattr__(self, "filters", tuple(self.filters))
        if not self.filters or len(set(self.filters)) < len(self.filters) or set(self.filters) - set(FILTER_KINDS):
            raise ConfigError(f"filters={','.join(self.filters)!r} must be distinct filters of "
                              f"{', '.join(FILTER_KINDS)}, e.g. quantum,classical")

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> SweepConfig:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
        return cls(preset=preset, **{**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}})

    def runs(self) -> list[PlannedRun]:
        """Every run of the sweep, seeds innermost (so a configuration's seeds finish together)."""
        out = []
        for kind, head, backend in itertools.product(self.filters, self.heads, self.backends):
            for residual in self.configs:
                for frozen in self.frozen_modes:
                    for seed in self.seeds:
                        config = TrainConfig(
                            dataset=self.dataset, data_dir=self.data_dir, classes=self.classes,
                            per_class=self.per_class, test_fraction=self.test_fraction, layers=self.layers,
                            residual=residual, head=head, frozen=frozen, backend=backend,
                            backend_options=self.backend_options, epochs=self.epochs, batch_size=self.batch_size,
                            lr=self.lr, seed=seed, filter=kind, quanv=self.quanv, image_size=self.image_size,
                            curves=self.run_curves)
                        out.append(PlannedRun(backend, head, residual, frozen, seed, config, kind))
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], what: str = "a sweep") -> SweepConfig:
        """The inverse of :meth:`to_dict` (``sweep.json``); a missing or unknown field is refused, naming it."""
        names = [f.name for f in dataclasses.fields(cls)]
        values = {**ADDED_FIELDS, **values}  # sweeps written before these fields existed
        missing = [name for name in names if name not in values]
        unknown = sorted(set(values) - set(names))
        if missing or unknown:
            which = f"has no field {missing[0]!r}" if missing else f"has unknown field(s) {', '.join(map(repr, unknown))}"
            raise ResultError(f"{what} {which}: it was not written by qresnet compare, or is damaged")
        sequences = ("configs", "backends", "heads", "frozen_modes", "seeds", "filters")
        return cls(**{**values, **{k: tuple(values[k]) for k in sequences},
                      "classes": None if values["classes"] is None else tuple(values["classes"])})

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["classes"] = list(self.classes) if self.classes is not None else None
        out["configs"] = [c.notation for c in self.configs]
        out["backends"] = [str(b) for b in self.backends]
        out["heads"] = list(self.heads)
        out["frozen_modes"] = list(self.frozen_modes)
        out["seeds"] = list(self.seeds)
        out["filters"] = list(self.filters)
        out["quanv"] = self.quanv.to_dict()
        out["backend_options"] = self.backend_options.to_dict()
        return out


@dataclass(frozen=True)
class SweepResult:
    """What a sweep ends with: its configuration, one result per finished run (in plan order, run directories
    relative to the sweep's), and the sweep's wall time."""

    sweep: SweepConfig
    runs: tuple[RunResult, ...]
    wall_time_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(self.runs))

    @classmethod
    def read(cls, path: str | Path) -> SweepResult:
        """A sweep's ``results.json`` (this version's, or an earlier one's), or a one-line refusal naming the field."""
        path = Path(path)
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ResultError(f"cannot read {path} ({exc})") from None
        for key in ("sweep", "results"):
            if not isinstance(document, dict) or key not in document:
                raise ResultError(f"{path} has no field {key!r}: it is not a results.json written by qresnet compare")
        rows = document["results"]
        # earlier versions wrote the sweep's wall time into every row
        wall = document.get("sweep_wall_time_s", max((r.get("sweep_wall_time_s", 0.0) for r in rows), default=0.0))
        return cls(SweepConfig.from_dict(document["sweep"], f"{path}: the sweep"),
                   tuple(RunResult.from_dict(r, f"{path}, run {i + 1}") for i, r in enumerate(rows)), wall)


def resolve_configs(configs: str | tuple[str | ResidualSpec, ...], layers: int) -> tuple[ResidualSpec, ...]:
    """``paper`` | ``all`` | ``none`` | configurations separated by ';' -> distinct residual specs, in order."""
    if isinstance(configs, (tuple, list)):
        specs = [ResidualSpec.coerce(c, layers) for c in configs]
    elif configs == "paper":
        specs = ResidualSpec.paper(layers) if layers in (2, 3) else [ResidualSpec.coerce("none", layers)]
    elif configs == "all":
        specs = ResidualSpec.enumerate(layers)
    else:
        specs = [ResidualSpec.coerce(c, layers) for c in configs.split(";")]
    return tuple(dict.fromkeys(specs))


def slug(config: str) -> str:
    """A directory name for a configuration: ``(X+O1)+O2`` -> ``pX_O1q_O2``."""
    return re.sub(r"[^A-Za-z0-9_]", "", config.replace("(", "p").replace(")", "q").replace("+", "_").replace(", ", "__"))


def run_dir(out: Path, backend: BackendSpec | str, config: ResidualSpec | str, frozen: bool, head: str = "linear",
            seed: int = 0, filter: str = "quantum") -> Path:
    """Where a sweep in ``out`` keeps one run:
    ``runs/<backend>/<config>-<trainable|frozen>[-<head>-head][-classical]-seed<k>`` (the filter named only when it
    is not the quantum one, so sweeps of earlier versions resume)."""
    notation = ResidualSpec.coerce(config).notation
    name = (f"{slug(notation)}-{'frozen' if frozen else 'trainable'}" + ("" if head == "linear" else f"-{head}-head")
            + ("" if filter == "quantum" else f"-{filter}") + f"-seed{seed}")
    return out / "runs" / str(BackendSpec.coerce(backend)).replace(":", "_") / name


def finished_result(config: TrainConfig, directory: Path) -> RunResult | None:
    """A finished run's result, marked reused (its identity was checked by :func:`stale_runs`); else None. A summary
    that cannot be read (damaged, or of a version that lacks a field) is not trusted: the run resumes and writes anew.
    A finished run without the ``curves.png`` its config asks for gets it now, from its metrics."""
    run = RunDir(directory)
    try:
        result = run.read_result()
    except ResultError:
        return None
    if result is not None and result.epochs_completed == config.epochs:
        if config.curves and result.metrics and not run.curves_path.is_file():
            plot_curves(result.metrics, run.curves_path)
        return dataclasses.replace(result, reused=True)
    return None


def _run_one(config: TrainConfig, directory: str, data: Dataset | None = None) -> RunResult:
    """One unfinished run, in a worker process or in the sweep's own: resumed if started."""
    run = RunDir(directory)
    return train(config, run.path, resume=run.started(), progress=False, data=data)


def _run_stack(configs: list[TrainConfig], directories: list[str], data: list[Dataset] | None = None
               ) -> list[RunResult | str]:
    """One stack of unfinished runs (:func:`train_stack`), in a worker process or the sweep's own: per run its
    result or why it failed (a line: errors need not pickle)."""
    return [r if isinstance(r, RunResult) else str(r) for r in train_stack(configs, directories, data)]


def stack_size(plan: list[PlannedRun], todo: list[int], jobs: int) -> int:
    """The default K for the runs ``todo`` in ``jobs`` processes: :func:`default_stack_size` of their trainable runs
    (of all of them where every one is frozen)."""
    trainable = sum(not plan[i].frozen for i in todo)
    return default_stack_size(trainable or len(todo), jobs)


def plan_stacks(plan: list[PlannedRun], todo: list[int], size: int) -> list[list[int]]:
    """``todo`` (plan indices) as stacks of runs of one shape (:func:`stack_key`: the residual configurations of a
    shape share its layers, so they stack too), each with at most ``size`` trainable runs and its share of the
    shape's frozen runs (a frozen run's maps are computed once and only its head trains, so it adds little to a
    step: :func:`qresnet.run.stack.fix_maps`). A shape's runs go into as few stacks as that allows, its trainable
    and its frozen runs each cut in plan order into that many near-equal parts (20 trainable runs at 16: 10 and 10,
    not 16 and 4; a small stack pays a step's calls for few runs), so every stack holds trainable runs and as few
    residual configurations as may be (each is one forward of the torch side a step). A shape with frozen runs only
    makes stacks of at most ``size``. Runs that cannot stack (devices, shots) go alone; a stack lists its runs in
    plan order."""
    groups: dict[str, list[int]] = {}
    for i in todo:
        config = plan[i].config
        groups.setdefault(stack_key(config) if stackable(config) else f"alone {i}", []).append(i)
    out = []
    for members in groups.values():
        trainable = [i for i in members if not plan[i].frozen]
        frozen = [i for i in members if plan[i].frozen]
        count = -(-len(trainable or frozen) // size)
        parts = [[xs[len(xs) * k // count:len(xs) * (k + 1) // count] for xs in (trainable, frozen)]
                 for k in range(count)]
        out.extend(sorted(t + f) for t, f in parts)
    return out


def stale_runs(out: Path, plan: list[PlannedRun], data: dict[int, Dataset]) -> list[tuple[Path, list[str]]]:
    """The runs under ``out`` that were trained with other settings than the plan's, with what differs."""
    digests = {seed: d.digest() for seed, d in data.items()}
    stale = []
    for planned in plan:
        config = planned.config
        run = RunDir(planned.directory(out))
        if not run.config_path.is_file():
            continue
        # an edited run (config.json against its checkpoints, metrics.csv against theirs) is never reused
        differences = integrity_problems(run) or identity_differences(run.read_identity(),
                                                                      config.identity(digests[planned.seed]))
        done = len(run.read_metrics())
        if done > config.epochs:
            differences.append(f"epochs: {done} finished -> {config.epochs} asked for")
        if differences:
            stale.append((run.path, differences))
    return stale


def check_sweep(sweep: SweepConfig, plan: list[PlannedRun], data: dict[int, Dataset]) -> list[str]:
    """What would stop every run, found before the first one starts, as one error: the backends' specs, the
    layout against the sweep's templates, and the filter (its circuit, observables and size against the images):
    the first run of each filter and head is built. Returns what that filter is and costs, on the first backend
    (:func:`filter_notes`), for the sweep to say before it trains."""
    template = sweep.quanv.template()
    templates = [(template.name, template.num_qubits)] + ([("quantum head", HEAD_QUBITS)] if "quantum" in sweep.heads
                                                          else [])
    check_layout_width(sweep.backend_options.initial_layout, templates)
    # resolving ibm: connects to the service; its runs check when they start
    backends = {b: resolve_backend(b, sweep.backend_options) for b in sweep.backends if b.kind != "ibm"}
    notes: list[str] = []
    built = set()
    for planned in plan:
        if (planned.filter, planned.head) in built or planned.backend not in backends:
            continue
        built.add((planned.filter, planned.head))
        images = data[planned.seed]
        build_model(planned.config, backends[planned.backend], images.image_shape, images.num_classes)
        if not notes and planned.filter == "quantum":
            notes = [f"{planned.backend}: {note}" for note in
                     filter_notes(planned.config, backends[planned.backend], images.image_shape)]
    return notes


def run_sweep(sweep: SweepConfig, out: str | Path, jobs: int = 1, progress: bool = True, overwrite: bool = False,
              executor: str = "processes", ray_address: str | None = None, stack: int | None = None) -> SweepResult:
    """:func:`_run_sweep_locked` with ``out`` locked (:class:`OutputLock`): a second sweep on it refuses."""
    with OutputLock(out):
        return _run_sweep_locked(sweep, Path(out), jobs, progress, overwrite, executor, ray_address, stack)


def _run_sweep_locked(sweep: SweepConfig, out: Path, jobs: int = 1, progress: bool = True, overwrite: bool = False,
                      executor: str = "processes", ray_address: str | None = None, stack: int | None = None
                      ) -> SweepResult:
    """Every run of the sweep (in ``jobs`` local processes, or as Ray tasks); returns their results.

    Finished runs under ``out`` are reused and started ones resumed, but only when their identity
    matches the plan's; runs trained with other settings are refused (naming what differs), or
    trained again from scratch with ``overwrite``. Result rows name their run directory relative
    to ``out``, so a moved sweep still resumes and reports. A run that fails does not stop the
    others: once they are done, :class:`SweepError` carries the finished runs' result and each failure.

    ``stack`` K trains up to K runs of one shape together in one process (:mod:`qresnet.run.stack`; a process
    or a Ray task trains one stack); None picks K from memory (:func:`default_stack_size`); 1 trains each run
    alone, as before stacks existed.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"executor={executor!r} must be one of {', '.join(EXECUTORS)}")
    out = Path(out)
    plan = sweep.runs()
    first = {}
    for planned in plan:
        first.setdefault(planned.seed, planned.config)
    data = {seed: load_dataset(config.data_config()) for seed, config in first.items()}  # a seed fixes the split
    notes = check_sweep(sweep, plan, data)
    if progress and sweep.quanv != FilterSpec():  # today's filter goes without saying
        print("\n".join(notes))
    stale = stale_runs(out, plan, data)
    if stale and not overwrite:
        path, differences = stale[0]
        raise RunDirError(f"{out} holds {len(stale)} run(s) trained with other settings than this sweep's, e.g. "
                          f"{path.relative_to(out)} ({'; '.join(differences)}); reusing them would label their numbers "
                          "with the new settings. Pass --overwrite to train them again, or choose a new --out")
    for path, _ in stale:
        RunDir(path).clear()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "sweep.json", sweep.to_dict())
    rows: list[RunResult | None] = [None] * len(plan)
    failures: list[str] = []
    began = time.perf_counter()
    bar = tqdm(total=len(plan), desc="compare", unit="run", disable=not progress)

    def record(i: int, result: RunResult) -> None:
        planned = plan[i]
        rows[i] = dataclasses.replace(result, run_dir=str(planned.directory(Path("."))))  # a moved sweep still reads
        bar.update(1)
        bar.set_postfix_str(f"{planned.describe()}: {result.final_test_acc:.3f}")

    def fail(i: int, reason: str) -> None:
        failures.append(f"{plan[i].describe()} ({plan[i].directory(out)}): {reason}")
        bar.update(1)

    todo = []
    for i, planned in enumerate(plan):
        finished = finished_result(planned.config, planned.directory(out))
        if finished is not None:
            record(i, finished)
        else:
            todo.append(i)
    size = stack_size(plan, todo, jobs) if stack is None else checked_int(stack, "--stack", 1)
    # a stacked sweep trains even a stack of one through the stack (its numbers then do not depend on how a resume
    # regroups its runs); --stack 1 and runs that cannot stack (devices, shots) take today's path
    works = ([Work((i,), False) for i in todo] if size == 1 else
             [Work(tuple(u), stackable(plan[u[0]].config)) for u in plan_stacks(plan, todo, size)])
    try:
        execute(works, plan, out, data, jobs, executor, ray_address, record, fail, _run_one, _run_stack,
                lambda: sum(r is not None for r in rows))
    finally:
        bar.close()
    result = SweepResult(sweep, tuple(row for row in rows if row is not None), time.perf_counter() - began)
    if failures:
        raise SweepError(result, failures)
    return result
