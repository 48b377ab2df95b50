"""Torch modules: the quanvolution layer and its classical control, residual configurations, the quantum head, the ResQuNN model."""

from qresnet.nn.classical import ClassicalFilterLayer
from qresnet.nn.head import QuantumHead, stacked_head_logits
from qresnet.nn.model import ResQuNN
from qresnet.nn.quanv import QuanvLayer, extract_patches, map_size
from qresnet.nn.residual import PAPER_CONFIGS, ResidualSpec, combine, pad_map

__all__ = ["PAPER_CONFIGS", "ClassicalFilterLayer", "QuantumHead", "QuanvLayer", "ResQuNN", "ResidualSpec", "combine",
           "extract_patches", "map_size", "pad_map", "stacked_head_logits"]
