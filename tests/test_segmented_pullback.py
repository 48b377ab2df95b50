"""Segmented reverse mode (the weight gradient per setting, for a stack of runs whose rows carry different weights)
against each setting's own pullback and against parameter shift contracted setting by setting, on every route that
pulls back; and the stacked QNN and head calls built on it against each run alone."""

import numpy as np
import pytest
import torch

from qresnet.backends import resolve_backend
from qresnet.circuits import quantum_head
from qresnet.errors import ConfigError
from qresnet.nn import stacked_head_logits
from qresnet.qnn import BatchedParamShiftGradient, Derivatives, QNNCall, make_qnn, segmented_qnn, stacked_qnn
from qresnet.run.build import quantum_head_layer
from test_engine_gradient import FILTER, qnn_with

NOISY = "noise:depolarizing:0.1"


def filter_qnn(spec: str):
    backend = resolve_backend(spec)
    transpiled = backend.transpile(FILTER)
    return make_qnn(FILTER, backend.estimator(), transpiled.circuit, transpiled.observables, input_gradients=True)


def head_qnn(spec: str, qubits: int, classes: int, features: int):
    backend = resolve_backend(spec)
    template = quantum_head(qubits, classes, encoding="state", num_features=features)
    transpiled = backend.transpile(template)
    return make_qnn(template, backend.estimator(), transpiled.circuit, transpiled.observables, input_gradients=True)


def stack_rows(qnn, rng, settings: int, per_setting: int, low: float, high: float):
    """(x (R, I), w (S, W), segments (R,) shuffled): setting 2 repeats setting 0's weights and inputs, so that only
    the segments keep their rows apart."""
    w = rng.uniform(-np.pi, np.pi, (settings, qnn.num_weights))
    w[2] = w[0]
    x = rng.uniform(low, high, (settings, per_setting, qnn.num_inputs))
    x[2] = x[0]
    segments = rng.permutation(np.repeat(np.arange(settings), per_setting))
    rows = np.empty((settings * per_setting, qnn.num_inputs))
    rows[np.argsort(segments, kind="stable")] = x.reshape(-1, qnn.num_inputs)  # setting s's rows where segments == s
    return rows, w, segments


def segmented(qnn, x, w, segments):
    return qnn.gradient.evaluate_segmented(qnn, x, w, segments, QNNCall(Derivatives.PULLBACK, input_gradients=True))


def check_against_references(qnn, x, w, segments, rng, shift: bool = True) -> None:
    """The segmented pullback against (a) each setting's own pullback of its rows and (b) parameter shift's
    Jacobians contracted with the cotangent over each setting's rows, to 1e-10."""
    result = segmented(qnn, x, w, segments)
    g = rng.normal(size=result.values.shape)
    d_inputs, d_weights = result.pullback(g)
    assert d_weights.shape == (len(w), qnn.num_weights) and d_inputs.shape == x.shape
    shifted = qnn_with(BatchedParamShiftGradient(qnn.estimator), qnn, True)
    for s in range(len(w)):
        mine = segments == s
        alone = qnn.gradient.evaluate(qnn, x[mine], w[s], QNNCall(Derivatives.PULLBACK, input_gradients=True))
        alone_inputs, alone_weights = alone.pullback(g[mine])
        np.testing.assert_allclose(result.values[mine], alone.values, atol=1e-12, rtol=0)
        np.testing.assert_allclose(d_weights[s], alone_weights, atol=1e-10, rtol=0)
        np.testing.assert_allclose(d_inputs[mine], alone_inputs, atol=1e-10, rtol=0)
        if shift:
            np.testing.assert_allclose(result.values[mine], shifted.forward(x[mine], w[s]), atol=1e-10, rtol=0)
            input_jac, weight_jac = shifted.backward(x[mine], w[s])
            np.testing.assert_allclose(d_weights[s], np.einsum("rk,rkw->w", g[mine], weight_jac), atol=1e-10, rtol=0)
            np.testing.assert_allclose(d_inputs[mine], np.einsum("rk,rki->ri", g[mine], input_jac), atol=1e-10, rtol=0)
    # settings 0 and 2 share weights and inputs but not their cotangents: a merged group would mix them
    assert np.abs(d_weights[0] - d_weights[2]).max() > 1e-3


@pytest.mark.parametrize("spec", ["aer", "aer:fake_torino", NOISY])
def test_filter_segmented_pullback_per_setting(spec, rng):
    """The product-state route (prefix and body weights, per-row inputs), ideal and noisy."""
    qnn = filter_qnn(spec)
    x, w, segments = stack_rows(qnn, rng, 3, 5, 0.0, 1.0)
    check_against_references(qnn, x, w, segments, rng)


@pytest.mark.parametrize("spec,qubits,classes", [("aer", 5, 3), (NOISY, 5, 3), ("aer:fake_manila", 5, 3)])
def test_head_segmented_pullback_heisenberg_route(spec, qubits, classes, rng):
    """The Heisenberg route of an amplitude-encoded head, ideal and noisy, against parameter shift too."""
    qnn = head_qnn(spec, qubits, classes, (1 << qubits) - 3)
    x, w, segments = stack_rows(qnn, rng, 3, 3, -1.0, 1.0)
    check_against_references(qnn, x, w, segments, rng)


def test_head_segmented_pullback_statevector_route(rng):
    """The statevector route (an ideal 10-class head: the cone is the whole register), against each setting's
    own pullback (itself checked against parameter shift in test_engine_pullback)."""
    qnn = head_qnn("aer", 10, 10, 1017)
    x, w, segments = stack_rows(qnn, rng, 3, 2, -1.0, 1.0)
    check_against_references(qnn, x, w, segments, rng, shift=False)


def test_head_segmented_pullback_forward_mode_fallback(monkeypatch, rng):
    """Past MAX_PULLBACK_BYTES the pullback contracts forward-mode Jacobians: per setting as well."""
    import qresnet.backends.engine.route as engine_route

    monkeypatch.setattr(engine_route, "MAX_PULLBACK_BYTES", 0)
    qnn = head_qnn("aer:fake_manila", 5, 3, 25)
    x, w, segments = stack_rows(qnn, rng, 3, 3, -1.0, 1.0)
    check_against_references(qnn, x, w, segments, rng)


def test_segments_must_name_a_setting_per_row(rng):
    qnn = filter_qnn("aer")
    x, w = rng.uniform(0, 1, (4, qnn.num_inputs)), rng.uniform(-1, 1, (2, qnn.num_weights))
    with pytest.raises(ConfigError, match="segments="):
        segmented(qnn, x, w, np.array([0, 1, 2, 0]))
    with pytest.raises(ConfigError, match="segments="):
        segmented(qnn, x, w, np.array([0.0, 1.0, 1.0, 0.0]))
    rows = np.zeros((4, qnn.circuit.num_parameters))
    with pytest.raises(ConfigError, match="segments="):
        qnn.gradient.differentiator.value_and_pullback(qnn.circuit, qnn.observables, rows, (), qnn.weight_params,
                                                       segments=np.array([0, -1, 0, 0]))


@pytest.mark.parametrize("spec", ["aer", "aer:fake_torino"])
@pytest.mark.parametrize("derivatives", [Derivatives.PULLBACK, Derivatives.JACOBIANS])
def test_stacked_filter_equals_each_run_alone(spec, derivatives, rng):
    """stacked_qnn by pullback and by Jacobians: the values and each run's weight gradient of each run alone."""
    qnn = filter_qnn(spec)
    x = rng.uniform(0, 1, (9, qnn.num_inputs))
    weights = [torch.tensor(rng.uniform(-np.pi, np.pi, qnn.num_weights), requires_grad=True) for _ in range(3)]
    g = torch.tensor(rng.normal(size=(3, 9, len(qnn.observables))))
    values = stacked_qnn(qnn, x, weights, derivatives)
    (values * g).sum().backward()
    for s, w in enumerate(weights):
        alone = qnn.gradient.evaluate(qnn, x, w.detach().numpy(), QNNCall(Derivatives.JACOBIANS))
        np.testing.assert_allclose(values[s].detach().numpy(), alone.values, atol=1e-12, rtol=0)
        np.testing.assert_allclose(w.grad.numpy(), np.einsum("rk,rkw->w", g[s].numpy(), alone.weight_jacobian),
                                   atol=1e-12, rtol=0)


@pytest.mark.parametrize("spec", ["aer", "aer:fake_torino"])
def test_stacked_head_logits_equal_each_head_alone(spec, monkeypatch, rng):
    """Five paper heads (4 classes) of two shapes, as a stack's residual configurations give them (49 and 98
    features, interleaved), batches of different sizes: one engine call per shape, the logits and the gradients
    of each head's weights and features of each head alone, to 1e-12."""
    backend = resolve_backend(spec)
    widths = (49, 98, 49, 98, 49)
    heads = [quantum_head_layer(backend, f, 4, seed=s) for s, f in enumerate(widths)]
    batches = [torch.tensor(rng.normal(size=(b, f)), requires_grad=True) for b, f in zip((4, 2, 4, 3, 1), widths)]
    g = [torch.tensor(rng.normal(size=(len(b), 4))) for b in batches]
    calls = []
    for h in heads:
        original = h.qnn.gradient.evaluate_segmented
        monkeypatch.setattr(h.qnn.gradient, "evaluate_segmented",
                            lambda *a, original=original, **k: calls.append(1) or original(*a, **k))
    logits = stacked_head_logits(heads, batches)
    sum((l * gg).sum() for l, gg in zip(logits, g)).backward()
    assert calls == [1, 1] and heads[0].stack_shape != heads[1].stack_shape
    stacked_grads = [(b.grad.clone(), h.weight.grad.clone()) for b, h in zip(batches, heads)]
    for h, b, gg, l, (d_features, d_weights) in zip(heads, batches, g, logits, stacked_grads):
        h.zero_grad()
        alone_features = b.detach().clone().requires_grad_(True)
        alone = h(alone_features)
        (alone * gg).sum().backward()
        np.testing.assert_allclose(l.detach().numpy(), alone.detach().numpy(), atol=1e-12, rtol=0)
        np.testing.assert_allclose(d_weights.numpy(), h.weight.grad.numpy(), atol=1e-12, rtol=0)
        np.testing.assert_allclose(d_features.numpy(), alone_features.grad.numpy(), atol=1e-12, rtol=0)
        assert np.abs(d_weights.numpy()).max() > 1e-3 and np.abs(d_features.numpy()).max() > 1e-4


def test_stacked_heads_by_jacobians_equal_by_pullback(rng):
    """Two heads' batches (S, B, F) in one segmented call, by the segmented pullback and by per-row Jacobians: the
    same values and gradients."""
    qnn = head_qnn(NOISY, 5, 3, 25)
    x = rng.normal(size=(2, 3, 25))
    w = rng.uniform(-np.pi, np.pi, (2, qnn.num_weights))
    g = torch.tensor(rng.normal(size=(2, 3, 3)))
    grads = []
    for derivatives in (Derivatives.PULLBACK, Derivatives.JACOBIANS):
        inputs, weights = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        segments = np.repeat(np.arange(2), 3)
        values = segmented_qnn(qnn, inputs.reshape(6, -1), weights, segments, derivatives).reshape(2, 3, -1)
        (values * g).sum().backward()
        grads.append((values.detach().numpy(), inputs.grad.numpy(), weights.grad.numpy()))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, atol=1e-12, rtol=0)


def test_a_setting_without_rows_gets_a_zero_gradient(rng):
    """segmented_qnn with the last of three settings naming no row: its weights get 0, the others their rows'."""
    qnn = filter_qnn("aer")
    x = torch.tensor(rng.uniform(0, 1, (4, qnn.num_inputs)))
    weights = torch.tensor(rng.uniform(-np.pi, np.pi, (3, qnn.num_weights)), requires_grad=True)
    segments = np.array([1, 0, 1, 0])
    segmented_qnn(qnn, x, weights, segments).sum().backward()
    for s in (0, 1):
        alone = qnn.gradient.evaluate(qnn, x[segments == s].numpy(), weights[s].detach().numpy(),
                                      QNNCall(Derivatives.JACOBIANS))
        np.testing.assert_allclose(weights.grad[s].numpy(), alone.weight_jacobian.sum(axis=(0, 1)), atol=1e-12, rtol=0)
    assert np.all(weights.grad[2].numpy() == 0.0) and np.abs(weights.grad[:2].numpy()).max() > 1e-3


def test_heads_of_different_backends_run_one_by_one(monkeypatch, rng):
    """An ideal and a noisy head do not share a QNN: no stacked call, each head's own logits."""
    heads = [quantum_head_layer(resolve_backend(spec), 49, 4) for spec in ("aer", "aer:fake_torino")]
    for h in heads:
        monkeypatch.setattr(h.qnn.gradient, "evaluate_segmented", lambda *a, **k: pytest.fail("stacked"))
    batches = [torch.tensor(rng.normal(size=(3, 49))) for _ in heads]
    for h, b, logits in zip(heads, batches, stacked_head_logits(heads, batches)):
        np.testing.assert_allclose(logits.detach().numpy(), h(b).detach().numpy(), atol=0, rtol=0)
    assert heads[0].stack_shape != heads[1].stack_shape


def test_heads_of_one_shape_under_different_noise_do_not_share_a_call(rng):
    """Depolarizing channels of 0.1 and 0.2: the same transpiled gates, so the same stack_shape, but each head's
    logits and weight gradient are its own backend's (one call would have run both under the first one's)."""
    heads = [quantum_head_layer(resolve_backend(spec), 49, 4, seed=1)
             for spec in ("noise:depolarizing:0.1", "noise:depolarizing:0.2")]
    assert heads[0].stack_shape == heads[1].stack_shape
    batches = [torch.tensor(rng.normal(size=(3, 49))) for _ in heads]
    logits = stacked_head_logits(heads, batches)
    sum(l.sum() for l in logits).backward()
    for h, b, l in zip(heads, batches, logits):
        stacked_grad = h.weight.grad.clone()
        h.zero_grad()
        alone = h(b)
        alone.sum().backward()
        np.testing.assert_allclose(l.detach().numpy(), alone.detach().numpy(), atol=1e-12, rtol=0)
        np.testing.assert_allclose(stacked_grad.numpy(), h.weight.grad.numpy(), atol=1e-12, rtol=0)
    assert np.abs(logits[0].detach().numpy() - logits[1].detach().numpy()).max() > 1e-3


def test_heads_without_gradients_run_one_by_one(monkeypatch, rng):
    """An evaluation (no gradients): each head's own values call, not one segmented call, and each head's logits
    exactly (the stacked call would compute the same values in another order)."""
    heads = [quantum_head_layer(resolve_backend("aer"), 49, 4, seed=s) for s in range(3)]
    for h in heads:
        monkeypatch.setattr(h.qnn.gradient, "evaluate_segmented", lambda *a, **k: pytest.fail("stacked"))
    batches = [torch.tensor(rng.normal(size=(3, 49))) for _ in heads]
    with torch.no_grad():
        logits = stacked_head_logits(heads, batches)
        for h, b, l in zip(heads, batches, logits):
            np.testing.assert_allclose(l.numpy(), h(b).numpy(), atol=0, rtol=0)
