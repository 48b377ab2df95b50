"""The trainable ansatz shared by the filter and the head: RY, RZ on every qubit, then entanglers."""

from __future__ import annotations

from collections.abc import Sequence

from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterVector

from qresnet.choices import ENTANGLEMENTS
from qresnet.errors import TemplateError
from qresnet.values import checked_int


def entangling_pairs(num_qubits: int, entanglement: str) -> list[tuple[int, int]]:
    """CNOT (control, target) pairs of one layer: chain 0-1, 1-2, ...; ring closes it with (n-1)-0."""
    if entanglement not in ENTANGLEMENTS:
        raise TemplateError(f"entanglement={entanglement!r} is not one of {', '.join(ENTANGLEMENTS)}")
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
