"""ResQuNN: stacked quanvolution layers with residual skips and a classical (linear) or quantum head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from qresnet.errors import ConfigError
from qresnet.nn.classical import ClassicalFilterLayer
from qresnet.nn.head import QuantumHead
from qresnet.nn.quanv import QuanvLayer
from qresnet.nn.residual import combine
from qresnet.residual import ResidualSpec


class ResQuNN(nn.Module):
    """L quanvolution layers, a :class:`ResidualSpec`, and a head on the flattened final map.

    The layers share one kernel size, stride and padding; they may have several output channels
    (``per-qubit`` readout, several filters: :mod:`qresnet.nn.quanv`), and sums are channel by channel
    (:mod:`qresnet.nn.residual`). ``layers`` may be :class:`ClassicalFilterLayer` controls.
    ``head=None`` is a linear layer (float64) on the flattened final map (channels x height x width);
    a :class:`QuantumHead` must encode that many features and measure one qubit per class.

    >>> from qiskit_aer.primitives import EstimatorV2
    >>> from qresnet.circuits import quanv_filter
    >>> est, t = EstimatorV2(options={"default_precision": 0.0}), quanv_filter()
    >>> model = ResQuNN([QuanvLayer(t, est, seed=s) for s in (1, 2)], "O1+O2", (8, 8), num_classes=10)
    >>> model(torch.rand(3, 8, 8)).shape, model.feature_shape
    (torch.Size([3, 10]), (4, 4))
    """

    def __init__(
        self,
        layers: Sequence[QuanvLayer | ClassicalFilterLayer],
        residual: str | ResidualSpec,
        input_shape: tuple[int, int],
        num_classes: int,
        padding: str = "bottom-right",
        seed: int | None = None,
        head: QuantumHead | None = None,
    ):
        super().__init__()
        if not layers:
            raise ConfigError("ResQuNN needs at least one quanvolution layer")
        self.layers = nn.ModuleList(layers)
        self.residual = ResidualSpec.coerce(residual, len(layers))
        self.padding = padding
        windows = {(layer.kernel_size, layer.stride, layer.padding) for layer in layers}
        if len(windows) != 1:
            raise ConfigError(f"all layers need the same (kernel size, stride, padding), got {sorted(windows)}")
        kernel, stride, window_padding = windows.pop()
        self.feature_shape = self.residual.node_shapes(tuple(input_shape), kernel, stride, window_padding)[-1]
        self.feature_channels = self.residual.node_channels([layer.num_channels for layer in layers])[-1]
        size = self.feature_channels * self.feature_shape[0] * self.feature_shape[1]
        if head is None:
            if seed is not None:
                torch.manual_seed(seed)
            head = nn.Linear(size, num_classes, dtype=torch.float64)
        elif head.num_outputs != num_classes or head.num_features < size:
            raise ConfigError(f"the quantum head measures {head.num_outputs} qubits and encodes {head.num_features} "
                               f"features; this model has {num_classes} classes and a {size}-value final map")
        self.head = head

    @staticmethod
    def input_node(x: torch.Tensor) -> torch.Tensor:
        """h_0, the images as the first layer reads them: float64, a single channel's axis dropped."""
        return (x[:, 0] if x.dim() == 4 and x.shape[1] == 1 else x).to(torch.float64)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The final map h_L, shape (B, H_L, W_L), or (B, C_L, H_L, W_L) with several channels."""
        nodes = [self.input_node(x)]
        for k, layer in enumerate(self.layers, start=1):
            nodes.append(combine(self.residual, k, layer(nodes[k - 1]), nodes, self.padding))
        return nodes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))

    def quantum_parameters(self) -> list[nn.Parameter]:
        return [layer.weight for layer in self.layers]

    def freeze_quantum(self) -> ResQuNN:
        """The paper's frozen-quantum benchmark: the filter weights (quantum, or the classical control's) fixed,
        only the head trains."""
        for p in self.quantum_parameters():
            p.requires_grad_(False)
        return self
