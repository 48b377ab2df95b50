"""A trained run read back for device evaluation: its config, one checkpoint, its data split, its model.

A run with a quantum head loads as any other: :meth:`TrainedRun.model` builds it on a simulator
(exact state preparation on ``aer``), and the device evaluation runs its angle-encoded form
(``qresnet.jobs.manifest.head_part``) on the final maps of :meth:`TrainedRun.features`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qresnet.backends import Backend
from qresnet.run.build import build_model
from qresnet.config import TrainConfig
from qresnet.data import Dataset, load_dataset
from qresnet.errors import JobsError
from qresnet.nn import ResQuNN
from qresnet.run.rundir import RunDir


@dataclass(frozen=True, eq=False)
class TrainedRun:
    """A run directory with one of its checkpoints; ``data`` is the run's exact (seeded) split.

    >>> TrainedRun.load("no/such/run")
    Traceback (most recent call last):
    ...
    qresnet.errors.RunDirError: no/such/run has no config.json: pass a run directory written by `qresnet train`
    """

    run_dir: Path
    checkpoint: Path
    config: TrainConfig
    state: dict[str, torch.Tensor] = field(repr=False)
    data: Dataset = field(repr=False)
    skipped: tuple[str, ...] = ()  # newer checkpoints that could not be read

    @classmethod
    def load(cls, run_dir: str | Path, checkpoint: str | Path | None = None) -> TrainedRun:
        """Read ``config.json`` and a checkpoint (default: the run's last readable one; ``skipped`` names newer
        ones that are damaged)."""
        run = RunDir(run_dir)
        config = TrainConfig.from_dict(run.read_config()["config"])
        skipped: list[str] = []
        if checkpoint is None:
            saved = run.epoch_checkpoints()
            if not saved:
                raise JobsError(f"{run.path} has no checkpoint under checkpoints/: train at least one epoch first")
            found = run.newest_readable(reversed(saved), skipped)
            if found is None:
                raise JobsError(f"no checkpoint of {run.path} can be read ({'; '.join(skipped)}); train the run again")
            checkpoint, state = found["path"], found["model"]
        else:
            checkpoint = Path(checkpoint)
            if not checkpoint.is_file():
                raise JobsError(f"checkpoint {checkpoint} does not exist; pick one under {run.checkpoints}")
            found = run.newest_readable([checkpoint], skipped)
            if found is None:
                raise JobsError(f"checkpoint {checkpoint} cannot be read ({skipped[0]}); pick another under {run.checkpoints}")
            state = found["model"]
        return cls(run.path, checkpoint, config, state, load_dataset(config.data_config()), tuple(skipped))

    def model(self, backend: Backend) -> ResQuNN:
        """The checkpoint's model with its quanvolution layers on ``backend``, in response mode whatever mode the run
        trained in: a device evaluates each layer's 3^q design points (81 for 2x2, 19,683 for 3x3; the cost is
        printed before anything is sent) and rebuilds its response tensor. Designs that path cannot rebuild (the
        classical control, several filters or outputs per layer) are refused in one line."""
        problem = device_problem(self.config)
        if problem is not None:
            raise JobsError(f"{self.run_dir}: {problem}; evaluate it on a simulator with `qresnet evaluate`")
        config = dataclasses.replace(self.config, mode="response")
        model = build_model(config, backend, self.data.image_shape, self.data.num_classes)
        missing, unexpected = model.load_state_dict(self.state, strict=False)
        if unexpected or any(not key.endswith(".design_inputs") for key in missing):  # per-patch runs have no design buffer
            raise JobsError(f"checkpoint {self.checkpoint} does not fit the model of {self.run_dir / 'config.json'} "
                            f"(missing {missing}, unexpected {unexpected}); pass a checkpoint of this run")
        return model.eval()

    def predict(self, model: ResQuNN, responses: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Predicted class of every test image; ``responses`` replace each layer's response tensor (e.g. from a device)."""
        with torch.no_grad(), _fixed_responses(model, responses):
            return model(self.data.x_test).argmax(1)

    def features(self, model: ResQuNN, responses: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The flattened final map of every test image, (N, H_L * W_L): what the head sees."""
        with torch.no_grad(), _fixed_responses(model, responses):
            return model.features(self.data.x_test).flatten(1)

    def accuracy(self, predictions: torch.Tensor) -> float:
        return float((predictions == self.data.y_test).double().mean())


def device_problem(config: TrainConfig) -> str | None:
    """Why device evaluation (one response tensor of one output per layer, rebuilt from its design points) cannot
    evaluate a run of ``config``, or None."""
    if config.filter == "classical":
        return "it is a classical control run, whose layers run no circuit"
    spec = config.quanv
    if spec.channels > 1:
        return (f"its layers have {spec.channels} channels ({spec.filters_per_layer} filter(s) x "
                f"{spec.outputs_per_filter} output(s)); device evaluation rebuilds one filter with one output "
                "per layer")
    return None


@contextmanager
def _fixed_responses(model: ResQuNN, responses: Sequence[torch.Tensor] | None) -> Iterator[None]:
    """Each layer evaluates patches with the given response tensor instead of running its circuits."""
    if responses is None:
        yield
        return
    if len(responses) != len(model.layers):
        raise JobsError(f"{len(responses)} response tensors for a model with {len(model.layers)} layers")
    for layer, tensor in zip(model.layers, responses):
        layer.fix_response(tensor)
    try:
        yield
    finally:
        for layer in model.layers:
            layer.fix_response(None)
