"""Independent numpy references: the filter of docs/design.md section 1, simulated gate by gate; and the one
tolerance by which two runs' numbers count as equal to rounding."""

import numpy as np
import pytest


def equal_to_rounding(a, b) -> bool:
    """True when ``a`` and ``b`` (nested dicts, lists, numbers) agree, floats to rounding, everything else exactly.

    A run trained in another stack (a resume that regroups its stack) sums the same terms in another order, so its
    losses and gradient norms may differ in the last bits; its predictions, hence accuracies, must not.
    """
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal_to_rounding(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(equal_to_rounding(x, y) for x, y in zip(a, b))
    return a == b


def ry(theta):
    c, s = np.cos(theta / 2), np.sin(theta / 2)
    return np.array([[c, -s], [s, c]], dtype=complex)


def rz(theta):
    return np.diag([np.exp(-0.5j * theta), np.exp(0.5j * theta)])


def apply_1q(state, gate, qubit, n):
    # state indexed as [q_{n-1}, ..., q_0] (Qiskit little-endian)
    psi = state.reshape([2] * n)
    axis = n - 1 - qubit
    psi = np.moveaxis(np.tensordot(gate, psi, axes=([1], [axis])), 0, axis)
    return psi.reshape(-1)


def apply_cx(state, control, target, n):
    psi = state.reshape([2] * n).copy()
    c_ax, t_ax = n - 1 - control, n - 1 - target
    idx = [slice(None)] * n
    idx[c_ax] = 1
    sub = psi[tuple(idx)]
    t_sub = t_ax if t_ax < c_ax else t_ax - 1
    psi[tuple(idx)] = np.flip(sub, axis=t_sub)
    return psi.reshape(-1)


def filter_expectations(x, w, reps=2, entanglement="chain"):
    """<Z_i> for i in range(n) of RY(pi x) encoding + reps x (RY, RZ, CNOT chain/ring)."""
    n = len(x)
    state = np.zeros(2**n, dtype=complex)
    state[0] = 1
    for q in range(n):
        state = apply_1q(state, ry(np.pi * x[q]), q, n)
    pairs = [(i, i + 1) for i in range(n - 1)] + ([(n - 1, 0)] if entanglement == "ring" and n > 2 else [])
    k = 0
    for _ in range(reps):
        for q in range(n):
            state = apply_1q(state, ry(w[k]), q, n); k += 1
        for q in range(n):
            state = apply_1q(state, rz(w[k]), q, n); k += 1
        for c, t in pairs:
            state = apply_cx(state, c, t, n)
    probs = np.abs(state) ** 2
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    return (probs[:, None] * (1 - 2 * bits)).sum(axis=0)
