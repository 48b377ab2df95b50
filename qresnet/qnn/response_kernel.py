"""The response contraction compiled (numba): a layer's patches through its response tensor, and T's gradient.

f(x) = sum over a of T[a] * prod_i v(theta_i)[a_i] (:mod:`qresnet.qnn.response`) is, per patch, 3^q products of
the inputs' factors and one dot product with T; in torch the same sums take some 30 calls a layer, whose dispatch
costs more than their flops on a batch's few thousand patches. Here each is one compiled loop over the patches,
forward (:func:`values`) and T's gradient (:func:`tensor_gradient`), run by run: a stack's runs never mix, and a
run's numbers do not depend on which runs share its stack.

A blank patch (every input exactly 0: most of an MNIST image) takes the design point 0's value, computed once per
run; its factors (1, 0, 1) are exact, so skipping it changes no bit. A patch costs what its inked inputs cost.

Inputs that need a gradient take :class:`~qresnet.qnn.response._Response` (torch) instead: its backward needs
each input's contraction with the others, which the compiled loops do not keep.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True)  # products only: nothing to reassociate
def _monomials(trig: np.ndarray, out: np.ndarray) -> None:
    """``out`` (3^q,) = prod_i v_i[a_i] for every a, first input slowest (T's layout), from each input's
    (sin theta_i, cos theta_i) in ``trig`` (q, 2)."""
    out[0] = 1.0
    size = 1
    for i in range(trig.shape[0]):
        s, c = trig[i, 0], trig[i, 1]
        for j in range(size - 1, -1, -1):  # from the top: entry j is read before 3j..3j+2 (all >= j) are written
            p = out[j]
            out[3 * j] = p
            out[3 * j + 1] = p * s
            out[3 * j + 2] = p * c
        size *= 3


@numba.njit(cache=True)
def _blank(x: np.ndarray) -> bool:
    for i in range(x.shape[0]):
        if x[i] != 0.0:
            return False
    return True


@numba.njit(cache=True)
def _blank_monomials(q: int, out: np.ndarray) -> None:
    """``out`` (3^q,): the monomials of a blank patch, every factor v(0) = (1, 0, 1)."""
    zero = np.zeros((q, 2))
    zero[:, 1] = 1.0
    _monomials(zero, out)


@numba.njit(cache=True, fastmath={"reassoc"})
def _dot(p: np.ndarray, t: np.ndarray, out: np.ndarray) -> None:
    """``out`` (K,) = ``p`` (3^q,) @ ``t`` (3^q, K)."""
    for k in range(t.shape[1]):
        acc = 0.0
        for a in range(p.shape[0]):
            acc += p[a] * t[a, k]
        out[k] = acc


@numba.njit(cache=True, fastmath={"reassoc"})
def values(t: np.ndarray, x: np.ndarray, scale: float, out: np.ndarray, trig: np.ndarray) -> None:
    """``out`` (R, M, K) = f at each run's inputs ``x`` (R, M, q) with its own T ``t`` (R, 3^q, K); each inked
    input's (sin, cos) kept in ``trig`` (R, M, q, 2) for the gradient, the blank patches' left as they were."""
    runs, m_count, q = x.shape
    p = np.empty(t.shape[1])
    blank = np.empty(t.shape[2])
    for r in range(runs):
        _blank_monomials(q, p)
        _dot(p, t[r], blank)
        for m in range(m_count):
            if _blank(x[r, m]):
                out[r, m] = blank
                continue
            for i in range(q):
                theta = scale * x[r, m, i]
                trig[r, m, i, 0] = math.sin(theta)
                trig[r, m, i, 1] = math.cos(theta)
            _monomials(trig[r, m], p)
            _dot(p, t[r], out[r, m])


@numba.njit(cache=True, fastmath={"reassoc"})
def tensor_gradient(x: np.ndarray, trig: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    """``out`` (R, 3^q, K) = sum over each run's inputs of the monomials times the cotangent ``g`` (R, M, K): the
    gradient of T (f is linear in T), from :func:`values`' ``trig``; the blank patches' cotangents summed first,
    then taken once."""
    runs, m_count, q = x.shape
    size, k_count = out.shape[1], out.shape[2]
    p = np.empty(size)
    acc = np.empty((k_count, size))
    blank = np.empty(k_count)
    for r in range(runs):
        acc[:] = 0.0
        blank[:] = 0.0
        for m in range(m_count):
            if _blank(x[r, m]):
                blank += g[r, m]
                continue
            _monomials(trig[r, m], p)
            for k in range(k_count):
                gk = g[r, m, k]
                row = acc[k]
                for a in range(size):
                    row[a] += p[a] * gk
        _blank_monomials(q, p)
        for k in range(k_count):
            for a in range(size):
                out[r, a, k] = acc[k, a] + p[a] * blank[k]


def compile_kernels() -> None:
    """Compile both loops now (a few seconds once; later processes load them from the disk cache beside this
    file), for the one signature they are called with: float64, C-contiguous."""
    t, x, trig = np.zeros((1, 3, 1)), np.zeros((1, 2, 1)), np.empty((1, 2, 1, 2))
    x[0, 1] = 0.5
    values(t, x, 1.0, np.empty((1, 2, 1)), trig)
    tensor_gradient(x, trig, np.ones((1, 2, 1)), np.empty((1, 3, 1)))
