"""``TorchConnector`` in float64, with the backward pass run only for what autograd asks.

The stock connector casts every result to float32 and evaluates the QNN's full backward
(parameter shift for weights, and inputs when enabled) on every call, even when autograd
needs neither. Here results stay float64 (so exact simulation is checkable to 1e-10), the
backward asks the QNN only for the gradients autograd needs (a QNN that computes input
gradients nobody wants is asked through a weights-only copy of it, never by changing it), and
the last forward and backward are memoised per (inputs, weights): the design points of a filter
are the same every call, so repeated evaluations at unchanged weights (evaluation, audits) cost
nothing. With the engine's exact gradient (:class:`~qresnet.qnn.EngineGradient`), every call
goes to it directly as a typed :class:`~qresnet.qnn.QNNCall`: where autograd will differentiate
and the engine's reverse mode takes the QNN (filters, quantum heads), the values and a pullback
that the backward calls once with autograd's cotangent (not a Jacobian per weight: a head has 40
weights); elsewhere the values and the Jacobians from one engine call, so their backward costs
nothing more; without gradients the exact values alone. EstimatorQNN's per-call plumbing (binding
every parameter by name) is skipped, training and evaluation alike.
"""

from __future__ import annotations

from copy import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from qiskit_machine_learning.connectors import TorchConnector
from qiskit_machine_learning.neural_networks import EstimatorQNN, NeuralNetwork

from qresnet.qnn.engine_gradient import Derivatives, EngineGradient, QNNCall


class _Memo:
    """The last forward and backward results of a QNN, keyed on the exact input and weight bytes."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.forward: np.ndarray | None = None
        self.backward: tuple[np.ndarray | None, np.ndarray | None] | None = None
        # how forward was computed: None for the QNN's own ``forward``, else the derivatives of the engine call
        # (EngineGradient.evaluate) that gave it; with PULLBACK, the autograd context keeps the pullback
        self.source: Derivatives | None = None

    def lookup(self, inputs: np.ndarray, weights: np.ndarray) -> bytes:
        key = inputs.tobytes() + b"|" + weights.tobytes() + str(inputs.shape).encode()
        if key != self.key:
            self.key, self.forward, self.backward, self.source = key, None, None, None
        return key

    def has_backward(self, need_input: bool) -> bool:
        """Whether the backward held answers a request that may need the input gradient."""
        return self.backward is not None and not (need_input and self.backward[0] is None)


@dataclass
class _Bridge:
    """What a connector's autograd function works with: its QNN, the memo, and a weights-only copy of the QNN."""

    qnn: NeuralNetwork
    memo: _Memo = field(default_factory=_Memo)
    # a copy of ``qnn`` made when first needed, sharing its circuit, observables and gradient (which a QNN does not
    # change), with input gradients off
    weights_only: NeuralNetwork | None = None

    def engine_call(self, need_input: bool, need_weights: bool) -> QNNCall | None:
        """The engine call a forward makes (None: the QNN's own ``forward`` and ``backward``): reverse mode where
        autograd will differentiate and the engine can, Jacobians where it cannot, exact values without gradients."""
        qnn = self.qnn
        if not (isinstance(qnn, EstimatorQNN) and isinstance(qnn.gradient, EngineGradient)):
            return None
        if not (need_input or need_weights):
            return QNNCall()
        derivatives = Derivatives.PULLBACK if qnn.gradient.pulls_back(qnn) else Derivatives.JACOBIANS
        return QNNCall(derivatives, input_gradients=need_input)

    def differentiating(self, input_gradients: bool) -> NeuralNetwork:
        """The QNN whose ``backward`` gives the gradients asked for: the QNN itself, or, when it computes input
        gradients nobody wants, a shallow copy of it that does not (made once; the QNN itself is never changed)."""
        if input_gradients or not self.qnn.input_gradients:
            return self.qnn
        if self.weights_only is None:
            self.weights_only = copy(self.qnn)
            self.weights_only.input_gradients = False
        return self.weights_only


class _QNNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor, weights: torch.Tensor, bridge: _Bridge, grad_enabled: bool
                ) -> torch.Tensor:
        qnn, memo = bridge.qnn, bridge.memo
        x = inputs.detach().cpu().numpy().astype(float)
        w = weights.detach().cpu().numpy().astype(float)
        memo.lookup(x, w)
        need_input = grad_enabled and ctx.needs_input_grad[0] and qnn.input_gradients
        need_weights = grad_enabled and ctx.needs_input_grad[1]
        call = bridge.engine_call(need_input, need_weights)
        source = None if call is None else call.derivatives
        # each source keeps to one computation of the values (they agree to rounding, not bit for bit), so that a
        # run's numbers do not depend on what was memoised before (a resumed run equals a whole one)
        ctx.pullback = None
        if memo.forward is not None and (memo.source is not source or source is Derivatives.PULLBACK):
            memo.forward = memo.backward = None
        if source is Derivatives.PULLBACK:
            # the values now, the derivatives from autograd's cotangent in backward
            result = qnn.gradient.evaluate(qnn, x, w, call)
            memo.forward, ctx.pullback = result.values, result.pullback
        elif memo.forward is None and call is not None:
            result = qnn.gradient.evaluate(qnn, x, w, call)
            memo.forward = result.values
            if source is Derivatives.JACOBIANS:  # a training step needs both: they come from one engine call
                memo.backward = (result.input_jacobian, result.weight_jacobian)
        elif memo.forward is None:
            memo.forward = np.asarray(qnn.forward(x, w), dtype=float)
        memo.source = source
        ctx.bridge, ctx.x, ctx.w = bridge, x, w
        return torch.as_tensor(memo.forward, dtype=torch.float64, device=inputs.device)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        qnn, memo = ctx.bridge.qnn, ctx.bridge.memo
        need_input, need_weights = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_input or need_weights):
            return None, None, None, None
        g = grad_output.detach().to(torch.float64).cpu()
        if ctx.pullback is not None:  # it carries every gradient the QNN gives here (inputs: if the forward asked)
            d_inputs, d_weights = ctx.pullback(g.numpy())
            gi = None if not need_input or d_inputs is None else torch.as_tensor(d_inputs).to(grad_output.device)
            gw = torch.as_tensor(d_weights).to(grad_output.device) if need_weights else None
            return gi, gw, None, None
        memo.lookup(ctx.x, ctx.w)
        want_input = need_input and qnn.input_gradients  # the input gradient only when autograd wants it
        if not memo.has_backward(want_input):
            memo.backward = ctx.bridge.differentiating(want_input).backward(ctx.x, ctx.w)
        input_grad, weight_grad = memo.backward
        gi = gw = None
        if need_input and input_grad is not None:
            gi = torch.einsum("bk,bki->bi", g, torch.as_tensor(input_grad, dtype=torch.float64)).to(grad_output.device)
        if need_weights and weight_grad is not None:
            gw = torch.einsum("bk,bkw->w", g, torch.as_tensor(weight_grad, dtype=torch.float64)).to(grad_output.device)
        return gi, gw, None, None


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
        self._bridge = _Bridge(neural_network)

    def forward(self, input_data: torch.Tensor | None = None) -> torch.Tensor:
        inputs = torch.zeros(1, 0, dtype=torch.float64) if input_data is None else input_data
        if inputs.shape[-1] != self.neural_network.num_inputs:
            raise ValueError(
                f"input_data has {inputs.shape[-1]} features per row; the QNN takes {self.neural_network.num_inputs}"
            )
        flat = inputs.reshape(int(np.prod(inputs.shape[:-1], dtype=int)), inputs.shape[-1])
        out = _QNNFunction.apply(flat, self._weights, self._bridge, torch.is_grad_enabled())
        return out.reshape(*inputs.shape[:-1], out.shape[-1])
