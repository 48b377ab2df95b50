"""The plain-torch peer (benchmarks/torch_peer.py) computes the docs/design.md section 1 filter: checked against Qiskit.

The peer's figures only mean something if it computes the same numbers as qresnet's filter:
ideal values against ``qiskit.quantum_info.Statevector`` (of a circuit written here and of
qresnet's own template), noisy values against a ``DensityMatrix`` evolution with Qiskit Aer's
depolarizing channels, the gate-by-gate and folded variants against each other, and the
weight gradients against central finite differences.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.quantum_info import DensityMatrix, SparsePauliOp, Statevector
from qiskit_aer.noise import depolarizing_error

from qresnet.circuits import quanv_filter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import torino_noise  # noqa: E402  (benchmarks/ is a directory of scripts)
from torch_peer import VARIANTS, TorchPeer, folded_filter, gates_filter  # noqa: E402

FILTERS = {"gates": gates_filter, "folded": folded_filter}
OBSERVABLE = SparsePauliOp.from_sparse_list([("Z", [q], 0.25) for q in range(4)], 4)


def workload_circuit(x: np.ndarray, w: np.ndarray) -> QuantumCircuit:
    """The docs/design.md section 1 filter written out: RY(pi x_i) on qubit i, 2 x [RY, RZ on every qubit, CNOT chain]."""
    qc = QuantumCircuit(4)
    for q in range(4):
        qc.ry(math.pi * x[q], q)
    k = 0
    for _ in range(2):
        for gate in (qc.ry, qc.rz):
            for q in range(4):
                gate(w[k], q)
                k += 1
        for c, t in ((0, 1), (1, 2), (2, 3)):
            qc.cx(c, t)
    return qc


def noisy_reference(x: np.ndarray, w: np.ndarray, noise: dict) -> float:
    """DensityMatrix through the circuit, Aer's depolarizing channel after every gate on each of its qubits.

    ``depolarizing_error(l, 1)`` is rho -> (1 - l) rho + l I/2; X, Y, Z with p/3 each is l = 4p/3.
    """
    one = depolarizing_error(4 * noise["p_1q"] / 3, 1).to_quantumchannel()
    two = depolarizing_error(4 * noise["p_2q_per_qubit"] / 3, 1).to_quantumchannel()
    rho = DensityMatrix.from_label("0000")
    circuit = workload_circuit(x, w)
    for instruction in circuit.data:
        qubits = [circuit.find_bit(q).index for q in instruction.qubits]
        rho = rho.evolve(instruction.operation, qubits)
        for q in qubits:
            rho = rho.evolve(one if len(qubits) == 1 else two, [q])
    return float(rho.expectation_value(OBSERVABLE).real)


@pytest.fixture
def patches_and_weights(rng):
    return rng.uniform(0, 1, (5, 4)), rng.uniform(-math.pi, math.pi, 16)


def values(variant: str, x: np.ndarray, w: np.ndarray, noise: dict | None) -> np.ndarray:
    with torch.no_grad():
        return FILTERS[variant](torch.as_tensor(x), torch.as_tensor(w), noise).numpy()


@pytest.mark.parametrize("variant", VARIANTS)
def test_ideal_values_match_qiskit_statevector(variant, patches_and_weights):
    x, w = patches_and_weights
    ref = [Statevector(workload_circuit(p, w)).expectation_value(OBSERVABLE).real for p in x]
    np.testing.assert_allclose(values(variant, x, w, None), ref, rtol=0, atol=1e-10)


def test_peer_computes_qresnets_filter(patches_and_weights):
    """The same numbers as qresnet's own template (weights in its parameter order): the peers time our workload."""
    x, w = patches_and_weights
    template = quanv_filter()
    ref = []
    for p in x:
        bound = template.circuit.assign_parameters(dict(zip(template.input_params + template.weight_params, [*p, *w])))
        ref.append(Statevector(bound).expectation_value(template.observables[0]).real)
    np.testing.assert_allclose(values("folded", x, w, None), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("variant", VARIANTS)
def test_noisy_values_match_qiskit_density_matrix(variant, patches_and_weights):
    x, w = patches_and_weights
    noise = torino_noise()
    ref = np.array([noisy_reference(p, w, noise) for p in x])
    ideal = values(variant, x, w, None)
    got = values(variant, x, w, noise)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)
    assert np.abs(got - ideal).max() > 1e-4  # the noise is there, and far above the tolerance


@pytest.mark.parametrize("noisy", [False, True], ids=["ideal", "noisy"])
def test_folded_and_gate_by_gate_agree(noisy, rng):
    x, w = rng.uniform(0, 1, (64, 4)), rng.uniform(-math.pi, math.pi, 16)
    noise = torino_noise() if noisy else None
    np.testing.assert_allclose(values("folded", x, w, noise), values("gates", x, w, noise), rtol=0, atol=1e-10)


@pytest.mark.parametrize("noisy", [False, True], ids=["ideal", "noisy"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_weight_gradients_match_finite_differences(variant, noisy, rng):
    x, w = torch.as_tensor(rng.uniform(0, 1, (6, 4))), rng.uniform(-math.pi, math.pi, 16)
    coefficients = torch.as_tensor(rng.normal(size=6))
    noise = torino_noise() if noisy else None

    def loss(weights) -> torch.Tensor:
        return FILTERS[variant](x, weights, noise) @ coefficients

    weights = torch.tensor(w, requires_grad=True)
    loss(weights).backward()
    h = 1e-5
    with torch.no_grad():
        fd = [(loss(torch.as_tensor(w + h * e)) - loss(torch.as_tensor(w - h * e))).item() / (2 * h) for e in np.eye(16)]
    np.testing.assert_allclose(weights.grad.numpy(), fd, rtol=0, atol=1e-6)
    assert np.abs(fd).max() > 1e-2  # a real gradient, not zeros on both sides


def test_layer_reads_patches_row_major(rng):
    """The model's layer: patch (r, c) of a 4x4 map is image[2r:2r+2, 2c:2c+2] flattened row-major, on qubits 0..3."""
    model = TorchPeer("folded")
    image = rng.uniform(0, 1, (4, 4))
    with torch.no_grad():
        got = model.layer(torch.as_tensor(image)[None], model.w1)[0].numpy()
    w = model.w1.detach().numpy()
    ref = [[Statevector(workload_circuit(image[2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(-1), w))
            .expectation_value(OBSERVABLE).real for c in range(2)] for r in range(2)]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


def test_layer_two_reads_a_value_and_both_layers_learn(monkeypatch):
    """O1+O2 under the measurement boundary: layer 2's input carries no gradient, yet w1 and w2 both get one."""
    model = TorchPeer("folded")
    inputs = []
    layer = model.layer
    monkeypatch.setattr(model, "layer", lambda x, w: inputs.append(x) or layer(x, w))
    x = torch.rand(2, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model(x).sum().backward()
    assert len(inputs) == 2 and not any(t.requires_grad for t in inputs)
    assert model.w1.grad.abs().max() > 0 and model.w2.grad.abs().max() > 0


@pytest.mark.parametrize("noisy", [False, True], ids=["ideal", "noisy"])
def test_same_logits_as_the_pennylane_peer(noisy):
    """Where PennyLane is installed: its peer and the torch peers are one model (same init, same numbers).

    default.mixed applies RZ in single precision (see pennylane_peer.check_against_reference), hence 1e-6 noisy.
    """
    pytest.importorskip("pennylane")
    from pennylane_peer import PeerModel

    noise = torino_noise() if noisy else None
    x = torch.rand(2, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = PeerModel(noise, seed=3)(x).numpy()
        for variant in VARIANTS:
            np.testing.assert_allclose(TorchPeer(variant, noise, seed=3)(x).numpy(), ref, rtol=0,
                                       atol=1e-6 if noisy else 1e-10)
