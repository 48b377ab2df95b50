"""A run's result, typed: what one training run ends with, made once where the run ends and read back unchanged.

    result = train(config, "runs/demo")            # a RunResult
    result.final_test_acc, result.measured_reach, result.metrics[-1].grad_norm_head
    RunResult.from_dict(result.to_dict()) == result
    read_results("reports/quick/results.json")     # the runs of a sweep's report, as RunResults

A :class:`RunResult` holds the run's identity (backend, head, residual, frozen, seed), its whole
history (one :class:`EpochMetrics` per finished epoch) and what the session cost; the summary
figures (final and best accuracy, the layers that measured a gradient) are derived from the
history, so they can never disagree with it. ``summary.json`` holds it without the history
(that is ``metrics.csv``), a sweep's ``results.json`` with it. Files of earlier versions read
back when what is missing can be derived (the layer count from the gradient columns, the
residual from ``config``); otherwise the reader refuses with one line naming the missing field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from qresnet.backends.spec import BackendSpec
from qresnet.errors import ResultError
from qresnet.residual import ResidualSpec
from qresnet.values import checked_int

METRIC_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")
# to_dict keys derived from the fields: written for readers of the files, checked against the history when read back
DERIVED = ("config", "epochs_completed", "final_test_acc", "best_test_acc", "final_train_loss", "predicted_reach",
           "grad_norms_last_epoch", "measured_reach")
SWEEP_KEYS = ("sweep_wall_time_s",)  # a sweep-level figure that rows of earlier versions carried


def metric_fields(layers: int) -> list[str]:
    """The columns of ``metrics.csv`` (and the keys of a metrics row) for ``layers`` quanvolution layers."""
    return list(METRIC_FIELDS) + [f"grad_norm_layer{k}" for k in range(1, layers + 1)] + ["grad_norm_head"]


def _missing(what: str, key: str) -> ResultError:
    return ResultError(f"{what} has no field {key!r}: it was not written by qresnet train / compare, or is damaged")


@dataclass(frozen=True)
class EpochMetrics:
    """One finished epoch: losses and accuracies on both sets, its seconds, and the mean gradient norm per step of
    each quanvolution layer's weights (0 for a frozen or unreached layer) and of the head."""

    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    seconds: float
    grad_norm_layers: tuple[float, ...]
    grad_norm_head: float

    def to_row(self) -> dict[str, float]:
        """A ``metrics.csv`` row (and a results.json ``metrics`` item): ``grad_norm_layer1`` ... as columns."""
        row: dict[str, float] = {name: getattr(self, name) for name in METRIC_FIELDS}
        row.update({f"grad_norm_layer{k}": norm for k, norm in enumerate(self.grad_norm_layers, start=1)})
        row["grad_norm_head"] = self.grad_norm_head
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any], what: str = "a metrics row") -> EpochMetrics:
        for key in (*METRIC_FIELDS, "grad_norm_head"):
            if key not in row:
                raise _missing(what, key)
        layers = sorted((int(k[len("grad_norm_layer"):]), float(v)) for k, v in row.items()
                        if k.startswith("grad_norm_layer"))
        if [k for k, _ in layers] != list(range(1, len(layers) + 1)):
            raise ResultError(f"{what}: gradient columns {[k for k, _ in layers]} are not layers 1..{len(layers)}")
        return cls(int(row["epoch"]), *(float(row[k]) for k in METRIC_FIELDS[1:]), tuple(v for _, v in layers),
                   float(row["grad_norm_head"]))


@dataclass(frozen=True)
class RunResult:
    """What a training run ends with: its identity, its history, and what this session of it cost."""

    backend: BackendSpec
    head: str
    residual: ResidualSpec
    frozen: bool
    seed: int
    epochs: int  # asked for; a run stopped early has fewer in ``metrics``
    metrics: tuple[EpochMetrics, ...]
    train_images: int
    test_images: int
    gradient: str  # how the quantum weights were differentiated (build.gradient_method)
    run_dir: str
    wall_time_s: float  # training time over every session of the run
    head_notes: tuple[str, ...] = ()
    steps_this_session: int = 0
    stopped_at_max_steps: bool = False
    parameter_sets_evaluated_this_session: int | None = None
    head_encoding_noise: dict[str, Any] | None = None  # the quantum head's encoding check, when asked for
    shot_validation: dict[str, Any] | None = None  # with shots: layer 1's response against direct sampling
    reused: bool = False  # read back from a finished run, not trained by this invocation
    filter: str = "quantum"  # the layers' filter: the circuit, or the classical control (rows of earlier versions: quantum)

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", BackendSpec.coerce(self.backend))
        object.__setattr__(self, "residual", ResidualSpec.coerce(self.residual))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "head_notes", tuple(self.head_notes))
        for name, least in (("seed", None), ("epochs", 1), ("train_images", 0), ("test_images", 0),
                            ("steps_this_session", 0)):
            object.__setattr__(self, name, checked_int(getattr(self, name), name, least, error=ResultError))
        for name in ("frozen", "stopped_at_max_steps", "reused"):
            if not isinstance(getattr(self, name), bool):
                raise ResultError(f"{name}={getattr(self, name)!r} must be true or false")
        layers = {len(m.grad_norm_layers) for m in self.metrics}
        if layers - {self.residual.num_layers}:
            raise ResultError(f"the metrics of {self.run_dir} have gradient norms for {sorted(layers)} layers, the "
                              f"residual {self.residual.notation!r} has {self.residual.num_layers}")

    # --- summary figures, derived from the history -------------------------------------------------------------

    @property
    def layers(self) -> int:
        return self.residual.num_layers

    @property
    def config(self) -> str:
        """The residual configuration's notation (the report's name for it)."""
        return self.residual.notation

    @property
    def epochs_completed(self) -> int:
        return len(self.metrics)

    @property
    def final_test_acc(self) -> float | None:
        return self.metrics[-1].test_acc if self.metrics else None

    @property
    def best_test_acc(self) -> float | None:
        return max((m.test_acc for m in self.metrics), default=None)

    @property
    def final_train_loss(self) -> float | None:
        return self.metrics[-1].train_loss if self.metrics else None

    @property
    def predicted_reach(self) -> tuple[bool, ...]:
        """The layers whose weights get a gradient by the reach rule."""
        return self.residual.reaches

    @property
    def grad_norms_last_epoch(self) -> tuple[float, ...] | None:
        return self.metrics[-1].grad_norm_layers if self.metrics else None

    @property
    def measured_reach(self) -> tuple[bool, ...] | None:
        """The layers that measured a gradient in some epoch; None for a frozen run (no quantum weight trains)."""
        if self.frozen:
            return None
        return tuple(any(m.grad_norm_layers[k] > 0 for m in self.metrics) for k in range(self.layers))

    # --- serialisation ------------------------------------------------------------------------------------------

    def to_dict(self, metrics: bool = True) -> dict[str, Any]:
        """JSON-ready: every field (the history unless ``metrics`` is false) and the derived figures beside them."""
        out: dict[str, Any] = {
            "backend": str(self.backend), "head": self.head, "config": self.config, "residual": self.config,
            "layers": self.layers, "frozen": self.frozen, "seed": self.seed, "run_dir": self.run_dir,
            "epochs": self.epochs, "epochs_completed": self.epochs_completed, "final_test_acc": self.final_test_acc,
            "best_test_acc": self.best_test_acc, "final_train_loss": self.final_train_loss,
            "wall_time_s": self.wall_time_s, "train_images": self.train_images, "test_images": self.test_images,
            "gradient": self.gradient, "head_notes": list(self.head_notes), "steps_this_session": self.steps_this_session,
            "stopped_at_max_steps": self.stopped_at_max_steps,
            "parameter_sets_evaluated_this_session": self.parameter_sets_evaluated_this_session,
            "reused": self.reused, "filter": self.filter, "predicted_reach": list(self.predicted_reach),
            "grad_norms_last_epoch": _list(self.grad_norms_last_epoch), "measured_reach": _list(self.measured_reach),
        }
        for name in ("head_encoding_noise", "shot_validation"):  # checks a run makes only when they apply
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if metrics:
            out["metrics"] = [m.to_row() for m in self.metrics]
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], what: str = "a run result") -> RunResult:
        """The inverse of :meth:`to_dict`; rows of earlier versions too (see the module's docstring)."""
        values = dict(values)
        if "residual" not in values and "config" in values:  # rows that named the residual only ``config``
            values["residual"] = values["config"]
        if "metrics" not in values:
            raise _missing(what, "metrics")
        metrics = tuple(m if isinstance(m, EpochMetrics) else EpochMetrics.from_row(m, f"{what}, metrics row {i + 1}")
                        for i, m in enumerate(values["metrics"]))  # rows, or EpochMetrics read from metrics.csv
        if "layers" not in values:  # earlier versions: the layer count is that of the gradient columns or the rule
            if metrics:
                values["layers"] = len(metrics[0].grad_norm_layers)
            elif "predicted_reach" in values:
                values["layers"] = len(values["predicted_reach"])
        known = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        for key in ("layers", *required):
            if key not in values:
                raise _missing(what, key)
        unknown = sorted(set(values) - known - set(DERIVED) - set(SWEEP_KEYS) - {"layers"})
        if unknown:
            raise ResultError(f"{what} has unknown field(s) {', '.join(map(repr, unknown))}: written by a newer qresnet?")
        chosen = {k: v for k, v in values.items() if k in known}
        chosen["residual"] = ResidualSpec.coerce(values["residual"], values["layers"])
        chosen["metrics"] = metrics
        try:
            result = cls(**chosen)
        except ResultError as exc:
            raise ResultError(f"{what}: {exc}") from None
        derived = result.to_dict(metrics=False)
        for key in DERIVED:  # figures written beside the history must be the history's (a stale summary is not)
            if key in values and values[key] != derived[key]:
                raise ResultError(f"{what}: {key} is {values[key]!r}, but its metrics give {derived[key]!r}")
        return result


def _list(values: tuple | None) -> list | None:
    return None if values is None else list(values)  # JSON (and the CSV) spell sequences as lists


def read_results(path: str | Path) -> list[RunResult]:
    """The runs of a sweep's ``results.json`` (this version's or an earlier one's), or a one-line refusal."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ResultError(f"cannot read {path} ({exc})") from None
    rows = document.get("results") if isinstance(document, dict) else None
    if not isinstance(rows, list):
        raise ResultError(f"{path} has no 'results' list: it is not a results.json written by qresnet compare")
    return [RunResult.from_dict(row, f"{path}, run {i + 1}") for i, row in enumerate(rows)]
