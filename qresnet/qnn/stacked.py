"""One QNN at S weight settings in one engine call, differentiable in each setting: the torch side of a stack.

    values = stacked_qnn(qnn, inputs, [w_1, ..., w_S])     # (S, N, K): the same inputs for every setting (filters)
    values = segmented_qnn(qnn, inputs, weights, segments) # (R, K): row r at weights[segments[r]]

A stack of runs (:mod:`qresnet.run.stack`) trains S models of one shape together: each layer's rows are
evaluated for every run's weights at once (:meth:`EngineGradient.evaluate_segmented`), and the backward gives
each run's weights the gradient of its own rows only: by the engine's segmented pullback (reverse mode, the
weight gradient summed over each setting's rows apart) or by the per-row weight Jacobians summed by setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from qiskit_machine_learning.neural_networks import EstimatorQNN

from qresnet.errors import CapabilityError, ConfigError
from qresnet.qnn.engine_gradient import Derivatives, EngineGradient, QNNCall

def stacks(qnn: Any) -> bool:
    """Whether ``qnn`` can be evaluated for many weight settings in one call: an EstimatorQNN on the engine's exact
    gradient (elsewhere, parameter shift or shots, each run keeps its own calls)."""
    return isinstance(qnn, EstimatorQNN) and isinstance(qnn.gradient, EngineGradient)


class _Segmented(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weights: torch.Tensor, inputs: torch.Tensor, qnn: EstimatorQNN, segments: np.ndarray,
                derivatives: Derivatives) -> torch.Tensor:
        want_weights, want_inputs = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (want_weights or want_inputs) or derivatives is Derivatives.NONE:
            derivatives, want_inputs = Derivatives.NONE, False
        w = weights.detach().cpu().numpy().astype(float)
        x = inputs.detach().cpu().numpy().astype(float)
        result = qnn.gradient.evaluate_segmented(qnn, x, w, segments, QNNCall(derivatives, input_gradients=want_inputs))
        ctx.result, ctx.segments, ctx.settings = result, segments, len(w)
        return torch.as_tensor(result.values, dtype=torch.float64)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        g = grad_output.detach().to(torch.float64).cpu().numpy()
        result = ctx.result
        if result.pullback is not None:
            d_inputs, d_weights = result.pullback(g)
            if len(d_weights) < ctx.settings:  # the last settings had no rows: the engine counts S from the segments
                d_weights = np.concatenate([d_weights, np.zeros((ctx.settings - len(d_weights), d_weights.shape[1]))])
        else:
            d_inputs = None if result.input_jacobian is None else np.einsum("rk,rki->ri", g, result.input_jacobian)
            per_row = np.einsum("rk,rkw->rw", g, result.weight_jacobian)
            d_weights = np.zeros((ctx.settings, per_row.shape[1]))
            np.add.at(d_weights, ctx.segments, per_row)
        return (torch.as_tensor(d_weights) if ctx.needs_input_grad[0] else None,
                torch.as_tensor(d_inputs) if ctx.needs_input_grad[1] else None, None, None, None)


def _wanted(derivatives: Derivatives) -> Derivatives:
    """``derivatives``, or none under ``torch.no_grad`` (an evaluation): a Function's ``needs_input_grad`` follows
    the inputs' ``requires_grad`` whatever the grad mode, so the engine would differentiate for nothing."""
    return derivatives if torch.is_grad_enabled() else Derivatives.NONE


def _checked(qnn: EstimatorQNN, caller: str) -> None:
    if not stacks(qnn):
        raise CapabilityError(f"{caller} needs an EstimatorQNN on the engine's exact gradient, not "
                              f"{type(getattr(qnn, 'gradient', qnn)).__name__}")


def segmented_qnn(qnn: EstimatorQNN, inputs: torch.Tensor, weights: Sequence[torch.Tensor] | torch.Tensor,
                  segments: np.ndarray, derivatives: Derivatives | None = None) -> torch.Tensor:
    """``qnn`` for rows r at ``inputs[r]`` (R, I) with weights ``weights[segments[r]]`` (S settings (W,) each):
    (R, K), one engine call. The gradient reaches each setting's weights from its own rows only, and the inputs
    where they require it (a QNN with input gradients). ``derivatives``: PULLBACK (the default where the engine
    pulls the QNN back: for the 2x2 filter's 81 design points at S = 1 to 16 it took 0.3x to 0.9x the time of
    the Jacobians, benchmarks/stacked.py) or JACOBIANS."""
    _checked(qnn, "segmented_qnn")
    if derivatives is None:
        derivatives = Derivatives.PULLBACK if qnn.gradient.pulls_back(qnn) else Derivatives.JACOBIANS
    if derivatives is Derivatives.NONE:
        raise ConfigError("segmented_qnn(derivatives=NONE): the derivatives come when the weights require them")
    w = weights if isinstance(weights, torch.Tensor) else torch.stack([v.to(torch.float64) for v in weights])
    x = inputs if qnn.input_gradients else inputs.detach()
    return _Segmented.apply(w.to(torch.float64), x.to(torch.float64), qnn, np.asarray(segments, dtype=np.int64),
                            _wanted(derivatives))


def stacked_qnn(qnn: EstimatorQNN, inputs: torch.Tensor | np.ndarray, weights: Sequence[torch.Tensor],
                derivatives: Derivatives | None = None) -> torch.Tensor:
    """``qnn`` at the same ``inputs`` (N, I) for each weight tensor (W,) of ``weights``: (S, N, K), one engine call
    (:func:`segmented_qnn` on the N x S rows); the gradient reaches each weight that requires it. The inputs (a
    filter's design points) are not differentiated."""
    x = torch.as_tensor(np.asarray(inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else inputs,
                                   dtype=float))
    x = x.reshape(len(x), -1)
    settings = len(weights)
    segments = np.repeat(np.arange(settings), len(x))
    return segmented_qnn(qnn, x.repeat(settings, 1), weights, segments, derivatives).reshape(settings, len(x), -1)
