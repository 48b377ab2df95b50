"""The engine as a drop-in EstimatorV2 (issue 13): ordinary Qiskit client code against Qiskit's and Aer's estimators.

References: ``StatevectorEstimator`` (precision 0) for exact values, ``BackendEstimatorV2`` on
``AerSimulator`` for real shot sampling, Aer's ``EstimatorV2`` (density matrix) for noise, and
binomial statistics for the spread of sampled values.
"""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import Gate, Parameter, ParameterVector
from qiskit.circuit.library import RealAmplitudes, ZZFeatureMap, real_amplitudes
from qiskit.primitives import BackendEstimatorV2, StatevectorEstimator
from qiskit.quantum_info import SparseObservable, SparsePauliOp, Statevector
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, depolarizing_error
from qiskit_aer.primitives import EstimatorV2 as AerEstimatorV2
from qiskit_machine_learning.neural_networks import EstimatorQNN

from qresnet.backends.engine import EngineEstimator
from qresnet.errors import ConfigError, EngineUnsupportedError
from qresnet.qnn import Float64TorchConnector

README = Path(__file__).resolve().parents[1] / "README.md"
EXACT = StatevectorEstimator(default_precision=0.0)


def _exact(pubs):
    return EXACT.run(pubs).result()


def _values(n_params: int, shape: tuple, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-np.pi, np.pi, shape + (n_params,))


# ---------------------------------------------------------------- parameterised sub-circuits


def test_parameterised_sub_circuit_equals_statevector_estimator():
    qc = QuantumCircuit(2)
    qc.append(real_amplitudes(2, reps=1), [0, 1])
    observables = [SparsePauliOp("ZZ"), SparsePauliOp("XI"), SparsePauliOp.from_list([("YY", 0.3), ("IZ", -1.2)])]
    values = _values(qc.num_parameters, (6,), seed=1)
    engine = EngineEstimator().run([(qc, o, values) for o in observables]).result()
    for e, r in zip(engine, _exact([(qc, o, values) for o in observables])):
        np.testing.assert_allclose(e.data.evs, r.data.evs, atol=1e-12)


def _nested(width: int) -> tuple[QuantumCircuit, list[SparsePauliOp]]:
    """Sub-circuits two deep on permuted qubits, with expressions, and one parameter inside and outside."""
    a, b = Parameter("a"), Parameter("b")
    inner = QuantumCircuit(2)
    inner.append(real_amplitudes(2, reps=1), [1, 0])  # depth 2 once the middle block is appended
    inner.rzz(2 * a - 0.4, 0, 1)
    middle = QuantumCircuit(3)
    middle.ry(a, 2)
    middle.append(inner.to_instruction(), [2, 0])
    middle.cx(0, 1)
    qc = QuantumCircuit(width)
    qc.h(1)
    qc.ry(b, range(width))
    qc.rx(0.3 - a, 0)
    qc.append(middle.to_instruction(), [width - 1, 0, 1])
    qc.rx(b * a, width - 1)  # not affine
    for q in range(width - 1):
        qc.cx(q, q + 1)
    labels = ["Z" * width, "Y" + "I" * (width - 2) + "X", "I" * (width - 2) + "ZY", "X" + "I" * (width - 2) + "Z"]
    return qc, [SparsePauliOp(label) for label in labels]


@pytest.mark.parametrize("width", [3, 7])  # 7 qubits: the statevector route
def test_sub_circuits_nested_two_deep_equal_statevector_estimator(width):
    qc, observables = _nested(width)
    values = _values(qc.num_parameters, (5,), seed=width)
    engine = EngineEstimator().run([(qc, o, values) for o in observables]).result()
    assert engine[0].metadata["route"] == ("heisenberg" if width == 3 else "statevector")
    for e, r in zip(engine, _exact([(qc, o, values) for o in observables])):
        np.testing.assert_allclose(e.data.evs, r.data.evs, atol=1e-12)
        assert np.abs(r.data.evs).max() > 0.1  # a comparison of values, not of zeros


def test_noise_attaches_inside_sub_circuits_as_aer_gives_it_on_the_decomposed_circuit():
    noise = NoiseModel()
    noise.add_all_qubit_quantum_error(depolarizing_error(0.05, 2), ["cx", "rzz"])
    noise.add_all_qubit_quantum_error(depolarizing_error(0.02, 1), ["ry", "h", "rx"])
    qc, observables = _nested(3)
    values = _values(qc.num_parameters, (4,), seed=2)
    engine = EngineEstimator(noise).run([(qc, o, values) for o in observables]).result()
    gates = {"h", "ry", "rx", "rzz", "cx"}
    flat = qc  # Aer runs no sub-circuits: open them with Qiskit, keeping the standard gates (and their errors)
    while opaque := {inst.operation.name for inst in flat.data} - gates:
        flat = flat.decompose(gates_to_decompose=sorted(opaque))
    aer = AerEstimatorV2(options={"default_precision": 0.0,
                                  "backend_options": {"method": "density_matrix", "noise_model": noise}})
    for e, a in zip(engine, aer.run([(flat, o, values) for o in observables]).result()):
        np.testing.assert_allclose(e.data.evs, a.data.evs, atol=1e-10)
    ideal = _exact([(qc, o, values) for o in observables])
    assert max(np.abs(e.data.evs - i.data.evs).max() for e, i in zip(engine, ideal)) > 1e-2  # the noise is there


def test_a_parameterised_gate_the_engine_cannot_open_is_named():
    theta = Parameter("theta")
    qc = QuantumCircuit(1)
    qc.append(Gate("mystery", 1, [theta]), [0])
    with pytest.raises(EngineUnsupportedError, match="'mystery'.*no definition"):
        EngineEstimator().run([(qc, SparsePauliOp("Z"), [0.3])]).result()


def test_a_circuit_extended_after_a_run_is_compiled_again():
    qc = QuantumCircuit(1)
    qc.ry(0.4, 0)
    engine = EngineEstimator()
    first = float(engine.run([(qc, SparsePauliOp("Z"))]).result()[0].data.evs)
    qc.rx(0.9, 0)
    second = float(engine.run([(qc, SparsePauliOp("Z"))]).result()[0].data.evs)
    assert first == pytest.approx(np.cos(0.4), abs=1e-14)
    assert second == pytest.approx(float(_exact([(qc, SparsePauliOp("Z"))])[0].data.evs), abs=1e-14)


# ---------------------------------------------------------------- EstimatorQNN with class-based library circuits


def _class_based_qnn(estimator, **kwargs) -> EstimatorQNN:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the class-based library circuits are deprecated
        feature_map, ansatz = ZZFeatureMap(2), RealAmplitudes(2, reps=2)
    qc = QuantumCircuit(2)
    qc.compose(feature_map, inplace=True)
    qc.compose(ansatz, inplace=True)
    return EstimatorQNN(circuit=qc, estimator=estimator, input_params=feature_map.parameters,
                        weight_params=ansatz.parameters, input_gradients=True, **kwargs)


@pytest.mark.parametrize("make", [lambda: _class_based_qnn(EngineEstimator(), default_precision=0.0),
                                  lambda: _class_based_qnn(EngineEstimator(exact=True))],  # EstimatorQNN's 1/64
                         ids=["precision-0", "exact-estimator"])
def test_class_based_library_circuits_in_estimator_qnn_match_the_default_estimator(make):
    reference = _class_based_qnn(None, default_precision=0.0)  # qiskit-machine-learning's default estimator
    qnn = make()
    rng = np.random.default_rng(4)
    x, w = rng.uniform(-1, 1, (6, 2)), rng.uniform(-np.pi, np.pi, qnn.num_weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # neither way of asking for exact values warns
        forward = qnn.forward(x, w)
        input_grad, weight_grad = qnn.backward(x, w)
    np.testing.assert_allclose(forward, reference.forward(x, w), atol=1e-10)
    ref_input_grad, ref_weight_grad = reference.backward(x, w)
    np.testing.assert_allclose(input_grad, ref_input_grad, atol=1e-10)
    np.testing.assert_allclose(weight_grad, ref_weight_grad, atol=1e-10)
    assert np.abs(ref_input_grad).max() > 0.05 and np.abs(ref_weight_grad).max() > 0.05

    # and through torch: the same loss gradients for the weights and the inputs
    def grads(network):
        model = Float64TorchConnector(network, initial_weights=w)
        inputs = torch.tensor(x, requires_grad=True)
        (model(inputs) ** 2).sum().backward()
        return inputs.grad.numpy(), model.weight.grad.numpy()

    for ours, theirs in zip(grads(qnn), grads(reference)):
        np.testing.assert_allclose(ours, theirs, atol=1e-10)


def test_estimator_qnn_default_precision_samples_and_warns_once():
    qnn = _class_based_qnn(EngineEstimator(seed=3))
    exact = _class_based_qnn(None, default_precision=0.0)
    x, w = np.random.default_rng(5).uniform(-1, 1, (40, 2)), np.random.default_rng(6).uniform(-1, 1, 6)
    with pytest.warns(UserWarning, match=r"precision 0.015625.*4096 shots.*exact=True") as caught:
        sampled = qnn.forward(x, w)
        qnn.forward(x, w)
    assert sum("EngineEstimator" in str(c.message) for c in caught) == 1
    error = sampled - exact.forward(x, w)
    assert 0 < np.abs(error).max() < 5 / 64  # sampled at the requested precision (the value is a mean of +-1 shots)


# ---------------------------------------------------------------- circuits that touch no qubit


@pytest.mark.parametrize("make", [lambda: QuantumCircuit(1), lambda: QuantumCircuit(2),
                                  lambda: _barriers(3)], ids=["empty-1", "empty-2", "barriers-3"])
@pytest.mark.parametrize("shots", [None, 100])
def test_identity_observables_on_circuits_that_touch_no_qubit(make, shots):
    qc = make()
    n = qc.num_qubits
    observables = [[SparsePauliOp("I" * n, 2.5)], [SparsePauliOp(["I" * n, "I" * n], [1.0, -0.25])],
                   [SparsePauliOp("I" * n)]]  # shape (3, 1)
    engine = EngineEstimator(shots=shots, seed=1).run([(qc, observables)]).result()[0]
    if shots is None:
        reference = _exact([(qc, observables)])[0]
    else:  # real sampling: the identity is not measured, so its value is exact
        reference = BackendEstimatorV2(backend=AerSimulator(), options={"default_precision": 0.1}).run(
            [(qc, observables)]).result()[0]
    assert engine.data.evs.shape == reference.data.evs.shape == (3, 1)
    np.testing.assert_allclose(engine.data.evs, reference.data.evs, atol=1e-14)
    np.testing.assert_array_equal(engine.data.evs, [[2.5], [0.75], [1.0]])
    np.testing.assert_array_equal(engine.data.stds, np.zeros((3, 1)))


def _barriers(n: int) -> QuantumCircuit:
    qc = QuantumCircuit(n)
    qc.barrier()
    qc.barrier(0, 2)
    return qc


def test_identity_on_an_idle_circuit_broadcasts_over_parameter_rows():
    qc = QuantumCircuit(2)
    qc.barrier()
    values = np.zeros((4, 0))  # four (empty) parameter rows
    engine = EngineEstimator().run([(qc, [SparsePauliOp("II", -3.0)], values)]).result()[0]
    reference = _exact([(qc, [SparsePauliOp("II", -3.0)], values)])[0]
    assert engine.data.evs.shape == reference.data.evs.shape == (4,)
    np.testing.assert_allclose(engine.data.evs, reference.data.evs, atol=1e-14)


# ---------------------------------------------------------------- broadcasting


def _broadcast_circuit() -> QuantumCircuit:
    t = ParameterVector("t", 3)
    qc = QuantumCircuit(2)
    qc.ry(t[0], 0)
    qc.rx(t[1], 1)
    qc.cx(0, 1)
    qc.rz(t[2], 1)
    qc.h(1)
    return qc


def _observable_array(shape: tuple, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(shape, dtype=object)
    for index in np.ndindex(shape):
        out[index] = SparsePauliOp.from_list([("".join(rng.choice(list("IXYZ"), 2)), rng.uniform(-1, 1)), ("ZZ", 0.5)])
    return out


@pytest.mark.parametrize("obs_shape", [(4, 1), (1, 5), (3, 1, 1)])
def test_parameter_arrays_broadcast_against_observable_arrays(obs_shape):
    qc = _broadcast_circuit()
    values = _values(3, (4, 5), seed=7)
    observables = _observable_array(obs_shape, seed=len(obs_shape) + obs_shape[0])
    expected_shape = np.broadcast_shapes(obs_shape, (4, 5))
    engine = EngineEstimator().run([(qc, observables, values)]).result()[0]
    reference = _exact([(qc, observables, values)])[0]
    assert engine.data.evs.shape == reference.data.evs.shape == expected_shape
    np.testing.assert_allclose(engine.data.evs, reference.data.evs, atol=1e-12)
    sampled = EngineEstimator(shots=4000, seed=2).run([(qc, observables, values)]).result()[0]
    assert sampled.data.evs.shape == sampled.data.stds.shape == expected_shape
    z = (sampled.data.evs - reference.data.evs) / sampled.data.stds
    assert np.abs(z).max() < 5


# ---------------------------------------------------------------- metadata


@pytest.mark.parametrize("precision", [0.0, 0.05])
def test_result_metadata_carries_what_statevector_estimator_gives(precision):
    qc = _broadcast_circuit()
    qc.metadata = {"experiment": "dropin", "index": 3}
    pubs = [(qc, SparsePauliOp("ZX"), _values(3, (2,), seed=1)), (qc, [SparsePauliOp("IZ")] * 2, _values(3, (2,), seed=2))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the one-time sampling warning
        engine = EngineEstimator(seed=1).run(pubs, precision=precision).result()
    reference = StatevectorEstimator(seed=1).run(pubs, precision=precision).result()
    assert engine.metadata["version"] == reference.metadata["version"] == 2
    for e, r in zip(engine, reference):
        assert set(r.metadata) == {"target_precision", "circuit_metadata"}
        assert set(e.metadata) == set(r.metadata) | {"shots", "simulator", "route", "num_qubits"}
        assert e.metadata["target_precision"] == r.metadata["target_precision"] == precision
        assert e.metadata["circuit_metadata"] == r.metadata["circuit_metadata"] == {"experiment": "dropin", "index": 3}
        assert e.metadata["shots"] == (None if precision == 0 else 400)


def test_target_precision_is_the_one_asked_for_even_when_shots_round_up():
    qc = _broadcast_circuit()
    precision = 0.03  # 1/p^2 = 1111.1: 1112 shots
    result = EngineEstimator(shots=50).run([(qc, SparsePauliOp("ZZ"), [0.1, 0.2, 0.3])], precision=precision).result()[0]
    backend = BackendEstimatorV2(backend=AerSimulator()).run([(qc, SparsePauliOp("ZZ"), [0.1, 0.2, 0.3])],
                                                             precision=precision).result()[0]
    assert result.metadata["target_precision"] == backend.metadata["target_precision"] == precision
    assert result.metadata["shots"] == backend.metadata["shots"] == 1112


# ---------------------------------------------------------------- sampling: independent estimates, seeding


def test_repeated_observables_are_independent_estimates_whose_spread_follows_one_over_root_shots():
    qc = QuantumCircuit(1)
    qc.ry(1.0, 0)
    exact = float(_exact([(qc, SparsePauliOp("Z"))])[0].data.evs)  # cos(1)
    spreads = {}
    for shots in (100, 1600):
        result = EngineEstimator(shots=shots, seed=11).run([(qc, [SparsePauliOp("Z")] * 400)]).result()[0]
        evs = result.data.evs
        assert len(set(evs.tolist())) > 10  # not one sample broadcast 400 times (100 shots: about 25 values occur)
        expected = np.sqrt((1 - exact**2) / shots)  # binomial standard error of a mean of +-1 outcomes
        assert np.std(evs) == pytest.approx(expected, rel=0.15)
        assert abs(np.mean(evs) - exact) < 5 * expected / np.sqrt(len(evs))
        np.testing.assert_allclose(result.data.stds, expected, rtol=0.3)
        spreads[shots] = np.std(evs)
    assert spreads[100] / spreads[1600] == pytest.approx(4.0, rel=0.2)
    # Aer's EstimatorV2 also gives each repeated observable its own draw
    aer = AerEstimatorV2(options={"run_options": {"seed_simulator": 1}}).run(
        [(qc, [SparsePauliOp("Z")] * 400)], precision=0.1).result()[0].data.evs
    assert np.std(aer) == pytest.approx(0.1, rel=0.15)


def _sampling_pub(values=None):
    qc = _broadcast_circuit()
    values = _values(3, (300,), seed=8) if values is None else values
    return qc, SparsePauliOp.from_list([("ZZ", 0.7), ("XI", 0.4)]), values


def test_an_integer_seed_replays_a_run_whatever_ran_before_as_aer_seed_simulator_does():
    pub = _sampling_pub()
    estimator = EngineEstimator(shots=500, seed=42)
    first = estimator.run([pub]).result()[0].data.evs
    estimator.run([_sampling_pub(_values(3, (300,), seed=9))])  # something else in between
    again = estimator.run([pub]).result()[0].data.evs
    fresh = EngineEstimator(shots=500, seed=42).run([pub]).result()[0].data.evs
    other_seed = EngineEstimator(shots=500, seed=43).run([pub]).result()[0].data.evs
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, fresh)
    assert np.mean(first != other_seed) > 0.9
    # the reference behaviour: Aer's shot sampling with seed_simulator repeats a run exactly
    aer = BackendEstimatorV2(backend=AerSimulator(), options={"default_precision": 1 / np.sqrt(500), "seed_simulator": 42})
    a, b = aer.run([pub]).result()[0].data.evs, aer.run([pub]).result()[0].data.evs
    np.testing.assert_array_equal(a, b)
    exact = _exact([pub])[0].data.evs
    for values in (first, a):  # both are samples of the same exact values
        assert np.abs(values - exact).max() < 5 * np.sqrt(0.7**2 + 0.4**2) / np.sqrt(500)


def test_pubs_that_differ_or_repeat_within_a_run_draw_independently():
    qc, obs, values = _sampling_pub()
    exact = _exact([(qc, obs, values)])[0].data.evs
    estimator = EngineEstimator(shots=500, seed=42)
    # the next training step: values moved by 1e-9, so the exact values barely change
    a = estimator.run([(qc, obs, values)]).result()[0].data.evs - exact
    b = estimator.run([(qc, obs, values + 1e-9)]).result()[0].data.evs - exact
    twice = estimator.run([(qc, obs, values), (qc, obs, values)]).result()
    c, d = (r.data.evs - exact for r in twice)
    for x, y in ((a, b), (c, d)):  # reseeding by the seed alone would correlate these errors fully
        assert abs(np.corrcoef(x, y)[0, 1]) < 0.25


def test_a_generator_seed_is_one_stream_across_runs():
    pub = _sampling_pub()

    def two_runs(generator):
        estimator = EngineEstimator(shots=500, seed=generator)
        return estimator.run([pub]).result()[0].data.evs, estimator.run([pub]).result()[0].data.evs

    first, second = two_runs(np.random.default_rng(5))
    assert np.mean(first != second) > 0.9
    replay = two_runs(np.random.default_rng(5))
    np.testing.assert_array_equal(first, replay[0])
    np.testing.assert_array_equal(second, replay[1])
    # as StatevectorEstimator does with a Generator
    sv = StatevectorEstimator(seed=np.random.default_rng(5))
    assert np.any(sv.run([pub], precision=0.1).result()[0].data.evs != sv.run([pub], precision=0.1).result()[0].data.evs)


def test_no_seed_draws_afresh_every_run():
    pub = _sampling_pub()
    estimator = EngineEstimator(shots=500)
    assert np.mean(estimator.run([pub]).result()[0].data.evs != estimator.run([pub]).result()[0].data.evs) > 0.9


# ---------------------------------------------------------------- what the engine does not take


def test_projector_observables_are_refused_with_their_name_and_the_way_out():
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.ry(0.7, 2)
    projector = SparseObservable("0+r")
    with pytest.raises(EngineUnsupportedError, match=r"'0\+r'.*Pauli observables.*as_paulis"):
        EngineEstimator().run([(qc, [SparsePauliOp("ZZZ"), projector])]).result()
    # the way out the message gives: the same observable in Paulis, equal to the projector's value
    value = float(EngineEstimator().run([(qc, projector.as_paulis())]).result()[0].data.evs)
    state = Statevector(qc)
    plus = np.array([1, 1]) / np.sqrt(2)
    r = np.array([1, 1j]) / np.sqrt(2)
    zero = np.array([1, 0])
    expected = abs(np.vdot(np.kron(zero, np.kron(plus, r)), state.data)) ** 2  # qubit 0 is the last factor
    assert value == pytest.approx(expected, abs=1e-12)


def test_final_measurements_are_refused_with_the_way_out():
    qc = QuantumCircuit(2)
    qc.ry(0.8, 0)
    qc.cx(0, 1)
    qc.measure_all()
    with pytest.raises(EngineUnsupportedError, match=r"'measure'.*remove_final_measurements"):
        EngineEstimator().run([(qc, SparsePauliOp("ZZ"))]).result()
    unmeasured = qc.remove_final_measurements(inplace=False)
    value = float(EngineEstimator().run([(unmeasured, SparsePauliOp("ZI"))]).result()[0].data.evs)
    assert value == pytest.approx(float(_exact([(unmeasured, SparsePauliOp("ZI"))])[0].data.evs), abs=1e-14)
    assert value == pytest.approx(np.cos(0.8), abs=1e-14)


@pytest.mark.parametrize("kwargs, match", [({"shots": 0}, "shots=0"), ({"seed": -1}, "seed=-1"),
                                           ({"exact": True, "shots": 100}, "exact=True with shots=100")])
def test_bad_constructor_arguments_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EngineEstimator(**kwargs)


# ---------------------------------------------------------------- the README example runs


def test_the_readme_example_runs_and_its_values_are_right():
    text = README.read_text()
    section = text[text.index("**Using the engine in your own Qiskit code.**"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the example asks for what it gets
        exec(compile(code, str(README), "exec"), namespace)
    qc, observables, values = namespace["qc"], namespace["observables"], namespace["values"]
    reference = _exact([(qc, o, values) for o in observables])
    for e, r in zip(namespace["exact"], reference):
        np.testing.assert_allclose(e.data.evs, r.data.evs, atol=1e-12)
    sampled = namespace["sampled"][0]
    assert sampled.metadata["shots"] == 10_000
    assert np.abs((sampled.data.evs - reference[0].data.evs) / sampled.data.stds).max() < 5
    qnn, x, w = namespace["qnn"], namespace["x"], namespace["w"]
    default = EstimatorQNN(circuit=qnn.circuit, input_params=qnn.input_params, weight_params=qnn.weight_params,
                           observables=qnn.observables, default_precision=0.0)
    np.testing.assert_allclose(namespace["forward"], default.forward(x, w), atol=1e-10)
