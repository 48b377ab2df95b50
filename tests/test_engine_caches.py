"""The engine's one route choice, its caches, and the connector's typed calls.

Every cache keeps what it computed per key; these tests change what a key stands for (an observable or a
parameter list edited in place, a circuit extended in place, fresh lists whose ids may be reused) and check
the answers against qiskit's ``StatevectorEstimator`` and the parameter-shift rule on it, which share no
code with the engine.
"""

import copy

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparsePauliOp
from qiskit_machine_learning.neural_networks import EstimatorQNN

import qresnet.backends.engine.core as engine_core
from qresnet.backends import resolve_backend
from qresnet.backends.backend import noise_model_for
from qresnet.backends.engine import MAX_NOISY_QUBITS, EngineEstimator, RouteKind
from qresnet.backends.engine.core import support_of
from qresnet.circuits import quanv_filter
from qresnet.errors import ConfigError, EngineUnsupportedError
from qresnet.qnn import (BatchedParamShiftGradient, Derivatives, EngineGradient, Float64TorchConnector, QNNCall,
                         make_qnn)

A, B, C = Parameter("a"), Parameter("b"), Parameter("c")


def two_qubit_circuit() -> QuantumCircuit:
    """ry(a) and ry(b) around a cx: every parameter in one Pauli rotation, so the shift rule is exact."""
    qc = QuantumCircuit(2)
    qc.ry(A, 0)
    qc.h(1)
    qc.cx(0, 1)
    qc.ry(B, 1)
    return qc


def reference_values(circuit: QuantumCircuit, observable: SparsePauliOp, rows: np.ndarray) -> np.ndarray:
    """(R,) values from qiskit's StatevectorEstimator."""
    return np.asarray(StatevectorEstimator().run([(circuit, observable, rows)]).result()[0].data.evs)


def reference_shift(circuit: QuantumCircuit, observable: SparsePauliOp, rows: np.ndarray,
                    parameter: Parameter) -> np.ndarray:
    """(R,) d value / d ``parameter`` by the +-pi/2 shift rule on StatevectorEstimator values."""
    shift = np.zeros(circuit.num_parameters)
    shift[list(circuit.parameters).index(parameter)] = np.pi / 2
    return (reference_values(circuit, observable, rows + shift) - reference_values(circuit, observable, rows - shift)) / 2


def reference_differences(circuit: QuantumCircuit, observable: SparsePauliOp, rows: np.ndarray,
                          h: float = 1e-6) -> np.ndarray:
    """(R, P) central differences of StatevectorEstimator values by every parameter (any angle, shared or not)."""
    columns = []
    for j in range(circuit.num_parameters):
        e = np.zeros(circuit.num_parameters)
        e[j] = h
        columns.append((reference_values(circuit, observable, rows + e) - reference_values(circuit, observable, rows - e))
                       / (2 * h))
    return np.column_stack(columns)


# --- the route: one choice, one set of bounds -------------------------------------------------------------------------


def test_the_route_is_chosen_once_for_values_and_derivatives(rng):
    """A 4-qubit filter takes the Heisenberg route; with many body settings ideal values take the statevector; a
    12-qubit ideal circuit has statevector values but no derivatives (its bound for those is the Heisenberg one)."""
    template = quanv_filter()
    ideal, noisy = EngineEstimator(), EngineEstimator(noise_model_for("fake_manila"))
    support = support_of([{"ZIII": 1.0}])
    few = np.tile(rng.uniform(0, 1, (1, template.circuit.num_parameters)), (5, 1))
    many = rng.uniform(0, 1, (100, template.circuit.num_parameters))  # 100 distinct body settings
    assert ideal.core.route(template.circuit, support, few).kind is RouteKind.HEISENBERG
    assert ideal.core.route(template.circuit, support, many).kind is RouteKind.STATEVECTOR
    assert noisy.core.route(template.circuit, support, many).kind is RouteKind.HEISENBERG
    assert ideal.core.route(template.circuit, support).kind is RouteKind.HEISENBERG  # derivatives

    wide = QuantumCircuit(12)
    wide.ry(A, 0)
    for q in range(11):
        wide.cx(q, q + 1)
    observable = SparsePauliOp("Z" + "I" * 11)
    rows = np.array([[0.3], [1.1]])
    values_route = ideal.core.route(wide, {11}, rows)
    derivative_route = ideal.core.route(wide, {11})
    assert (values_route.kind, values_route.width) == (RouteKind.STATEVECTOR, 12)
    assert (derivative_route.kind, derivative_route.width, derivative_route.bound) == (RouteKind.TOO_WIDE, 12,
                                                                                       MAX_NOISY_QUBITS)
    result = ideal.run([(wide, observable, rows)]).result()[0]
    assert result.metadata["route"] == "statevector" and result.metadata["num_qubits"] == 12
    np.testing.assert_allclose(result.data.evs, reference_values(wide, observable, rows), atol=1e-12)
    np.testing.assert_allclose(ideal.differentiator.exact_values(wide, [observable], rows)[:, 0], result.data.evs,
                               atol=0)
    with pytest.raises(EngineUnsupportedError, match="touches 12 qubits"):
        ideal.differentiator.value_and_gradients(wide, [observable], rows)
    assert not ideal.differentiator.pulls_back(wide, [observable])


def test_the_primitive_and_the_differentiator_compile_a_circuit_once(monkeypatch, rng):
    compiled = []
    original = engine_core.compile_circuit
    monkeypatch.setattr(engine_core, "compile_circuit", lambda *a, **k: compiled.append(1) or original(*a, **k))
    estimator = EngineEstimator(noise_model_for("fake_manila"), {0: (0.02, 0.03)})
    qc, observable = two_qubit_circuit(), SparsePauliOp("ZZ")
    rows = rng.uniform(-np.pi, np.pi, (3, 2))
    evs = estimator.run([(qc, observable, rows)]).result()[0].data.evs
    values, _ = estimator.differentiator.value_and_gradients(qc, [observable], rows)
    pulled, _ = estimator.differentiator.value_and_pullback(qc, [observable], rows, [A], [B])
    assert compiled == [1]
    np.testing.assert_allclose(values[:, 0], evs, atol=1e-14)
    np.testing.assert_allclose(pulled[:, 0], evs, atol=1e-14)
    assert estimator.rows_evaluated == 9


def test_qnns_of_one_circuit_share_its_renamed_copy_and_compile_it_once(monkeypatch, rng):
    """The runs of a stack make one QNN each on one transpiled circuit: they share one renamed copy, the engine
    compiles it once for all of them, and each QNN's values are those of qiskit-machine-learning's own EstimatorQNN
    (its own rename) on StatevectorEstimator."""
    compiled = []
    original = engine_core.compile_circuit
    monkeypatch.setattr(engine_core, "compile_circuit", lambda *a, **k: compiled.append(1) or original(*a, **k))
    template, backend = quanv_filter(), resolve_backend("aer")
    transpiled = backend.transpile(template)
    qnns = [make_qnn(template, backend.estimator(), transpiled.circuit, transpiled.observables) for _ in range(3)]
    assert all(q._circuit is qnns[0]._circuit for q in qnns) and qnns[0]._circuit is not transpiled.circuit
    x = rng.uniform(0, np.pi, (4, template.num_inputs))
    stock = EstimatorQNN(circuit=transpiled.circuit, estimator=StatevectorEstimator(),
                         observables=list(transpiled.observables), input_params=list(template.input_params),
                         weight_params=list(template.weight_params), default_precision=None)  # exact
    for qnn in qnns:
        weights = rng.uniform(-np.pi, np.pi, qnn.num_weights)
        np.testing.assert_allclose(qnn.forward(x, weights), stock.forward(x, weights), atol=1e-12)
    assert compiled == [1]
    other = make_qnn(template, backend.estimator())  # another circuit object: its own copy
    assert other._circuit is not qnns[0]._circuit


def test_a_noise_models_errors_convert_once_for_every_circuit_compiled_against_it(monkeypatch, rng):
    """Each stack's backend transpiles its own copy of a circuit: the second copy converts no quantum error again,
    and both equal Aer's density-matrix estimator under the same noise model."""
    from qiskit_aer.noise import QuantumError
    from qiskit_aer.primitives import EstimatorV2 as AerEstimatorV2

    converted = []
    original = QuantumError.to_quantumchannel
    monkeypatch.setattr(QuantumError, "to_quantumchannel", lambda self: converted.append(1) or original(self))
    noise = copy.deepcopy(noise_model_for("fake_manila"))  # errors no other test converted (that model is shared)
    qc, observable = two_qubit_circuit(), SparsePauliOp("ZZ")
    rows = rng.uniform(-np.pi, np.pi, (3, 2))
    first = EngineEstimator(noise).run([(qc, observable, rows)]).result()[0].data.evs
    once = len(converted)
    second = EngineEstimator(noise).run([(qc.copy(), observable, rows)]).result()[0].data.evs
    assert once > 0 and len(converted) == once
    aer = AerEstimatorV2(options={"default_precision": 0.0,
                                  "backend_options": {"method": "density_matrix", "noise_model": noise}})
    reference = aer.run([(qc, observable, rows)]).result()[0].data.evs
    np.testing.assert_allclose(first, reference, atol=1e-10)
    np.testing.assert_allclose(second, reference, atol=1e-10)


# --- caches cannot serve stale entries --------------------------------------------------------------------------------


def test_an_observable_edited_in_place_is_read_again(rng):
    qc, rows = two_qubit_circuit(), rng.uniform(-np.pi, np.pi, (4, 2))
    observable = SparsePauliOp(["ZI", "XZ"], [1.0, 0.5])
    differentiator = EngineEstimator().differentiator
    first = differentiator.exact_values(qc, [observable], rows)[:, 0]
    np.testing.assert_allclose(first, reference_values(qc, observable, rows), atol=1e-12)
    observable.coeffs[:] = [-2.0, 0.25]  # the same object, other contents
    second = differentiator.exact_values(qc, [observable], rows)[:, 0]
    np.testing.assert_allclose(second, reference_values(qc, observable, rows), atol=1e-12)
    assert np.abs(second - first).max() > 0.1


def test_a_parameter_list_edited_in_place_is_looked_up_again(rng):
    qc, observable, rows = two_qubit_circuit(), SparsePauliOp("ZZ"), rng.uniform(-np.pi, np.pi, (4, 2))
    differentiator = EngineEstimator().differentiator
    parameters = [A]
    _, by_a = differentiator.value_and_gradients(qc, [observable], rows, parameters)
    np.testing.assert_allclose(by_a[:, 0, 0], reference_shift(qc, observable, rows, A), atol=1e-12)
    parameters[0] = B  # the same list object, another parameter
    _, by_b = differentiator.value_and_gradients(qc, [observable], rows, parameters)
    np.testing.assert_allclose(by_b[:, 0, 0], reference_shift(qc, observable, rows, B), atol=1e-12)
    assert np.abs(by_a - by_b).max() > 0.1


def test_fresh_parameter_lists_whose_ids_come_back_get_their_own_columns(rng):
    """More lists than the cache keeps, each dropped after its call, so Python reuses their ids for lists with
    other contents: every call still differentiates by the parameters of its own list."""
    qc, observable, rows = two_qubit_circuit(), SparsePauliOp("ZZ"), rng.uniform(-np.pi, np.pi, (3, 2))
    reference = {p: reference_shift(qc, observable, rows, p) for p in (A, B)}
    differentiator = EngineEstimator().differentiator
    for i in range(3 * engine_core.CACHED_ENTRIES):
        parameter = (A, B)[i % 2]
        _, grads = differentiator.value_and_gradients(qc, [observable], rows, [parameter])
        np.testing.assert_allclose(grads[:, 0, 0], reference[parameter], atol=1e-12)


def test_a_circuit_extended_in_place_is_compiled_again(rng):
    observable, rows = SparsePauliOp("XZ"), rng.uniform(-np.pi, np.pi, (4, 2))
    qc = two_qubit_circuit()
    estimator = EngineEstimator()
    before = estimator.run([(qc, observable, rows)]).result()[0].data.evs
    np.testing.assert_allclose(before, reference_values(qc, observable, rows), atol=1e-12)
    qc.rz(0.7, 1)  # no new parameter
    qc.rx(2 * B, 0)  # b enters twice now
    after = estimator.run([(qc, observable, rows)]).result()[0].data.evs
    np.testing.assert_allclose(after, reference_values(qc, observable, rows), atol=1e-12)
    assert np.abs(after - before).max() > 0.1
    _, grads = estimator.differentiator.value_and_gradients(qc, [observable], rows)
    np.testing.assert_allclose(grads[:, 0], reference_differences(qc, observable, rows), atol=1e-8)
    qc.ry(C, 1)  # a new parameter
    rows = np.column_stack([rows, rng.uniform(-np.pi, np.pi, 4)])
    np.testing.assert_allclose(estimator.differentiator.exact_values(qc, [observable], rows)[:, 0],
                               reference_values(qc, observable, rows), atol=1e-12)
    _, by_c = estimator.differentiator.value_and_gradients(qc, [observable], rows, [C])
    np.testing.assert_allclose(by_c[:, 0, 0], reference_shift(qc, observable, rows, C), atol=1e-12)


def test_parameter_shift_redoes_the_shift_circuit_of_a_circuit_extended_in_place(rng):
    qc, observable, rows = two_qubit_circuit(), SparsePauliOp("ZZ"), rng.uniform(-np.pi, np.pi, (3, 2))
    gradient = BatchedParamShiftGradient(StatevectorEstimator())
    first = np.array(gradient.run([qc] * 3, [observable] * 3, rows).result().gradients)
    np.testing.assert_allclose(first[:, 1], reference_shift(qc, observable, rows, B), atol=1e-12)
    qc.cx(1, 0)
    qc.ry(A, 0)  # a should now enter twice: the shift circuit must give the new rotation its own shift
    second = np.array(gradient.run([qc] * 3, [observable] * 3, rows).result().gradients)
    np.testing.assert_allclose(second, reference_differences(qc, observable, rows), atol=1e-8)
    assert np.abs(second - first).max() > 0.1


def test_qnn_layouts_are_per_qnn_object(rng):
    """One EngineGradient serving QNNs made and dropped in turn, on different circuits and observables."""
    estimator = EngineEstimator()
    gradient = EngineGradient(estimator)
    weights = rng.uniform(-np.pi, np.pi, 1)
    x = rng.uniform(-np.pi, np.pi, (3, 1))
    for i in range(6):
        qc = two_qubit_circuit()
        if i % 2:
            qc.rx(0.4, 1)
        observable = SparsePauliOp("XI" if i % 3 == 0 else "ZZ")
        qnn = EstimatorQNN(circuit=qc, estimator=estimator, observables=[observable], input_params=[A],
                           weight_params=[B], gradient=gradient, default_precision=None, pass_manager=None)
        values = gradient.evaluate(qnn, x, weights, QNNCall()).values[:, 0]
        rows = np.column_stack([x, np.repeat(weights, 3)])
        np.testing.assert_allclose(values, reference_values(qc, observable, rows), atol=1e-12)


# --- the connector's calls -----------------------------------------------------------------------------------------


def test_a_call_for_values_alone_cannot_ask_for_input_gradients():
    with pytest.raises(ConfigError, match="input_gradients=True"):
        QNNCall(Derivatives.NONE, input_gradients=True)


def test_the_connector_asks_for_weight_gradients_without_changing_the_qnn(monkeypatch, rng):
    """Parameter shift on a QNN built with input gradients, its inputs without: the backward asks for the weights
    only (through a copy of the QNN), never sets ``input_gradients`` on the QNN, and gives StatevectorEstimator's
    shift-rule gradients; with inputs that need one, the input gradient too."""
    template = quanv_filter()
    backend = resolve_backend("aer")
    qnn = make_qnn(template, backend.estimator(), input_gradients=True, gradient="batched")
    set_on = []
    prop = EstimatorQNN.input_gradients
    monkeypatch.setattr(EstimatorQNN, "input_gradients",
                        property(prop.fget, lambda self, value: set_on.append(self) or prop.fset(self, value)))
    asked = []
    run = qnn.gradient.run
    monkeypatch.setattr(qnn.gradient, "run", lambda *a, **k: asked.append(k.get("parameters")) or run(*a, **k))
    weights = rng.uniform(-np.pi, np.pi, qnn.num_weights)
    connector = Float64TorchConnector(qnn, initial_weights=weights)
    x = torch.tensor(rng.uniform(0, 1, (3, qnn.num_inputs)))
    assert qnn.output_shape == (1,)  # the filter's one observable
    cotangent = rng.normal(size=(3, 1))
    (connector(x) * torch.tensor(cotangent)).sum().backward()
    assert all(s is not qnn for s in set_on) and qnn.input_gradients
    assert asked and asked[-1] is not None and len(asked[-1][0]) == qnn.num_weights  # weights only
    circuit, observable = qnn.circuit, qnn.observables[0]
    rows = np.zeros((3, circuit.num_parameters))
    index = {p: j for j, p in enumerate(circuit.parameters)}
    rows[:, [index[p] for p in qnn.input_params]] = x.numpy()
    rows[:, [index[p] for p in qnn.weight_params]] = weights
    jacobian = reference_differences(circuit, observable, rows)  # (R, P)
    expected = cotangent[:, 0] @ jacobian[:, [index[p] for p in qnn.weight_params]]
    np.testing.assert_allclose(connector.weight.grad.numpy(), expected, atol=1e-7)
    inputs = x.clone().requires_grad_(True)
    (connector(inputs) * torch.tensor(cotangent)).sum().backward()
    expected_inputs = cotangent[:, :1] * jacobian[:, [index[p] for p in qnn.input_params]]
    np.testing.assert_allclose(inputs.grad.numpy(), expected_inputs, atol=1e-7)
    assert all(s is not qnn for s in set_on)


@pytest.mark.parametrize("columns, rows", [(8, 5), (16, 81), (20, 17)])
def test_equal_rows_are_one_group_even_when_their_keys_round_apart(columns, rows):
    # these shapes give equal rows projected keys that differ in the last bits (the product rounds the
    # trailing rows by another kernel); one body setting must stay one group, or the engine folds it twice
    from qresnet.backends.primitives import group_rows

    row = np.random.default_rng(0).normal(size=columns)
    other = row + 1.0
    x = np.vstack([np.tile(row, (rows, 1)), other, row])
    distinct, inverse = group_rows(x)
    assert len(distinct) == 2 and np.array_equal(distinct[inverse], x)
    assert len(set(inverse[:rows].tolist() + [inverse[-1]])) == 1
