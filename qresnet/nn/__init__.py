"""Torch modules: the quanvolution layer, residual configurations, the quantum head, the ResQuNN model."""

from qresnet.nn.head import DEFAULT_SCALE, QuantumHead
from qresnet.nn.model import ResQuNN
from qresnet.nn.quanv import QuanvLayer
from qresnet.nn.residual import PAPER_CONFIGS, ResidualSpec, pad_map

__all__ = ["DEFAULT_SCALE", "PAPER_CONFIGS", "QuantumHead", "QuanvLayer", "ResQuNN", "ResidualSpec", "pad_map"]
