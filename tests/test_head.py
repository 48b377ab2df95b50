"""The quantum head against independent references: Aer with initialize or an exact preparation unitary, finite differences."""

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import DensityMatrix, SparsePauliOp
from qiskit_aer.primitives import EstimatorV2 as AerEstimatorV2

from qresnet.backends import fake_device, fold_readout, readout_errors, resolve_backend
from qresnet.backends.backend import noise_model_for
from qresnet.backends.engine import EngineEstimator
from qresnet.backends.limits import JobLimits, SplittingEstimator, plan_jobs
from qresnet.errors import JobLimitError
from qresnet.circuits import quantum_head
from qresnet.errors import QresnetError
from qresnet.nn import QuantumHead, ResQuNN
from qresnet.run.build import build_model
from qresnet.config import TrainConfig
from qresnet.run.train import train


def padded_unit(x: np.ndarray, n: int) -> np.ndarray:
    """The state the head should prepare, written here independently: pad, normalise, |0> for zero."""
    psi = np.zeros(2**n)
    psi[: len(x)] = x
    norm = np.linalg.norm(psi)
    if norm == 0:
        psi[0] = 1.0
        return psi
    return psi / norm


def compact_noisy_reference(transpiled, device: str, features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(K, B): Aer density matrix on the circuit's own qubits only (its ISA ansatz and that device noise, remapped),
    starting from the exactly prepared state (``set_density_matrix``), readout folded into the observables."""
    from qiskit_aer.noise import NoiseModel

    circuit, template = transpiled.circuit, transpiled.template
    physical = sorted({circuit.find_bit(q).index for inst in circuit.data for q in inst.qubits})
    compact = {q: i for i, q in enumerate(physical)}
    n = len(physical)
    source = noise_model_for(device)
    assert not source._default_quantum_errors
    noise = NoiseModel(basis_gates=source.basis_gates)
    for name, by_qubits in source._local_quantum_errors.items():
        for qubits, error in by_qubits.items():
            if all(q in compact for q in qubits):
                noise.add_quantum_error(error, name, [compact[q] for q in qubits])
    errors = readout_errors(fake_device(device))
    observables = []
    for o in transpiled.observables:
        label = o.paulis[0].to_label()[::-1]  # position = physical qubit
        small = "".join(label[q] for q in reversed(physical))
        folded = fold_readout({small: 1.0}, {compact[q]: errors[q] for q in physical})
        observables.append(SparsePauliOp.from_list(list(folded.items())))
    encoded = [compact[circuit.find_bit(q).index] for q in circuit.data[0].qubits]
    aer = AerEstimatorV2(options={"default_precision": 0.0, "backend_options": {"method": "density_matrix",
                                                                                "noise_model": noise}})
    out = []
    for x in features:
        psi = padded_unit(x, len(encoded)).reshape((2,) * len(encoded))  # axis n-1-j holds amplitude bit j
        psi = np.moveaxis(psi, [len(encoded) - 1 - j for j in range(len(encoded))], [n - 1 - c for c in encoded])
        qc = QuantumCircuit(n)
        qc.set_density_matrix(DensityMatrix(psi.reshape(-1)))
        for inst in circuit.data[1:]:
            qc.append(inst.operation, [compact[circuit.find_bit(q).index] for q in inst.qubits])
        qc = qc.assign_parameters(dict(zip(template.weight_params, weights)))
        out.append(aer.run([(qc, observables)]).result()[0].data.evs)
    return np.array(out).T


def reference_circuits(transpiled, features, weights, prepare):
    """The transpiled head with its encoding replaced by ``prepare(circuit, psi, qubits)`` and weights bound."""
    template, circuit = transpiled.template, transpiled.circuit
    n = template.num_qubits
    out = []
    for x in features:
        qc = circuit.copy_empty_like()
        prepare(qc, padded_unit(x, n), circuit.data[0].qubits)
        for inst in circuit.data[1:]:
            qc.append(inst)
        out.append(qc.assign_parameters(dict(zip(template.weight_params, weights))))
    return out


def head_values(transpiled, estimator, features, weights):
    """Engine values through the template's parameter order, shape (K, B)."""
    template, circuit = transpiled.template, transpiled.circuit
    index = {p: i for i, p in enumerate(circuit.parameters)}
    values = np.zeros((len(features), circuit.num_parameters))
    for j, p in enumerate(template.input_params):
        values[:, index[p]] = features[:, j]
    for j, p in enumerate(template.weight_params):
        values[:, index[p]] = weights[j]
    return estimator.run([(circuit, [[o] for o in transpiled.observables], values)]).result()[0].data.evs


@pytest.fixture(scope="module")
def features():
    x = np.random.default_rng(7).normal(size=(5, 49))
    x[1] = 0.0  # the all-zero vector
    x[3, 10:] = 0.0  # sparse
    return x


@pytest.fixture(scope="module")
def weights():
    return np.random.default_rng(8).uniform(-np.pi, np.pi, 40)


def test_ideal_head_equals_aer_with_initialize(features, weights):
    backend = resolve_backend("aer")
    transpiled = backend.transpile(quantum_head(10, 4, encoding="state", num_features=49))
    ours = head_values(transpiled, backend.estimator(), features, weights)
    aer = AerEstimatorV2(options={"default_precision": 0.0})
    refs = reference_circuits(transpiled, features, weights, lambda qc, psi, qubits: qc.initialize(psi, qubits))
    expected = np.array([aer.run([(qc, list(transpiled.observables))]).result()[0].data.evs for qc in refs]).T
    np.testing.assert_allclose(ours, expected, atol=1e-10)
    # the zero vector encodes |0...0>: the plain ansatz from the zero state
    plain = QuantumCircuit(10)
    for inst in transpiled.circuit.data[1:]:
        plain.append(inst)
    bare = plain.assign_parameters(dict(zip(transpiled.template.weight_params, weights)))
    np.testing.assert_allclose(ours[:, 1], aer.run([(bare, list(transpiled.observables))]).result()[0].data.evs, atol=1e-10)


def test_angle_encoding_matches_the_state_encoding(features, weights):
    """The hardware form (transpiled Mottonen angles) and the exact state preparation give the same head."""
    backend = resolve_backend("aer")
    state = QuantumHead(quantum_head(10, 4, encoding="state", num_features=49), backend.estimator(),
                        initial_weights=weights, input_gradients=False)
    angles_template = quantum_head(10, 4)
    t = backend.transpile(angles_template)
    angles = QuantumHead(angles_template, AerEstimatorV2(options={"default_precision": 0.0}), circuit=t.circuit,
                         observables=t.observables, initial_weights=weights)
    x = torch.as_tensor(features)
    np.testing.assert_allclose(state.scores(x).detach().numpy(), angles.scores(x).detach().numpy(), atol=1e-9)


@pytest.mark.parametrize("device,tolerance", [("fake_torino", 1e-8)])
def test_noisy_head_equals_aer_density_matrix_with_exact_preparation(features, weights, device, tolerance):
    """Exact state preparation, device noise on the transpiled ansatz, readout folded; Aer approximates
    many-term two-qubit errors on large devices to ~1e-9, hence 1e-8 here (the engine itself is exact)."""
    backend = resolve_backend(f"aer:{device}")
    transpiled = backend.transpile(quantum_head(10, 4, encoding="state", num_features=49))
    ours = head_values(transpiled, backend.estimator(), features, weights)
    np.testing.assert_allclose(ours, compact_noisy_reference(transpiled, device, features, weights), atol=tolerance)
    ideal = head_values(resolve_backend("aer").transpile(transpiled.template), resolve_backend("aer").estimator(),
                        features, weights)
    assert np.abs(ours - ideal).max() > 1e-3  # the noise is really there


def test_small_noisy_head_equals_aer_on_manila():
    """A 4-qubit head on fake_manila: 1e-10 against Aer's density matrix."""
    backend = resolve_backend("aer:fake_manila")
    transpiled = backend.transpile(quantum_head(4, 2, encoding="state", num_features=11))
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(4, 11)), rng.uniform(-3, 3, 16)
    ours = head_values(transpiled, backend.estimator(), x, w)
    np.testing.assert_allclose(ours, compact_noisy_reference(transpiled, "fake_manila", x, w), atol=1e-10)


@pytest.mark.parametrize("spec", ["aer", "aer:fake_torino"])
def test_head_gradients_equal_finite_differences(spec):
    """Input gradients (exact, through the state preparation) and weight gradients (parameter shift) via autograd."""
    backend = resolve_backend(spec)
    template = quantum_head(10, 4, encoding="state", num_features=20)
    t = backend.transpile(template)
    head = QuantumHead(template, backend.estimator(), circuit=t.circuit, observables=t.observables, seed=4)
    rng = np.random.default_rng(5)
    x = torch.as_tensor(rng.normal(size=(3, 20)), dtype=torch.float64).requires_grad_(True)
    g = torch.as_tensor(rng.normal(size=(3, 4)), dtype=torch.float64)  # a random cotangent
    (head(x) * g).sum().backward()

    def loss(features, weights):
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(weights))
            return float((head(torch.as_tensor(features)) * g).sum())

    w0, x0, h = head.weight.detach().numpy().copy(), x.detach().numpy(), 1e-6
    fd_x = np.zeros_like(x0)
    for i in np.ndindex(x0.shape):
        e = np.zeros_like(x0)
        e[i] = h
        fd_x[i] = (loss(x0 + e, w0) - loss(x0 - e, w0)) / (2 * h)
    fd_w = np.array([(loss(x0, w0 + h * np.eye(40)[j]) - loss(x0, w0 - h * np.eye(40)[j])) / (2 * h) for j in range(40)])
    np.testing.assert_allclose(x.grad.numpy(), fd_x, atol=1e-7)
    np.testing.assert_allclose(head.weight.grad.numpy(), fd_w, atol=1e-7)
    assert np.abs(fd_x).max() > 1e-2 and np.abs(fd_w).max() > 1e-2


def test_zero_feature_vector_has_zero_input_gradient_and_no_nan():
    backend = resolve_backend("aer")
    template = quantum_head(10, 4, encoding="state", num_features=16)
    head = QuantumHead(template, backend.estimator(), circuit=backend.transpile(template).circuit, seed=1)
    x = torch.zeros(2, 16, dtype=torch.float64, requires_grad=True)
    out = head(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert torch.equal(x.grad, torch.zeros_like(x))
    # a zero vector scaled stays |0>, but a tiny nonzero vector is a direction: its output is not the zero state's
    tiny = head(torch.full((1, 16), 1e-30, dtype=torch.float64))
    assert torch.isfinite(tiny).all() and not torch.allclose(tiny, out[:1])


def test_angle_encoded_head_has_no_input_gradient_and_says_so():
    template = quantum_head(4, 2)
    estimator = AerEstimatorV2(options={"default_precision": 0.0})
    with pytest.raises(QresnetError, match="input gradient does not exist"):
        QuantumHead(template, estimator, input_gradients=True)
    head = QuantumHead(template, estimator, seed=0)
    x = torch.rand(2, 9, dtype=torch.float64, requires_grad=True)
    head(x).sum().backward()
    assert x.grad is None and head.weight.grad is not None and not head.input_gradients


def test_job_splitting_keeps_every_job_under_the_two_qubit_gate_bound():
    backend = resolve_backend("aer:fake_torino")
    transpiled = backend.transpile(quantum_head(10, 4))  # the hardware form: 2564 two-qubit gates per sample
    gates = transpiled.cost.two_qubit_gates
    rng = np.random.default_rng(0)
    values = rng.uniform(-1, 1, (10, transpiled.circuit.num_parameters))
    plan = plan_jobs([(transpiled.circuit, [[o] for o in transpiled.observables], values)])
    per_job = [sum((s.stop - s.start) * gates for s in job) for job in plan.jobs]
    assert max(per_job) <= 10_000 and sum(s.stop - s.start for job in plan.jobs for s in job) == 10
    assert len(plan.jobs) == -(-10 // (10_000 // gates)) and plan.two_qubit_gates == 10 * gates
    too_big = QuantumCircuit(2)
    for _ in range(6):
        too_big.cz(0, 1)
    with pytest.raises(JobLimitError, match="two-qubit gates"):
        plan_jobs([(too_big, SparsePauliOp("ZZ"))], JobLimits(max_two_qubit_gates=5))


def test_split_results_equal_the_unsplit_evaluation():
    """Splitting is invisible: every value lands back where an unsplit run puts it."""
    theta = Parameter("t")
    qc = QuantumCircuit(3)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    observables = [[SparsePauliOp("ZII")], [SparsePauliOp("IIZ")], [SparsePauliOp("XXX")]]
    values = np.random.default_rng(1).uniform(0, 3, (3, 7, 1))
    pubs = [(qc, observables, values), (qc, SparsePauliOp("ZZI"), [0.4])]
    whole = EngineEstimator().run(pubs).result()
    splitter = SplittingEstimator(EngineEstimator(), JobLimits(max_two_qubit_gates=9))
    split = splitter.run(pubs).result()
    assert splitter.jobs_submitted == len(splitter.last_plan.jobs) > 3
    for a, b in zip(whole, split):
        assert a.data.evs.shape == b.data.evs.shape
        np.testing.assert_allclose(a.data.evs, b.data.evs, atol=1e-14)


def test_model_with_quantum_head_trains_layers_through_the_head(tmp_path):
    """'none' with a linear head gives layer 2 its gradient through the head's input; so must the quantum head."""
    config = TrainConfig(dataset="digits", classes=(0, 1, 2, 3), per_class=6, layers=2, residual="none",
                         head="quantum", epochs=1)
    backend = resolve_backend("aer")
    model = build_model(config, backend, (8, 8), 4)
    assert isinstance(model, ResQuNN) and isinstance(model.head, QuantumHead) and model.head.input_gradients
    x = torch.rand(2, 8, 8, dtype=torch.float64)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 3])).backward()
    assert model.layers[0].weight.grad is None and float(model.layers[1].weight.grad.norm()) > 0
    summary = train(config, tmp_path / "run", progress=False)
    assert summary.head == "quantum" and any("prepared exactly" in n for n in summary.head_notes)
    assert (tmp_path / "run" / "checkpoints" / "epoch_001.pt").is_file()


def test_quantum_head_on_runtime_backend_has_no_input_gradient():
    config = TrainConfig(dataset="digits", classes=(0, 1), per_class=4, layers=1, residual="none", head="quantum",
                         backend="aer", backend_options={"engine": "aer"}, epochs=1)
    model = build_model(config, resolve_backend("aer", config.backend_options), (8, 8), 2)
    assert model.head.encoding == "angles" and not model.head.input_gradients
    x = torch.rand(1, 8, 8, dtype=torch.float64)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([1])).backward()
    assert model.layers[0].weight.grad is None  # nothing reaches the quanvolution layer: no pretending
