"""Torch modules: the quanvolution layer, residual configurations, the ResQuNN model."""

from qresnet.nn.model import ResQuNN
from qresnet.nn.quanv import QuanvLayer
from qresnet.nn.residual import PAPER_CONFIGS, ResidualSpec, ResidualSpecError, pad_map

__all__ = ["PAPER_CONFIGS", "QuanvLayer", "ResQuNN", "ResidualSpec", "ResidualSpecError", "pad_map"]
