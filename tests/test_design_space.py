"""The design space of filters (issue 26): ansatz families, encodings, readouts, your own circuit.

References are independent of the code under test: numpy state vectors written from PennyLane's
definitions (tests/reference.py's gates), Aer's estimator against the engine through the backend layer,
and per-patch evaluation against the response tensor.
"""

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit, qpy
from qiskit.circuit import Parameter, ParameterVector
from qiskit.quantum_info import SparsePauliOp, Statevector

from reference import apply_1q, apply_cx, ry, rz
from qresnet.backends import BackendOptions, resolve_backend
from qresnet.circuits import CircuitTemplate, FilterSpec, load_filter_circuit, quanv_filter
from qresnet.errors import QresnetError
from qresnet.nn import QuanvLayer

FAMILIES = {
    "ry_rz-chain": {},
    "ry_rz-full": {"entanglement": "full"},
    "random": {"ansatz": "random", "ansatz_seed": 5},
    "strongly_entangling": {"ansatz": "strongly_entangling"},
}
ENCODINGS = ("ry_pi", "ry", "rx_pi")


def rx(theta):
    c, s = np.cos(theta / 2), np.sin(theta / 2)
    return np.array([[c, -1j * s], [-1j * s, c]])


def z_values(state, n):
    probs = np.abs(state) ** 2
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    return (probs[:, None] * (1 - 2 * bits)).sum(axis=0)


def template_z_values(template, x, w):
    """<Z_q> of the template's own circuit, bound and simulated by qiskit's Statevector."""
    bound = template.circuit.assign_parameters(dict(zip(template.input_params, x)) | dict(zip(template.weight_params, w)))
    return z_values(Statevector(bound).data, template.num_qubits)


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize("encoding, gate, scale", [("ry_pi", ry, np.pi), ("ry", ry, 1.0), ("rx_pi", rx, np.pi)])
def test_strongly_entangling_filter_is_pennylanes_definition(rng, encoding, gate, scale):
    """StronglyEntanglingLayers: Rot(phi, theta, omega) = RZ(omega) RY(theta) RZ(phi) per qubit, then CNOT(i, i + r)
    with r = l mod (n - 1) + 1; weights (l, q, 3) row-major."""
    n, reps = 4, 3
    template = quanv_filter(ansatz="strongly_entangling", reps=reps, encoding=encoding)
    x, w = rng.uniform(0, 1, n), rng.uniform(-np.pi, np.pi, 3 * n * reps)
    state = np.zeros(2**n, dtype=complex)
    state[0] = 1
    for q in range(n):
        state = apply_1q(state, gate(scale * x[q]), q, n)
    for layer, angles in enumerate(w.reshape(reps, n, 3)):
        for q, (phi, theta, omega) in enumerate(angles):
            state = apply_1q(state, rz(omega) @ ry(theta) @ rz(phi), q, n)
        for q in range(n):
            state = apply_cx(state, q, (q + layer % (n - 1) + 1) % n, n)
    np.testing.assert_allclose(template_z_values(template, x, w), z_values(state, n), atol=1e-12)
    assert template.num_weights == 3 * n * reps and template.input_scale == scale


def test_full_entanglement_is_every_pair_in_order(rng):
    template = quanv_filter(entanglement="full", reps=1)
    pairs = [tuple(template.circuit.find_bit(q).index for q in inst.qubits)
             for inst in template.circuit.data if inst.operation.name == "cx"]
    assert pairs == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_random_layers_are_seeded_rotations_and_cnots():
    template = quanv_filter(ansatz="random", ansatz_seed=11, reps=3)
    names = [inst.operation.name for inst in template.circuit.data][4:]  # after the encoding
    rotations = [name for name in names if name != "cx"]
    assert len(rotations) == template.num_weights == 12 and set(rotations) <= {"rx", "ry", "rz"}
    assert set(names) - {"rx", "ry", "rz"} <= {"cx"}
    assert template.settings["ansatz_seed"] == 11 and "random11" in template.name
    again = quanv_filter(ansatz="random", ansatz_seed=11, reps=3)
    assert again is template
    other = [inst.operation.name for inst in quanv_filter(ansatz="random", ansatz_seed=12, reps=3).circuit.data]
    assert other != [inst.operation.name for inst in template.circuit.data]
    many = [inst.operation.name for inst in quanv_filter(ansatz="random", ansatz_seed=0, reps=50).circuit.data][4:]
    share = many.count("cx") / len(many)
    assert 0.2 < share < 0.4  # PennyLane's ratio_imprim 0.3


def test_default_filter_is_unchanged(rng):
    """Today's filter keeps its name, settings keys and circuit: RY(pi x), then RY, RZ layers and a CNOT chain."""
    from reference import filter_expectations

    template = quanv_filter()
    assert template.name == "quanv2x2-reps2-chain-mean"
    x, w = rng.uniform(0, 1, 4), rng.uniform(-np.pi, np.pi, 16)
    np.testing.assert_allclose(template_z_values(template, x, w), filter_expectations(x, w), atol=1e-12)


def _values(backend, template, isa, rows):
    """(outputs, rows) values; each row is (inputs, weights), reordered as the estimator binds: circuit.parameters."""
    order = {p: i for i, p in enumerate(template.input_params + template.weight_params)}
    columns = [order[p] for p in isa.circuit.parameters]
    observables = [[o] for o in isa.observables]  # (K, 1) broadcast against (R, P): one PUB
    return backend.estimator().run([(isa.circuit, observables, rows[:, columns])]).result()[0].data.evs


@pytest.mark.parametrize("device", ["aer", "aer:fake_manila"])
@pytest.mark.parametrize("family", FAMILIES)
def test_engine_equals_aer_for_every_family_and_encoding(rng, device, family):
    engine, aer = resolve_backend(device), resolve_backend(device, BackendOptions(engine="aer"))
    for encoding in ENCODINGS:
        template = quanv_filter(encoding=encoding, readout="per-qubit", **FAMILIES[family])
        isa = engine.transpile(template)
        assert template.check_rotations(isa.circuit), template.check_rotations(isa.circuit).describe()
        rows = np.c_[rng.uniform(0, 1, (5, 4)), rng.uniform(-np.pi, np.pi, (5, template.num_weights))]
        ours = _values(engine, template, isa, rows)
        np.testing.assert_allclose(ours, _values(aer, template, isa, rows), atol=1e-10)
        if device == "aer":
            reference = [template_z_values(template, r[:4], r[4:]) for r in rows]
            np.testing.assert_allclose(ours.T, reference, atol=1e-10)


def _own_circuit() -> CircuitTemplate:
    """A 2x2 filter of one's own: RY(x[i]), RX(w) and RZ(w) per qubit, CNOTs both ways; two observables."""
    x, w = ParameterVector("x", 4), ParameterVector("w", 8)
    qc = QuantumCircuit(4)
    for q in range(4):
        qc.ry(x[q], q)
        qc.rx(w[2 * q], q)
        qc.rz(w[2 * q + 1], q)
    for a, b in [(0, 1), (2, 1), (3, 2), (0, 3)]:
        qc.cx(a, b)
    return CircuitTemplate.from_circuit(qc, "ZIII,IIZZ")


@pytest.mark.parametrize("device", ["aer", "aer:fake_manila", "noise:depolarizing:0.1"])
def test_engine_equals_aer_for_ring_entanglement_an_own_circuit_and_a_3x3_filter(rng, device):
    engine, aer = resolve_backend(device), resolve_backend(device, BackendOptions(engine="aer"))
    templates = [quanv_filter(entanglement="ring", readout="per-qubit"), _own_circuit()]
    if device != "aer:fake_manila":  # nine qubits: wider than the 5-qubit device
        templates.append(quanv_filter(kernel_size=3, reps=1, readout="per-qubit"))
    for template in templates:
        isa = engine.transpile(template)
        q = template.num_inputs
        rows = np.c_[rng.uniform(0, 1, (4, q)), rng.uniform(-np.pi, np.pi, (4, template.num_weights))]
        np.testing.assert_allclose(_values(engine, template, isa, rows), _values(aer, template, isa, rows),
                                   atol=1e-10, err_msg=template.name)


# ideal: every family with every encoding; noisy (engine compiles are slower): each family with one encoding,
# every encoding used by some family
RESPONSE_CASES = ([("aer", family, ENCODINGS) for family in FAMILIES]
                  + [("aer:fake_manila", family, (ENCODINGS[i % 3],)) for i, family in enumerate(FAMILIES)])


@pytest.mark.parametrize("device, family, encodings", RESPONSE_CASES)
def test_response_mode_equals_per_patch_mode(rng, device, family, encodings):
    backend = resolve_backend(device)
    estimator = backend.estimator()
    images = torch.as_tensor(rng.uniform(0, 1, (2, 6, 6)))
    for encoding in encodings:
        template = quanv_filter(encoding=encoding, **FAMILIES[family])
        isa = backend.transpile(template)
        layers = [QuanvLayer(template, estimator, circuit=isa.circuit, observables=isa.observables,
                             mode=mode, seed=3, filters=2, stride=1) for mode in ("response", "per-patch")]
        with torch.no_grad():  # values only: the gradients' agreement is the engine's own tests' business
            response, per_patch = (layer(images) for layer in layers)
        assert response.shape == (2, 2, 5, 5)
        torch.testing.assert_close(response, per_patch, atol=1e-10, rtol=0)


def test_per_qubit_readout_gives_k_squared_channels_whose_mean_is_the_mean_readout(rng):
    backend = resolve_backend("aer")
    images = torch.as_tensor(rng.uniform(0, 1, (2, 6, 6)))
    per_qubit = QuanvLayer(quanv_filter(readout="per-qubit"), backend.estimator(), seed=4)(images)
    mean = QuanvLayer(quanv_filter(), backend.estimator(), seed=4)(images)
    assert per_qubit.shape == (2, 4, 3, 3) and mean.shape == (2, 3, 3)
    torch.testing.assert_close(per_qubit.mean(dim=1), mean, atol=1e-12, rtol=0)


def test_three_by_three_stride_three_on_28x28_gives_a_9x9_map(rng):
    backend = resolve_backend("aer")
    template = quanv_filter(3, reps=1)
    assert template.num_qubits == 9 and template.num_weights == 18
    images = torch.as_tensor(rng.uniform(0, 1, (1, 28, 28)))
    valid = QuanvLayer(template, backend.estimator(), mode="per-patch", seed=0, padding="valid")
    out = valid(images)
    assert out.shape == (1, 9, 9) and valid.output_shape(28, 28) == (9, 9)
    # the window at (i, j) is pixels 3i..3i+2 x 3j..3j+2, row-major, as the circuit's reference sees it
    x = images[0, 3:6, 6:9].reshape(-1).numpy()
    expected = template_z_values(template, x, valid.weight.detach().numpy()).mean()
    assert abs(out[0, 1, 2].item() - expected) < 1e-10
    cover = QuanvLayer(template, backend.estimator(), mode="per-patch", seed=0)
    assert cover.output_shape(28, 28) == (10, 10)  # the last window zero-padded: every pixel read


def _custom_circuit():
    """A 5-qubit filter of our own: RX(2 x_i) on 4 qubits, an ancilla, weights named theta and phi."""
    x, theta, phi = ParameterVector("x", 4), Parameter("theta"), Parameter("phi")
    qc = QuantumCircuit(5, name="mine")
    for q in range(4):
        qc.rx(2 * x[q], q)
    qc.h(4)
    for q in range(4):
        qc.cx(q, 4)
    qc.ry(theta, 4)
    qc.rzz(phi, 0, 4)
    return qc


def test_from_circuit_round_trips_through_qpy(tmp_path, rng):
    path = tmp_path / "mine.qpy"
    with path.open("wb") as handle:
        qpy.dump(_custom_circuit(), handle)
    loaded = load_filter_circuit(path)
    template = CircuitTemplate.from_circuit(loaded, "ZIIII,IIIIZ")
    assert (template.num_inputs, template.num_weights, template.num_outputs) == (4, 2, 2)
    assert [p.name for p in template.weight_params] == ["phi", "theta"]
    assert template.input_scale == 2.0 and template.check_rotations().ok
    spec = FilterSpec(circuit_path=str(path), observables=("ZIIII", "IIIIZ"))
    assert spec.channels == 2 and spec.template().num_outputs == 2
    original = _custom_circuit()
    x, w = rng.uniform(0, 1, 4), {"theta": 0.3, "phi": -1.1}
    bind = {p: (x[p.index] if p.name.startswith("x") else w[p.name]) for p in original.parameters}
    state = Statevector(original.assign_parameters(bind))
    expected = [state.expectation_value(SparsePauliOp(label)).real for label in ("ZIIII", "IIIIZ")]
    rows = np.r_[x, [w[p.name] for p in template.weight_params]][None]
    evs = _values(resolve_backend("aer"), template, template, rows)[:, 0]
    np.testing.assert_allclose(evs, expected, atol=1e-12)
    default = CircuitTemplate.from_circuit(loaded)
    assert default.observables[0] == SparsePauliOp.from_sparse_list([("Z", [q], 0.2) for q in range(5)], 5)


def test_from_circuit_response_mode_equals_per_patch(rng):
    template = CircuitTemplate.from_circuit(_custom_circuit(), ["ZIIII", "IIIIZ"])
    backend = resolve_backend("aer:fake_manila")
    isa = backend.transpile(template)
    images = torch.as_tensor(rng.uniform(0, 1, (1, 4, 4)))
    out = [QuanvLayer(template, backend.estimator(), circuit=isa.circuit, observables=isa.observables, mode=mode,
                      seed=1)(images) for mode in ("response", "per-patch")]
    assert out[0].shape == (1, 2, 2, 2)
    torch.testing.assert_close(out[0], out[1], atol=1e-10, rtol=0)


def test_a_circuit_outside_the_response_condition_runs_per_patch_only():
    x = ParameterVector("x", 4)
    qc = QuantumCircuit(4)
    for q in range(4):
        qc.ry(x[q], q)
        qc.rz(x[q], q)  # each input in two rotations
    template = CircuitTemplate.from_circuit(qc)
    assert not template.check_rotations().ok
    with pytest.raises(QresnetError, match="per-patch"):
        QuanvLayer(template, resolve_backend("aer").estimator())
    assert QuanvLayer(template, resolve_backend("aer").estimator(), mode="per-patch")(torch.rand(1, 2, 2)).shape == (1, 1, 1)


def _circuit(names):
    qc = QuantumCircuit(4)
    for q, p in enumerate(names):
        qc.ry(p, q)
    return qc


@pytest.mark.parametrize("build, match", [
    (lambda: CircuitTemplate.from_circuit(_circuit([Parameter(f"a{i}") for i in range(4)])), "no inputs named x"),
    (lambda: CircuitTemplate.from_circuit(_circuit(list(ParameterVector("x", 5))[:4])), r"missing x\[4\]"),
    (lambda: CircuitTemplate.from_circuit(_circuit(list(ParameterVector("x", 3)) + [Parameter("w")])), "not a square"),
    (lambda: CircuitTemplate.from_circuit(_circuit(ParameterVector("x", 4)), kernel_size=3), "3 x 3 filter needs 9"),
    (lambda: CircuitTemplate.from_circuit(_circuit(ParameterVector("x", 4)), ["ZZ"]), "acts on 2 qubits; the circuit has 4"),
    (lambda: CircuitTemplate.from_circuit(_circuit(ParameterVector("x", 4)), "ZIIQ"), "not a Pauli label"),
    (lambda: quanv_filter(encoding="rz"), "encoding='rz' is not one of ry_pi, ry, rx_pi"),
    (lambda: quanv_filter(ansatz="random", entanglement="ring"), "has its own entanglers"),
    (lambda: quanv_filter(entanglement="star"), "entanglement='star'"),
    (lambda: FilterSpec.coerce({"kernel": 3}), "unknown filter settings"),
    (lambda: FilterSpec(stride=0), "stride=0"),
    (lambda: FilterSpec(observables="ZIII"), "observables apply to your own circuit"),
    (lambda: FilterSpec(circuit_path="x.qpy", ansatz="random"), "ansatz='random' describes a built-in filter"),
    (lambda: FilterSpec(padding="same"), "padding='same'"),
    (lambda: QuanvLayer(quanv_filter(3), resolve_backend("aer").estimator(), mode="per-patch")(torch.rand(1, 2, 5)),
     "kernel 3x3 is larger than the 2-pixel side"),
])
def test_bad_filters_are_refused_in_one_line(build, match):
    with pytest.raises(QresnetError, match=match) as excinfo:
        build()
    one_line(excinfo)


def test_bad_qpy_files_are_refused_in_one_line(tmp_path):
    with pytest.raises(QresnetError, match="does not exist") as excinfo:
        load_filter_circuit(tmp_path / "none.qpy")
    one_line(excinfo)
    junk = tmp_path / "junk.qpy"
    junk.write_bytes(b"not qpy at all")
    with pytest.raises(QresnetError, match="not a readable QPY file") as excinfo:
        load_filter_circuit(junk)
    one_line(excinfo)
    two = tmp_path / "two.qpy"
    with two.open("wb") as handle:
        qpy.dump([QuantumCircuit(1), QuantumCircuit(1)], handle)
    with pytest.raises(QresnetError, match="holds 2 programs") as excinfo:
        load_filter_circuit(two)
    one_line(excinfo)


def test_filter_spec_round_trips_and_builds_its_layers(tmp_path):
    spec = FilterSpec.coerce({"kernel_size": 3, "stride": 2, "ansatz": "random", "ansatz_seed": 4, "reps": 1,
                              "encoding": "rx_pi", "readout": "per-qubit", "filters_per_layer": 2, "padding": "valid"})
    assert FilterSpec.coerce(spec.to_dict()) == spec and FilterSpec.coerce(spec) is spec
    template = spec.template()
    assert template is quanv_filter(3, 1, "chain", "per-qubit", "random", 4, "rx_pi")
    assert template.settings["ansatz_seed"] == 4 and spec.channels == 18
    layer = QuanvLayer(template, resolve_backend("aer").estimator(), mode="per-patch", **spec.layer_options)
    assert layer.num_channels == spec.channels and layer.output_shape(28, 28) == (13, 13)
    path = tmp_path / "f.qpy"
    with path.open("wb") as handle:
        qpy.dump(_custom_circuit(), handle)
    custom = FilterSpec(circuit_path=path, observables="ZIIII, IIIIZ")
    assert custom.observables == ("ZIIII", "IIIIZ") and custom.to_dict()["circuit_path"] == str(path)
    assert custom.template().name.startswith("f2x2") and FilterSpec(circuit_path=path).channels == 1
