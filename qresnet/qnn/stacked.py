"""One QNN at S weight settings in one engine call, differentiable in each setting: the torch side of a stack.

    values = stacked_qnn(qnn, inputs, [w_1, ..., w_S])    # (S, N, K); autograd reaches every w_s

A stack of runs (:mod:`qresnet.run.stack`) trains S models of one shape together: each layer's design points
are evaluated for every run's weights at once (:meth:`EngineGradient.evaluate_stacked`), and the backward
gives each run's weights the gradient of its own outputs only, from the per-setting weight Jacobians.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from qiskit_machine_learning.neural_networks import EstimatorQNN

from qresnet.errors import CapabilityError
from qresnet.qnn.engine_gradient import EngineGradient


def stacks(qnn: Any) -> bool:
    """Whether ``qnn`` can be evaluated for many weight settings in one call: an EstimatorQNN on the engine's exact
    gradient (elsewhere, parameter shift or shots, each run keeps its own calls)."""
    return isinstance(qnn, EstimatorQNN) and isinstance(qnn.gradient, EngineGradient)


class _Stacked(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weights: torch.Tensor, qnn: EstimatorQNN, inputs: np.ndarray) -> torch.Tensor:
        w = weights.detach().cpu().numpy().astype(float)
        values, jacobians = qnn.gradient.evaluate_stacked(qnn, inputs, w, jacobians=ctx.needs_input_grad[0])
        ctx.jacobians = jacobians
        return torch.as_tensor(values, dtype=torch.float64)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        g = grad_output.detach().to(torch.float64).cpu().numpy()
        return torch.as_tensor(np.einsum("snk,snkw->sw", g, ctx.jacobians)), None, None


def stacked_qnn(qnn: EstimatorQNN, inputs: torch.Tensor | np.ndarray, weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """``qnn`` at ``inputs`` (N, I) for each weight tensor (W,) of ``weights``: (S, N, K), one engine call; the
    gradient of the result reaches each weight that requires it (none is computed when none does)."""
    if not stacks(qnn):
        raise CapabilityError(f"stacked_qnn needs an EstimatorQNN on the engine's exact gradient, not "
                              f"{type(getattr(qnn, 'gradient', qnn)).__name__}")
    x = np.asarray(inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else inputs, dtype=float)
    return _Stacked.apply(torch.stack([w.to(torch.float64) for w in weights]), qnn, x)
