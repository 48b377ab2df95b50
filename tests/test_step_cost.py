"""A device step's cost counts the rows each layer really sends: design points in response mode, every window of
every image and input channel in per-patch mode (counted by hand here)."""

from __future__ import annotations

import pytest

from qresnet.backends import resolve_backend
from qresnet.config import TrainConfig
from qresnet.run.build import build_model, step_cost

SHIFTS = 1 + 2 * 16  # a row and its parameter shifts over the 16 weights of today's filter


@pytest.mark.parametrize("layers, residual, quanv, mode, frozen, circuits", [
    (1, "none", None, "response", False, 81 * SHIFTS),            # the 3^4 design points
    (1, "none", None, "per-patch", False, 4 * 16 * SHIFTS),       # batch 4 x the 4x4 windows of an 8x8 image
    (2, "O1+O2", None, "per-patch", False, 4 * (16 + 4) * SHIFTS),  # layer 2 reads the 4x4 map: 2x2 windows
    (2, "O1+O2", None, "per-patch", True, 4 * (16 + 4)),          # frozen: the rows alone
    (2, "none", {"readout": "per-qubit"}, "per-patch", False, 4 * (16 + 4 * 4) * SHIFTS),  # layer 2: 4 channels in
    (1, "none", {"filters_per_layer": 2}, "per-patch", False, 2 * 4 * 16 * SHIFTS),        # every filter its rows
])
def test_step_cost_counts_the_rows_of_each_mode(layers, residual, quanv, mode, frozen, circuits):
    backend = resolve_backend("aer")
    config = TrainConfig(layers=layers, residual=residual, quanv=quanv, mode=mode, frozen=frozen, batch_size=4)
    model = build_model(config, backend, (8, 8), 10)
    cost = step_cost(model, backend, 4, (8, 8))
    assert cost.circuits == circuits
    assert cost.two_qubit_gates == circuits * backend.transpile(model.layers[0].template).cost.two_qubit_gates > 0
