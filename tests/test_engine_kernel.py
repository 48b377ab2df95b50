"""The compiled row route of the product-state pullback (:mod:`qresnet.backends.engine.kernel`): taken by a filter on
every backend kind, equal to parameter shift and to the numpy row route (ideal, noisy, stacked, with per-row
inputs); and the programs it cannot take keep the numpy route, still exact."""

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparsePauliOp
from qiskit_machine_learning.neural_networks import EstimatorQNN

import qresnet.backends.engine.kernel as kernel_module
from qresnet.backends import resolve_backend
from qresnet.backends.engine.kernel import MAX_QUBITS, kernel_plan, numpy_route
from qresnet.qnn import BatchedParamShiftGradient, Derivatives, QNNCall, design_points, make_gradient
from test_engine_gradient import FILTER, qnn_with
from test_segmented_pullback import NOISY, filter_qnn, head_qnn, stack_rows

WITH_INPUTS = QNNCall(Derivatives.PULLBACK, input_gradients=True)


@pytest.fixture
def plans(monkeypatch):
    """The kernel plan of every product-state pullback, call by call (None: the numpy route ran)."""
    seen = []

    def spy(program):
        plan = kernel_plan(program)
        seen.append(plan)
        return plan

    monkeypatch.setattr(kernel_module, "kernel_plan", spy)
    return seen


@pytest.mark.parametrize("spec", ["aer", "aer:fake_manila", "aer:fake_torino", NOISY])
def test_a_filter_takes_the_kernel_and_equals_parameter_shift(spec, rng, plans):
    """One run's design points (the weights' pullback of a response-mode step) and random patches with per-row
    input gradients (per-patch mode), against parameter shift's Jacobians contracted with the cotangent."""
    qnn = filter_qnn(spec)
    w = rng.uniform(-np.pi, np.pi, qnn.num_weights)
    shifted = qnn_with(BatchedParamShiftGradient(qnn.estimator), qnn, True)
    for x, call in [(design_points(FILTER.num_inputs, FILTER.input_scale), QNNCall(Derivatives.PULLBACK)),
                    (rng.uniform(0, 1, (9, qnn.num_inputs)), WITH_INPUTS)]:
        result = qnn.gradient.evaluate(qnn, x, w, call)
        assert plans[-1] is not None
        g = rng.normal(size=result.values.shape)
        d_inputs, d_weights = result.pullback(g)
        input_jac, weight_jac = shifted.backward(x, w)
        np.testing.assert_allclose(result.values, shifted.forward(x, w), atol=1e-10, rtol=0)
        np.testing.assert_allclose(d_weights, np.einsum("rk,rkw->w", g, weight_jac), atol=1e-10, rtol=0)
        assert np.abs(d_weights).max() > 1e-2
        if call.input_gradients:
            np.testing.assert_allclose(d_inputs, np.einsum("rk,rki->ri", g, input_jac), atol=1e-10, rtol=0)
            assert np.abs(d_inputs).max() > 1e-2
        else:
            assert d_inputs is None


@pytest.mark.parametrize("spec", ["aer", "aer:fake_torino"])
def test_the_kernel_equals_the_numpy_route_for_a_stack(spec, rng, plans):
    """Segments (settings 0 and 2 share weights and inputs, not cotangents), per-row inputs and a setting without
    rows: values, input and per-setting weight gradients of the two routes, to 1e-12."""
    qnn = filter_qnn(spec)
    x, w, segments = stack_rows(qnn, rng, 4, 20, 0.0, 1.0)
    keep = segments != 1  # setting 1 has weights but no rows
    x, segments = x[keep], segments[keep]
    result = qnn.gradient.evaluate_segmented(qnn, x, w, segments, WITH_INPUTS)
    assert plans[-1] is not None
    with numpy_route():
        reference = qnn.gradient.evaluate_segmented(qnn, x, w, segments, WITH_INPUTS)
    assert plans[-1] is None
    g = rng.normal(size=result.values.shape)
    (d_inputs, d_weights), (ref_inputs, ref_weights) = result.pullback(g), reference.pullback(g)
    np.testing.assert_allclose(result.values, reference.values, atol=1e-12, rtol=0)
    np.testing.assert_allclose(d_inputs, ref_inputs, atol=1e-12, rtol=0)
    np.testing.assert_allclose(d_weights, ref_weights, atol=1e-12, rtol=0)
    assert np.all(d_weights[1] == 0.0) and np.abs(d_weights[0] - d_weights[2]).max() > 1e-3


def engine_qnn(qc: QuantumCircuit, observable: SparsePauliOp, x, w) -> EstimatorQNN:
    """An EstimatorQNN of ``qc`` on the engine (``aer``) with inputs ``x`` and weights ``w``, input gradients on."""
    estimator = resolve_backend("aer").estimator()
    return EstimatorQNN(circuit=qc, estimator=estimator, observables=[observable], input_params=list(x),
                        weight_params=list(w), gradient=make_gradient(estimator), input_gradients=True,
                        default_precision=None, pass_manager=None)


def body_gate_circuit(gate: str) -> tuple[QuantumCircuit, ParameterVector, ParameterVector]:
    """A 3-qubit filter-like circuit (inputs in RY, weights in RX last) whose body has ``gate`` on qubits 1, 2."""
    x, w = ParameterVector("x", 3), ParameterVector("w", 3)
    qc = QuantumCircuit(3)
    for q in range(3):
        qc.ry(x[q], q)
    qc.cx(0, 1)
    if gate == "rzz":  # a parameterised two-qubit operation: no chain
        qc.rzz(w[0], 1, 2)
    elif gate == "ccx":  # a three-qubit operation
        qc.ccx(0, 1, 2)
    else:  # a fixed two-qubit gate: the kernel takes the program, whose body ends in chained blocks
        getattr(qc, gate)(1, 2)
    for q in range(3):
        qc.rx(w[q] + 0.3, q)
    return qc, x, w


@pytest.mark.parametrize("gate", ["rzz", "ccx"])
def test_programs_the_kernel_cannot_take_keep_the_numpy_route(gate, rng, plans):
    qc, x_params, w_params = body_gate_circuit(gate)
    qnn = engine_qnn(qc, SparsePauliOp.from_list([("ZII", 0.5), ("IXZ", -0.7)]), x_params, w_params)
    x, w = rng.uniform(0, np.pi, (6, 3)), rng.uniform(-np.pi, np.pi, 3)
    result = qnn.gradient.evaluate(qnn, x, w, WITH_INPUTS)
    assert plans[-1] is None
    g = rng.normal(size=result.values.shape)
    d_inputs, d_weights = result.pullback(g)
    shifted = qnn_with(BatchedParamShiftGradient(qnn.estimator), qnn, True)
    input_jac, weight_jac = shifted.backward(x, w)
    np.testing.assert_allclose(d_weights, np.einsum("rk,rkw->w", g, weight_jac), atol=1e-10, rtol=0)
    np.testing.assert_allclose(d_inputs, np.einsum("rk,rki->ri", g, input_jac), atol=1e-10, rtol=0)


def test_a_body_ending_in_chained_blocks_equals_parameter_shift_in_every_step(rng, plans):
    """The image before a body's last operation is the observable itself: kept when that operation is a chained
    block, in every step, also when a step's images reuse the array an earlier step's left."""
    qc, x_params, w_params = body_gate_circuit("cz")
    qnn = engine_qnn(qc, SparsePauliOp.from_list([("ZII", 0.5), ("IXZ", -0.7)]), x_params, w_params)
    shifted = qnn_with(BatchedParamShiftGradient(qnn.estimator), qnn, True)
    for _ in range(3):
        x, w = rng.uniform(0, np.pi, (6, 3)), rng.uniform(-np.pi, np.pi, 3)
        result = qnn.gradient.evaluate(qnn, x, w, WITH_INPUTS)
        assert plans[-1] is not None and plans[-1].chain[-1] >= 0
        g = rng.normal(size=result.values.shape)
        d_inputs, d_weights = result.pullback(g)
        input_jac, weight_jac = shifted.backward(x, w)
        np.testing.assert_allclose(d_weights, np.einsum("rk,rkw->w", g, weight_jac), atol=1e-10, rtol=0)
        np.testing.assert_allclose(d_inputs, np.einsum("rk,rki->ri", g, input_jac), atol=1e-10, rtol=0)
        del result  # its images return to the spares, for the next step to reuse


def test_wider_programs_keep_the_numpy_route(rng, plans):
    n = MAX_QUBITS + 1
    x, w = ParameterVector("x", n), ParameterVector("w", n)
    qc = QuantumCircuit(n)
    for q in range(n):
        qc.ry(x[q], q)
    for q in range(n - 1):
        qc.cx(q, q + 1)
    for q in range(n):
        qc.ry(w[q], q)
    observable = SparsePauliOp("Z" * n)
    qnn = engine_qnn(qc, observable, x, w)
    inputs, weights = rng.uniform(0, np.pi, (5, n)), rng.uniform(-np.pi, np.pi, n)
    result = qnn.gradient.evaluate(qnn, inputs, weights, QNNCall(Derivatives.PULLBACK))
    assert plans[-1] is None
    bound = dict(zip(w, weights))
    reference = [StatevectorEstimator().run([(qc.assign_parameters({**bound, **dict(zip(x, row))}), observable)])
                 .result()[0].data.evs for row in inputs]
    np.testing.assert_allclose(result.values[:, 0], np.ravel(reference), atol=1e-10, rtol=0)


@pytest.mark.parametrize("spec", ["aer", "aer:fake_torino"])
def test_a_quantum_heads_body_takes_the_kernel_and_equals_the_numpy_route(spec, rng, plans):
    """The amplitude-encoded head's light cone (6 qubits, its whole body after the encoding): the body's images and
    the cotangent's walk compiled, for a stack of three heads, against the numpy route to 1e-12."""
    qnn = head_qnn(spec, 10, 4, 49)
    x, w, segments = stack_rows(qnn, rng, 3, 4, -1.0, 1.0)
    result = qnn.gradient.evaluate_segmented(qnn, x, w, segments, WITH_INPUTS)
    assert plans and plans[-1] is not None and plans[-1].n == 6
    with numpy_route():
        reference = qnn.gradient.evaluate_segmented(qnn, x, w, segments, WITH_INPUTS)
    g = rng.normal(size=result.values.shape)
    (d_inputs, d_weights), (ref_inputs, ref_weights) = result.pullback(g), reference.pullback(g)
    np.testing.assert_allclose(result.values, reference.values, atol=1e-12, rtol=0)
    np.testing.assert_allclose(d_inputs, ref_inputs, atol=1e-12, rtol=0)
    np.testing.assert_allclose(d_weights, ref_weights, atol=1e-12, rtol=0)
    assert np.abs(d_weights).max() > 1e-2
