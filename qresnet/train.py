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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
import torch
from tqdm import tqdm

from qresnet.backends import Backend, BackendOptions, resolve_backend
from qresnet.backends.limits import DEFAULT_RUNTIME_SHOTS
from qresnet.circuits import quantum_head, quanv_filter
from qresnet.data import DataConfig, Dataset, load_dataset
from qresnet.errors import QresnetError
from qresnet.nn import DEFAULT_SCALE, QuantumHead, QuanvLayer, ResidualSpec, ResQuNN
from qresnet.nn.head import NO_INPUT_GRADIENT
from qresnet.provenance import environment

HEADS = ("linear", "quantum")
HEAD_QUBITS = 10
PAPER_HEAD_CLASSES = 4
HEAD_ENCODING_NOISE = ("exact", "transpiled")
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
    head_scale: float = DEFAULT_SCALE  # quantum head: logits = head_scale * <Z>
    head_encoding_noise: str = "exact"  # quantum head on a noisy model: "transpiled" also checks the encoding under noise
    head_noise_samples: int = 4  # test samples evaluated with the transpiled encoding under noise
    mode: str = "response"
    input_gradients: bool = False
    frozen: bool = False
    # where circuits run
    backend: str = "aer"
    engine: str = "engine"
    shots: int | None = None
    # optimisation
    epochs: int = 5
    max_steps: int | None = None  # optimizer steps in this session (a device budget); resume continues
    batch_size: int = 16
    lr: float = 0.01
    seed: int = 0
    torch_threads: int = 1  # small tensors: a second intra-op thread costs more than it gives on 2 cores
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ConfigError(f"max_steps={self.max_steps!r} must be a positive integer")
        for name in ("layers", "epochs", "batch_size", "torch_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr={self.lr!r} must be a positive number")
        if self.head not in HEADS:
            raise ConfigError(f"head={self.head!r} must be one of {', '.join(HEADS)}")
        if self.head_encoding_noise not in HEAD_ENCODING_NOISE:
            raise ConfigError(f"head_encoding_noise={self.head_encoding_noise!r} must be one of {', '.join(HEAD_ENCODING_NOISE)}")
        if not (isinstance(self.head_scale, (int, float)) and math.isfinite(self.head_scale) and self.head_scale > 0):
            raise ConfigError(f"head_scale={self.head_scale!r} must be a positive number")
        if not isinstance(self.head_noise_samples, int) or self.head_noise_samples < 1:
            raise ConfigError(f"head_noise_samples={self.head_noise_samples!r} must be a positive integer")
        object.__setattr__(self, "residual", ResidualSpec.coerce(self.residual, self.layers).notation)
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        self.data_config()  # validates the data fields
        self.backend_options()  # validates shots and engine

    def data_config(self) -> DataConfig:
        return DataConfig(self.dataset, self.data_dir, self.classes, self.per_class, self.test_fraction, self.seed)

    def backend_options(self) -> BackendOptions:
        # training on IBM Quantum runs in a Session: its steps depend on each other
        mode = "session" if self.backend.startswith("ibm:") else "batch"
        return BackendOptions(shots=self.shots, seed=self.seed, engine=self.engine, execution_mode=mode)

    @property
    def on_device(self) -> bool:
        """Runtime backends (``local:``, ``ibm:``): checkpoint after every step, print the cost first."""
        return self.backend.startswith(("ibm:", "local:"))

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


def head_encoding(backend: Backend) -> str:
    """``state`` where the engine prepares the encoded state exactly (``aer`` backends), else ``angles``."""
    return "state" if backend.spec.kind == "aer" and backend.options.engine == "engine" else "angles"


def quantum_head_layer(backend: Backend, num_features: int, num_classes: int, *, scale: float = DEFAULT_SCALE,
                       seed: int = 0) -> QuantumHead:
    """The 10-qubit head on ``backend``: exact state preparation on the engine, the transpiled encoding elsewhere."""
    if not 1 <= num_classes <= HEAD_QUBITS:
        raise ConfigError(f"the quantum head measures one of its {HEAD_QUBITS} qubits per class; got {num_classes} classes")
    if num_features > 1 << HEAD_QUBITS:
        raise ConfigError(f"the final map has {num_features} values; {HEAD_QUBITS} qubits encode at most {1 << HEAD_QUBITS}")
    if num_classes > PAPER_HEAD_CLASSES and head_encoding(backend) == "state":
        warnings.warn(f"the quantum head measures {num_classes} qubits; the paper's measures {PAPER_HEAD_CLASSES}. The "
                      "engine simulates the measured qubits' backward light cone, which then spans all 10 qubits: a training "
                      "step takes minutes instead of ~0.3 s (pick 4 classes with --classes for the paper's head)", stacklevel=2)
    encoding = head_encoding(backend)
    template = quantum_head(HEAD_QUBITS, num_classes, encoding=encoding,
                            num_features=num_features if encoding == "state" else None)
    transpiled = backend.transpile(template)
    return QuantumHead(template, backend.estimator(), circuit=transpiled.circuit, observables=transpiled.observables,
                       scale=scale, seed=seed + 1000)


def head_notes(config: TrainConfig, backend: Backend, model: ResQuNN) -> list[str]:
    """What every report says about how the quantum head was simulated."""
    if config.head != "quantum":
        return []
    notes = []
    if model.head.encoding == "state":
        notes.append("head encoding: the amplitude-encoded state is prepared exactly"
                     + ("; the device noise acts on the transpiled ansatz and the readout" if backend.spec.noisy else ""))
        notes.append("head input gradient: exact (engine, adjoint through the state preparation)")
    else:
        notes.append("head encoding: the transpiled state-preparation circuit, one circuit per sample")
        notes.append(NO_INPUT_GRADIENT)
    return notes


def build_model(config: TrainConfig, backend: Backend, image_shape: tuple[int, int], num_classes: int) -> ResQuNN:
    layers = quanv_layers(backend, config.layers, mode=config.mode, input_gradients=config.input_gradients,
                          seed=config.seed)
    head = None
    if config.head == "quantum":
        size = ResidualSpec.coerce(config.residual, config.layers).node_shapes(tuple(image_shape), layers[0].kernel_size)[-1]
        head = quantum_head_layer(backend, size[0] * size[1], num_classes, scale=config.head_scale, seed=config.seed)
    model = ResQuNN(layers, config.residual, image_shape, num_classes, seed=config.seed, head=head)
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


@dataclass(frozen=True)
class StepCost:
    """What one training step sends to a device: parameter sets (circuits), shots, two-qubit gates."""

    circuits: int
    shots: int
    two_qubit_gates: int

    def describe(self, steps: int) -> str:
        return (f"device training: per step {self.circuits} circuits x {self.shots} shots, {self.two_qubit_gates} "
                f"two-qubit gates; {steps} steps: {steps * self.circuits} circuits, {steps * self.circuits * self.shots} "
                f"shots, {steps * self.two_qubit_gates} two-qubit gates")


def step_cost(model: ResQuNN, backend: Backend, batch_size: int) -> StepCost:
    """Upper bound for one step: each layer's 81 design points, and 81 x 2W shifts for trainable weights;
    a quantum head's batch, and B x 2W shifts. Counted from the templates the backend runs."""
    circuits = gates = 0
    for layer in model.layers:
        per = 3 ** layer.template.num_inputs * (1 + (2 * layer.template.num_weights if layer.weight.requires_grad else 0))
        circuits += per
        gates += per * backend.transpile(layer.template).cost.two_qubit_gates
    if isinstance(model.head, QuantumHead):
        per = batch_size * (1 + 2 * model.head.template.num_weights)
        circuits += per
        gates += per * backend.transpile(model.head.template).cost.two_qubit_gates
    shots = backend.options.shots or DEFAULT_RUNTIME_SHOTS
    return StepCost(circuits, shots, gates)


def _latest_checkpoint(checkpoints: Path) -> dict[str, Any] | None:
    """The newest state: the last epoch checkpoint, or the step checkpoint if it is further along."""
    saved = sorted(checkpoints.glob("epoch_*.pt"))
    state = torch.load(saved[-1], weights_only=False) if saved else None
    step_file = checkpoints / "step.pt"
    if step_file.is_file():
        step = torch.load(step_file, weights_only=False)
        if state is None or step["epoch"] > state["epoch"]:
            return step
    return state


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    data: Dataset | None = None,
    service: Any = None,
) -> dict[str, Any]:
    """Run (or resume) training; returns the summary. ``stop_after_epoch`` ends early, as an interruption would.

    On ``local:`` and ``ibm:`` backends the cost of a step is printed first, the state is saved
    after every step (``checkpoints/step.pt``), and ``max_steps`` bounds the steps of this session.
    ``service`` stands in for ``QiskitRuntimeService`` (tests).
    """
    torch.set_num_threads(config.torch_threads)
    out = Path(out_dir) if out_dir is not None else new_run_dir()
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    data = data or load_dataset(config.data_config())
    backend = resolve_backend(config.backend, config.backend_options(), service=service)
    model = build_model(config, backend, data.image_shape, data.num_classes)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    metrics: list[dict[str, float]] = []
    start_epoch, start_batch, elapsed, partial = 1, 0, 0.0, None
    if resume:
        state = _latest_checkpoint(checkpoints)
        if state is None:
            raise QresnetError(f"--resume {out}: no checkpoint in {checkpoints}; start the run without --resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        metrics, elapsed = state["metrics"], state["elapsed"]
        if "batch" in state:  # a step checkpoint: continue inside its epoch
            start_epoch, start_batch, partial = state["epoch"], state["batch"], state["partial"]
        else:
            start_epoch = state["epoch"] + 1
    if config.on_device and progress:
        print(step_cost(model, backend, config.batch_size).describe(config.max_steps or 1))
    notes = head_notes(config, backend, model)
    if progress:
        for note in notes:
            print(note)
    _write_json(out / "config.json", {"config": config.to_dict(), "backend": backend.describe(), "head_notes": notes,
                                      "data": {"source": data.source, "train": len(data.y_train), "test": len(data.y_test),
                                               "classes": list(data.classes), "image_shape": list(data.image_shape)},
                                      "environment": environment()})
    counter = backend.estimator()
    rows_before = getattr(counter, "rows_evaluated", None)  # the engine counts; Aer and Runtime do not
    n = len(data.y_train)
    finished_epoch = start_epoch - 1
    steps_taken, budget_hit = 0, False
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            began = time.perf_counter()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
            batches = range(0, n, config.batch_size)
            first = start_batch if epoch == start_epoch else 0
            if epoch == start_epoch and partial is not None:
                norms, head_norm = partial["norms"].clone(), partial["head_norm"]
                run_loss, run_correct, seen = partial["run_loss"], partial["run_correct"], partial["seen"]
                began -= partial["seconds"]
            else:
                norms, head_norm = torch.zeros(config.layers, dtype=torch.float64), 0.0
                run_loss, run_correct, seen = 0.0, 0, 0
            bar = tqdm(batches[first:], desc=f"epoch {epoch}/{config.epochs}", disable=not progress, leave=False,
                       unit="batch", initial=first, total=len(batches))
            for start in bar:
                if config.max_steps is not None and steps_taken >= config.max_steps:
                    budget_hit = True
                    break
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
                head_norm += math.sqrt(sum(float(p.grad.norm()) ** 2 for p in model.head.parameters() if p.grad is not None))
                optimizer.step()
                run_loss += loss.item() * len(idx)
                run_correct += int((logits.argmax(1) == data.y_train[idx]).sum())
                seen += len(idx)
                bar.set_postfix(loss=f"{run_loss / seen:.3f}", acc=f"{run_correct / seen:.3f}")
                steps_taken += 1
                if config.on_device:  # a dropped session loses at most the step in flight
                    done = start // config.batch_size + 1
                    _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                                  "batch": done, "metrics": metrics, "elapsed": elapsed, "config": config.to_dict(),
                                  "partial": {"norms": norms.clone(), "head_norm": head_norm, "run_loss": run_loss,
                                              "run_correct": run_correct, "seen": seen,
                                              "seconds": time.perf_counter() - began}},
                                 checkpoints / "step.pt")
            if budget_hit:
                break
            train_loss, train_acc = _evaluate(model, data.x_train, data.y_train, config.batch_size)
            test_loss, test_acc = _evaluate(model, data.x_test, data.y_test, config.batch_size)
            seconds = time.perf_counter() - began
            elapsed += seconds
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                   "test_acc": test_acc, "seconds": seconds}
            row.update({f"grad_norm_layer{k + 1}": float(norms[k]) / len(batches) for k in range(config.layers)})
            row["grad_norm_head"] = head_norm / len(batches)
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
    except QresnetError:
        raise
    except Exception as exc:  # a dropped Runtime session, an expired token, a failed job
        if not config.on_device:
            raise
        raise QresnetError(f"the device run stopped ({type(exc).__name__}: {exc}); every finished step is saved in "
                           f"{checkpoints}: continue with `qresnet train --resume {out}`") from None
    if budget_hit and progress:
        print(f"max_steps={config.max_steps} reached: state saved in {checkpoints / 'step.pt'}; "
              f"continue with `qresnet train --resume {out}`")
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
        "head": config.head,
        "head_notes": notes,
        "steps_this_session": steps_taken,
        "stopped_at_max_steps": budget_hit,
    }
    if config.head == "quantum" and config.head_encoding_noise == "transpiled" and metrics:
        summary["head_encoding_noise"] = encoding_noise_check(model, backend, data, config.head_noise_samples, config.seed)
        _write_json(out / "head_encoding_noise.json", summary["head_encoding_noise"])
    _write_json(out / "summary.json", summary)
    if metrics:
        plot_curves(metrics, config.layers, out / "curves.png")
    return summary


def encoding_noise_check(model: ResQuNN, backend: Backend, data: Dataset, samples: int, seed: int) -> dict[str, Any]:
    """The head on ``samples`` test images with its whole transpiled encoding under the device noise (Aer,
    density matrix), beside the default exact state preparation: score differences, predictions, cost."""
    if not backend.spec.noisy or backend.spec.kind != "aer":
        raise ConfigError(f"head_encoding_noise='transpiled' needs a noisy aer:<device> backend, not {backend.name}")
    from qresnet.backends.aer import aer_estimator
    from qresnet.backends.readout import readout_errors

    head = model.head
    transpiled = backend.transpile(quantum_head(HEAD_QUBITS, head.num_outputs))
    aer = aer_estimator(backend.noise_model, readout_errors(backend.device) if backend.options.readout else None, None, seed)
    noisy_head = QuantumHead(transpiled.template, aer, circuit=transpiled.circuit, observables=transpiled.observables,
                             scale=head.scale, initial_weights=head.weight.detach().numpy())
    x, y = data.x_test[:samples], data.y_test[:samples]
    with torch.no_grad():
        features = model.features(x).flatten(1)
        exact = head.scores(features)
        began = time.perf_counter()
        full = noisy_head.scores(features)
        seconds = time.perf_counter() - began
    diff = (full - exact).abs()
    return {
        "samples": len(y),
        "two_qubit_gates_per_circuit": transpiled.cost.two_qubit_gates,
        "depth": transpiled.cost.depth,
        "estimated_fidelity": transpiled.cost.estimated_fidelity,
        "seconds": seconds,
        "max_abs_score_difference": float(diff.max()),
        "mean_abs_score_difference": float(diff.mean()),
        "accuracy_exact_preparation": float((exact.argmax(1) == y).double().mean()),
        "accuracy_transpiled_encoding": float((full.argmax(1) == y).double().mean()),
        "same_prediction": float((exact.argmax(1) == full.argmax(1)).double().mean()),
    }


def _write_metrics(path: Path, metrics: list[dict[str, float]], layers: int) -> None:
    fields = list(METRIC_FIELDS) + [f"grad_norm_layer{k}" for k in range(1, layers + 1)] + ["grad_norm_head"]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in metrics:
            writer.writerow({k: repr(row.get(k, "")) if isinstance(row.get(k), float) else row.get(k, "") for k in fields})
    os.replace(tmp, path)
