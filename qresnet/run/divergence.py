"""Training that goes wrong says so: damaged data, and a non-finite loss, gradient, weight or evaluation, stop the
run in one line naming the epoch and the step, before anything of that step is saved (so the last good checkpoint
stays the newest); a loss that grows past :data:`DIVERGENCE_FACTOR` times its start warns once.

The bound: cross-entropy over C classes starts near ln C (a uniform guess) and falls as the model
learns. A batch loss above ``DIVERGENCE_FACTOR x max(first batch loss, ln C)`` (about 6.9 for two
classes, 23 for ten) means every image of the batch is confidently wrong: the optimizer has thrown
the model away, almost always because the learning rate is too large. It is a warning, not an
error: the run may recover, and its numbers are what they are.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from qresnet.data import Dataset
from qresnet.errors import DataError, TrainingError

DIVERGENCE_FACTOR = 10.0


def check_data(data: Dataset) -> None:
    """Refuse images holding NaN or inf: every loss computed from them would be NaN."""
    for name, images in (("training", data.x_train), ("test", data.x_test)):
        bad = ~torch.isfinite(images)
        if bool(bad.any()):
            first = int(bad.reshape(len(images), -1).any(1).nonzero()[0, 0])
            raise DataError(f"the {name} images hold {int(bad.sum())} non-finite value(s) (NaN or inf), the first in "
                            f"image {first} of {len(images)}: the data is damaged; fix or fetch it again")


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every entry of ``tensors`` is finite, from one norm per tensor in one call (a norm is finite when
    every entry is; one that overflows only sends :meth:`DivergenceWatch.step` to its per-tensor check, which
    decides). A stack checks all its runs' weights at once, and each run's own only when this says no."""
    tensors = list(tensors)
    return not tensors or all(math.isfinite(n) for n in torch.stack(torch._foreach_norm(tensors)).tolist())


class DivergenceWatch:
    """Checks each training step of one run (see the module's docstring); warns at most once per run."""

    def __init__(self, num_classes: int, lr: float, checkpoints: Path):
        self.num_classes, self.lr, self.checkpoints = num_classes, lr, checkpoints
        self.start: float | None = None
        self.warned = False

    def stop(self, what: str, epoch: int, step: int | None = None) -> TrainingError:
        """The error that ends the run: ``what`` happened at ``epoch`` (and ``step``)."""
        at = f"epoch {epoch}" + ("" if step is None else f", step {step}")
        return TrainingError(f"{what} at {at}: training stopped before saving it, and the last good checkpoint is "
                             f"kept in {self.checkpoints}; lower --lr (now {self.lr:g}) and train again with a new "
                             "--out or --overwrite")

    def loss(self, loss: float, epoch: int, step: int) -> None:
        """After ``step`` (1-based within ``epoch``): stop on a non-finite loss, warn past the bound."""
        value = float(loss)
        if not math.isfinite(value):
            raise self.stop(f"the loss became {value}", epoch, step)
        if self.start is None:
            self.start = value
            return
        bound = DIVERGENCE_FACTOR * max(self.start, math.log(self.num_classes))
        if value > bound and not self.warned:
            self.warned = True
            tqdm.write(f"warning: the training loss is {value:.3g} at epoch {epoch}, step {step}, more than "
                  f"{DIVERGENCE_FACTOR:g}x its start ({self.start:.3g}; ln {self.num_classes} = "
                  f"{math.log(self.num_classes):.3g} for a uniform guess): the run is diverging; lower --lr "
                  f"(now {self.lr:g})", file=sys.stderr)  # above a progress bar, not inside it

    def step(self, model: torch.nn.Module, epoch: int, step: int) -> None:
        """After the optimizer step: stop if a gradient or a weight is not finite (an overflowing update), before
        the step's state reaches a checkpoint (:func:`all_finite` first: the names are looked up only when not)."""
        if all_finite(t for p in model.parameters() for t in (p, p.grad) if t is not None):
            return
        for name, parameter in model.named_parameters():
            if parameter.grad is not None and not bool(torch.isfinite(parameter.grad).all()):
                raise self.stop(f"the gradient of {name} became non-finite", epoch, step)
            if not bool(torch.isfinite(parameter).all()):
                raise self.stop(f"the weight {name} became non-finite", epoch, step)

    def evaluation(self, losses: dict[str, float], epoch: int) -> None:
        """After an epoch's evaluation: stop before a non-finite loss reaches metrics.csv and a checkpoint."""
        for name, value in losses.items():
            if not math.isfinite(value):
                raise self.stop(f"the {name} became {value}", epoch)
