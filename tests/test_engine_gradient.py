"""The engine's exact gradients (issue 14) against independent references: parameter shift on the engine,
central finite differences of Aer values, and the same training run by parameter shift."""

import json

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.circuit.library import U2Gate
from qiskit.quantum_info import SparsePauliOp
from qiskit_aer.primitives import EstimatorV2 as AerEstimatorV2
from qiskit_machine_learning.neural_networks import EstimatorQNN

import qresnet.qnn
from qresnet.backends import BackendOptions, Differentiable, Differentiator, EngineDifferentiator, resolve_backend
from qresnet.backends.backend import noise_model_for
from qresnet.backends.engine import EngineEstimator
from qresnet.run.build import gradient_method, quantum_head_layer, quanv_layers
from qresnet.circuits import quantum_head, quanv_filter
from qresnet.config import TrainConfig
from qresnet.errors import CapabilityError, EngineUnsupportedError
from qresnet.nn import QuanvLayer
from qresnet.qnn import BatchedParamShiftGradient, EngineGradient, make_qnn
from qresnet.run.train import train
from test_head import compact_noisy_reference, reference_circuits

FILTER = quanv_filter()
SPECS = ["aer", "aer:fake_manila", "aer:fake_torino"]


def aer_exact(device: str | None) -> AerEstimatorV2:
    """Aer at precision 0: statevector, or the device's density matrix with its noise model."""
    if device is None:
        return AerEstimatorV2(options={"default_precision": 0.0})
    return AerEstimatorV2(options={"default_precision": 0.0, "backend_options": {
        "method": "density_matrix", "noise_model": noise_model_for(device)}})


def central_differences(evaluate, rows: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """(R, K, P) from ``evaluate(rows) -> (R, K)``, all shifted rows in one call."""
    r, p = rows.shape
    shifts = np.concatenate([np.eye(p) * h, -np.eye(p) * h])  # (2P, P)
    shifted = (rows[:, None, :] + shifts[None]).reshape(-1, p)
    values = evaluate(shifted).reshape(r, 2, p, -1)
    return ((values[:, 0] - values[:, 1]) / (2 * h)).transpose(0, 2, 1)


def pub_values(estimator, circuit, observables, rows) -> np.ndarray:
    """(R, K) values of one broadcast PUB."""
    result = estimator.run([(circuit, [[o] for o in observables], rows)]).result()[0]
    return np.asarray(result.data.evs).T


def qnn_with(gradient, qnn: EstimatorQNN, input_gradients: bool) -> EstimatorQNN:
    """``qnn`` again with another gradient object."""
    return EstimatorQNN(circuit=qnn.circuit, estimator=qnn.estimator, observables=qnn.observables,
                        input_params=qnn.input_params, weight_params=qnn.weight_params, gradient=gradient,
                        input_gradients=input_gradients, default_precision=None, pass_manager=None)


# --- the ability -------------------------------------------------------------------------------------------------


def test_the_ability_is_a_protocol_the_engine_has_only_in_exact_mode():
    engine = EngineEstimator()
    assert isinstance(engine, Differentiable) and isinstance(engine.differentiator, Differentiator)
    assert isinstance(engine.differentiator, EngineDifferentiator) and engine.differentiator is engine.differentiator
    assert engine.differentiator.gives_exact_values and EngineEstimator(exact=True).differentiator.gives_exact_values
    assert not EngineEstimator(shots=100).differentiator.gives_exact_values
    assert not isinstance(AerEstimatorV2(), Differentiable)
    with pytest.raises(CapabilityError, match="estimator=EstimatorV2"):
        EngineGradient(AerEstimatorV2())
    with pytest.raises(CapabilityError, match="samples shots"):
        EngineGradient(EngineEstimator(shots=100))


@pytest.mark.parametrize("spec", SPECS)
def test_filter_gradients_equal_parameter_shift_on_the_engine(spec, rng):
    """All parameters and the weights alone, readout folded in on the noisy backends, to 1e-10."""
    backend = resolve_backend(spec)
    tt, estimator = backend.transpile(FILTER), backend.estimator()
    circuit, obs = tt.circuit, tt.observables[0]
    rows = rng.uniform(0, 1, (4, circuit.num_parameters))
    exact, shift = EngineGradient(estimator), BatchedParamShiftGradient(estimator)
    ours = np.array(exact.run([circuit] * 4, [obs] * 4, rows).result().gradients)
    reference = np.array(shift.run([circuit] * 4, [obs] * 4, rows).result().gradients)
    assert exact.calls == 1 and shift.pubs_sent == 1
    np.testing.assert_allclose(ours, reference, atol=1e-10, rtol=0)
    assert np.abs(reference).max() > 0.1
    weights = list(FILTER.weight_params)
    subset = np.array(exact.run([circuit] * 4, [obs] * 4, rows, parameters=[weights] * 4).result().gradients)
    np.testing.assert_allclose(subset, ours[:, [list(circuit.parameters).index(w) for w in weights]], atol=1e-15)
    values, _ = estimator.differentiator.value_and_gradients(circuit, [obs], rows)  # the values are run's values
    np.testing.assert_allclose(values[:, 0], estimator.run([(circuit, obs, rows)]).result()[0].data.evs, atol=1e-14)


@pytest.mark.parametrize("spec", SPECS)
def test_filter_gradients_equal_finite_differences_of_aer(spec, rng):
    """The engine with the device's noise model (no readout: Aer's exact values have none) vs Aer's density matrix."""
    backend = resolve_backend(spec)
    device = backend.spec.device
    tt = backend.transpile(FILTER)
    circuit, mean_z = tt.circuit, tt.observables[0]
    physical = sorted({q for label in mean_z.paulis.to_labels() for q, c in enumerate(reversed(label)) if c != "I"})
    correlator = SparsePauliOp.from_sparse_list([("XZ", [physical[i], physical[i + 1]], 0.5) for i in range(3)]
                                                + [("Y", [physical[0]], 0.3)], mean_z.num_qubits)
    observables = [mean_z, correlator]
    rows = rng.uniform(-1, 1, (3, circuit.num_parameters))
    engine = EngineEstimator(noise_model_for(device) if device else None)
    values, ours = engine.differentiator.value_and_gradients(circuit, observables, rows)
    aer = aer_exact(device)
    np.testing.assert_allclose(values, pub_values(aer, circuit, observables, rows), atol=1e-9)
    fd = central_differences(lambda r: pub_values(aer, circuit, observables, r), rows)
    np.testing.assert_allclose(ours, fd, atol=1e-6, rtol=0)
    assert np.abs(fd).max() > 0.1


def test_shared_parameters_and_u_gates_equal_finite_differences_of_aer(rng):
    """A parameter in the prefix and the body and in several gates, affine angles, u and u2 gates, a 2q rotation."""
    a, b, c = Parameter("a"), Parameter("b"), Parameter("c")
    qc = QuantumCircuit(3)
    qc.ry(a, 0)
    qc.rz(2 * a + b - 0.3, 0)
    qc.u(b, c, a, 1)
    qc.cx(0, 1)
    qc.rzz(a - c, 1, 2)
    qc.append(U2Gate(c, 2 * b), [0])
    qc.rx(-b, 2)
    qc.cx(2, 0)
    qc.ry(3 * c, 1)
    observables = [SparsePauliOp.from_list([("ZIZ", 0.7), ("XYI", -0.4), ("IIX", 0.2)]), SparsePauliOp("YZX")]
    rows = rng.uniform(-np.pi, np.pi, (4, 3))
    for noise in (None, "fake_manila"):
        model = noise_model_for(noise) if noise else None
        values, ours = EngineEstimator(model).differentiator.value_and_gradients(qc, observables, rows)
        aer = aer_exact(noise)
        np.testing.assert_allclose(values, pub_values(aer, qc, observables, rows), atol=1e-9)
        fd = central_differences(lambda r: pub_values(aer, qc, observables, r), rows)
        np.testing.assert_allclose(ours, fd, atol=1e-6, rtol=0)


def test_a_nonlinear_angle_is_refused_with_the_instruction_named():
    a = Parameter("a")
    qc = QuantumCircuit(2)
    qc.ry(0.2, 0)
    qc.cx(0, 1)
    qc.ry(a * a, 1)
    with pytest.raises(EngineUnsupportedError, match="'ry' on qubits"):
        EngineEstimator().differentiator.value_and_gradients(qc, [SparsePauliOp("ZZ")], [[0.5]])


# --- the quantum head --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["aer", "aer:fake_torino"])
def test_head_gradients_equal_parameter_shift_on_the_engine(spec, rng):
    """Weights by parameter shift, features by the engine's adjoint (``encoding_gradients``), to 1e-10."""
    backend = resolve_backend(spec)
    head = quantum_head_layer(backend, 49, 4)
    assert isinstance(head.qnn.gradient, EngineGradient)
    x, w = rng.normal(size=(3, 49)), rng.uniform(-np.pi, np.pi, head.qnn.num_weights)
    x[1, 20:] = 0.0
    ours = qnn_with(head.qnn.gradient, head.qnn, True).backward(x, w)
    reference = qnn_with(BatchedParamShiftGradient(head.qnn.estimator), head.qnn, True).backward(x, w)
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, atol=1e-10, rtol=0)
        assert np.abs(b).max() > 1e-2


def test_ideal_head_gradients_equal_finite_differences_of_aer(rng):
    """Aer with ``initialize`` for the encoded state: weights in one PUB per sample, features one circuit each."""
    backend = resolve_backend("aer")
    head = quantum_head_layer(backend, 49, 4)
    transpiled = backend.transpile(head.template)
    x, w = rng.normal(size=(2, 49)), rng.uniform(-np.pi, np.pi, head.qnn.num_weights)
    input_grad, weight_grad = head.qnn.backward(x, w)
    aer, h = aer_exact(None), 1e-5
    observables = list(transpiled.observables)
    initialize = lambda qc, psi, qubits: qc.initialize(psi, qubits)  # noqa: E731
    for s in range(len(x)):
        shifts = np.concatenate([np.eye(len(w)) * h, -np.eye(len(w)) * h])
        fd_w = np.array([aer.run([(reference_circuits(transpiled, x[s:s + 1], w + d, initialize)[0], observables)])
                         .result()[0].data.evs for d in shifts]).reshape(2, len(w), -1)
        np.testing.assert_allclose(weight_grad[s], ((fd_w[0] - fd_w[1]) / (2 * h)).T, atol=1e-6, rtol=0)
        for j in range(0, 49, 4):  # a sample of the features: one circuit per shift
            e = np.zeros(49)
            e[j] = h
            plus, minus = (reference_circuits(transpiled, (x[s] + d)[None], w, initialize)[0] for d in (e, -e))
            fd = (aer.run([(plus, observables)]).result()[0].data.evs
                  - aer.run([(minus, observables)]).result()[0].data.evs) / (2 * h)
            np.testing.assert_allclose(input_grad[s, :, j], fd, atol=1e-6, rtol=0)
    assert np.abs(weight_grad).max() > 1e-2 and np.abs(input_grad).max() > 1e-2


def test_small_noisy_head_gradients_equal_finite_differences_of_aer(rng):
    """A 4-qubit head on fake_manila against Aer's density matrix from the exactly prepared state, readout folded."""
    backend = resolve_backend("aer:fake_manila")
    template = quantum_head(4, 2, encoding="state", num_features=11)
    transpiled = backend.transpile(template)
    qnn = make_qnn(template, backend.estimator(), transpiled.circuit, transpiled.observables, input_gradients=True)
    assert isinstance(qnn.gradient, EngineGradient)
    x, w = rng.normal(size=(2, 11)), rng.uniform(-3, 3, 16)
    input_grad, weight_grad = qnn.backward(x, w)
    h = 1e-5
    for s in range(len(x)):
        eye_w, eye_x = np.eye(16) * h, np.eye(11) * h
        fd_w = [(compact_noisy_reference(transpiled, "fake_manila", x[s:s + 1], w + d)
                 - compact_noisy_reference(transpiled, "fake_manila", x[s:s + 1], w - d))[:, 0] / (2 * h) for d in eye_w]
        fd_x = [(compact_noisy_reference(transpiled, "fake_manila", (x[s] + d)[None], w)
                 - compact_noisy_reference(transpiled, "fake_manila", (x[s] - d)[None], w))[:, 0] / (2 * h) for d in eye_x]
        np.testing.assert_allclose(weight_grad[s], np.array(fd_w).T, atol=1e-6, rtol=0)
        np.testing.assert_allclose(input_grad[s], np.array(fd_x).T, atol=1e-6, rtol=0)


# --- the layers: inputs across the boundary, response mode ---------------------------------------------------------


@pytest.mark.parametrize("spec", ["aer", "aer:fake_torino"])
@pytest.mark.parametrize("mode", ["per-patch", "response"])
def test_quanv_layer_gradients_equal_parameter_shift(spec, mode):
    """Weights and (per-patch mode through the QNN, response mode analytically) inputs, via autograd, to 1e-10."""
    backend = resolve_backend(spec)
    tt, estimator = backend.transpile(FILTER), backend.estimator()
    x = torch.rand(2, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cotangent = torch.rand(2, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads = {}
    for gradient in ("auto", "batched"):
        layer = QuanvLayer(FILTER, estimator, circuit=tt.circuit, observables=tt.observables, mode=mode,
                           input_gradients=True, gradient=gradient, seed=0)
        assert isinstance(layer.qnn.gradient, EngineGradient if gradient == "auto" else BatchedParamShiftGradient)
        inputs = x.clone().requires_grad_(True)
        (layer(inputs) * cotangent).sum().backward()
        grads[gradient] = (inputs.grad.numpy(), layer.weight.grad.numpy())
    for ours, reference in zip(grads["auto"], grads["batched"]):
        np.testing.assert_allclose(ours, reference, atol=1e-10, rtol=0)
        assert np.abs(reference).max() > 1e-3


# --- parameter shift wherever values are estimates -----------------------------------------------------------------


@pytest.mark.parametrize("spec,options", [("aer", BackendOptions(shots=100, seed=1)),
                                          ("aer:fake_manila", BackendOptions(engine="aer")),
                                          ("local:fake_manila", BackendOptions(shots=16, seed=1))])
def test_shots_and_other_estimators_keep_parameter_shift(spec, options):
    """A one-qubit filter (3 design points, 2 weights) keeps local testing mode quick; one PUB per backward."""
    backend = resolve_backend(spec, options)
    template = quanv_filter(kernel_size=1, reps=1)
    tt = backend.transpile(template)
    layer = QuanvLayer(template, backend.estimator(), circuit=tt.circuit, observables=tt.observables, seed=0)
    gradient = layer.qnn.gradient
    assert type(gradient) is BatchedParamShiftGradient
    layer(torch.rand(1, 2, 2, dtype=torch.float64)).sum().backward()
    assert gradient.pubs_sent == 1 and float(layer.weight.grad.norm()) > 0


def test_ibm_keeps_parameter_shift(tmp_path):
    from test_device_training import LocalService

    backend = resolve_backend("ibm:ibm_fake_manila", BackendOptions(shots=16, seed=1), service=LocalService())
    (layer,) = quanv_layers(backend, 1)
    assert type(layer.qnn.gradient) is BatchedParamShiftGradient


# --- a whole training run --------------------------------------------------------------------------------------------


def _run_numbers(path) -> tuple[list[dict], dict]:
    import csv

    with open(path / "metrics.csv") as handle:
        rows = [{k: float(v) for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]
    return rows, json.loads((path / "config.json").read_text())


@pytest.mark.parametrize("backend,head", [("aer", "linear"), ("aer:fake_manila", "linear"), ("aer", "quantum")])
def test_training_with_exact_gradients_equals_parameter_shift(tmp_path, monkeypatch, backend, head):
    config = TrainConfig(dataset="digits", classes=(0, 1, 2), per_class=8, epochs=2, batch_size=8, lr=0.05, seed=5,
                         layers=2, residual="O1+O2", backend=backend, head=head)
    exact = train(config, tmp_path / "exact", progress=False)
    monkeypatch.setattr(qresnet.qnn, "exact_gradients_available", lambda estimator: False)
    shift = train(config, tmp_path / "shift", progress=False)
    assert exact.gradient == "engine-exact" and shift.gradient == "parameter-shift"
    (ours, recorded), (reference, recorded_shift) = _run_numbers(tmp_path / "exact"), _run_numbers(tmp_path / "shift")
    assert recorded["gradient"] == "engine-exact" and recorded_shift["gradient"] == "parameter-shift"
    assert len(ours) == 2
    for a, b in zip(ours, reference):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-9), key
    assert ours[-1]["grad_norm_layer1"] > 0 and ours[-1]["grad_norm_layer2"] > 0


def test_gradient_method_names_a_mixed_model():
    backend = resolve_backend("aer")
    from qresnet.nn import ResQuNN

    layers = quanv_layers(backend, 1) + quanv_layers(backend, 1, gradient="batched")
    model = ResQuNN(layers, "O1+O2", (8, 8), 3, seed=0)
    assert gradient_method(model) == "layers engine-exact/parameter-shift"
    assert gradient_method(ResQuNN(layers[:1], "none", (8, 8), 3, seed=0)) == "engine-exact"


# --- the ideal head measuring many qubits: statevector and its adjoint ---------------------------------------------


def _statevector_reference(circuit, template, row: np.ndarray, observables) -> np.ndarray:
    """(K,) values from qiskit's Statevector: the padded, normalised features evolved through the bound ansatz."""
    from qiskit.quantum_info import Statevector

    index = {p: j for j, p in enumerate(circuit.parameters)}
    x = row[[index[p] for p in template.input_params]]
    psi = np.zeros(2**circuit.num_qubits)
    psi[: len(x)] = x
    psi = psi / np.linalg.norm(psi) if np.linalg.norm(psi) > 0 else np.eye(len(psi))[0]
    body = circuit.copy_empty_like()
    for inst in circuit.data[1:]:
        body.append(inst)
    state = Statevector(psi).evolve(body.assign_parameters({p: row[index[p]] for p in body.parameters}))
    return np.array([state.expectation_value(o).real for o in observables])


def test_ten_class_ideal_head_takes_the_statevector_route_against_statevector_references(rng):
    """Values to 1e-10 and derivatives (central differences of the Statevector values) to 1e-8, inputs and weights."""
    backend = resolve_backend("aer")
    head = quantum_head_layer(backend, 49, 10)
    circuit, observables, template = head.qnn.circuit, head.qnn.observables, head.template
    index = {p: j for j, p in enumerate(circuit.parameters)}
    rows = np.zeros((3, circuit.num_parameters))
    x, w = rng.normal(size=(3, 49)), rng.uniform(-np.pi, np.pi, template.num_weights)
    x[1] = 0.0  # the zero vector encodes |0...0>, input gradient 0
    rows[:, [index[p] for p in template.input_params]] = x
    rows[:, [index[p] for p in template.weight_params]] = w
    estimator = backend.estimator()
    result = estimator.run([(circuit, [[o] for o in observables], rows)]).result()[0]
    assert result.metadata["route"] == "state-preparation-statevector"
    reference = np.array([_statevector_reference(circuit, template, r, observables) for r in rows])
    np.testing.assert_allclose(result.data.evs.T, reference, atol=1e-10, rtol=0)
    values, grads = estimator.differentiator.value_and_gradients(circuit, observables, rows)
    np.testing.assert_allclose(values, reference, atol=1e-10, rtol=0)
    h = 1e-6
    checked = [index[template.input_params[j]] for j in (0, 7, 48)] + [index[p] for p in template.weight_params[::7]]
    for j in checked:
        e = np.zeros(circuit.num_parameters)
        e[j] = h
        fd = np.array([(_statevector_reference(circuit, template, r + e, observables)
                        - _statevector_reference(circuit, template, r - e, observables)) / (2 * h) for r in rows])
        np.testing.assert_allclose(grads[:, :, j], fd, atol=1e-8, rtol=0)
    assert np.abs(grads[1][:, [index[p] for p in template.input_params]]).max() == 0.0
    features = estimator.differentiator.encoding_gradients(circuit, observables, rows)  # the same adjoint, features only
    np.testing.assert_allclose(features, grads[:, :, [index[p] for p in template.input_params]], atol=1e-14)


def _operator_reference(circuit, template, row: np.ndarray, observables) -> tuple[np.ndarray, np.ndarray]:
    """(values (K,), d values / d features (K, F)) in closed form from qiskit's Operator: f = psi^T Re(M) psi with
    M = U^dagger O U and psi = x / |x| (zero-padded), so df/dx = 2 (Re(M) psi - f psi) / |x|, cut to the features."""
    from qiskit.quantum_info import Operator

    index = {p: j for j, p in enumerate(circuit.parameters)}
    x = row[[index[p] for p in template.input_params]]
    body = circuit.copy_empty_like()
    for inst in circuit.data[1:]:
        body.append(inst)
    u = Operator(body.assign_parameters({p: row[index[p]] for p in body.parameters})).data
    psi = np.zeros(2**circuit.num_qubits)
    psi[: len(x)] = x
    norm = np.linalg.norm(psi)
    psi = psi / norm
    values, grads = [], []
    for o in observables:
        m = (u.conj().T @ o.to_matrix() @ u).real
        f = psi @ m @ psi
        values.append(f)
        grads.append((2 * (m @ psi - f * psi) / norm)[: len(x)])
    return np.array(values), np.array(grads)


def test_ten_class_head_values_and_input_gradients_equal_operator_references(rng):
    """Values and input gradients to 1e-10 against a closed form from qiskit's Operator; the weights against
    the shift rule on Statevector values (every weight sits in one Pauli rotation, so the rule is exact)."""
    backend = resolve_backend("aer")
    head = quantum_head_layer(backend, 49, 10)
    circuit, observables, template = head.qnn.circuit, head.qnn.observables, head.template
    index = {p: j for j, p in enumerate(circuit.parameters)}
    rows = np.zeros((2, circuit.num_parameters))
    rows[:, [index[p] for p in template.input_params]] = rng.normal(size=(2, 49))
    rows[:, [index[p] for p in template.weight_params]] = rng.uniform(-np.pi, np.pi, template.num_weights)
    values, grads = backend.estimator().differentiator.value_and_gradients(circuit, observables, rows)
    features = [index[p] for p in template.input_params]
    for r, row in enumerate(rows):
        reference, reference_grads = _operator_reference(circuit, template, row, observables)
        np.testing.assert_allclose(values[r], reference, atol=1e-10, rtol=0)
        np.testing.assert_allclose(grads[r][:, features], reference_grads, atol=1e-10, rtol=0)
        assert np.abs(reference_grads).max() > 1e-2
        for p in template.weight_params[::9]:
            e = np.zeros(circuit.num_parameters)
            e[index[p]] = np.pi / 2
            shift = (_statevector_reference(circuit, template, row + e, observables)
                     - _statevector_reference(circuit, template, row - e, observables)) / 2
            np.testing.assert_allclose(grads[r][:, index[p]], shift, atol=1e-10, rtol=0)


def test_ten_class_ideal_head_trains_the_layers_behind_it(tmp_path):
    """Through the 10-class head's input gradient (statevector adjoint), layer 2 gets a gradient."""
    config = TrainConfig(dataset="digits", layers=2, residual="O1+O2", head="quantum", batch_size=16)
    from qresnet.run.build import build_model

    model = build_model(config, resolve_backend("aer"), (8, 8), 10)
    assert isinstance(model.head.qnn.gradient, EngineGradient)
    x, y = torch.rand(16, 8, 8, dtype=torch.float64), torch.randint(0, 10, (16,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert float(model.layers[1].weight.grad.norm()) > 0
