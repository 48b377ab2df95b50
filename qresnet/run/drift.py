"""Drift: a trained run evaluated under another noise model than it was trained with.

    qresnet evaluate runs/demo --backend aer:fake_quito          # trained on aer:fake_manila, say
    qresnet evaluate runs/demo --backend aer:fake_torino@2 --checkpoint best

The run's checkpoint (its last readable epoch, or its best) is loaded into the model its config builds, once on the
backend it was trained on and once on the other; both test accuracies (on the run's own seeded test split) are
printed and written to ``RUN/evaluations/<backend>.json``. The training backend's accuracy is recomputed, not read
from ``metrics.csv``, so the two numbers differ only by the backend.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from qresnet.backends import BackendOptions, BackendSpec, resolve_backend
from qresnet.config import TrainConfig
from qresnet.data import Dataset, load_dataset
from qresnet.errors import ConfigError, RunDirError
from qresnet.run.build import build_model
from qresnet.run.rundir import RunDir, atomic_write_json

CHECKPOINTS = ("last", "best")  # which epoch checkpoint of a run an evaluation loads


@dataclass(frozen=True)
class DriftEvaluation:
    """One run's checkpoint evaluated on its training backend and on ``evaluated_on``: test loss and accuracy."""

    run_dir: str
    checkpoint: str
    epoch: int
    trained_on: str
    evaluated_on: str
    test_images: int
    trained_accuracy: float
    other_accuracy: float
    trained_loss: float
    other_loss: float
    seconds: float
    change_interval: tuple[float, float]  # 95%, paired over the test images (:func:`change_interval`)

    @property
    def change(self) -> float:
        """Accuracy under the other backend minus under the training one."""
        return self.other_accuracy - self.trained_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy_change": self.change}

    def describe(self) -> str:
        return (f"{self.run_dir} (epoch {self.epoch}, {self.checkpoint} checkpoint): test accuracy "
                f"{self.trained_accuracy:.3f} on {self.trained_on} (trained), {self.other_accuracy:.3f} on "
                f"{self.evaluated_on}: change {self.change:+.3f} [{self.change_interval[0]:+.3f}, "
                f"{self.change_interval[1]:+.3f}] (95%, paired over the {self.test_images} test images)")


def evaluation_path(run: RunDir, backend: BackendSpec) -> Path:
    return run.path / "evaluations" / f"{str(backend).replace(':', '_')}.json"


def _checkpoint(run: RunDir, which: str) -> dict[str, Any]:
    """The state of the run's last readable epoch checkpoint, or of its best epoch (the first reaching the best
    test accuracy, the one training keeps)."""
    if which not in CHECKPOINTS:
        raise ConfigError(f"checkpoint={which!r} must be one of {', '.join(CHECKPOINTS)}")
    saved, skipped = run.epoch_checkpoints(), []
    if which == "best":
        metrics = run.read_metrics()
        if metrics:
            best = max(metrics, key=lambda m: m.test_acc).epoch
            saved = [p for p in saved if p == run.epoch_checkpoint(best)]
    state = run.newest_readable(reversed(saved), skipped)
    if state is None:
        why = "; ".join(skipped) or f"no {which} epoch checkpoint under {run.checkpoints}"
        raise RunDirError(f"{run.path}: nothing to evaluate ({why}); train at least one epoch first")
    return state


def accuracy_on(config: TrainConfig, state: dict[str, Any], backend: BackendSpec | str, options: BackendOptions,
                data: Dataset) -> tuple[float, float, np.ndarray]:
    """Test loss and accuracy of the checkpoint ``state`` of a run of ``config``, its model built on ``backend``,
    and which test images it classifies correctly."""
    model = build_model(config, resolve_backend(backend, options), data.image_shape, data.num_classes)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected or any(not key.endswith(".design_inputs") for key in missing):  # per-patch layers hold no design points
        raise RunDirError(f"the checkpoint does not fit the model of its run (missing {missing}, unexpected "
                          f"{unexpected}); the run directory was edited or is damaged")
    model.eval()
    with torch.no_grad():  # one pass: with shots, a second one would sample other values
        logits = torch.cat([model(data.x_test[i:i + config.batch_size])
                            for i in range(0, len(data.y_test), config.batch_size)])
    correct = (logits.argmax(1) == data.y_test).numpy()
    return float(torch.nn.functional.cross_entropy(logits, data.y_test)), float(correct.mean()), correct


def change_interval(trained: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """The 95% interval of the accuracy change, paired over the test images (Student t on each image's change,
    -1, 0 or +1): how far the change could be from the test set's luck alone. A point when nothing changed."""
    d = other.astype(float) - trained.astype(float)
    if len(d) < 2 or not d.any():
        return float(d.mean()), float(d.mean())
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def evaluate_drift(run_dir: str | Path, backend: BackendSpec | str, options: BackendOptions | None = None,
                   checkpoint: str = "last", data: Dataset | None = None) -> DriftEvaluation:
    """The run's ``checkpoint`` on its training backend and on ``backend`` (with the run's backend options, less
    what ``options`` changes); written to ``RUN/evaluations/<backend>.json``."""
    run = RunDir(run_dir)
    if not run.config_path.is_file():
        raise RunDirError(f"{run.path} has no config.json: pass a run directory written by `qresnet train`")
    config = TrainConfig.from_dict(run.read_config()["config"])
    other = BackendSpec.coerce(backend)
    state = _checkpoint(run, checkpoint)
    data = data or load_dataset(config.data_config())
    began = time.perf_counter()
    trained_loss, trained_acc, trained_correct = accuracy_on(config, state, config.backend, config.backend_options,
                                                             data)
    # the run's layout is of its device's qubits: another device places the circuits itself
    base = (options or config.backend_options).replace(seed=config.seed)
    layout = base.initial_layout if other.device == config.backend.device else None
    other_options = dataclasses.replace(base, initial_layout=layout)
    other_loss, other_acc, other_correct = accuracy_on(config, state, other, other_options, data)
    result = DriftEvaluation(str(run.path), checkpoint, int(state["epoch"]), str(config.backend), str(other),
                             len(data.y_test), trained_acc, other_acc, trained_loss, other_loss,
                             time.perf_counter() - began, change_interval(trained_correct, other_correct))
    path = evaluation_path(run, other)
    path.parent.mkdir(exist_ok=True)
    atomic_write_json(path, result.to_dict())
    return result
