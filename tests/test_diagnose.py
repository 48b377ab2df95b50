"""Issue 24's diagnostics against independent references: a frozen filter's statistics against Statevector values of
its circuit and numpy, the replayed frozen run against ``train``, the head grid on a validation split that never sees
the test set, and the ``head_reps`` field in the config, the identity and the circuit."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from qiskit.quantum_info import Statevector
from qiskit_aer.primitives import EstimatorV2 as AerEstimatorV2

from qresnet import cli
from qresnet.circuits import quanv_filter
from qresnet.config import TrainConfig
from qresnet.data import Dataset, DataConfig, load_dataset, validation_split
from qresnet.errors import ConfigError
from qresnet.nn import QuanvLayer
from qresnet.backends import resolve_backend
from qresnet.run.build import build_model
from qresnet.run.train import train
from qresnet.study import diagnose as dg
from qresnet.study.head_tuning import HeadGrid, choose, final_runs, head_grid


def statevector_value(layer: QuanvLayer, patch: np.ndarray) -> float:
    """The filter's <mean Z> at one patch, from the circuit's statevector (not the response tensor)."""
    template = layer.template
    binding = dict(zip(template.input_params, patch))
    binding.update(zip(template.weight_params, layer.weight.detach().numpy()))
    state = Statevector(template.circuit.assign_parameters(binding))
    return float(np.real(state.expectation_value(template.observables[0])))


def test_filter_stats_equal_statevector_values_and_numpy(rng):
    layer = QuanvLayer(quanv_filter(), AerEstimatorV2(options={"default_precision": 0.0}), seed=3)
    images = rng.random((5, 4, 4))
    images[rng.random(images.shape) < 0.5] = 0.0  # blank pixels, as in MNIST
    images[0, :2, :2] = 0.0  # at least one blank patch
    images[1] = 0.0  # a blank image: its map is the background everywhere
    images[2, 2:, 2:] = 1.0  # a full-ink patch (saturation is checked, whatever the seed gives)
    # the 2x2 patches, row-major within each patch, patches row-major over the 2x2 map
    patches = images.reshape(5, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(5, 4, 4)
    values = np.array([[statevector_value(layer, p) for p in image] for image in patches])
    background = statevector_value(layer, np.zeros(4))

    stats = dg.filter_stats(layer, torch.as_tensor(images), seed=3)

    flat, f = patches.reshape(-1, 4), values.reshape(-1)
    ink = flat.max(axis=1) > 0
    deviation = np.abs(f[ink] - background)
    a = np.c_[np.ones(ink.sum()), flat[ink]]
    residual = f[ink] - a @ np.linalg.lstsq(a, f[ink], rcond=None)[0]
    assert stats.seed == 3
    assert stats.background == pytest.approx(background, abs=1e-12)
    assert (stats.map_min, stats.map_max, stats.map_std) == pytest.approx((f.min(), f.max(), f.std()), abs=1e-12)
    assert stats.ink_deviation == pytest.approx(np.median(deviation), abs=1e-12)
    assert stats.near_background == pytest.approx(np.mean(deviation < 0.05))
    assert stats.dead_features == pytest.approx(np.mean(values.std(axis=0) < 0.05))
    assert stats.saturated == pytest.approx(np.mean(np.abs(f) > 0.9))
    assert stats.intensity_r2 == pytest.approx(1 - residual.var() / f[ink].var(), abs=1e-9)
    angles = math.pi * flat
    assert stats.binary_angles == pytest.approx(np.mean((angles < 0.1 * math.pi) | (angles > 0.9 * math.pi)))
    assert sum(stats.order_energy) == pytest.approx(1.0)
    assert dg.FilterStats.coerce(json.loads(json.dumps(stats.to_dict()))) == stats


def test_corner_values_equal_statevector_values():
    layer = QuanvLayer(quanv_filter(), AerEstimatorV2(options={"default_precision": 0.0}), seed=5)
    corners = [np.array([(k >> (3 - i)) & 1 for i in range(4)], dtype=float) for k in range(16)]  # first pixel slowest
    assert dg.corner_values(layer) == pytest.approx([statevector_value(layer, c) for c in corners], abs=1e-12)


def test_term_energies_of_a_constructed_tensor():
    # q = 2; index 0 is the constant 1, 1 is sin, 2 is cos: energies 1 (order 0), 4 + 4 (order 1), 1 (order 2)
    t = torch.zeros(3, 3, 1, dtype=torch.float64)
    t[0, 0], t[1, 0], t[0, 2], t[2, 1] = 1.0, 2.0, -2.0, 1.0
    orders, sin_share = dg.term_energies(t)
    assert orders == pytest.approx((0.1, 0.8, 0.1))
    assert sin_share == pytest.approx(0.5)  # t[1, 0] and t[2, 1] carry a sin factor
    with pytest.raises(ConfigError, match="zero"):
        dg.term_energies(torch.zeros(3, 3, 1))


def tiny_frozen(seed: int, **overrides) -> TrainConfig:
    return dg.single_frozen_config(seed, epochs=2, **{"dataset": "digits", "per_class": 12, **overrides})


@pytest.mark.parametrize("seed", [0, 3])
def test_replay_gives_the_accuracy_of_the_frozen_run(seed, tmp_path):
    config = tiny_frozen(seed)
    result = train(config, tmp_path / "run", progress=False)
    model, data = dg.seed_model(config)
    assert dg.replay_frozen(config, model, data) == result.metrics[-1].test_acc
    assert dg.replay_frozen(config, model, data, epochs=1) == result.metrics[0].test_acc


def test_standardizing_undoes_a_rescaled_map():
    # a linear head on z-scored features sees the same inputs whatever affine map the filter's values went through
    config = tiny_frozen(1)
    model, data = dg.seed_model(config)
    squeezed, _ = dg.seed_model(config)
    inner = squeezed.layers[0].forward
    squeezed.layers[0].forward = lambda x: 0.01 * inner(x) + 0.3
    assert dg.replay_frozen(config, squeezed, data, standardize=True) == pytest.approx(
        dg.replay_frozen(config, model, data, standardize=True))
    with pytest.raises(ConfigError, match="trainable"):
        dg.replay_frozen(dataclasses.replace(config, frozen=False), model, data)


def test_a_filter_moves_to_another_seeds_split():
    host, data = dg.seed_model(tiny_frozen(0), filter_seed=4)
    donor, _ = dg.seed_model(tiny_frozen(4))
    plain, plain_data = dg.seed_model(tiny_frozen(0))
    assert torch.equal(host.layers[0].weight, donor.layers[0].weight)
    assert not torch.equal(host.layers[0].weight, plain.layers[0].weight)
    assert torch.equal(host.head.weight, plain.head.weight)
    assert torch.equal(data.x_train, plain_data.x_train)


def test_rank_correlations_and_the_threshold_split():
    rows = [{"seed": k, "s": s, "c": 1.0, "frozen_acc": a}
            for k, (s, a) in enumerate(zip([1, 2, 3, 4, 5, 6], [0.4, 0.5, 0.4, 0.8, 0.9, 0.8]))]
    correlations = dg.rank_correlations(rows)
    assert math.isnan(correlations["c"])
    assert correlations["s"] == pytest.approx(np.corrcoef([1, 2, 3, 4, 5, 6], [1.5, 3, 1.5, 4.5, 6, 4.5])[0, 1])
    split = dg.threshold_split(rows, "s")
    assert (split["cut"], split["low_n"], split["high_n"]) == (3.5, 3, 3)
    assert (split["low_mean"], split["high_mean"]) == pytest.approx((1.3 / 3, 2.5 / 3))
    with pytest.raises(ConfigError, match="3 or more"):
        dg.rank_correlations(rows[:2])


def test_cli_diagnose_frozen_writes_rows_figure_and_json(tmp_path, capsys):
    figure, out = tmp_path / "fig.png", tmp_path / "rows.json"
    argv = ["diagnose", "frozen", "--dataset", "digits", "--per-class", "12", "--seeds", "0-3", "--epochs", "2",
            "--figure", str(figure), "--json", str(out), "--mark", "0,1"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "Spearman rank correlation" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert [row["seed"] for row in written["rows"]] == [0, 1, 2, 3]
    model, data = dg.seed_model(tiny_frozen(2))
    assert written["rows"][2]["frozen_acc"] == dg.replay_frozen(tiny_frozen(2), model, data)
    assert figure.stat().st_size > 0


def test_validation_split_is_carved_from_the_training_images_only():
    data = load_dataset(DataConfig(classes=(0, 1, 2), per_class=20, seed=2))
    carved = validation_split(data, 0.25, seed=1)
    rows = {tuple(x.flatten().tolist()) for x in data.x_train}
    held = [tuple(x.flatten().tolist()) for x in carved.x_test]
    assert len(held) == 12 and all(h in rows for h in held)
    assert len(carved.y_train) + len(carved.y_test) == len(data.y_train)
    assert carved.y_test.bincount().tolist() == [4, 4, 4]
    assert not {tuple(x.flatten().tolist()) for x in carved.x_train} & set(held)


def test_head_reps_reaches_the_circuit_and_the_identity():
    default = TrainConfig(head="quantum", classes=(0, 1), layers=2, residual="X+O2")
    deeper = dataclasses.replace(default, head_reps=3)
    assert "head_reps" not in default.identity("sha")["config"]  # today's runs keep their identity
    assert deeper.identity("sha")["config"]["head_reps"] == 3
    assert TrainConfig.from_dict(deeper.to_dict()) == deeper
    backend = resolve_backend("aer")
    model = build_model(deeper, backend, (8, 8), 2)
    assert model.head.template.settings["reps"] == 3
    assert model.head.template.num_weights == 2 * 10 * 3  # RY and RZ on each of the 10 qubits per repetition
    with pytest.raises(ConfigError, match="head_reps"):
        TrainConfig(head_reps=0)


def test_head_grid_chooses_on_validation_and_never_reads_the_test_set(tmp_path):
    base = TrainConfig(head="quantum", classes=(0, 1), per_class=10, layers=2, residual="X+O2", frozen=True,
                       epochs=1, batch_size=8)
    data = load_dataset(base.data_config())
    poisoned = Dataset(data.x_train, data.y_train, torch.full_like(data.x_test, float("nan")), data.y_test,
                       data.num_classes, data.image_shape, data.source, data.classes)
    rows = head_grid(base, HeadGrid((1.0, 5.0), (1,), (0.05,)), poisoned, tmp_path)  # NaN test images: unread
    assert [(r["head_scale"], r["head_reps"]) for r in rows] == [(1.0, 1), (5.0, 1)]
    assert all(0 <= r["val_acc"] <= 1 for r in rows)
    finals = final_runs(base, choose(rows), data, tmp_path)
    assert [f["settings"] for f in finals] == ["default", "chosen"]
    assert finals[1]["head_reps"] == 1


def test_choose_takes_the_best_validation_accuracy_first_of_equals():
    rows = [{"name": "a", "val_acc": 0.5}, {"name": "b", "val_acc": 0.7}, {"name": "c", "val_acc": 0.7}]
    assert choose(rows)["name"] == "b"
    with pytest.raises(ConfigError):
        choose([])


def test_a_deeper_head_costs_more_circuits_per_step():
    from qresnet.run.cost import run_cost

    backend = resolve_backend("aer")
    costs = [run_cost(TrainConfig(head="quantum", classes=(0, 1), head_reps=reps, batch_size=4), backend, 2, 8, 2)
             for reps in (2, 3)]
    # a head step: batch x (1 + 2 x weights) circuits, 20 weights per repetition (RY, RZ on 10 qubits)
    assert costs[1].circuits_per_step - costs[0].circuits_per_step == 4 * 2 * 20


def test_train_head_reps_flag_is_recorded_in_config_json(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--head", "quantum", "--classes", "0,1", "--per-class", "6", "--epochs", "1", "--batch-size", "8",
            "--residual", "X+O2", "--frozen", "--head-reps", "1", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    written = json.loads((out / "config.json").read_text())
    assert written["config"]["head_reps"] == 1
    assert written["identity"]["config"]["head_reps"] == 1
