"""Exact expectation values of a compiled program: Heisenberg over PTMs, or statevector when ideal and wide."""

from __future__ import annotations

from functools import cache

import numpy as np

from qresnet.backends.engine.chains import body_plan, prefix_chains
from qresnet.backends.engine.program import Program, Step
from qresnet.backends.engine.ptm import unitary_ptm
from qresnet.backends.primitives import group_rows
from qresnet.errors import EngineUnsupportedError


def observable_vectors(terms_list: list[dict[str, float]], program: Program) -> np.ndarray:
    """Pauli coefficient vectors (K, 4^n) on the program's compact qubits from {label: coeff} dicts."""
    n = program.num_qubits
    compact = {q: i for i, q in enumerate(program.physical)}
    out = np.zeros((len(terms_list), 4**n))
    for k, terms in enumerate(terms_list):
        for label, coeff in terms.items():
            index = 0
            for pos, char in enumerate(reversed(label)):
                if char != "I":
                    if pos not in compact:
                        raise EngineUnsupportedError(f"observable acts on qubit {pos}, which the circuit does not simulate")
                    index += "IXYZ".index(char) * 4 ** compact[pos]
            out[k, index] += complex(coeff).real
    return out


def _apply(o: np.ndarray, ptm: np.ndarray, qubits: tuple[int, ...], n: int) -> np.ndarray:
    """o (G, K, 4^n) -> o R on ``qubits``; R is (4^k, 4^k) or (G, 4^k, 4^k)."""
    g, k = o.shape[0], o.shape[1]
    low = qubits[0]
    if all(q == low + i for i, q in enumerate(qubits)):
        # the op's digits are contiguous, argument 0 least significant, at stride 4^low: R^T from the left
        t = o.reshape(g, -1, 4 ** len(qubits), 4**low)
        r_t = ptm.T if ptm.ndim == 2 else np.swapaxes(ptm, -1, -2)[:, None]
        return np.matmul(r_t, t).reshape(g, k, 4**n)
    forward, backward = _permutations(qubits, n)
    t = o.reshape((g, k) + (4,) * n).transpose(forward)
    shape = t.shape
    t = t.reshape(g, -1, 4 ** len(qubits)) @ ptm
    return t.reshape(shape).transpose(backward).reshape(g, k, 4**n)


def op_environment(h: np.ndarray, s: np.ndarray, qubits: tuple[int, ...], n: int) -> np.ndarray:
    """(G, d, d): M[g, a, b] = sum over observables and the other digits of h[..., a] s[..., b], with a and b the
    digits of ``qubits`` (argument 0 least significant), for h and s (G, K, 4^n). Then
    sum(_apply(h, R, qubits, n) * s) = sum(R * M) for any R on those qubits: one product per operation
    serves the derivative by each of its parameters."""
    g, d = h.shape[0], 4 ** len(qubits)
    low = qubits[0]
    if all(q == low + i for i, q in enumerate(qubits)):
        a = h.reshape(g, -1, d, 4**low).transpose(0, 2, 1, 3).reshape(g, d, -1)
        b = s.reshape(g, -1, d, 4**low).transpose(0, 2, 1, 3).reshape(g, d, -1)
    else:
        forward, _ = _permutations(qubits, n)
        a = np.swapaxes(h.reshape((g, h.shape[1]) + (4,) * n).transpose(forward).reshape(g, -1, d), 1, 2)
        b = np.swapaxes(s.reshape((g, s.shape[1]) + (4,) * n).transpose(forward).reshape(g, -1, d), 1, 2)
    return a @ np.swapaxes(b, 1, 2)


@cache
def _permutations(qubits: tuple[int, ...], n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The axis order of a (G, K, 4, ..., 4) image that puts ``qubits``' digits last (argument 0 least
    significant), and its inverse."""
    axes = [2 + (n - 1 - q) for q in reversed(qubits)]
    forward = tuple([a for a in range(2 + n) if a not in axes] + axes)
    return forward, tuple(np.argsort(forward).tolist())


PER_GROUP_LOOP = 64  # up to this many body settings, contract group by group with matmuls




def prefix_bloch(program: Program, values: np.ndarray, q: int) -> np.ndarray:
    """Bloch vectors (1, x, y, z) of qubit q after its prefix, one per row: computed once per distinct
    setting of the prefix's parameters."""
    representatives, inverse = program.prefix_rows(values, q)
    return _prefix_bloch(program, representatives, q)[inverse]


def _prefix_bloch(program: Program, values: np.ndarray, q: int) -> np.ndarray:
    """Bloch vectors of qubit q after its prefix, one per row: r -> R r, step by step."""
    r = np.zeros((len(values), 4))
    r[:, 0] = r[:, 3] = 1.0
    for step in program.prefix[q]:
        if step.fixed is not None:
            r = r @ step.fixed.T
            continue
        angles = step.angles(values, program.parameters)
        if step.plane is not None:  # rotation of the (i, j) Bloch components by the angle
            i, j = step.plane
            cos, sin = np.cos(angles[:, 0]), np.sin(angles[:, 0])
            ri, rj = r[:, i].copy(), r[:, j]
            r[:, i] = cos * ri - sin * rj
            r[:, j] = sin * ri + cos * rj
        elif step.rotation is not None:
            a, b, c = step.rotation
            theta = angles[:, :1]
            r = r @ a.T + np.cos(theta) * (r @ b.T) + np.sin(theta) * (r @ c.T)
        else:
            r = np.einsum("rij,rj->ri", unitary_ptm(step.unitary(angles)), r)
        if step.noise is not None:
            r = r @ step.noise.T
    return r


def body_images(program: Program, observables: np.ndarray, settings: np.ndarray) -> np.ndarray:
    """(G, K, 4^n): the observables carried back through the body, one image per setting of ``body_columns``."""
    columns = program.body_columns
    representatives = np.zeros((len(settings), len(program.parameters)))
    representatives[:, columns] = settings
    plan = body_plan(program)
    chained = plan.chain_operations(representatives, derivatives=False)  # the rotation blocks, all at once
    o = np.broadcast_to(observables, (len(representatives),) + observables.shape).copy()
    for j in range(len(program.body) - 1, -1, -1):
        op = program.body[j]
        r = plan.fixed[j] if plan.fixed[j] is not None else chained[j][0] if j in chained else \
            op.ptm(representatives, program.parameters)
        o = _apply(o, r, op.qubits, program.num_qubits)
    return o


def heisenberg(
    program: Program, observables: np.ndarray, values: np.ndarray,
    grouping: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(K, R) exact values: the observables carried back through the body once per distinct body setting.

    ``grouping``: ``group_rows(values[:, program.body_columns])``, if the caller has it already.
    """
    n = program.num_qubits
    if n == 0:  # nothing simulated (an empty circuit, an identity observable): the identity coefficient
        return np.repeat(observables[:, :1], len(values), axis=1)
    settings, group = grouping if grouping is not None else group_rows(values[:, program.body_columns])
    o = body_images(program, observables, settings)
    chains = prefix_chains(program)
    if chains is not None:  # every qubit's prefix at once
        bloch = list(chains.states(values, tangents=False)[0])
    else:
        bloch = [prefix_bloch(program, values, q) for q in range(n)]
    return contract(o, group, bloch)


def contract(o: np.ndarray, group: np.ndarray, bloch: list[np.ndarray], max_bytes: int | None = None) -> np.ndarray:
    """(K, R): Tr[O_g(row) rho_row] for images ``o`` (G, K, 4^n) and product states given by ``bloch`` (n of (R, 4)).

    Tr[O rho] = sum_j o_j prod_q r_q[j_q]: with few body settings, contract the most significant
    qubit by a matmul per setting, then the others row by row; with many, gather each row's image.
    Rows go in chunks whose largest intermediate stays within ``max_bytes`` (default ``CHUNK_BYTES``).
    """
    n, rows_total, k = len(bloch), len(group), o.shape[1]
    out = np.empty((rows_total, k))
    if len(o) > PER_GROUP_LOOP:  # many settings: gather each row's observable image
        for rows in row_chunks(np.arange(rows_total), 2 * k * 4**n, max_bytes):  # the image and a product
            t = o[group[rows]]  # (R_c, K, 4^n)
            for q in range(n):
                t = (t.reshape(len(rows), k, -1, 4) * bloch[q][rows, None, None, :]).sum(axis=3)
            out[rows] = t.reshape(len(rows), k)
        return out.T
    for g, members in enumerate(group_members(group, len(o))):
        top = o[g].reshape(k, 4, -1).transpose(1, 0, 2).reshape(4, -1)
        for rows in row_chunks(members, 2 * top.shape[1], max_bytes):
            t = bloch[n - 1][rows] @ top  # (R_c, K * 4^(n-1))
            for q in range(n - 2, -1, -1):
                t = (t.reshape(len(rows), k, 4, -1) * bloch[q][rows][:, None, :, None]).sum(axis=2)
            out[rows] = t.reshape(len(rows), k)
    return out.T


def environments(o: np.ndarray, group: np.ndarray, bloch: list[np.ndarray],
                 max_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(values (K, R), environments (R, K, n, 4)): E[r, k, q] is the derivative of value (r, k) by qubit q's Bloch
    vector, the row's image contracted with every other qubit's Bloch vector of the row (a value is linear in
    each). Contracted as :func:`contract` does, from the most significant qubit down, with the products of the
    lower qubits' Bloch vectors beside."""
    n, rows_total, k = len(bloch), len(group), o.shape[1]
    values, env = np.empty((rows_total, k)), np.empty((rows_total, k, n, 4))
    gather = len(o) > PER_GROUP_LOOP  # many settings: gather each row's image
    parts = [(0, np.arange(rows_total))] if gather else list(enumerate(group_members(group, len(o))))
    for g, members in parts:
        for rows in row_chunks(members, (2 * k + 1) * 4 ** (n if gather else n - 1), max_bytes):
            b, c = [x[rows] for x in bloch], len(rows)
            low = [np.ones((c, 1))]  # low[q] (c, 4^q): the product of the Bloch vectors below qubit q
            for q in range(n - 1):
                low.append((b[q][:, :, None] * low[q][:, None, :]).reshape(c, -1))
            if gather:
                t = o[group[rows]].reshape(c, k, 4, -1)
                env[rows, :, n - 1] = (t @ low[n - 1][:, None, :, None])[..., 0]
                t = (t * b[n - 1][:, None, :, None]).sum(axis=2)
            else:
                env[rows, :, n - 1] = (low[n - 1] @ o[g].reshape(k * 4, -1).T).reshape(c, k, 4)
                t = b[n - 1] @ o[g].reshape(k, 4, -1).transpose(1, 0, 2).reshape(4, -1)
            for q in range(n - 2, -1, -1):
                t = t.reshape(c, k, 4, -1)
                env[rows, :, q] = (t @ low[q][:, None, :, None])[..., 0]
                t = (t * b[q][:, None, :, None]).sum(axis=2)
            values[rows] = t.reshape(c, k)
    return values.T, env


CHUNK_BYTES = 256 * 2**20  # the largest intermediate one chunk of rows may build (a 9-qubit image is 2 MiB a row)


def row_chunks(rows: np.ndarray, numbers_per_row: int, max_bytes: int | None = None) -> list[np.ndarray]:
    """``rows`` in consecutive chunks whose (chunk, ``numbers_per_row``) float64 arrays take at most ``max_bytes``
    (default ``CHUNK_BYTES``; at least one row a chunk)."""
    size = max(1, (CHUNK_BYTES if max_bytes is None else max_bytes) // (8 * numbers_per_row))
    return [rows] if size >= len(rows) else [rows[i:i + size] for i in range(0, len(rows), size)]


def group_members(group: np.ndarray, count: int) -> list[np.ndarray]:
    """The rows of each of ``count`` groups, by group: ``np.flatnonzero(group == g)`` for every g at once."""
    if count == 1:
        return [np.arange(len(group))]
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(count + 1))
    return [order[bounds[g]:bounds[g + 1]] for g in range(count)]


def statevector(program: Program, observables: list[dict[str, float]], values: np.ndarray) -> np.ndarray:
    """(K, R) exact values for ideal circuits by batched statevector simulation (wide circuits)."""
    n, params = program.num_qubits, program.parameters
    compact = {q: i for i, q in enumerate(program.physical)}
    psi = np.zeros((len(values), 2**n), dtype=complex)
    psi[:, 0] = 1.0
    for step in program.steps:
        psi = _apply_unitary(psi, _step_unitary(step, values, params), step.qubits, n)
    return np.array([np.einsum("ri,ri->r", psi.conj(), pauli_apply(psi, terms, compact)).real for terms in observables])


def pauli_apply(psi: np.ndarray, terms: dict[str, float], compact: dict[int, int]) -> np.ndarray:
    """O psi for rows psi (R, 2^n) on compact qubits and O = sum coeff * Pauli label (Qiskit order)."""
    basis = np.arange(psi.shape[-1])
    out = np.zeros_like(psi)
    for label, coeff in terms.items():
        x = z = 0
        ys = 0
        for pos, char in enumerate(reversed(label)):
            if char == "I":
                continue
            bit = 1 << compact[pos]
            x |= bit if char in "XY" else 0
            z |= bit if char in "ZY" else 0
            ys += char == "Y"
        # <i| P |j>: P|j> = i^{#Y} (-1)^{popcount(j & z)} |j ^ x>, so (P psi)_i = i^{#Y} (-1)^{popcount((i^x) & z)} psi_{i^x}
        sign = 1 - 2 * (_popcount((basis ^ x) & z) & 1)
        out += complex(coeff) * (1j) ** ys * sign * psi[..., basis ^ x]
    return out


def _popcount(v: np.ndarray) -> np.ndarray:
    return np.bitwise_count(v).astype(np.int64) if hasattr(np, "bitwise_count") else \
        np.array([bin(int(x)).count("1") for x in v])


def _step_unitary(step: Step, values: np.ndarray, params) -> np.ndarray:
    if step.matrix is not None:
        return step.matrix
    if step.fixed is not None or step.noise is not None:
        raise EngineUnsupportedError("the statevector route takes ideal circuits only")
    angles = step.angles(values, params)
    if step.generator is not None:
        half = angles[:, 0, None, None] / 2
        return np.cos(half) * np.eye(len(step.generator)) - 1j * np.sin(half) * step.generator
    return step.unitary(angles)


def _apply_unitary(psi: np.ndarray, u: np.ndarray, qubits: tuple[int, ...], n: int) -> np.ndarray:
    axes = [1 + (n - 1 - q) for q in reversed(qubits)]
    t = np.moveaxis(psi.reshape((len(psi),) + (2,) * n), axes, range(-len(qubits), 0))
    shape = t.shape
    flat = t.reshape(len(psi), -1, 2 ** len(qubits))
    flat = flat @ (u.T if u.ndim == 2 else np.swapaxes(u, -1, -2))
    return np.moveaxis(flat.reshape(shape), range(-len(qubits), 0), axes).reshape(len(psi), 2**n)


__all__ = ["CHUNK_BYTES", "body_images", "contract", "environments", "group_members", "heisenberg", "observable_vectors",
           "pauli_apply", "row_chunks", "statevector"]
