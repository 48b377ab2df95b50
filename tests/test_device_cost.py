"""A device step's cost counts the rows each layer really sends: design points in response mode, every window of
every image and input channel in per-patch mode (counted by hand here); device evaluation refuses, in one line,
the designs it cannot rebuild from design points."""

from __future__ import annotations

import pytest

from qresnet.backends import resolve_backend
from qresnet.config import TrainConfig
from qresnet.errors import JobsError
from qresnet.jobs.run import TrainedRun
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


@pytest.mark.parametrize("settings, message", [
    ({"filter": "classical"}, "it is a classical control run, whose layers run no circuit"),
    ({"quanv": {"readout": "per-qubit"}}, "its layers have 4 channels (1 filter(s) x 4 output(s))"),
    ({"quanv": {"filters_per_layer": 2}}, "its layers have 2 channels (2 filter(s) x 1 output(s))"),
])
def test_device_evaluation_refuses_what_it_cannot_rebuild(settings, message, tmp_path):
    run = TrainedRun(tmp_path, tmp_path / "checkpoints" / "epoch_001.pt", TrainConfig(**settings), {}, None)
    with pytest.raises(JobsError) as caught:
        run.model(resolve_backend("aer"))
    assert message in str(caught.value) and str(tmp_path) in str(caught.value) and "\n" not in str(caught.value)


def test_device_evaluation_builds_a_per_patch_run_in_response_mode(tmp_path):
    from qresnet.data import load_dataset

    config = TrainConfig(layers=1, residual="none", mode="per-patch", per_class=5)
    trained = build_model(config, resolve_backend("aer"), (8, 8), 10)
    run = TrainedRun(tmp_path, tmp_path / "c.pt", config, trained.state_dict(), load_dataset(config.data_config()))
    model = run.model(resolve_backend("aer"))
    assert model.layers[0].mode == "response" and trained.layers[0].mode == "per-patch"
    assert model.layers[0].weight.detach().tolist() == trained.layers[0].weight.detach().tolist()
