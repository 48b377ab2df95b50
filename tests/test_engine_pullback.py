"""The engine's reverse mode (one pullback of autograd's cotangent instead of a Jacobian per weight) against
parameter shift contracted with the same cotangent, on every route that pulls back."""

import numpy as np
import pytest
import torch
from qiskit_machine_learning.neural_networks import EstimatorQNN

from qresnet.backends import resolve_backend
from qresnet.circuits import quantum_head
from qresnet.qnn import BatchedParamShiftGradient, Derivatives, EngineGradient, QNNCall, make_qnn
from qresnet.run.build import quantum_head_layer
from test_engine_gradient import FILTER, SPECS, qnn_with


def pull_back(qnn: EstimatorQNN, x: np.ndarray, w: np.ndarray):
    """(values, pullback) of ``qnn`` at (x, w) with the input gradient, as the connector asks the engine for them."""
    result = qnn.gradient.evaluate(qnn, x, w, QNNCall(Derivatives.PULLBACK, input_gradients=True))
    return result.values, result.pullback


# --- reverse mode: one pullback instead of a Jacobian per weight ----------------------------------------------------


def test_pauli_to_matrix_and_its_adjoint_against_kronecker_products(rng):
    """Re(sum_d c_d P_d) against the Pauli strings built by Kronecker products; the adjoint by <L c, M> = <c, L* M>."""
    from qresnet.backends.engine.encoded import pauli_to_matrix, pauli_to_matrix_adjoint
    from qresnet.backends.engine.ptm import pauli_matrices

    for n in (1, 2, 3):
        c, m = rng.normal(size=(2, 4**n)), rng.normal(size=(2, 2**n, 2**n))
        np.testing.assert_allclose(pauli_to_matrix(c, n), np.einsum("bd,dij->bij", c, pauli_matrices(n)).real,
                                   atol=1e-13, rtol=0)
        assert abs(np.sum(pauli_to_matrix(c, n) * m) - np.sum(c * pauli_to_matrix_adjoint(m, n))) < 1e-12


def test_the_compiled_light_cone_block_and_its_adjoint_against_kronecker_products(rng):
    """The compiled map (:func:`~qresnet.backends.engine.kernel.light_cone_matrices`) gathers a block of basis
    states (``embed``, in any order) of Re(sum_d c_d P_d); its adjoint by <L c, M> = <c, L* M>."""
    from qresnet.backends.engine.kernel import light_cone_cotangent, light_cone_matrices
    from qresnet.backends.engine.ptm import pauli_matrices

    for n, embed in [(1, [0, 1]), (3, [5, 0, 3]), (4, list(range(16)))]:
        embed = np.array(embed)
        c, m = rng.normal(size=(2, 3, 4**n)), rng.normal(size=(2, 3, len(embed), len(embed)))
        full = np.einsum("...d,dij->...ij", c, pauli_matrices(n)).real
        np.testing.assert_allclose(light_cone_matrices(c, n, embed), full[..., embed[:, None], embed[None, :]],
                                   atol=1e-13, rtol=0)
        assert abs(np.sum(light_cone_matrices(c, n, embed) * m) - np.sum(c * light_cone_cotangent(m, n, embed))) < 1e-12


@pytest.mark.parametrize("spec,qubits,classes", [("aer", 10, 4), ("aer", 10, 10), ("aer:fake_manila", 5, 3),
                                                 ("aer:fake_torino", 10, 4)])
def test_head_pullback_equals_parameter_shift_contracted_with_the_cotangent(spec, qubits, classes, rng):
    """g . Jacobian with the Jacobian by parameter shift on the engine (weights) and the engine's adjoint
    (features), to 1e-10: the Heisenberg route (ideal and noisy) and the statevector route (10 classes)."""
    backend = resolve_backend(spec)
    features = (1 << qubits) - 7  # zero-padded at the end
    template = quantum_head(qubits, classes, encoding="state", num_features=features)
    transpiled = backend.transpile(template)
    qnn = make_qnn(template, backend.estimator(), transpiled.circuit, transpiled.observables, input_gradients=True)
    assert isinstance(qnn.gradient, EngineGradient) and qnn.gradient.pulls_back(qnn)
    x, w = rng.normal(size=(5, features)), rng.uniform(-np.pi, np.pi, qnn.num_weights)
    x[2] = 0.0
    values, pullback = pull_back(qnn, x, w)
    g = rng.normal(size=values.shape)
    d_inputs, d_weights = pullback(g)
    np.testing.assert_allclose(values, qnn_with(BatchedParamShiftGradient(qnn.estimator), qnn, True).forward(x, w),
                               atol=1e-10, rtol=0)
    input_jac, weight_jac = qnn_with(BatchedParamShiftGradient(qnn.estimator), qnn, True).backward(x, w)
    np.testing.assert_allclose(d_weights, np.einsum("rk,rkw->w", g, weight_jac), atol=1e-10, rtol=0)
    np.testing.assert_allclose(d_inputs, np.einsum("rk,rki->ri", g, input_jac), atol=1e-10, rtol=0)
    assert np.abs(d_weights).max() > 1e-2 and np.abs(d_inputs).max() > 1e-3 and np.abs(d_inputs[2]).max() == 0.0


@pytest.mark.parametrize("spec", SPECS)
def test_filter_pullback_equals_parameter_shift_contracted_with_the_cotangent(spec, rng):
    """The product-state route: weights (prefix and body) and, in per-patch mode, inputs, to 1e-10."""
    backend = resolve_backend(spec)
    transpiled = backend.transpile(FILTER)
    qnn = make_qnn(FILTER, backend.estimator(), transpiled.circuit, transpiled.observables, input_gradients=True)
    assert qnn.gradient.pulls_back(qnn)
    x, w = rng.uniform(0, 1, (7, qnn.num_inputs)), rng.uniform(-np.pi, np.pi, qnn.num_weights)
    values, pullback = pull_back(qnn, x, w)
    g = rng.normal(size=values.shape)
    d_inputs, d_weights = pullback(g)
    shift = qnn_with(BatchedParamShiftGradient(qnn.estimator), qnn, True)
    input_jac, weight_jac = shift.backward(x, w)
    np.testing.assert_allclose(values, shift.forward(x, w), atol=1e-10, rtol=0)
    np.testing.assert_allclose(d_weights, np.einsum("rk,rkw->w", g, weight_jac), atol=1e-10, rtol=0)
    np.testing.assert_allclose(d_inputs, np.einsum("rk,rki->ri", g, input_jac), atol=1e-10, rtol=0)
    assert np.abs(d_weights).max() > 1e-2 and np.abs(d_inputs).max() > 1e-2


def test_the_head_trains_by_pullback_not_by_jacobians(monkeypatch, rng):
    """A training step of the head asks the engine for one pullback; autograd's gradients equal the
    Jacobians (``value_and_gradients``, itself checked against parameter shift above) contracted by hand."""
    backend = resolve_backend("aer:fake_torino")
    head = quantum_head_layer(backend, 49, 4)
    differentiator = head.qnn.gradient.differentiator
    x = torch.tensor(rng.normal(size=(6, 49)), requires_grad=True)
    g = torch.tensor(rng.normal(size=(6, 4)))
    jacobians = head.qnn.gradient.evaluate(head.qnn, x.detach().numpy(), head.connector.weight.detach().numpy(),
                                           QNNCall(Derivatives.JACOBIANS, input_gradients=True))
    jac_values, jacobian = jacobians.values, np.concatenate([jacobians.input_jacobian, jacobians.weight_jacobian], axis=2)
    calls = head.qnn.gradient.calls  # engine calls with derivatives
    monkeypatch.setattr(differentiator, "value_and_gradients", lambda *a, **k: pytest.fail("Jacobians asked for"))
    scores = head.scores(x)
    (scores * g).sum().backward()
    assert head.qnn.gradient.calls == calls + 1
    np.testing.assert_allclose(scores.detach().numpy(), jac_values, atol=1e-12, rtol=0)
    np.testing.assert_allclose(x.grad.numpy(), np.einsum("rk,rki->ri", g.numpy(), jacobian[:, :, :49]), atol=1e-12)
    np.testing.assert_allclose(head.connector.weight.grad.numpy(), np.einsum("rk,rkw->w", g.numpy(), jacobian[:, :, 49:]),
                               atol=1e-12)


def test_a_cone_too_wide_to_keep_its_images_pulls_back_by_forward_mode(monkeypatch, rng):
    """Past MAX_PULLBACK_BYTES (a 10-class noisy head) the pullback contracts forward-mode Jacobians: the same numbers."""
    import qresnet.backends.engine.route as engine_route

    backend = resolve_backend("aer:fake_manila")
    template = quantum_head(5, 3, encoding="state", num_features=25)
    transpiled = backend.transpile(template)
    qnn = make_qnn(template, backend.estimator(), transpiled.circuit, transpiled.observables, input_gradients=True)
    x, w = rng.normal(size=(4, 25)), rng.uniform(-3, 3, qnn.num_weights)
    values, pullback = pull_back(qnn, x, w)
    g = rng.normal(size=values.shape)
    reverse = pullback(g)
    monkeypatch.setattr(engine_route, "MAX_PULLBACK_BYTES", 0)
    values_forward, pullback_forward = pull_back(qnn, x, w)
    forward = pullback_forward(g)
    np.testing.assert_allclose(values_forward, values, atol=1e-12, rtol=0)
    for a, b in zip(forward, reverse):
        np.testing.assert_allclose(a, b, atol=1e-12, rtol=0)
