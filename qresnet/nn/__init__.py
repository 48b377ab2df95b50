"""Torch modules: the quanvolution layer, residual configurations, the quantum head, the ResQuNN model."""

from qresnet.nn.head import QuantumHead
from qresnet.nn.model import ResQuNN
from qresnet.nn.quanv import QuanvLayer
from qresnet.nn.residual import PAPER_CONFIGS, ResidualSpec, combine, pad_map

__all__ = ["PAPER_CONFIGS", "QuantumHead", "QuanvLayer", "ResQuNN", "ResidualSpec", "combine", "pad_map"]
