"""The trainable ansatz families of the filters (the head uses the first).

- ``ry_rz`` (the default): ``reps`` x (RY on every qubit, RZ on every qubit, CNOT entanglers);
  2 n reps weights.
- ``random``: PennyLane's ``RandomLayers`` (the quanvolution demo the paper builds on): per
  repetition, n rotations RX, RY or RZ on random qubits, each preceded with probability 0.3 by
  CNOTs on a random pair, all fixed by ``seed``; n reps weights. The draws use numpy's
  ``default_rng(seed)``, so a seed gives a different circuit than in PennyLane (its legacy global RNG).
- ``strongly_entangling``: PennyLane's ``StronglyEntanglingLayers``: per repetition l, Rot = RZ, RY, RZ
  on every qubit, then CNOT(i, i + r mod n) for every i with range r = l mod (n - 1) + 1;
  3 n reps weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterVector

from qresnet.choices import ENTANGLEMENTS
from qresnet.errors import TemplateError
from qresnet.values import checked_int

RANDOM_CNOT_PROBABILITY = 0.3  # PennyLane's RandomLayers default ratio_imprim


def entangling_pairs(num_qubits: int, entanglement: str) -> list[tuple[int, int]]:
    """CNOT (control, target) pairs of one layer: chain 0-1, 1-2, ...; ring closes it with (n-1)-0;
    full is every pair (i, j), i < j, in order."""
    if entanglement not in ENTANGLEMENTS:
        raise TemplateError(f"entanglement={entanglement!r} is not one of {', '.join(ENTANGLEMENTS)}")
    if entanglement == "full":
        return [(i, j) for i in range(num_qubits) for j in range(i + 1, num_qubits)]
    pairs = [(i, i + 1) for i in range(num_qubits - 1)]
    if entanglement == "ring" and num_qubits > 2:
        pairs.append((num_qubits - 1, 0))
    return pairs


def append_ansatz(
    circuit: QuantumCircuit, reps: int, entanglement: str, prefix: str = "w"
) -> Sequence[Parameter]:
    """Append ``reps`` x (RY on every qubit, RZ on every qubit, CNOT entanglers); return the weights."""
    reps = checked_int(reps, "reps", error=TemplateError)
    n = circuit.num_qubits
    pairs = entangling_pairs(n, entanglement)
    weights = ParameterVector(prefix, 2 * n * reps)
    k = 0
    for _ in range(reps):
        for q in range(n):
            circuit.ry(weights[k], q)
            k += 1
        for q in range(n):
            circuit.rz(weights[k], q)
            k += 1
        for control, target in pairs:
            circuit.cx(control, target)
    return list(weights)


def append_random_layers(circuit: QuantumCircuit, reps: int, seed: int, prefix: str = "w") -> Sequence[Parameter]:
    """Append ``reps`` random layers of n rotations each (module docstring); return the weights."""
    reps = checked_int(reps, "reps", error=TemplateError)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise TemplateError(f"ansatz_seed={seed!r} must be a non-negative integer")
    n = circuit.num_qubits
    rng = np.random.default_rng(seed)
    weights = ParameterVector(prefix, n * reps)
    gates = (circuit.rx, circuit.ry, circuit.rz)
    k = 0
    while k < len(weights):
        if n > 1 and rng.random() < RANDOM_CNOT_PROBABILITY:
            control, target = rng.permutation(n)[:2]
            circuit.cx(int(control), int(target))
            continue
        gates[int(rng.integers(3))](weights[k], int(rng.integers(n)))
        k += 1
    return list(weights)


def append_strongly_entangling(circuit: QuantumCircuit, reps: int, prefix: str = "w") -> Sequence[Parameter]:
    """Append ``reps`` strongly entangling layers (module docstring); return the weights."""
    reps = checked_int(reps, "reps", error=TemplateError)
    n = circuit.num_qubits
    weights = ParameterVector(prefix, 3 * n * reps)
    k = 0
    for layer in range(reps):
        for q in range(n):
            circuit.rz(weights[k], q)
            circuit.ry(weights[k + 1], q)
            circuit.rz(weights[k + 2], q)
            k += 3
        if n > 1:
            r = layer % (n - 1) + 1
            for q in range(n):
                circuit.cx(q, (q + r) % n)
    return list(weights)
