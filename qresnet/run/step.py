"""One training step, the unit every trainer and every benchmark figure counts.

    outcome = train_step(model, optimizer, images, labels)
    outcome.loss, outcome.correct, outcome.layer_grad_norms, outcome.head_grad_norm

Forward, cross-entropy, a check that the loss is finite (before any weight moves), backward, the
gradient norm of each quantum layer's weights and of the head, the optimizer's step. ``train``
calls it for every batch and ``benchmarks/_common.py`` times it, so the benchmarks time the
product, not a copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from qresnet.errors import TrainingError


class Trainable(Protocol):
    """A model with quantum layers and a head: :class:`qresnet.nn.ResQuNN`, or a benchmark's peer model."""

    head: torch.nn.Module

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def quantum_parameters(self) -> list[torch.nn.Parameter]: ...


@dataclass(frozen=True)
class StepOutcome:
    """What one step measured: the batch's mean loss, how many it classified right, its size, and the gradient
    norm of each quantum layer's weights (0 where none flowed: a frozen or unreached layer) and of the head."""

    loss: float
    correct: int
    size: int
    layer_grad_norms: tuple[float, ...]
    head_grad_norm: float


def train_step(model: Trainable, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> StepOutcome:
    """One optimizer step on the batch ``(x, y)``; a non-finite loss raises :class:`TrainingError` with no step taken."""
    optimizer.zero_grad()
    logits = model(x)
    loss = finite_loss(logits, y)
    loss.backward()
    outcome = measured(model, logits, loss, y)
    optimizer.step()
    return outcome


def finite_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The batch's mean cross-entropy; a non-finite one raises :class:`TrainingError` (no weight has moved yet)."""
    loss = torch.nn.functional.cross_entropy(logits, y)
    if not torch.isfinite(loss):
        raise TrainingError(f"the loss became {loss.item()}")
    return loss


def measured(model: Trainable, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> StepOutcome:
    """What a step measured, after its backward and before its optimizer step (:class:`StepOutcome`)."""
    layers = tuple(0.0 if w.grad is None else float(w.grad.norm()) for w in model.quantum_parameters())
    head = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in model.head.parameters() if p.grad is not None))
    return StepOutcome(loss.item(), int((logits.argmax(1) == y).sum()), len(y), layers, head)
