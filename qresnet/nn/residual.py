"""The torch side of residual configurations: a layer's output plus its skip terms, zero-padded to one map.

The configuration itself (the parser and the edge-set value) is :mod:`qresnet.residual`, free of torch so that
configs and reports can hold it; it is exported here too, where it always was.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from qresnet.errors import ResidualSpecError
from qresnet.residual import PAPER_CONFIGS, ResidualSpec, sum_channels

__all__ = ["PADDINGS", "PAPER_CONFIGS", "ResidualSpec", "combine", "pad_map", "sum_channels"]

PADDINGS = ("bottom-right", "center")


def combine(spec: ResidualSpec, k: int, output: torch.Tensor, nodes: Sequence[torch.Tensor],
            padding: str = "bottom-right") -> torch.Tensor:
    """h_k = O_k + sum of h_j over the skip edges (j, k) of ``spec``; maps (B, H, W) or (B, C, H, W) zero-padded to
    the largest, channel by channel; a one-channel map is added to every channel of a multi-channel one."""
    terms = [output] + [nodes[j] for j in spec.sources(k)]
    if len(terms) == 1:
        return output
    height = max(t.shape[-2] for t in terms)
    width = max(t.shape[-1] for t in terms)
    if any(t.dim() == 4 for t in terms):
        sum_channels(k, [t.shape[1] if t.dim() == 4 else 1 for t in terms])
        terms = [t[:, None] if t.dim() == 3 else t for t in terms]  # broadcasting adds it to every channel
    return sum(pad_map(t, height, width, padding) for t in terms)


def pad_map(x: torch.Tensor, height: int, width: int, padding: str = "bottom-right") -> torch.Tensor:
    """Zero-pad the last two dimensions (every channel alike) to (height, width), at the bottom/right or centred."""
    if padding not in PADDINGS:
        raise ResidualSpecError(f"padding={padding!r} must be one of {', '.join(PADDINGS)}")
    dh, dw = height - x.shape[-2], width - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    if padding == "center":
        return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
    return F.pad(x, (0, dw, 0, dh))
