"""One training run: a config dataclass, a flat loop, a run directory with everything needed to trust or resume it.

    qresnet train --layers 2 --residual "O1+O2" --epochs 3 --out runs/demo
    qresnet train --resume runs/demo --epochs 5

A run directory holds ``config.json`` (the config, the backend, package versions, the machine),
``metrics.csv`` (one row per epoch), ``summary.json``, ``checkpoints/epoch_NNN.pt`` and ``curves.png``.
Batches are shuffled by a generator seeded from (seed, epoch), and every checkpoint holds the
model and optimizer state, so a resumed run ends with exactly the metrics of an uninterrupted one
(exact simulation; with shots the sampling stream is not checkpointed).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
import torch
from tqdm import tqdm

from qresnet.backends import Backend, BackendOptions, resolve_backend
from qresnet.circuits import quanv_filter
from qresnet.data import DataConfig, Dataset, load_dataset
from qresnet.errors import QresnetError
from qresnet.nn import QuanvLayer, ResidualSpec, ResQuNN
from qresnet.provenance import environment

HEADS = ("linear",)
METRIC_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")


class ConfigError(QresnetError, ValueError):
    """A training configuration value is out of range."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; stored in ``config.json`` and read back by ``--resume``."""

    # data
    dataset: str = "digits"
    data_dir: str | None = None
    classes: tuple[int, ...] | None = None
    per_class: int | None = None
    test_fraction: float = 0.2
    # model
    layers: int = 2
    residual: str = "O1+O2"
    head: str = "linear"
    mode: str = "response"
    input_gradients: bool = False
    frozen: bool = False
    # where circuits run
    backend: str = "aer"
    engine: str = "engine"
    shots: int | None = None
    # optimisation
    epochs: int = 5
    batch_size: int = 16
    lr: float = 0.01
    seed: int = 0
    torch_threads: int = 1  # small tensors: a second intra-op thread costs more than it gives on 2 cores
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("layers", "epochs", "batch_size", "torch_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr={self.lr!r} must be a positive number")
        if self.head not in HEADS:
            raise ConfigError(f"head={self.head!r} must be one of {', '.join(HEADS)} (the quantum head comes with issue 6)")
        object.__setattr__(self, "residual", ResidualSpec.coerce(self.residual, self.layers).notation)
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        self.data_config()  # validates the data fields
        self.backend_options()  # validates shots and engine

    def data_config(self) -> DataConfig:
        return DataConfig(self.dataset, self.data_dir, self.classes, self.per_class, self.test_fraction, self.seed)

    def backend_options(self) -> BackendOptions:
        return BackendOptions(shots=self.shots, seed=self.seed, engine=self.engine)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("extra")
        out["classes"] = list(self.classes) if self.classes is not None else None
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; valid keys: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        try:
            with open(path, "rb") as handle:
                values = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        return cls.from_dict(values)


def quanv_layers(
    backend: Backend, num_layers: int, *, mode: str = "response", input_gradients: bool = False,
    gradient: str = "batched", seed: int = 0,
) -> list[QuanvLayer]:
    """``num_layers`` quanvolution layers on ``backend``: the filter transpiled once, each layer seeded ``seed + k``."""
    template = quanv_filter()
    transpiled = backend.transpile(template)
    estimator = backend.estimator()
    return [QuanvLayer(template, estimator, circuit=transpiled.circuit, observables=transpiled.observables,
                       mode=mode, input_gradients=input_gradients, gradient=gradient, seed=seed + k)
            for k in range(num_layers)]


def build_model(config: TrainConfig, backend: Backend, image_shape: tuple[int, int], num_classes: int) -> ResQuNN:
    layers = quanv_layers(backend, config.layers, mode=config.mode, input_gradients=config.input_gradients,
                          seed=config.seed)
    model = ResQuNN(layers, config.residual, image_shape, num_classes, seed=config.seed)
    return model.freeze_quantum() if config.frozen else model


def _evaluate(model: ResQuNN, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            logits = model(x[start:start + batch_size])
            loss += float(torch.nn.functional.cross_entropy(logits, y[start:start + batch_size], reduction="sum"))
            correct += int((logits.argmax(1) == y[start:start + batch_size]).sum())
    return loss / len(y), correct / len(y)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def new_run_dir(root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / stamp
    suffix = 1
    while path.exists():
        path = Path(root) / f"{stamp}-{suffix}"
        suffix += 1
    return path


def plot_curves(metrics: list[dict[str, float]], layers: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [m["epoch"] for m in metrics]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train")
    axes[0].plot(epochs, [m["test_loss"] for m in metrics], "s-", label="test")
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].plot(epochs, [m["train_acc"] for m in metrics], "o-", label="train")
    axes[1].plot(epochs, [m["test_acc"] for m in metrics], "s-", label="test")
    axes[1].set(title="accuracy", xlabel="epoch", ylim=(0, 1))
    for k in range(1, layers + 1):
        axes[2].plot(epochs, [m[f"grad_norm_layer{k}"] for m in metrics], "o-", label=f"layer {k}")
    axes[2].set(title="quantum weight gradient norm (mean per batch)", xlabel="epoch")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    data: Dataset | None = None,
) -> dict[str, Any]:
    """Run (or resume) training; returns the summary. ``stop_after_epoch`` ends early, as an interruption would."""
    torch.set_num_threads(config.torch_threads)
    out = Path(out_dir) if out_dir is not None else new_run_dir()
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    data = data or load_dataset(config.data_config())
    backend = resolve_backend(config.backend, config.backend_options())
    model = build_model(config, backend, data.image_shape, data.num_classes)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    metrics: list[dict[str, float]] = []
    start_epoch, elapsed = 1, 0.0
    if resume:
        saved = sorted(checkpoints.glob("epoch_*.pt"))
        if not saved:
            raise QresnetError(f"--resume {out}: no checkpoint in {checkpoints}; start the run without --resume")
        state = torch.load(saved[-1], weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        metrics, start_epoch, elapsed = state["metrics"], state["epoch"] + 1, state["elapsed"]
    _write_json(out / "config.json", {"config": config.to_dict(), "backend": backend.describe(),
                                      "data": {"source": data.source, "train": len(data.y_train), "test": len(data.y_test),
                                               "classes": list(data.classes), "image_shape": list(data.image_shape)},
                                      "environment": environment()})
    counter = backend.estimator()
    rows_before = getattr(counter, "rows_evaluated", None)  # the engine counts; Aer and Runtime do not
    n = len(data.y_train)
    finished_epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            began = time.perf_counter()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
            norms = torch.zeros(config.layers, dtype=torch.float64)
            batches = range(0, n, config.batch_size)
            bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", disable=not progress, leave=False, unit="batch")
            run_loss, run_correct, seen = 0.0, 0, 0
            for start in bar:
                idx = order[start:start + config.batch_size]
                optimizer.zero_grad()
                logits = model(data.x_train[idx])
                loss = torch.nn.functional.cross_entropy(logits, data.y_train[idx])
                if not torch.isfinite(loss):
                    raise QresnetError(f"the loss became {float(loss)} at epoch {epoch}; lower --lr (now {config.lr}). "
                                       f"Finished epochs are kept in {checkpoints}")
                loss.backward()
                for k, layer in enumerate(model.layers):
                    if layer.weight.grad is not None:
                        norms[k] += float(layer.weight.grad.norm())
                optimizer.step()
                run_loss += loss.item() * len(idx)
                run_correct += int((logits.argmax(1) == data.y_train[idx]).sum())
                seen += len(idx)
                bar.set_postfix(loss=f"{run_loss / seen:.3f}", acc=f"{run_correct / seen:.3f}")
            train_loss, train_acc = _evaluate(model, data.x_train, data.y_train, config.batch_size)
            test_loss, test_acc = _evaluate(model, data.x_test, data.y_test, config.batch_size)
            seconds = time.perf_counter() - began
            elapsed += seconds
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                   "test_acc": test_acc, "seconds": seconds}
            row.update({f"grad_norm_layer{k + 1}": float(norms[k]) / len(batches) for k in range(config.layers)})
            metrics.append(row)
            _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                          "metrics": metrics, "elapsed": elapsed, "config": config.to_dict()},
                         checkpoints / f"epoch_{epoch:03d}.pt")
            _write_metrics(out / "metrics.csv", metrics, config.layers)
            finished_epoch = epoch
            if progress:
                print(f"epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.3f} | test loss {test_loss:.4f} "
                      f"acc {test_acc:.3f} | grad norms " + " ".join(f"{row[f'grad_norm_layer{k + 1}']:.2e}"
                                                                    for k in range(config.layers)) + f" | {seconds:.1f} s")
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
    except KeyboardInterrupt:
        print(f"\ninterrupted: epochs up to {finished_epoch} are saved in {out}; continue with `qresnet train --resume {out}`")
        raise
    summary = {
        "run_dir": str(out),
        "epochs_completed": finished_epoch,
        "epochs": config.epochs,
        "final_test_acc": metrics[-1]["test_acc"] if metrics else None,
        "best_test_acc": max((m["test_acc"] for m in metrics), default=None),
        "final_train_loss": metrics[-1]["train_loss"] if metrics else None,
        "wall_time_s": elapsed,
        "parameter_sets_evaluated_this_session": None if rows_before is None else counter.rows_evaluated - rows_before,
        "backend": backend.name,
        "residual": config.residual,
        "frozen": config.frozen,
    }
    _write_json(out / "summary.json", summary)
    if metrics:
        plot_curves(metrics, config.layers, out / "curves.png")
    return summary


def _write_metrics(path: Path, metrics: list[dict[str, float]], layers: int) -> None:
    fields = list(METRIC_FIELDS) + [f"grad_norm_layer{k}" for k in range(1, layers + 1)]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in metrics:
            writer.writerow({k: repr(row[k]) if isinstance(row[k], float) else row[k] for k in fields})
    os.replace(tmp, path)
