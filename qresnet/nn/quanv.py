"""The quanvolution layer: a filter template evaluated through EstimatorQNN + TorchConnector.

Maps. A layer reads a map of shape (B, H, W) (one channel) or (B, C, H, W) and slides a K x K
window with stride S over it (:func:`extract_patches`). Padding ``cover`` (the default, today's
behaviour) zero-pads the bottom and right so that the windows cover every pixel: ceil((H - K) / S) + 1
outputs per side, ceil(H / K) for S = K; ``valid`` keeps whole windows only: floor((H - K) / S) + 1, as
torch's ``conv2d``. A kernel larger than the map is refused.

Channels. With C > 1 input channels, every channel is filtered independently by the same filter(s)
and the C outputs are averaged (as values in [-1, 1], so the next layer's input stays in range); one
channel is filtered as it always was. A layer of N filters (``filters``) with K outputs each
(``per-qubit`` readout: K = k*k) gives N*K output channels, filter-major (channel n*K + j is
output j of filter n); one channel comes out as (B, H', W'), several as (B, N*K, H', W').
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from qiskit import QuantumCircuit
from qiskit.primitives import BaseEstimatorV2
from qiskit.quantum_info import SparsePauliOp
from torch import nn
from torch.func import functional_call

from qresnet.choices import MODES
from qresnet.circuits import CircuitTemplate
from qresnet.errors import ConfigError, TemplateError
from qresnet.nn.module import QuantumModule
from qresnet.qnn import design_points, evaluate_response, make_qnn, response_tensor
from qresnet.residual import map_size


def as_channels(x: torch.Tensor, who: str) -> torch.Tensor:
    """(B, H, W) or (B, C, H, W) -> (B, C, H, W)."""
    if x.dim() == 3:
        return x[:, None]
    if x.dim() != 4:
        raise ConfigError(f"{who} takes (batch, height, width) or (batch, channels, height, width) maps, "
                          f"got shape {tuple(x.shape)}")
    return x


def extract_patches(x: torch.Tensor, kernel: int, stride: int, padding: str = "cover") -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H', W', k*k), each patch row-major (torch's ``unfold``)."""
    b, c, h, w = x.shape
    oh, ow = map_size(h, kernel, stride, padding), map_size(w, kernel, stride, padding)
    pad_h, pad_w = (oh - 1) * stride + kernel - h, (ow - 1) * stride + kernel - w
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, max(pad_w, 0), 0, max(pad_h, 0)))
    cols = F.unfold(x.reshape(b * c, 1, *x.shape[-2:]), kernel, stride=stride)  # (B*C, k*k, H'*W')
    return cols.transpose(1, 2).reshape(b, c, oh, ow, kernel * kernel)


class QuanvLayer(QuantumModule):
    """A 2D quanvolution: every k x k patch (stride ``stride``, default k) through ``filters`` filter circuits.

    ``mode="response"`` runs the QNN on the filter's 3^q design points and evaluates every
    patch as a contraction of the response tensor (docs/design.md section 3); ``"per-patch"`` runs
    the QNN on every patch. Both differentiate the weights through ``TorchConnector``: exactly on
    the engine in exact mode, by parameter shift elsewhere (``gradient``, see
    :func:`qresnet.qnn.make_gradient`). ``input_gradients=False`` (the paper's measurement boundary) gives
    the layer's input no gradient; ``True`` lets it cross (analytic in response mode,
    through the QNN's gradient in per-patch mode). Maps and channels: the module docstring.

    ``filters`` N > 1 gives N independent filters sharing one QNN; their weights are one parameter
    ``weight`` of shape (N, P) (one filter's is the connector's, shape (P,), as always). Weights start
    uniform in [-pi, pi) from ``seed``, filter by filter (filter 0 starts as a one-filter layer would).

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
        stride: int | None = None,
        padding: str = "cover",
        filters: int = 1,
    ):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r} must be one of {', '.join(MODES)}")
        kernel = template.settings.get("kernel_size")
        if kernel is None or kernel * kernel != template.num_inputs:
            raise TemplateError(f"template {template.name} is not a k x k quanvolution filter")
        stride = kernel if stride is None else stride
        if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
            raise ConfigError(f"stride={stride!r} must be a positive integer")
        if not isinstance(filters, int) or isinstance(filters, bool) or filters < 1:
            raise ConfigError(f"filters={filters!r} must be a positive integer")
        map_size(kernel, kernel, stride, padding)  # checks padding
        check = template.check_rotations(circuit)
        if mode == "response" and not check.ok:
            raise ConfigError(
                f"mode='response' needs every input in exactly one rotation ({check.describe()}); use mode='per-patch'"
            )
        self.template, self.kernel_size, self.mode = template, kernel, mode
        self.stride, self.padding, self.filters = stride, padding, filters
        self.input_gradients = input_gradients
        # response mode evaluates constant design points, so its QNN never needs input gradients
        qnn = make_qnn(template, estimator, circuit, observables,
                       input_gradients=input_gradients and mode == "per-patch", gradient=gradient)
        if filters == 1:
            self._connect(qnn, initial_weights, seed)
        else:
            shape = (filters, template.num_weights)
            start = (np.random.default_rng(seed).uniform(-np.pi, np.pi, shape) if initial_weights is None
                     else np.asarray(initial_weights, dtype=float).reshape(shape))
            self._connect(qnn, start[0], seed)
            # the filters share the connector (and its QNN) with their own weights, passed per call: keep the
            # connector out of the module tree, so that its own weight is not a second, unused parameter
            object.__setattr__(self, "connector", self._modules.pop("connector"))
            self.bank = nn.Parameter(torch.as_tensor(start, dtype=torch.float64).clone())
        if mode == "response":
            self.register_buffer("design_inputs", torch.as_tensor(design_points(template.num_inputs, template.input_scale)))
        self.fixed_response: torch.Tensor | None = None

    @property
    def weight(self) -> nn.Parameter:
        """The trainable weights: shape (P,) for one filter, (N, P) for N."""
        return self.connector.weight if self.filters == 1 else self.bank

    @property
    def num_channels(self) -> int:
        """Output channels: filters x the template's outputs."""
        return self.filters * self.template.num_outputs

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') of the map this layer makes from an (H, W) one."""
        return (map_size(height, self.kernel_size, self.stride, self.padding),
                map_size(width, self.kernel_size, self.stride, self.padding))

    def filter_outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Every filter's outputs at ``inputs`` (..., q), concatenated filter-major: (..., N*K): the circuits run
        at those inputs, whatever the mode."""
        if self.filters == 1:
            return self.connector(inputs)
        return torch.cat([functional_call(self.connector, {"weight": self.bank[n]}, (inputs,))
                          for n in range(self.filters)], dim=-1)

    def fix_response(self, tensor: torch.Tensor | None) -> None:
        """Evaluate patches with ``tensor`` (a response tensor, e.g. rebuilt from device values) instead of
        running the circuits; ``None`` runs them again. Response mode only. A tensor with a leading run axis
        (R, 3, ..., 3, C) holds R runs' responses (a stack, :mod:`qresnet.run.stack`): the layer's input batch
        is then R equal groups of samples, run-major, each evaluated with its own run's response."""
        if tensor is not None:
            if self.mode != "response":
                raise ConfigError("a fixed response tensor needs mode='response'")
            expected = (3,) * self.template.num_inputs + (self.num_channels,)
            if tuple(tensor.shape) != expected and tuple(tensor.shape[1:]) != expected:
                raise ConfigError(f"response tensor of shape {tuple(tensor.shape)}; this layer's is {expected}, "
                                  f"or (runs, *{expected}) for a stack")
        self.fixed_response = tensor

    def _runs(self) -> int | None:
        """R when the fixed response holds a stack of R runs' (:meth:`fix_response`), else None."""
        t = self.fixed_response
        return None if t is None or t.dim() == self.template.num_inputs + 1 else t.shape[0]

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W) -> (B, H', W', k*k); (B, C, H, W) -> (B, C, H', W', k*k) (module docstring)."""
        out = extract_patches(as_channels(x, "QuanvLayer"), self.kernel_size, self.stride, self.padding)
        return out[:, 0] if x.dim() == 3 else out

    def response(self) -> torch.Tensor:
        """The response tensor T, shape (3,)*q + (N*K,), for the current weights (or the fixed one)."""
        if self.fixed_response is not None:
            return self.fixed_response
        return response_tensor(self.filter_outputs(self.design_inputs), self.template.num_inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W) or (B, C, H, W) -> (B, H', W') for one output channel, (B, N*K, H', W') for several."""
        x = as_channels(x, "QuanvLayer")
        if torch.isnan(x).any():
            raise ConfigError("QuanvLayer input contains NaN")
        x = x.to(torch.float64)
        if not self.input_gradients:
            x = x.detach()  # the measurement boundary: measured values re-encoded carry no gradient
        patches = extract_patches(x, self.kernel_size, self.stride, self.padding)
        if self.mode == "response":
            runs = self._runs()
            if runs is not None and len(patches) % runs:
                raise ConfigError(f"a stack of {runs} runs needs a batch of {runs} equal groups, got {len(patches)}")
            out = evaluate_response(self.response(), patches, self.template.input_scale, runs)
        else:
            out = self.filter_outputs(patches)
        out = out[:, 0] if out.shape[1] == 1 else out.mean(dim=1)  # input channels averaged (module docstring)
        out = out.movedim(-1, 1)  # (B, N*K, H', W')
        return out[:, 0] if out.shape[1] == 1 else out
