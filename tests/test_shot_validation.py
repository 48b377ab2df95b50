"""Shots and the filter response (issue 25, docs/design.md section 3): a run with shots checks, on sampled test
patches, what sampling does to layer 1's response against sampling each patch directly; the report says so.

The reference is computed here from the response's algebra, not from the code under test: a patch's value is
f(x) = sum_j w_j(x) y_j over the 81 design values y_j, with w(x) the Kronecker product over the inputs of
A^-T v(theta_i), A = [[1,0,1],[1,1,0],[1,0,-1]] and v = (1, sin, cos). Each design point is sampled on its own, so
Var f(x) = sum_j w_j(x)^2 Var_j / N; a patch sampled directly has Var_x / N. Var = <O^2> - <O>^2 from Qiskit's
StatevectorEstimator.
"""

from __future__ import annotations

import numpy as np
import pytest
from qiskit.primitives import StatevectorEstimator

from qresnet import cli
from qresnet.backends import resolve_backend
from qresnet.backends.options import BackendOptions
from qresnet.config import TrainConfig
from qresnet.data import load_dataset
from qresnet.qnn import sample_patches
from qresnet.run.build import build_model
from qresnet.run.evaluate import shot_validation
from qresnet.study.sweep import SweepConfig, run_sweep
from qresnet.study.report import write_comparison_report

SHOTS = 400


def _variances(template, weights: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Var of the filter's observable in the state each row of ``inputs`` prepares (ideal, exact)."""
    observable = template.observables[0]
    square = observable.compose(observable).simplify()
    pubs = []
    for row in inputs:
        values = dict(zip(template.input_params, row))  # x; the circuit rotates by input_scale * x
        values.update(zip(template.weight_params, weights))
        pubs.append((template.circuit.assign_parameters(values), [observable, square]))
    results = StatevectorEstimator().run(pubs).result()
    return np.array([r.data.evs[1] - r.data.evs[0] ** 2 for r in results])


def test_the_response_error_and_the_direct_error_have_the_variances_the_algebra_gives():
    config = TrainConfig(backend="aer", backend_options=BackendOptions(shots=SHOTS), classes=(0, 1), per_class=10)
    data = load_dataset(config.data_config())
    backend = resolve_backend(config.backend, config.backend_options)
    model = build_model(config, backend, data.image_shape, data.num_classes)
    check = shot_validation(model, backend, data, seed=3, patches=24, draws=96)

    layer = model.layers[0]
    template, weights = layer.template, layer.weight.detach().numpy()
    q = template.num_inputs
    picked = sample_patches(layer.patches(data.x_test).reshape(-1, q).numpy(), 24, 3)
    angles = np.array([0.0, np.pi / 2, np.pi])
    design = np.array(np.meshgrid(*[angles] * q, indexing="ij")).reshape(q, -1).T / template.input_scale
    a_inverse = np.linalg.inv(np.array([[1.0, 0, 1], [1, 1, 0], [1, 0, -1]]))
    design_var = _variances(template, weights, design)
    response_var, direct_var = [], []
    for row, var in zip(picked, _variances(template, weights, picked)):
        w = np.ones(1)
        for theta in row * template.input_scale:
            w = np.kron(w, a_inverse.T @ np.array([1.0, np.sin(theta), np.cos(theta)]))
        response_var.append(np.sum(w**2 * design_var) / SHOTS)
        direct_var.append(var / SHOTS)
    assert check["patches"] == len(picked) == 24 and check["draws"] == 96 and check["shots"] == SHOTS
    assert check["response"]["rms_error"] == pytest.approx(np.sqrt(np.mean(response_var)), rel=0.15)
    assert check["direct"]["rms_error"] == pytest.approx(np.sqrt(np.mean(direct_var)), rel=0.15)


def test_no_check_without_shots_and_a_train_with_shots_reports_it(tmp_path, capsys):
    config = TrainConfig(backend="aer", classes=(0, 1), per_class=10)
    data = load_dataset(config.data_config())
    backend = resolve_backend(config.backend, config.backend_options)
    assert shot_validation(build_model(config, backend, data.image_shape, data.num_classes), backend, data, 0) is None
    assert cli.main(["train", "--backend", "noise:depolarizing:0.1", "--shots", "500", "--classes", "0,1",
                     "--per-class", "8", "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "With 500 shots" in out and "correlated" in out


def test_a_comparison_with_shots_states_the_correlated_error_and_its_check(tmp_path):
    sweep = SweepConfig.from_preset("quick", backends=("aer",), classes=(0, 1), per_class=8, epochs=1,
                                    configs="none", seeds=(0,), backend_options=BackendOptions(shots=300))
    result = run_sweep(sweep, tmp_path, progress=False)
    assert all(r.shot_validation is not None and r.shot_validation["shots"] == 300 for r in result.runs)
    text = write_comparison_report(result, tmp_path).read_text()
    assert "## Shots: the filter response from sampled design points" in text
    assert "| aer | 2 | 300 |" in text
