"""The quantum head: a feature vector amplitude-encoded into n qubits, a trainable ansatz, <Z> on m qubits.

The encoding is a parameterised state preparation (Mottonen et al., quant-ph/0407010) for
real amplitudes: level l puts a uniformly controlled RY on qubit n-1-l, controlled by the l
qubits above it, written as 2^l RY gates and 2^l CNOTs in Gray-code order. Its 2^n - 1
input parameters are those RY angles, each in exactly one rotation, computed from the
features by :func:`amplitude_angles`; so the head template passes the same rotation check
as the filter and binds like any other template.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp

from qresnet.circuits.ansatz import append_ansatz
from qresnet.circuits.template import CircuitTemplate
from qresnet.errors import TemplateError


def _gray(i: int) -> int:
    return i ^ (i >> 1)


def _walsh_matrix(level: int) -> np.ndarray:
    """M[j, i] = (-1)^popcount(j & gray(i)): the angle control value j sees from RY number i."""
    size = 1 << level
    j = np.arange(size)[:, None]
    g = np.array([_gray(i) for i in range(size)])[None, :]
    parity = np.vectorize(lambda v: bin(v).count("1") & 1)(j & g)
    return 1.0 - 2.0 * parity


def _append_encoding(circuit: QuantumCircuit, angles: ParameterVector) -> None:
    n = circuit.num_qubits
    k = 0
    for level in range(n):
        target = n - 1 - level
        size = 1 << level
        for i in range(size):
            circuit.ry(angles[k], target)
            k += 1
            if level:
                # the control whose bit flips between gray(i) and gray(i+1), cyclically
                changed = _gray(i) ^ _gray((i + 1) % size)
                circuit.cx(target + 1 + changed.bit_length() - 1, target)


def amplitude_angles(features: np.ndarray, num_qubits: int = 10) -> np.ndarray:
    """The head's encoding angles for a batch of real feature vectors, shape (..., 2^n - 1).

    Features are zero-padded to 2^n and normalised. An all-zero vector has no direction to
    encode and raises; the head module decides how to treat it.
    """
    x = np.asarray(features, dtype=float)
    dim = 1 << num_qubits
    if x.shape[-1] > dim:
        raise TemplateError(f"features has {x.shape[-1]} values; {num_qubits} qubits hold at most {dim}")
    if not np.all(np.isfinite(x)):
        raise TemplateError("features contains NaN or infinite values")
    batch = x.shape[:-1]
    psi = np.zeros((int(np.prod(batch, dtype=int)), dim))
    psi[:, : x.shape[-1]] = x.reshape(-1, x.shape[-1])
    norms = np.linalg.norm(psi, axis=1)
    if np.any(norms == 0):
        raise TemplateError("features holds an all-zero vector, which amplitude encoding cannot normalise")
    psi /= norms[:, None]
    out = []
    for level in range(num_qubits):
        t = num_qubits - 1 - level
        blocks = psi.reshape(len(psi), 1 << level, 2, 1 << t)
        if t:
            left, right = np.linalg.norm(blocks[:, :, 0, :], axis=-1), np.linalg.norm(blocks[:, :, 1, :], axis=-1)
        else:
            left, right = blocks[:, :, 0, 0], blocks[:, :, 1, 0]  # signed: the last level carries the signs
        alpha = 2.0 * np.arctan2(right, left)  # rotation wanted for each control value j
        out.append(alpha @ _walsh_matrix(level) / (1 << level))  # M is symmetric-orthogonal up to 2^l
    return np.concatenate(out, axis=1).reshape(*batch, dim - 1)


def quantum_head(
    num_qubits: int = 10, measured: int = 4, reps: int = 2, entanglement: str = "chain"
) -> CircuitTemplate:
    """The head template: amplitude encoding into ``num_qubits``, ansatz, <Z_q> for q < ``measured``.

    Equal arguments return the same (immutable) template object.

    >>> t = quantum_head(num_qubits=4, measured=2)
    >>> (t.num_inputs, t.num_weights, t.num_outputs), t is quantum_head(4, 2)
    ((15, 16, 2), True)
    """
    return _quantum_head(num_qubits, measured, reps, entanglement)


@cache
def _quantum_head(num_qubits: int, measured: int, reps: int, entanglement: str) -> CircuitTemplate:
    if not isinstance(num_qubits, int) or num_qubits < 1:
        raise TemplateError(f"num_qubits={num_qubits!r} must be a positive integer")
    if not isinstance(measured, int) or not 1 <= measured <= num_qubits:
        raise TemplateError(f"measured={measured!r} must be between 1 and num_qubits={num_qubits}")
    circuit = QuantumCircuit(num_qubits, name="head")
    angles = ParameterVector("a", (1 << num_qubits) - 1)
    _append_encoding(circuit, angles)
    weights = append_ansatz(circuit, reps, entanglement)
    observables = tuple(SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], num_qubits) for q in range(measured))
    return CircuitTemplate(
        name=f"head{num_qubits}q-m{measured}-reps{reps}-{entanglement}",
        circuit=circuit,
        input_params=tuple(angles),
        weight_params=tuple(weights),
        observables=observables,
        input_scale=1.0,
        settings={"template": "head", "num_qubits": num_qubits, "measured": measured,
                  "reps": reps, "entanglement": entanglement},
    )
