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
from collections.abc import Sequence
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
    return measured_runs([model], [loss.item()], [int((logits.argmax(1) == y).sum())], [len(y)])[0]


def measured_runs(models: Sequence[Trainable], losses: Sequence[float], correct: Sequence[int],
                  sizes: Sequence[int]) -> list[StepOutcome]:
    """:func:`measured` for each of several models (a stack's runs), given each run's loss value, correct count and
    batch size: every gradient norm in one call (the same per-tensor norms as ``tensor.norm()``), so that a stack
    does not pay a few calls per run."""
    grads: list[torch.Tensor] = []
    layouts = []
    for model in models:
        layer = [w.grad for w in model.quantum_parameters()]
        head = [p.grad for p in model.head.parameters() if p.grad is not None]
        layouts.append((layer, len(head)))
        grads.extend(g for g in layer if g is not None)
        grads.extend(head)
    norms = iter(torch.stack(torch._foreach_norm(grads)).tolist() if grads else [])
    out = []
    for (layer, heads), value, right, size in zip(layouts, losses, correct, sizes):
        layers = tuple(0.0 if g is None else next(norms) for g in layer)
        head = math.sqrt(sum(next(norms) ** 2 for _ in range(heads)))
        out.append(StepOutcome(value, right, size, layers, head))
    return out
