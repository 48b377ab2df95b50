"""Pauli transfer matrices (PTMs): every gate and channel as a real matrix on Pauli coefficients.

Conventions: a k-qubit Pauli index is sum_m j_m 4^m over the operation's qubits in argument
order (argument 0 least significant, as in Qiskit's matrices), with j in (I, X, Y, Z).
R[i, j] = Tr[P_i E(P_j)] / 2^k. A state is r_j = Tr[P_j rho] (Bloch vector (1, x, y, z) for a
qubit), so E acts as r -> R r; an observable O = sum_j o_j P_j is carried backwards
(Heisenberg) as o -> o R, and Tr[O rho] = sum_j o_j r_j.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np

_PAULI_1Q = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=complex)


@cache
def pauli_matrices(k: int) -> np.ndarray:
    """All 4^k Pauli matrices on k qubits, shape (4^k, 2^k, 2^k), index sum_m j_m 4^m."""
    out = np.empty((4**k, 2**k, 2**k), dtype=complex)
    for index, digits in enumerate(itertools.product(range(4), repeat=k)):
        # digits run most significant first: digits[0] is argument k-1
        mat = np.ones((1, 1), dtype=complex)
        for d in digits:
            mat = np.kron(mat, _PAULI_1Q[d])
        out[index] = mat
    return out


def unitary_ptm(u: np.ndarray) -> np.ndarray:
    """PTMs of unitaries, shape (..., 2^k, 2^k) -> (..., 4^k, 4^k)."""
    k = int(np.log2(u.shape[-1]))
    p = pauli_matrices(k)
    # Tr[P_i U P_j U^dagger] / 2^k
    up = np.einsum("...ab,jbc->...jac", u, p)  # U P_j
    upu = np.einsum("...jac,...dc->...jad", up, u.conj())  # U P_j U^dagger
    return np.einsum("iba,...jab->...ij", p, upu).real / 2**k


def kraus_ptm(kraus: list[np.ndarray]) -> np.ndarray:
    """PTM of a channel given by Kraus operators."""
    k = int(np.log2(kraus[0].shape[0]))
    p = pauli_matrices(k)
    image = sum(np.einsum("ab,jbc,dc->jad", K, p, K.conj()) for K in kraus)  # E(P_j)
    return np.einsum("iba,jab->ij", p, image).real / 2**k


def superop_ptm(superop: np.ndarray) -> np.ndarray:
    """PTM of a channel from its Qiskit ``SuperOp`` matrix (column-stacking: vec(rho)[i + d j] = rho[i, j]).

    Exact, unlike a detour through Kraus operators, whose eigen-decomposition drops tiny terms.
    """
    d = int(round(np.sqrt(superop.shape[0])))
    p = pauli_matrices(int(np.log2(d)))
    vec = p.transpose(0, 2, 1).reshape(len(p), -1)  # column-stacked P_j
    image = (vec @ superop.T).reshape(len(p), d, d).transpose(0, 2, 1)  # E(P_j)
    return np.einsum("iba,jab->ij", p, image).real / d


def rotation_ptm_terms(ptm_at: callable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a Pauli rotation exp(-i theta/2 P): R(theta) = A + cos(theta) B + sin(theta) C, exactly."""
    r0, r_half, r_pi = ptm_at(0.0), ptm_at(np.pi / 2), ptm_at(np.pi)
    a = (r0 + r_pi) / 2
    return a, (r0 - r_pi) / 2, r_half - a


def compose_1q(ptms: list[np.ndarray]) -> np.ndarray:
    """Forward sequence [E_1, E_2, ...] (E_1 first) of possibly batched 4x4 PTMs -> R_m ... R_1."""
    total = ptms[0]
    for r in ptms[1:]:
        total = r @ total
    return total
