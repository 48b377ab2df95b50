"""Channel and scaled-device noise against independent references: physics, qiskit's exact evolution, Aer."""

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.quantum_info import DensityMatrix, Statevector
from qiskit_aer.noise import (
    NoiseModel, amplitude_damping_error, depolarizing_error, pauli_error, phase_damping_error,
)
from qiskit_aer.primitives import EstimatorV2 as AerEstimatorV2

from qresnet.backends import BackendOptions, resolve_backend
from qresnet.backends.backend import noise_model_for
from qresnet.circuits import quantum_head, quanv_filter
from qresnet.nn import QuanvLayer

FILTER = quanv_filter()


def reference_model(channel: str, p: float, one_qubit: tuple[str, ...], two_qubit: tuple[str, ...]) -> NoiseModel:
    """The placement written here from Aer's primitives: the channel after each named gate, on each of its qubits."""
    single = {"depolarizing": lambda: depolarizing_error(p, 1),
              "amplitude_damping": lambda: amplitude_damping_error(p),
              "phase_damping": lambda: phase_damping_error(p),
              "bit_flip": lambda: pauli_error([("X", p), ("I", 1 - p)]),
              "phase_flip": lambda: pauli_error([("Z", p), ("I", 1 - p)])}[channel]()
    model = NoiseModel()
    model.add_all_qubit_quantum_error(single, list(one_qubit))
    model.add_all_qubit_quantum_error(single.expand(single), list(two_qubit))
    return model


def aer_density_matrix(model: NoiseModel) -> AerEstimatorV2:
    return AerEstimatorV2(options={"default_precision": 0.0,
                                   "backend_options": {"method": "density_matrix", "noise_model": model}})


def filter_rows(transpiled, rng, rows: int = 6) -> np.ndarray:
    """Random patches in [0, 1] and weights, in the transpiled circuit's own parameter order."""
    values = (dict(zip(FILTER.input_params, rng.uniform(0, 1, (FILTER.num_inputs, rows))))
              | dict(zip(FILTER.weight_params, rng.uniform(-np.pi, np.pi, (FILTER.num_weights, rows)))))
    return np.stack([values[p] for p in transpiled.circuit.parameters], axis=-1)


def evaluate(estimator, transpiled, values) -> np.ndarray:
    """(rows, observables)."""
    pub = (transpiled.circuit, [[o] for o in transpiled.observables], values)
    return estimator.run([pub]).result()[0].data.evs.T


def test_full_depolarizing_after_every_gate_erases_every_patch():
    """p = 1 depolarizing after a qubit's last gate leaves that qubit maximally mixed: <Z> = 0 for every patch."""
    backend = resolve_backend("noise:depolarizing:1")
    layer = QuanvLayer(FILTER, backend.estimator(), circuit=backend.transpile(FILTER).circuit,
                       observables=backend.transpile(FILTER).observables, seed=0)
    images = torch.rand(3, 8, 8, dtype=torch.float64)
    out = layer(images)
    assert out.shape[0] == 3
    np.testing.assert_allclose(out.detach().numpy(), 0.0, atol=1e-12)
    ideal = resolve_backend("aer")
    ideal_layer = QuanvLayer(FILTER, ideal.estimator(), circuit=ideal.transpile(FILTER).circuit,
                             observables=ideal.transpile(FILTER).observables, seed=0)
    assert ideal_layer(images).abs().max() > 0.05  # the same patches are not zero without the noise


@pytest.mark.parametrize("channel, pauli", [("bit_flip", "x"), ("phase_flip", "z")])
def test_certain_flip_after_every_gate_equals_the_circuit_with_that_gate_inserted(channel, pauli):
    backend = resolve_backend(f"noise:{channel}:1")
    transpiled = backend.transpile(FILTER)
    values = filter_rows(transpiled, np.random.default_rng(1))
    ours = evaluate(backend.estimator(), transpiled, values)
    circuit = transpiled.circuit
    expected = []
    for row in values:
        bound = circuit.assign_parameters(row)
        flipped = QuantumCircuit(circuit.num_qubits)
        for inst in bound.data:
            flipped.append(inst)
            for q in inst.qubits:
                getattr(flipped, pauli)(circuit.find_bit(q).index)
        state = Statevector(flipped)
        expected.append([state.expectation_value(o).real for o in transpiled.observables])
    np.testing.assert_allclose(ours, expected, atol=1e-12)
    plain = [[Statevector(circuit.assign_parameters(r)).expectation_value(o).real for o in transpiled.observables]
             for r in values]
    assert np.abs(np.array(expected) - plain).max() > 0.05  # the flips change the values


@pytest.mark.parametrize("channel", ["depolarizing", "amplitude_damping", "phase_damping", "bit_flip", "phase_flip"])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.55, 1.0])
@pytest.mark.parametrize("engine", ["engine", "aer"])
def test_every_channel_equals_aer_density_matrix_on_the_filter(channel, p, engine):
    backend = resolve_backend(f"noise:{channel}:{p}", BackendOptions(engine=engine))
    transpiled = backend.transpile(FILTER)
    assert set(transpiled.circuit.count_ops()) == {"ry", "rz", "cx"}
    values = filter_rows(transpiled, np.random.default_rng(2))
    ours = evaluate(backend.estimator(), transpiled, values)
    reference = evaluate(aer_density_matrix(reference_model(channel, p, ("ry", "rz"), ("cx",))), transpiled, values)
    np.testing.assert_allclose(ours, reference, atol=1e-10)


def head_reference(transpiled, model, features, weights) -> np.ndarray:
    """(samples, observables): Aer's density matrix from the exactly prepared state through the noisy ansatz."""
    circuit, template = transpiled.circuit, transpiled.template
    n = circuit.num_qubits
    assert [circuit.find_bit(q).index for q in circuit.data[0].qubits] == list(range(n))  # aer: trivial layout
    aer = aer_density_matrix(model)
    out = []
    for x in features:
        psi = np.zeros(2**n)
        psi[: len(x)] = x
        qc = QuantumCircuit(n)
        qc.set_density_matrix(DensityMatrix(psi / np.linalg.norm(psi)))
        for inst in circuit.data[1:]:
            qc.append(inst)
        out.append(aer.run([(qc.assign_parameters(dict(zip(template.weight_params, weights))),
                             list(transpiled.observables))]).result()[0].data.evs)
    return np.array(out)


@pytest.mark.parametrize("channel, p", [("depolarizing", 0.3), ("amplitude_damping", 0.2), ("phase_damping", 0.7),
                                        ("bit_flip", 0.1), ("phase_flip", 1.0)])
def test_every_channel_equals_aer_density_matrix_on_a_small_quantum_head(channel, p):
    backend = resolve_backend(f"noise:{channel}:{p}")
    transpiled = backend.transpile(quantum_head(6, 4, encoding="state", num_features=40))
    rng = np.random.default_rng(5)
    features, weights = rng.normal(size=(3, 40)), rng.uniform(-np.pi, np.pi, transpiled.template.num_weights)
    index = {q: i for i, q in enumerate(transpiled.circuit.parameters)}
    values = np.zeros((len(features), transpiled.circuit.num_parameters))
    for j, q in enumerate(transpiled.template.input_params):
        values[:, index[q]] = features[:, j]
    for j, q in enumerate(transpiled.template.weight_params):
        values[:, index[q]] = weights[j]
    ours = evaluate(backend.estimator(), transpiled, values)
    gates = set(transpiled.circuit.count_ops()) - {"amplitude_encoding"}
    model = reference_model(channel, p, tuple(gates - {"cx"}), ("cx",))
    np.testing.assert_allclose(ours, head_reference(transpiled, model, features, weights), atol=1e-10)


def test_scale_one_is_the_device_as_it_is():
    """@1 rebuilds Aer's from_backend model number for number: identical values, readout included."""
    today, scaled = resolve_backend("aer:fake_torino"), resolve_backend("aer:fake_torino@1")
    assert scaled.readout() == today.readout()
    transpiled = today.transpile(FILTER)
    # the errors on the filter's qubits, one by one (comparing all 133 qubits' takes minutes)
    used = {transpiled.circuit.find_bit(q).index for inst in transpiled.circuit.data for q in inst.qubits}
    ours, aers = scaled.noise_model._local_quantum_errors, noise_model_for("fake_torino")._local_quantum_errors
    compared = [(name, qubits) for name, errors in aers.items() for qubits in errors if set(qubits) <= used]
    assert len(compared) > 10 and all(ours[name][qubits] == aers[name][qubits] for name, qubits in compared)
    assert scaled.transpile(FILTER).circuit == transpiled.circuit
    values = filter_rows(transpiled, np.random.default_rng(3))
    np.testing.assert_array_equal(evaluate(scaled.estimator(), transpiled, values),
                                  evaluate(today.estimator(), transpiled, values))


@pytest.mark.parametrize("device", ["fake_manila", "fake_torino"])
def test_scale_zero_is_ideal_on_the_device_layout(device):
    zero, device_backend = resolve_backend(f"aer:{device}@0"), resolve_backend(f"aer:{device}")
    assert zero.noise_model is None and zero.readout() is None
    transpiled = zero.transpile(FILTER)
    assert transpiled.cost.layout == device_backend.transpile(FILTER).cost.layout
    values = filter_rows(transpiled, np.random.default_rng(4))
    names = [p.name for p in transpiled.circuit.parameters]
    expected = [[Statevector(FILTER.circuit.assign_parameters(dict(zip(names, r)))).expectation_value(o).real
                 for o in FILTER.observables] for r in values]  # the logical circuit, noiseless
    np.testing.assert_allclose(evaluate(zero.estimator(), transpiled, values), expected, atol=1e-12)


def test_larger_scale_means_more_noise():
    """The filter's values shrink toward 0 as the scale grows (depolarizing, relaxation and readout all grow)."""
    ideal = resolve_backend("aer:fake_manila@0")
    transpiled = ideal.transpile(FILTER)
    values = filter_rows(transpiled, np.random.default_rng(6), rows=20)
    reference = np.abs(evaluate(ideal.estimator(), transpiled, values)).mean()
    shrink = [np.abs(evaluate(resolve_backend(f"aer:fake_manila@{s}").estimator(), transpiled, values)).mean() / reference
              for s in (1, 10, 30)]
    assert 1 > shrink[0] > shrink[1] > shrink[2] > 0


def test_scaled_errors_and_their_caps():
    """Gate error e -> s e (at most d / (d + 1)); T1 -> T1 / s (an idle |1> decays as exp(-t s / T1));
    readout -> s e (at most 0.5)."""
    from qiskit.quantum_info import SparsePauliOp, average_gate_fidelity

    from qresnet.backends import fake_device

    device = fake_device("fake_manila")
    cx_error = device.target["cx"][(0, 1)].error
    t1 = device.target.qubit_properties[0].t1
    idle = QuantumCircuit(1)
    idle.set_density_matrix(DensityMatrix.from_label("1"))
    idle.delay(2e-6, 0, unit="s")
    for s in (3.0, 1000.0):
        model = resolve_backend(f"aer:fake_manila@{s}").noise_model
        infidelity = 1 - average_gate_fidelity(model._local_quantum_errors["cx"][(0, 1)])
        if s * cx_error < 4 / 5:
            np.testing.assert_allclose(infidelity, s * cx_error, rtol=1e-9)
        else:  # capped: no channel has an average gate infidelity above d / (d + 1)
            assert 3 * cx_error < infidelity <= 4 / 5 + 1e-12
        z = aer_density_matrix(model).run([(idle, SparsePauliOp("Z"))]).result()[0].data.evs
        np.testing.assert_allclose((1 - z) / 2, np.exp(-2e-6 * s / t1), rtol=1e-9)
    readout = resolve_backend("aer:fake_manila@1000").readout()
    assert set(readout.values()) == {(0.5, 0.5)}


@pytest.mark.parametrize("spec", ["noise:amplitude_damping:0.3", "aer:fake_manila@5"])
@pytest.mark.parametrize("engine", ["engine", "aer"])
def test_shots_sample_the_noisy_values(spec, engine):
    """--shots N: N real shots around the exact noisy value (readout included on the device), seeded."""
    exact_backend = resolve_backend(spec)
    transpiled = exact_backend.transpile(FILTER)
    values = filter_rows(transpiled, np.random.default_rng(8), rows=10)
    exact = evaluate(exact_backend.estimator(), transpiled, values)
    sampled = [evaluate(resolve_backend(spec, BackendOptions(shots=4000, seed=11, engine=engine)).estimator(),
                        transpiled, values) for _ in range(2)]
    np.testing.assert_array_equal(sampled[0], sampled[1])  # seeded
    assert 0 < np.abs(sampled[0] - exact).max() < 5 / np.sqrt(4000)


@pytest.mark.parametrize("channel, p", [("depolarizing", 0.2), ("amplitude_damping", 0.3), ("phase_damping", 0.6)])
def test_exact_gradients_under_a_channel_equal_finite_differences_of_aer(channel, p):
    """Training on the engine takes its exact derivatives; under a channel they are Aer's, differentiated."""
    backend = resolve_backend(f"noise:{channel}:{p}")
    transpiled = backend.transpile(FILTER)
    circuit, observables = transpiled.circuit, list(transpiled.observables)
    rows = filter_rows(transpiled, np.random.default_rng(9), rows=3)
    values, gradients = backend.estimator().differentiator.value_and_gradients(circuit, observables, rows)  # (R, K), (R, K, P)
    aer = aer_density_matrix(reference_model(channel, p, ("ry", "rz"), ("cx",)))
    h, eye = 1e-5, np.eye(rows.shape[1])
    shifted = np.concatenate([rows[:, None] + h * eye, rows[:, None] - h * eye], axis=1).reshape(-1, rows.shape[1])
    around = evaluate(aer, transpiled, shifted).reshape(len(rows), 2, rows.shape[1], -1)
    differences = ((around[:, 0] - around[:, 1]) / (2 * h)).transpose(0, 2, 1)
    np.testing.assert_allclose(values, evaluate(aer, transpiled, rows), atol=1e-10)
    np.testing.assert_allclose(gradients, differences, atol=1e-6)
    assert np.abs(differences).max() > 0.05


def test_a_none_model_under_full_depolarizing_sees_nothing_of_its_images():
    """Every patch 0, so the head gets the same input whatever the image: one prediction for all, chance accuracy,
    and no gradient reaches the quantum layers."""
    from qresnet.config import TrainConfig
    from qresnet.run.build import build_model

    config = TrainConfig(residual="none", backend="noise:depolarizing:1", classes=(0, 1, 2), seed=1)
    model = build_model(config, resolve_backend(config.backend), (8, 8), 3)
    logits = model(torch.rand(5, 8, 8, dtype=torch.float64))
    np.testing.assert_allclose(logits.detach().numpy(), np.broadcast_to(logits[0].detach().numpy(), logits.shape),
                               atol=1e-12)
    logits.sum().backward()
    grads = [layer.weight.grad for layer in model.layers]  # None: the layer is not on a path to the loss
    assert grads[-1] is not None and all(g is None or float(g.abs().max()) < 1e-12 for g in grads)


def test_the_transpile_report_scales_its_success_estimate():
    """`qresnet transpile --backend aer:<device>@<s>`: the product of (1 - s e) over gates and readouts."""
    from qresnet.backends import fake_device

    device = fake_device("fake_manila")
    plain = resolve_backend("aer:fake_manila").transpile(FILTER)
    circuit = plain.circuit
    errors = [device.target[i.operation.name][tuple(circuit.find_bit(q).index for q in i.qubits)].error
              for i in circuit.data if i.operation.name in device.target.operation_names]
    readouts = [device.target["measure"][(plain.cost.final_layout[q],)].error for q in FILTER.measured_qubits]
    for s in (0, 1, 3):
        expected = np.prod([1 - s * e for e in errors + readouts if e is not None])
        cost = resolve_backend(f"aer:fake_manila@{s}").transpile(FILTER).cost
        np.testing.assert_allclose(cost.estimated_fidelity, expected, rtol=1e-12)
    assert resolve_backend("aer:fake_manila@1").transpile(FILTER).cost == plain.cost.__class__(
        **{**plain.cost.to_dict(), "backend": "aer:fake_manila@1"})
