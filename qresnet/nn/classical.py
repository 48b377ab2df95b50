"""The classical control: a layer of the same size as a quanvolution layer, with no circuit.

:class:`ClassicalFilterLayer` reads the same K x K windows with the same stride and padding,
gives the same output channels (N filters x K outputs each, read and averaged over input channels
as :mod:`qresnet.nn.quanv` says) and has exactly as many trainable parameters as the quantum layer
it replaces (P per filter). Each filter is a small network on the q = k*k patch values,

    f(x) = tanh(W2 tanh(W1 x + b1) + b2)        (K outputs, each in (-1, 1))

whose output range matches the quantum filter's [-1, 1] (tanh is the bounded nonlinearity). Its
weights are laid out hidden unit by hidden unit, each unit as (its K output weights, its bias, its
q input weights), then the K output biases; the filter trains the first P slots of that layout,
with just enough hidden units (ceil(P / (K + 1 + q))) to hold them, and the slots past P stay 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from qresnet.circuits import CircuitTemplate
from qresnet.errors import ConfigError
from qresnet.nn.quanv import as_channels, extract_patches, map_size


class ClassicalFilterLayer(nn.Module):
    """A classical stand-in for :class:`~qresnet.nn.QuanvLayer` (module docstring) with its interface: ``weight``
    (shape (P,) for one filter, (N, P) for N; freeze it with ``weight.requires_grad_(False)``), ``kernel_size``,
    ``stride``, ``padding``, ``num_channels``, ``output_shape``, and ``input_gradients`` (False by default: the
    same boundary as the quantum layer, so the same layers learn under every residual configuration).

    >>> from qresnet.circuits import quanv_filter
    >>> layer = ClassicalFilterLayer.like(quanv_filter(), seed=0)
    >>> layer.weight.numel(), layer.hidden, layer(torch.rand(2, 8, 8)).shape
    (16, 3, torch.Size([2, 4, 4]))
    """

    def __init__(
        self, kernel_size: int, outputs: int, parameters: int, *, filters: int = 1, stride: int | None = None,
        padding: str = "cover", input_gradients: bool = False, initial_weights: np.ndarray | None = None,
        seed: int | None = None,
    ):
        super().__init__()
        for name, value in (("kernel_size", kernel_size), ("outputs", outputs), ("parameters", parameters),
                            ("filters", filters), ("stride", kernel_size if stride is None else stride)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        self.kernel_size, self.stride = kernel_size, kernel_size if stride is None else stride
        self.padding, self.filters, self.num_outputs = padding, filters, outputs
        map_size(kernel_size, kernel_size, self.stride, padding)  # checks padding
        self.input_gradients = input_gradients
        q = kernel_size * kernel_size
        self.unit = outputs + 1 + q
        self.hidden = math.ceil(parameters / self.unit)
        self.num_parameters = parameters
        slots = self.hidden * self.unit + outputs
        # torch's default scales: 1/sqrt(fan in) for the first layer, 1/sqrt(hidden) for the second
        scale = np.tile(np.r_[np.full(outputs, 1 / math.sqrt(self.hidden)), np.full(1 + q, 1 / math.sqrt(q))],
                        self.hidden)
        scale = np.r_[scale, np.full(outputs, 1 / math.sqrt(self.hidden))][:parameters]
        shape = (parameters,) if filters == 1 else (filters, parameters)
        if initial_weights is None:
            start = np.random.default_rng(seed).uniform(-1.0, 1.0, (filters, parameters)) * scale
        else:
            start = np.asarray(initial_weights, dtype=float)
            if start.size != filters * parameters:
                raise ConfigError(f"initial_weights has {start.size} values; this layer has {filters * parameters}")
        self.weight = nn.Parameter(torch.as_tensor(start.reshape(shape), dtype=torch.float64).clone())
        # the untrained slots: constant zeros, rebuilt on construction, so not part of a checkpoint
        self.register_buffer("_fill", torch.zeros(filters, slots - parameters, dtype=torch.float64), persistent=False)

    @classmethod
    def like(cls, template: CircuitTemplate, *, filters: int = 1, stride: int | None = None, padding: str = "cover",
             input_gradients: bool = False, seed: int | None = None) -> ClassicalFilterLayer:
        """The control of a quanvolution layer of ``filters`` x ``template``: its kernel, outputs and weight count."""
        kernel = template.settings.get("kernel_size")
        if kernel is None or kernel * kernel != template.num_inputs:
            raise ConfigError(f"template {template.name} is not a k x k quanvolution filter")
        return cls(kernel, template.num_outputs, template.num_weights, filters=filters, stride=stride,
                   padding=padding, input_gradients=input_gradients, seed=seed)

    @property
    def num_channels(self) -> int:
        return self.filters * self.num_outputs

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        return (map_size(height, self.kernel_size, self.stride, self.padding),
                map_size(width, self.kernel_size, self.stride, self.padding))

    def filter_values(self, patches: torch.Tensor) -> torch.Tensor:
        """(..., q) patch values -> (..., N*K) outputs, filter-major."""
        full = torch.cat([self.weight.reshape(self.filters, -1), self._fill], dim=1)
        units = full[:, : self.hidden * self.unit].reshape(self.filters, self.hidden, self.unit)
        k = self.num_outputs
        w_out, b_hidden, w_in, b_out = units[..., :k], units[..., k], units[..., k + 1:], full[:, self.hidden * self.unit:]
        hidden = torch.tanh(torch.einsum("...q,nhq->...nh", patches, w_in) + b_hidden)
        out = torch.tanh(torch.einsum("...nh,nhk->...nk", hidden, w_out) + b_out)
        return out.reshape(*out.shape[:-2], self.filters * k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W) or (B, C, H, W) -> (B, H', W') for one output channel, (B, N*K, H', W') for several."""
        x = as_channels(x, "ClassicalFilterLayer").to(torch.float64)
        if not self.input_gradients:
            x = x.detach()
        out = self.filter_values(extract_patches(x, self.kernel_size, self.stride, self.padding))
        out = out[:, 0] if out.shape[1] == 1 else out.mean(dim=1)
        out = out.movedim(-1, 1)
        return out[:, 0] if out.shape[1] == 1 else out
