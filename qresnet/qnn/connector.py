"""``TorchConnector`` in float64, with the backward pass run only for what autograd asks.

The stock connector casts every result to float32 and evaluates the QNN's full backward
(parameter shift for weights, and inputs when enabled) on every call, even when autograd
needs neither. Here results stay float64 (so exact simulation is checkable to 1e-10), the
backward asks the QNN only for the gradients autograd needs, and the last forward and
backward are memoised per (inputs, weights): the design points of a filter are the same every
call, so repeated evaluations at unchanged weights (evaluation, audits) cost nothing. With the
engine's exact gradient (:class:`~qresnet.qnn.gradient.EngineGradient`), every call the engine's
reverse mode takes (filters, quantum heads) goes to it directly: the values, and, when autograd
will differentiate, a pullback that the backward calls once with autograd's cotangent (not a
Jacobian per weight: a head has 40 weights), and without gradients the exact values alone;
EstimatorQNN's per-call plumbing (binding every parameter by name) is skipped, training and
evaluation alike. Other exact cases get the values and the Jacobians from one engine call, so
their backward costs nothing more.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from qiskit_machine_learning.connectors import TorchConnector
from qiskit_machine_learning.neural_networks import NeuralNetwork

from qresnet.qnn.gradient import EngineGradient


class _Memo:
    """The last forward and backward results of a QNN, keyed on the exact input and weight bytes."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.forward: np.ndarray | None = None
        self.backward: tuple[np.ndarray | None, np.ndarray | None] | None = None
        # how forward was computed: "values" (qnn.forward), "engine values" (EngineGradient.qnn_values),
        # "jacobians" (EngineGradient.qnn_jacobians) or "pullback" (EngineGradient.qnn_pullback, whose pullback
        # the autograd context keeps)
        self.kind = "values"

    def lookup(self, inputs: np.ndarray, weights: np.ndarray) -> bytes:
        key = inputs.tobytes() + b"|" + weights.tobytes() + str(inputs.shape).encode()
        if key != self.key:
            self.key, self.forward, self.backward, self.kind = key, None, None, "values"
        return key

    def has_backward(self, need_input: bool) -> bool:
        """Whether the backward held answers a request that may need the input gradient."""
        return self.backward is not None and not (need_input and self.backward[0] is None)


class _QNNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor, weights: torch.Tensor, qnn: NeuralNetwork, memo: _Memo,
                grad_enabled: bool) -> torch.Tensor:
        x = inputs.detach().cpu().numpy().astype(float)
        w = weights.detach().cpu().numpy().astype(float)
        memo.lookup(x, w)
        need_input = grad_enabled and ctx.needs_input_grad[0] and qnn.input_gradients
        need_weights = grad_enabled and ctx.needs_input_grad[1]
        gradient = getattr(qnn, "gradient", None)
        engine = isinstance(gradient, EngineGradient)
        need = need_input or need_weights
        # the engine serves every call directly (EstimatorQNN's per-call binding of every parameter by name is
        # skipped): reverse mode where autograd will differentiate and it can, exact values without gradients
        kind = ("values" if not engine else "engine values" if not need
                else "pullback" if gradient.pulls_back(qnn) else "jacobians")
        # each kind of call keeps to one computation of the values (they agree to rounding, not bit for bit),
        # so that a run's numbers do not depend on what was memoised before (a resumed run equals a whole one)
        ctx.pullback = None
        if memo.forward is not None and (memo.kind != kind or kind == "pullback"):
            memo.forward = memo.backward = None
        if kind == "pullback":
            # the values now, the derivatives from autograd's cotangent in backward
            memo.forward, ctx.pullback = gradient.qnn_pullback(qnn, x, w, need_input)
            ctx.pullback_inputs = need_input
        elif memo.forward is None and kind == "engine values":
            memo.forward = gradient.qnn_values(qnn, x, w)
        elif memo.forward is None and kind == "jacobians":
            # exact gradients come with the values in one engine call: a training step needs both
            memo.forward, input_grad, weight_grad = gradient.qnn_jacobians(qnn, x, w, need_input)
            memo.backward = (input_grad, weight_grad)
        elif memo.forward is None:
            memo.forward = np.asarray(qnn.forward(x, w), dtype=float)
        memo.kind = kind
        ctx.qnn, ctx.memo, ctx.x, ctx.w = qnn, memo, x, w
        return torch.as_tensor(memo.forward, dtype=torch.float64, device=inputs.device)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        qnn, memo = ctx.qnn, ctx.memo
        need_input, need_weights = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_input or need_weights):
            return None, None, None, None, None
        g = grad_output.detach().to(torch.float64).cpu()
        if ctx.pullback is not None and (ctx.pullback_inputs or not need_input):
            d_inputs, d_weights = ctx.pullback(g.numpy())
            gi = None if not need_input or d_inputs is None else torch.as_tensor(d_inputs).to(grad_output.device)
            gw = torch.as_tensor(d_weights).to(grad_output.device) if need_weights else None
            return gi, gw, None, None, None
        memo.lookup(ctx.x, ctx.w)
        if not memo.has_backward(need_input and qnn.input_gradients):
            saved = qnn.input_gradients
            qnn.input_gradients = saved and need_input  # the input gradient only when autograd wants it
            try:
                memo.backward = qnn.backward(ctx.x, ctx.w)
            finally:
                qnn.input_gradients = saved
        input_grad, weight_grad = memo.backward
        gi = gw = None
        if need_input and input_grad is not None:
            gi = torch.einsum("bk,bki->bi", g, torch.as_tensor(input_grad, dtype=torch.float64)).to(grad_output.device)
        if need_weights and weight_grad is not None:
            gw = torch.einsum("bk,bkw->w", g, torch.as_tensor(weight_grad, dtype=torch.float64)).to(grad_output.device)
        return gi, gw, None, None, None


class Float64TorchConnector(TorchConnector):
    """A ``TorchConnector`` whose weights, outputs and gradients are float64.

    >>> from qiskit.circuit.library import real_amplitudes
    >>> from qiskit_machine_learning.neural_networks import EstimatorQNN
    >>> qc = real_amplitudes(2, reps=1)
    >>> qnn = EstimatorQNN(circuit=qc, weight_params=qc.parameters, default_precision=None)
    >>> Float64TorchConnector(qnn, initial_weights=[0.1, 0.2, 0.3, 0.4])(torch.zeros(1, 0)).dtype
    torch.float64
    """

    def __init__(self, neural_network: NeuralNetwork, initial_weights: np.ndarray | torch.Tensor | None = None):
        super().__init__(neural_network, initial_weights=None)
        if initial_weights is None:
            initial_weights = np.random.default_rng().uniform(-1, 1, neural_network.num_weights)
        self._weights.data = torch.as_tensor(np.asarray(initial_weights, dtype=float), dtype=torch.float64).clone()
        self._memo = _Memo()

    def forward(self, input_data: torch.Tensor | None = None) -> torch.Tensor:
        inputs = torch.zeros(1, 0, dtype=torch.float64) if input_data is None else input_data
        if inputs.shape[-1] != self.neural_network.num_inputs:
            raise ValueError(
                f"input_data has {inputs.shape[-1]} features per row; the QNN takes {self.neural_network.num_inputs}"
            )
        flat = inputs.reshape(int(np.prod(inputs.shape[:-1], dtype=int)), inputs.shape[-1])
        out = _QNNFunction.apply(flat, self._weights, self.neural_network, self._memo, torch.is_grad_enabled())
        return out.reshape(*inputs.shape[:-1], out.shape[-1])
