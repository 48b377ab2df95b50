import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit
from qiskit.quantum_info import DensityMatrix, SparsePauliOp, Statevector
from qiskit_aer import AerSimulator
from qiskit_aer.primitives import EstimatorV2 as AerEstimatorV2

from qresnet.backends import (
    BackendOptions, BackendSpec, ReadoutFoldingEstimator, fake_device_names, resolve_backend,
)
from qresnet.backends.backend import noise_model_for
from qresnet.circuits import quantum_head, quanv_filter
from qresnet.errors import BackendSpecError, DeviceTooSmallError

FILTER = quanv_filter()


def _params(rng, n=8):
    x = rng.uniform(0, 1, (n, FILTER.num_inputs))
    w = rng.uniform(-np.pi, np.pi, (n, FILTER.num_weights))
    return x, w


def _logical_values(x, w):
    return np.array([
        Statevector(FILTER.circuit.assign_parameters(dict(zip(FILTER.input_params, xi)) | dict(zip(FILTER.weight_params, wi))))
        .expectation_value(FILTER.observables[0]).real for xi, wi in zip(x, w)
    ])


def _run(backend, x, w, estimator=None):
    tt = backend.transpile(FILTER)
    # bind by the transpiled circuit's own parameter order (sorted by name), not the template's
    values = dict(zip(FILTER.input_params, x.T)) | dict(zip(FILTER.weight_params, w.T))
    columns = np.stack([values[p] for p in tt.circuit.parameters], axis=-1)
    result = (estimator or backend.estimator()).run([(tt.circuit, tt.observables[0], columns)]).result()[0]
    return result.data.evs, result.data.stds, result.metadata


@pytest.mark.parametrize("text, kind, device", [
    ("aer", "aer", None), (" AER ", "aer", None), ("aer:fake_manila", "aer", "fake_manila"),
    ("aer:FakeManilaV2", "aer", "fake_manila"), ("aer:torino", "aer", "fake_torino"),
    ("local:fake_manila", "local", "fake_manila"), ("ibm:ibm_torino", "ibm", "ibm_torino"),
])
def test_spec_parsing(text, kind, device):
    spec = BackendSpec.coerce(text)
    assert (spec.kind, spec.device) == (kind, device)
    assert BackendSpec.coerce(str(spec)) == spec
    assert spec.noisy == (kind != "aer" or device is not None)


@pytest.mark.parametrize("text, canonical, fields", [
    ("noise:depolarizing:0.1", "noise:depolarizing:0.1", ("noise", None, "depolarizing", 0.1, None)),
    (" Noise : Amplitude-Damping : 1 ", "noise:amplitude_damping:1", ("noise", None, "amplitude_damping", 1.0, None)),
    ("noise:phase_flip:0", "noise:phase_flip:0", ("noise", None, "phase_flip", 0.0, None)),
    ("noise:bit_flip:.25", "noise:bit_flip:0.25", ("noise", None, "bit_flip", 0.25, None)),
    ("aer:fake_torino@10", "aer:fake_torino@10", ("aer", "fake_torino", None, None, 10.0)),
    ("aer:FakeManilaV2@0.5", "aer:fake_manila@0.5", ("aer", "fake_manila", None, None, 0.5)),
    ("aer:manila@0", "aer:fake_manila@0", ("aer", "fake_manila", None, None, 0.0)),
    ("aer:fake_manila@1e-3", "aer:fake_manila@0.001", ("aer", "fake_manila", None, None, 0.001)),
])
def test_noise_spec_parsing(text, canonical, fields):
    spec = BackendSpec.coerce(text)
    assert (spec.kind, spec.device, spec.channel, spec.p, spec.scale) == fields
    assert str(spec) == canonical and BackendSpec.coerce(canonical) == spec
    assert spec.noisy and spec.simulated and not spec.on_device


@pytest.mark.parametrize("text, fragments", [
    ("noise:depolarising:0.1", ["unknown noise channel 'depolarising'", "Did you mean depolarizing",
                                "amplitude_damping, phase_damping, bit_flip, phase_flip"]),
    ("noise:gaussian:0.1", ["unknown noise channel 'gaussian'", "depolarizing, amplitude_damping"]),
    ("noise", ["needs a channel and a strength", "noise:<channel>:<p>", "bit_flip", "0 <= p <= 1"]),
    ("noise:bit_flip", ["gives no strength", "0 <= p <= 1"]),
    ("noise:bit_flip:1.5", ["'1.5' is out of range", "0 <= p <= 1"]),
    ("noise:bit_flip:-0.1", ["'-0.1' is out of range", "0 <= p <= 1"]),
    ("noise:bit_flip:nan", ["'nan' is not a number"]),
    ("noise:bit_flip:lots", ["'lots' is not a number", "0 <= p <= 1"]),
    ("aer:fake_torino@-2", ["noise scale '-2' is out of range", "s >= 0"]),
    ("aer:fake_torino@big", ["noise scale 'big' is not a number", "s >= 0"]),
    ("aer:fake_torino@inf", ["noise scale 'inf' is out of range", "s >= 0"]),
    ("aer:fake_torino@", ["noise scale '' is not a number", "s >= 0"]),
    ("aer:@2", ["names no device before '@'"]),
    ("aer@2", ["a noise scale needs a fake device", "aer:fake_torino@10"]),
    ("local:fake_manila@2", ["exists for aer:<fake device> only"]),
    ("aer:fake_manilla@2", ["unknown fake device", "Did you mean fake_manila"]),
])
def test_bad_noise_specs_name_the_value_and_the_allowed_ones(text, fragments):
    with pytest.raises(BackendSpecError) as info:
        BackendSpec.coerce(text)
    assert "\n" not in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("text, fragments", [
    ("qasm", ["unknown backend 'qasm'", "aer, noise, local, ibm"]),
    ("aer:fake_manilla", ["unknown fake device", "Did you mean fake_manila", "fake_torino"]),
    ("aer:", ["names no device"]),
    ("local", ["needs a device", "local:fake_manila"]),
    ("ibm", ["needs a device"]),
])
def test_bad_specs_say_what_is_valid(text, fragments):
    with pytest.raises(BackendSpecError) as info:
        BackendSpec.coerce(text)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_fake_devices_listed():
    names = fake_device_names()
    assert {"fake_manila", "fake_torino", "fake_brisbane"} <= set(names)


@pytest.mark.parametrize("spec, layout", [
    ("aer:fake_manila", None), ("aer:fake_manila", (4, 3, 2, 1)), ("aer:fake_torino", None), ("aer:fake_brisbane", None),
])
def test_transpiled_template_gives_logical_values(rng, spec, layout):
    """Noiseless Aer on the ISA circuit with mapped observables equals the logical statevector."""
    backend = resolve_backend(spec, BackendOptions(initial_layout=layout))
    tt = backend.transpile(FILTER)
    if layout is not None:
        assert tt.cost.layout == layout
    if layout is not None or spec != "aer:fake_manila":
        assert tt.cost.layout != (0, 1, 2, 3)  # the mapping is really exercised
    assert tt.response_ready
    x, w = _params(rng)
    noiseless = AerEstimatorV2(options={"default_precision": 0.0})
    evs, _, _ = _run(backend, x, w, estimator=noiseless)
    np.testing.assert_allclose(evs, _logical_values(x, w), atol=1e-10)


def test_transpile_is_cached(monkeypatch):
    import qresnet.backends.backend as backend_module

    backend = resolve_backend("aer:fake_manila")
    first = backend.transpile(FILTER)
    monkeypatch.setattr(backend_module, "transpile_template", lambda *a, **k: pytest.fail("transpiled twice"))
    assert backend.transpile(FILTER) is first


def _direct_density_matrix_values(backend, x, w):
    """Aer's density-matrix simulator run by hand: save the state of the used qubits, take <O>."""
    tt = backend.transpile(FILTER)
    used = sorted({tt.circuit.find_bit(q).index for inst in tt.circuit.data for q in inst.qubits})
    obs = tt.observables[0]
    support = sorted({q for p in obs.paulis for q in np.flatnonzero(p.x | p.z)})
    assert set(support) <= set(used)
    reduced = SparsePauliOp.from_sparse_list(
        [(label[::-1].replace("I", ""), [used.index(q) for q in np.flatnonzero(p.x | p.z)], c)
         for p, label, c in zip(obs.paulis, obs.paulis.to_labels(), obs.coeffs)], len(used))
    simulator = AerSimulator(method="density_matrix", noise_model=noise_model_for(backend.spec.device))
    values = []
    for xi, wi in zip(x, w):
        bound = tt.circuit.assign_parameters(dict(zip(FILTER.input_params, xi)) | dict(zip(FILTER.weight_params, wi)))
        bound.save_density_matrix(qubits=used)
        rho = simulator.run(bound).result().data()["density_matrix"]
        values.append(DensityMatrix(rho).expectation_value(reduced).real)
    return np.array(values)


@pytest.mark.parametrize("device", ["fake_manila", "fake_torino"])
def test_exact_noisy_values_equal_direct_density_matrix_run(rng, device):
    x, w = _params(rng, 4)
    no_readout = resolve_backend(f"aer:{device}", BackendOptions(readout=False, engine="aer"))
    evs, stds, _ = _run(no_readout, x, w)
    np.testing.assert_allclose(evs, _direct_density_matrix_values(no_readout, x, w), atol=1e-10)
    ideal = _logical_values(x, w)
    assert np.max(np.abs(evs - ideal)) > 1e-3  # the noise model does something
    with_readout, _, _ = _run(resolve_backend(f"aer:{device}", BackendOptions(engine="aer")), x, w)
    assert np.max(np.abs(with_readout - evs)) > 1e-3  # and so does readout


def test_readout_folding_matches_analytic_flip_probabilities():
    e0, e1 = 0.1, 0.25  # P(read 1 | 0), P(read 0 | 1)
    qc = QuantumCircuit(2)
    qc.x(1)
    obs = [SparsePauliOp("IZ"), SparsePauliOp("ZI"), SparsePauliOp("ZZ"), SparsePauliOp("XI")]
    folded = ReadoutFoldingEstimator(AerEstimatorV2(options={"default_precision": 0.0}), {0: (e0, e1), 1: (e0, e1)})
    evs = folded.run([(qc, obs)]).result()[0].data.evs
    # qubit 0 in |0>: 1 - 2 e0; qubit 1 in |1>: -(1 - 2 e1); independent flips multiply; <X> = 0 scales to e1 - e0
    np.testing.assert_allclose(evs, [1 - 2 * e0, -(1 - 2 * e1), -(1 - 2 * e0) * (1 - 2 * e1), e1 - e0], atol=1e-12)


def test_readout_inclusive_values_agree_with_sampled_counts(rng):
    """Exact values with folded readout vs Aer sampling with the device's readout errors, by hand from counts."""
    backend = resolve_backend("aer:fake_manila")
    x, w = _params(rng, 3)
    exact, _, _ = _run(backend, x, w)
    tt = backend.transpile(FILTER)
    measured = tt.cost.final_layout
    simulator = AerSimulator(noise_model=noise_model_for("fake_manila"), seed_simulator=11)
    shots = 20000
    for xi, wi, value in zip(x, w, exact):
        bound = tt.circuit.assign_parameters(dict(zip(FILTER.input_params, xi)) | dict(zip(FILTER.weight_params, wi)))
        measured_circuit = QuantumCircuit(*bound.qregs, *bound.cregs)
        measured_circuit.compose(bound, inplace=True)
        measured_circuit.add_register(ClassicalRegister(4, "m"))
        measured_circuit.measure(list(measured), list(range(4)))
        counts = simulator.run(measured_circuit, shots=shots).result().get_counts()
        z = sum(c * np.mean([1 - 2 * int(bits[-1 - i]) for i in range(4)]) for bits, c in counts.items()) / shots
        assert abs(z - value) < 5 / np.sqrt(shots)


def test_aer_shots_are_real_seeded_and_exact_in_count(rng):
    x, w = _params(rng, 6)
    shots = 3000
    a = _run(resolve_backend("aer:fake_manila", BackendOptions(shots=shots, seed=5)), x, w)
    b = _run(resolve_backend("aer:fake_manila", BackendOptions(shots=shots, seed=5)), x, w)
    exact, _, _ = _run(resolve_backend("aer:fake_manila"), x, w)
    assert a[2]["shots"] == shots
    np.testing.assert_array_equal(a[0], b[0])
    assert np.all(np.abs(a[0] - exact) < 5 / np.sqrt(shots))
    assert np.all(a[0] != exact)


def test_local_runtime_mode_agrees_with_exact_noisy_values(rng):
    x, w = _params(rng, 5)
    shots = 8000
    local = resolve_backend("local:fake_manila", BackendOptions(shots=shots, seed=3, resilience_level=0))
    evs, stds, meta = _run(local, x, w)
    exact, _, _ = _run(resolve_backend("aer:fake_manila"), x, w)
    # a mean of four +-1 outcomes per shot has a standard error of at most 1/sqrt(shots)
    assert np.all(np.abs(evs - exact) < 5 / np.sqrt(shots)), (evs, exact)


def test_template_wider_than_device_says_both_numbers():
    backend = resolve_backend("aer:fake_manila")
    with pytest.raises(DeviceTooSmallError, match="needs 10 qubits but aer:fake_manila has only 5"):
        backend.transpile(quantum_head())


def test_head_transpiles_and_keeps_rotation_condition():
    head = quantum_head(num_qubits=4, measured=2, reps=1)
    tt = resolve_backend("aer:fake_manila").transpile(head)
    assert tt.response_ready
    assert tt.cost.two_qubit_gates >= 2**4 - 2  # the encoding alone has 2^n - 2 CNOTs
    assert 0 < tt.cost.estimated_fidelity < 1


def test_estimated_fidelity_is_the_product_of_gate_and_readout_errors():
    backend = resolve_backend("aer:fake_manila")
    tt = backend.transpile(FILTER)
    target = backend.device.target
    expected = 1.0
    for inst in tt.circuit.data:
        qargs = tuple(tt.circuit.find_bit(q).index for q in inst.qubits)
        error = target[inst.operation.name][qargs].error or 0.0
        expected *= 1 - error
    for q in tt.cost.final_layout:
        expected *= 1 - target["measure"][(q,)].error
    assert tt.cost.estimated_fidelity == pytest.approx(expected, rel=1e-12)
    assert resolve_backend("aer").transpile(FILTER).cost.estimated_fidelity == 1.0


def test_transpile_cache_tells_equal_named_templates_apart():
    """Two templates with the same name but their own Parameters each get their own transpiled circuit."""
    from qresnet.circuits.quanv import _quanv_filter

    backend = resolve_backend("aer:fake_manila")
    first = backend.transpile(FILTER)
    other = _quanv_filter.__wrapped__(2, 2, "chain", "mean", "ry_rz", 0, "ry_pi")  # a fresh object, bypassing the factory cache
    assert other.name == FILTER.name and other is not FILTER
    second = backend.transpile(other)
    assert second.template is other and set(second.circuit.parameters) == set(other.circuit.parameters)
    assert backend.transpile(FILTER) is first
