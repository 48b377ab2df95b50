"""The quanvolution layer: a filter template evaluated through EstimatorQNN + TorchConnector."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from qiskit import QuantumCircuit
from qiskit.primitives import BaseEstimatorV2
from qiskit.quantum_info import SparsePauliOp

from qresnet.choices import MODES
from qresnet.circuits import CircuitTemplate
from qresnet.errors import ConfigError, TemplateError
from qresnet.nn.module import QuantumModule
from qresnet.qnn import design_points, evaluate_response, make_qnn, response_tensor


class QuanvLayer(QuantumModule):
    """A 2D quanvolution: every k x k patch (stride k) of a one-channel map through a filter circuit.

    ``mode="response"`` runs the QNN on the filter's 3^q design points and evaluates every
    patch as a contraction of the response tensor (docs/design.md section 3); ``"per-patch"`` runs
    the QNN on every patch. Both differentiate the weights through ``TorchConnector``: exactly on
    the engine in exact mode, by parameter shift elsewhere (``gradient``, see
    :func:`qresnet.qnn.make_gradient`). ``input_gradients=False`` (the paper's measurement boundary) gives
    the layer's input no gradient; ``True`` lets it cross (analytic in response mode,
    through the QNN's gradient in per-patch mode). Maps whose size is not a multiple of k are zero-padded
    at the bottom and right.

    ``circuit`` and ``observables`` default to the template's logical ones; pass a backend's
    transpiled circuit and mapped observables to run on that backend's estimator.

    >>> from qiskit_aer.primitives import EstimatorV2
    >>> from qresnet.circuits import quanv_filter
    >>> layer = QuanvLayer(quanv_filter(), EstimatorV2(options={"default_precision": 0.0}), seed=0)
    >>> layer(torch.rand(2, 8, 8, dtype=torch.float64)).shape
    torch.Size([2, 4, 4])
    """

    def __init__(
        self,
        template: CircuitTemplate,
        estimator: BaseEstimatorV2,
        *,
        circuit: QuantumCircuit | None = None,
        observables: Sequence[SparsePauliOp] | None = None,
        mode: str = "response",
        input_gradients: bool = False,
        gradient: str = "auto",
        initial_weights: np.ndarray | None = None,
        seed: int | None = None,
    ):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r} must be one of {', '.join(MODES)}")
        kernel = template.settings.get("kernel_size")
        if kernel is None or kernel * kernel != template.num_qubits:
            raise TemplateError(f"template {template.name} is not a k x k quanvolution filter")
        check = template.check_rotations(circuit)
        if mode == "response" and not check.ok:
            raise ConfigError(
                f"mode='response' needs every input in exactly one rotation ({check.describe()}); use mode='per-patch'"
            )
        self.template, self.kernel_size, self.mode = template, kernel, mode
        self.input_gradients = input_gradients
        # response mode evaluates constant design points, so its QNN never needs input gradients
        self._connect(make_qnn(template, estimator, circuit, observables,
                               input_gradients=input_gradients and mode == "per-patch", gradient=gradient),
                      initial_weights, seed)
        if mode == "response":
            self.register_buffer("design_inputs", torch.as_tensor(design_points(template.num_inputs, template.input_scale)))
        self.fixed_response: torch.Tensor | None = None

    def fix_response(self, tensor: torch.Tensor | None) -> None:
        """Evaluate patches with ``tensor`` (a response tensor, e.g. rebuilt from device values) instead of
        running the circuits; ``None`` runs them again. Response mode only."""
        if tensor is not None:
            if self.mode != "response":
                raise ConfigError("a fixed response tensor needs mode='response'")
            expected = (3,) * self.template.num_inputs + (self.num_outputs,)
            if tuple(tensor.shape) != expected:
                raise ConfigError(f"response tensor of shape {tuple(tensor.shape)}; this layer's is {expected}")
        self.fixed_response = tensor

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W) -> (B, H', W', k*k), zero-padding H and W up to multiples of k."""
        k = self.kernel_size
        x = F.pad(x, (0, (-x.shape[-1]) % k, 0, (-x.shape[-2]) % k))
        b, h, w = x.shape
        return x.reshape(b, h // k, k, w // k, k).permute(0, 1, 3, 2, 4).reshape(b, h // k, w // k, k * k)

    def response(self) -> torch.Tensor:
        """The response tensor T, shape (3,)*q + (K,), for the current weights (or the fixed one)."""
        if self.fixed_response is not None:
            return self.fixed_response
        return response_tensor(self.connector(self.design_inputs), self.template.num_inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W) -> (B, H', W') for one output, (B, K, H', W') for K outputs."""
        if x.dim() == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() != 3:
            raise ConfigError(f"QuanvLayer takes (batch, height, width) maps, got shape {tuple(x.shape)}")
        if torch.isnan(x).any():
            raise ConfigError("QuanvLayer input contains NaN")
        x = x.to(torch.float64)
        if not self.input_gradients:
            x = x.detach()  # the measurement boundary: measured values re-encoded carry no gradient
        patches = self.patches(x)
        if self.mode == "response":
            out = evaluate_response(self.response(), patches, self.template.input_scale)
        else:
            out = self.connector(patches)
        out = out.movedim(-1, 1)  # (B, K, H', W')
        return out[:, 0] if out.shape[1] == 1 else out
