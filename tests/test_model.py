import math

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp

from qresnet.study.audit import gradient_audit
from qresnet.backends import resolve_backend
from qresnet.circuits import CircuitTemplate, quanv_filter
from qresnet.data import load_digits_images
from qresnet.errors import QresnetError
from qresnet.nn import QuanvLayer, ResidualSpec, ResQuNN

FILTER = quanv_filter()


@pytest.fixture(scope="module", params=["aer", "aer:fake_manila"])
def backend(request):
    return resolve_backend(request.param)


def _layer(backend, mode, input_gradients=False, seed=7, template=FILTER):
    tt = backend.transpile(template)
    return QuanvLayer(template, backend.estimator(), circuit=tt.circuit, observables=tt.observables,
                      mode=mode, input_gradients=input_gradients, seed=seed)


def _loss(y):
    weights = torch.linspace(-1, 1, y[0].numel(), dtype=torch.float64).reshape(y.shape[1:])
    return (y * weights).sum()


def test_response_mode_equals_per_patch_mode(backend, rng):
    x = torch.as_tensor(rng.uniform(0, 1, (2, 4, 4)))
    results = {}
    for mode in ("response", "per-patch"):
        layer = _layer(backend, mode)
        y = layer(x)
        _loss(y).backward()
        results[mode] = (y.detach(), layer.weight.grad)
    np.testing.assert_allclose(results["response"][0], results["per-patch"][0], atol=1e-10)
    np.testing.assert_allclose(results["response"][1], results["per-patch"][1], atol=1e-10)
    assert results["response"][1].norm() > 1e-3


@pytest.mark.parametrize("mode", ["response", "per-patch"])
def test_input_gradients_cross_the_boundary_only_when_asked(backend, mode, rng):
    x0 = torch.as_tensor(rng.uniform(0, 1, (1, 4, 4)))
    layer = _layer(backend, mode, input_gradients=True)
    x = x0.clone().requires_grad_(True)
    _loss(layer(x)).backward()
    h = 1e-5
    fd = torch.zeros_like(x0)
    with torch.no_grad():
        for idx in np.ndindex(*x0.shape):
            plus, minus = x0.clone(), x0.clone()
            plus[idx] += h
            minus[idx] -= h
            fd[idx] = (_loss(layer(plus)) - _loss(layer(minus))) / (2 * h)
    np.testing.assert_allclose(x.grad, fd, atol=1e-7)

    closed = _layer(backend, mode, input_gradients=False)
    x = x0.clone().requires_grad_(True)
    _loss(closed(x)).backward()
    assert x.grad is None  # the measurement boundary: no gradient reaches the input


def test_output_shapes_follow_padding():
    backend = resolve_backend("aer")
    layers = [_layer(backend, "response", seed=s) for s in (1, 2)]
    x = torch.rand(1, 28, 28, dtype=torch.float64)
    expected = {"none": (7, 7), "X+O1": (14, 14), "O1+O2": (14, 14), "X+O2": (28, 28), "(X+O1)+O2": (28, 28)}
    for spec in ResidualSpec.enumerate(2):
        model = ResQuNN(layers, spec, (28, 28), num_classes=10)
        features = model.features(x)
        assert tuple(features.shape[-2:]) == model.feature_shape == spec.node_shapes((28, 28))[-1]
        if spec.notation in expected:
            assert model.feature_shape == expected[spec.notation], spec.notation
    assert model(x).shape == (1, 10)


def test_audit_matches_rule_for_all_three_layer_configurations():
    images, labels = load_digits_images(3, seed=1)
    rows = gradient_audit(resolve_backend("aer"), images, labels, num_layers=3, configs="all", seed=3)
    assert len(rows) == 64
    for row in rows:
        assert row.reaches == row.predicted, row
        assert row.reaches == list(ResidualSpec.coerce(row.config, 3).reaches)
    both = {r.config for r in rows if all(r.reaches)}
    assert {"(O1+O2)+O3", "((X+O1)+O2)+O3"} <= both


def test_audit_reproduces_the_paper_for_two_layers():
    images, labels = load_digits_images(3, seed=2)
    rows = gradient_audit(resolve_backend("aer"), images, labels, num_layers=2, configs="paper")
    assert [r.config for r in rows if all(r.reaches)] == ["O1+O2", "(X+O1)+O2"]
    assert all(r.reaches[1] for r in rows)  # the last layer always learns
    crossing = gradient_audit(resolve_backend("aer"), images, labels, num_layers=2, input_gradients=True)
    assert all(all(r.reaches) for r in crossing)


def test_freeze_quantum_leaves_only_the_head_trainable():
    backend = resolve_backend("aer")
    model = ResQuNN([_layer(backend, "response", seed=s) for s in (1, 2)], "O1+O2", (8, 8), 10).freeze_quantum()
    images, labels = load_digits_images(2)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    assert all(layer.weight.grad is None for layer in model.layers)
    assert model.head.weight.grad.norm() > 0


def test_response_mode_refuses_a_template_that_reuses_an_input():
    x, w = Parameter("x"), Parameter("w")
    qc = QuantumCircuit(1)
    qc.ry(math.pi * x, 0)
    qc.ry(w, 0)
    qc.rx(math.pi * x, 0)
    template = CircuitTemplate("reuse", qc, (x,), (w,), (SparsePauliOp("Z"),), math.pi, {"kernel_size": 1})
    backend = resolve_backend("aer")
    with pytest.raises(QresnetError, match="mode='per-patch'"):
        QuanvLayer(template, backend.estimator(), mode="response")
    layer = QuanvLayer(template, backend.estimator(), mode="per-patch", seed=0)
    y = layer(torch.tensor([[[0.3]]], dtype=torch.float64))
    wv = float(layer.weight.detach()[0])
    # RX(pi x) RY(w) RY(pi x)|0>: <Z> = cos(pi x + w) cos(pi x)
    assert float(y.detach()) == pytest.approx(math.cos(math.pi * 0.3 + wv) * math.cos(math.pi * 0.3), abs=1e-12)


def test_bad_input_is_named():
    layer = _layer(resolve_backend("aer"), "response")
    with pytest.raises(QresnetError, match="NaN"):
        layer(torch.full((1, 4, 4), float("nan")))
    with pytest.raises(QresnetError, match="batch, height, width"):
        layer(torch.zeros(4, 4))
