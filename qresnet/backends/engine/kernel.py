"""A product-state pullback compiled: one run's (or a stack's) filter step without numpy's dispatch.

A filter's training step asks the engine for its 81 design points' values and, later, one vector-Jacobian
product (:func:`~qresnet.backends.engine.pullback.program_pullback`). On 4 qubits that is arithmetic on arrays
of a few hundred numbers, which numpy does in some 100 calls, each costing more to dispatch than to compute.
Here the same sums run as loops compiled by numba (once, cached on disk beside this file; :func:`compile_kernels`
does it ahead of time), a few calls a step:

- :func:`_body`, per body setting: each chained block's PTM and its derivatives by its rotation angles, and the
  observables folded back through the body, the image before each chained block kept (one-qubit PTMs dense, two-
  qubit ones by their nonzeros: a CNOT's has one per column);
- the prefixes, on a grid where the rows form one (:func:`_grid`: each body setting's distinct prefix settings
  per qubit, 3 for a filter's design points, and all their combinations contracted at once, as
  :mod:`qresnet.backends.engine.grid` does in numpy), else row by row (:func:`_rows`: Bloch vectors, their
  tangents and each row's environments, as :func:`~qresnet.backends.engine.simulate.environments`);
- the pullback: the cotangent state and the prefix parameters' derivatives (:func:`_grid_pull` or
  :func:`_row_pull`), then the state walked forward through the body (:func:`_walk`), each chained block adding
  h_j (dR_j/dangle) s.

The quantum head's light cone (:func:`~qresnet.backends.engine.pullback.heisenberg_pullback`, 4^6 numbers per
observable and setting: arithmetic, not dispatch) takes :func:`body_images` and :func:`walk` too, and its
Pauli-to-matrix map and that map's adjoint (:func:`light_cone_matrices`, :func:`light_cone_cotangent`).

The mathematics and the order of the walk are those of the numpy routes; the sums are taken in another order, so
the two agree to rounding (about 1e-15), not bit for bit. Each body setting's sums take its own rows only, in
row order, so a run's numbers do not depend on which runs share its stack.

It applies (:func:`kernel_plan`) where every prefix is a chain (:class:`~qresnet.backends.engine.chains.Chains`:
fixed PTMs and Pauli rotations with affine angles) and every body operation is a fixed PTM on one or two qubits
or a chained block on one qubit, up to :data:`MAX_QUBITS` qubits; otherwise the numpy routes run.
"""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
import threading
import weakref

import numba
import numpy as np

from qresnet.backends.engine.chains import Chains, body_plan, prefix_chains
from qresnet.backends.engine.grid import GRID_GROWTH
from qresnet.backends.engine.program import Program

MAX_QUBITS = 6  # images of 4^6 numbers; wider filters (a 3x3 kernel's 9 qubits) keep the numpy route's chunking
GRID_SETTINGS = 8  # at most this many distinct prefix settings per qubit and body setting make a grid (a filter's: 3),
# and at most GRID_GROWTH cells per row (numpy's grid route's bound)
_enabled = True


@contextmanager
def numpy_route() -> Iterator[None]:
    """Within the block, :func:`kernel_plan` says None: the numpy route runs (tests and benchmarks compare)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


@dataclass(frozen=True)
class KernelPlan:
    """A program as the compiled calls read it: the prefix chains, and the body as one row per operation."""

    n: int
    prefix: Chains  # n chains, one per qubit
    body: Chains  # the chained blocks (an empty set of chains if there are none)
    width: np.ndarray  # (L,): each operation's d = 4^(its qubits)
    offsets: np.ndarray  # (L, 16): index offsets of its digits' d values (argument 0 least significant)
    starts: np.ndarray  # (L, 4^n / 4): where the runs of indices with its digits 0 start (the first 4^n / d / low)
    low: np.ndarray  # (L,): each run's length, 4^(its lowest qubit): the digits below it, contiguous
    fixed: tuple  # a fixed operation's PTM: dense (L, 4, 4) on one qubit, else by its nonzeros: count (L, 2, 16),
    # source (each nonzero's digit as its index offset) and value (L, 2, 16, 16), [j, 0] by column (the images),
    # [j, 1] by row (the walk)
    chain: np.ndarray  # (L,): the chain of a chained block, -1 for a fixed operation
    prefix_links: tuple  # the prefix chains' angle coefficients by angle (:func:`_links`)
    body_links: tuple  # the body chains'

    @classmethod
    def of(cls, program: Program) -> KernelPlan | None:
        n = program.num_qubits
        prefix = prefix_chains(program)
        if prefix is None or not 0 < n <= MAX_QUBITS:
            return None
        plan = body_plan(program)
        count, index = len(program.body), np.arange(4**n)
        width, offsets = np.zeros(count, np.int64), np.zeros((count, 16), np.int64)
        starts, low, chain = np.zeros((count, 4**n // 4), np.int64), np.ones(count, np.int64), -np.ones(count, np.int64)
        fixed = (np.zeros((count, 4, 4)), np.zeros((count, 2, 16), np.int64), np.zeros((count, 2, 16, 16), np.int64),
                 np.zeros((count, 2, 16, 16)))
        for j, op in enumerate(program.body):
            if len(op.qubits) > 2:
                return None
            d = width[j] = 4 ** len(op.qubits)
            digits = np.arange(d)
            offsets[j, :d] = sum((digits // 4**i % 4) * 4**q for i, q in enumerate(op.qubits))
            low[j] = 4 ** min(op.qubits)
            free = np.all([index // 4**q % 4 == 0 for q in op.qubits] + [index % low[j] == 0], axis=0)
            starts[j, :4**n // d // low[j]] = index[free]
            if plan.fixed[j] is not None:
                ptm = np.zeros((16, 16))
                ptm[:d, :d] = np.asarray(plan.fixed[j], dtype=float).reshape(d, d)
                if d == 4:
                    fixed[0][j] = ptm[:4, :4]
                else:
                    for side in (0, 1):
                        _sparse(ptm, d, side == 0, fixed[1][j, side], fixed[2][j, side], fixed[3][j, side])
                        fixed[2][j, side] = offsets[j][fixed[2][j, side]]  # digits as offsets, once per plan
            elif plan.slot[j] is not None:
                chain[j] = plan.slot[j]
            else:  # a parameterised operation that is not a chain of Pauli rotations
                return None
        parameters = len(program.parameters)
        body = plan.chains if plan.chains is not None else Chains(
            np.zeros((0, 4, 4)), np.zeros((0, 0, 3, 4, 4)), np.zeros((parameters, 0)), np.zeros(0))
        return cls(n, prefix, body, width, offsets, starts, low, fixed, chain, _links(prefix.coeffs),
                   _links(body.coeffs))


def _links(coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (P, M) coefficient matrix by column: (start (M + 1,), parameter, coefficient), column j's nonzeros at
    start[j]:start[j + 1], parameters ascending."""
    columns, params = np.nonzero(coeffs.T)
    start = np.searchsorted(columns, np.arange(coeffs.shape[1] + 1)).astype(np.int64)
    return start, params.astype(np.int64), coeffs[params, columns].astype(float)


def active() -> bool:
    """Whether compiled code runs (False inside :func:`numpy_route`)."""
    return _enabled


def kernel_plan(program: Program) -> KernelPlan | None:
    """``program``'s :class:`KernelPlan` (made once per program), or None where the numpy route runs."""
    if not _enabled:
        return None
    if "kernel_plan" not in program.derived:
        program.derived["kernel_plan"] = KernelPlan.of(program)
    return program.derived["kernel_plan"]


def compile_kernels() -> None:
    """Compile every kernel now (about 15 s once; later processes load them from the disk cache in well under a
    second): a 2-qubit filter's pullback on the grid and on the rows, and the light-cone maps. ``make`` runs it
    when it installs."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    from qresnet.backends.engine.program import compile_circuit

    x, w = ParameterVector("x", 2), ParameterVector("w", 2)
    qc = QuantumCircuit(2)
    for q in range(2):
        qc.ry(x[q], q)
    qc.cx(0, 1)
    for q in range(2):
        qc.ry(w[q], q)
    program = compile_circuit(qc)
    plan = KernelPlan.of(program)
    observables = np.zeros((1, 16))
    observables[0, 15] = 1.0  # ZZ
    rows = np.array([[0.1, 0.2, a, b] for a in (0.0, 1.0, 2.0) for b in (0.0, 1.0, 2.0)])  # columns: w, then x
    group = np.zeros(len(rows), np.int64)
    for rows_only in (False, True):
        _, state = forward(plan, observables, rows, group, rows[:1] * [1, 1, 0, 0], rows_only)
        pullback(plan, state, np.ones((len(rows), 1)), group, group, np.zeros(1, np.int64), 1)
    light_cone_cotangent(light_cone_matrices(observables, 2, np.arange(4)), 2, np.arange(4))  # a quantum head's


@dataclass(frozen=True)
class KernelState:
    """What :func:`forward` keeps for :func:`pullback`: the body's arrays (:func:`_body`), and the prefixes' either
    on a grid (:func:`_grid`: the rows' cells, each group's settings per qubit and their Bloch vectors and
    tangents) or row by row (:func:`_rows`: Bloch vectors, tangents, environments)."""

    body: BodyImages
    grid: tuple | None  # cell (R,), sizes (G, n), tables (G, n, U, 4), tangents (G, n, U, m, 4)
    rows: tuple | None  # bloch (n, R, 4), tangents (n, R, m, 4), environments (R, K, n, 4)


def forward(plan: KernelPlan, observables: np.ndarray, values: np.ndarray, group: np.ndarray,
            representatives: np.ndarray, rows_only: bool = False) -> tuple[np.ndarray, KernelState]:
    """(values (K, R), the state :func:`pullback` needs) for rows ``values`` (R, P) in body settings ``group``
    (R,), whose parameter values are ``representatives`` (G, P). The rows take the grid where they form one
    (a filter's design points) unless ``rows_only`` (per-row input gradients need the rows)."""
    p = plan.prefix
    values, group = np.ascontiguousarray(values, dtype=float), np.asarray(group, dtype=np.int64)
    body = body_images(plan, observables, representatives)
    folded = body.folded
    if not rows_only:
        grid = _grid(plan.n, values, group, len(representatives), p.start, p.terms, plan.prefix_links, p.const,
                     GRID_SETTINGS)
        if grid[1][0, 0] >= 0:
            return _grid_values(plan.n, group, folded, *grid[:3]), KernelState(body, grid, None)
    out, *rows = _rows(plan.n, values, group, folded, p.start, p.terms, plan.prefix_links, p.const)
    return out, KernelState(body, None, tuple(rows))


def pullback(plan: KernelPlan, state: KernelState, g: np.ndarray, group: np.ndarray, row_setting: np.ndarray,
             owner: np.ndarray, count: int) -> tuple[np.ndarray | None, np.ndarray]:
    """(per row d/d parameters (R, P) through the prefixes, or None on the grid; by setting d/d parameters
    (count, P) summed over the setting's rows): ``row_setting`` (R,) and ``owner`` (G,) map rows and body settings
    to ``count`` settings."""
    g, group, owner = np.ascontiguousarray(g, dtype=float), np.asarray(group, np.int64), np.asarray(owner, np.int64)
    folded = state.body.folded
    params, per_row = len(plan.prefix.coeffs), None
    if state.grid is not None:
        d, s = _grid_pull(plan.n, g, group, owner, count, folded, *state.grid, plan.prefix_links, params)
    else:
        per_row, d, s = _row_pull(plan.n, g, group, np.asarray(row_setting, np.int64), count, len(folded), *state.rows,
                                   plan.prefix_links, params)
    walk(plan, state.body, s, owner, d)
    return per_row, d


@dataclass(frozen=True)
class BodyImages:
    """What :func:`_body` works out for the body settings: the folded observables (G, K, 4^n), and what
    :func:`walk` reads: the image before each chained block (blocks, G, K, 4^n), the blocks' derivatives by their
    angles and the one-qubit PTMs."""

    folded: np.ndarray
    images: np.ndarray
    turns: np.ndarray
    mats: np.ndarray


_SPARE_IMAGES: list[np.ndarray] = []  # the image arrays of bodies no longer referenced, for the next of their shape
_SPARE_LOCK = threading.Lock()  # a body may be collected on any thread


def _release(images: np.ndarray) -> None:
    with _SPARE_LOCK:
        _SPARE_IMAGES.append(images)
        del _SPARE_IMAGES[:-2]


def body_images(plan: KernelPlan, observables: np.ndarray, representatives: np.ndarray) -> BodyImages:
    """:func:`_body` for observables (K, 4^n) and the body settings' parameter values ``representatives`` (G, P).

    The images take an array a collected body left (a stack's are tens of MiB: a fresh one each step is mapped
    anew by the allocator and its pages faulted in, half the sweep's time); it returns to the spares when this
    body is collected, so no live body's images are ever reused."""
    b = plan.body
    observables = np.ascontiguousarray(observables, dtype=float)
    folded = np.empty((len(representatives),) + observables.shape)
    shape = (int((plan.chain >= 0).sum()),) + folded.shape
    with _SPARE_LOCK:
        spare = [i for i, a in enumerate(_SPARE_IMAGES) if a.shape == shape]
        images = _SPARE_IMAGES.pop(spare[0]) if spare else np.empty(shape)
    turns, mats = _body(plan.n, observables, np.ascontiguousarray(representatives, dtype=float), folded, images,
                        b.start, b.terms, plan.body_links, b.const, plan.width, plan.offsets, plan.starts, plan.low,
                        plan.chain, *plan.fixed)
    body = BodyImages(folded, images, turns, mats)
    weakref.finalize(body, _release, images)
    return body


def walk(plan: KernelPlan, body: BodyImages, s: np.ndarray, owner: np.ndarray, d: np.ndarray) -> None:
    """Add to ``d`` (count, P) the body's part of the pullback, each body setting's to its ``owner`` (G,): the
    cotangent state ``s`` (G, K, 4^n) carried forward through the body of :func:`body_images`."""
    _walk(plan.n, s, np.asarray(owner, np.int64), body.images, body.turns, body.mats, *plan.fixed, plan.body_links,
          plan.body.terms.shape[1], plan.width, plan.offsets, plan.starts, plan.low, plan.chain, d)


@cache
def _light_cone_tables(n: int, embed: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(signs (4^n,), source (E^2,)) for the reduced basis ``embed`` (E light-cone basis indices, as int64 bytes):
    the factor of each iY string in the real part of its Pauli string, and the digit index of each reduced matrix
    entry (row m1, column m2): sum over qubits q of (2 r_q + c_q) 4^q, r and c the light-cone row and column."""
    from qresnet.backends.engine.encoded import _real_signs

    rows = np.frombuffer(embed, dtype=np.int64)
    source = np.zeros((len(rows), len(rows)), np.int64)
    for q in range(n):
        bit = (rows >> q) & 1
        source += (2 * bit[:, None] + bit[None, :]) * 4**q
    return _real_signs(n), source.reshape(-1)


def light_cone_matrices(images: np.ndarray, n: int, embed: np.ndarray) -> np.ndarray:
    """(..., E, E): the real part of the Pauli images (..., 4^n) as matrices, at the light-cone basis indices
    ``embed`` (E,) (:func:`~qresnet.backends.engine.encoded.pauli_to_matrix`, then that block, in one pass)."""
    signs, source = _light_cone_tables(n, np.asarray(embed, np.int64).tobytes())
    flat = np.ascontiguousarray(images, dtype=float).reshape(-1, 4**n)
    out = np.empty((len(flat), len(source)))
    _to_matrices(flat, signs, source, out)
    return out.reshape(images.shape[:-1] + (len(embed), len(embed)))


def light_cone_cotangent(mats: np.ndarray, n: int, embed: np.ndarray) -> np.ndarray:
    """(..., 4^n): the adjoint of :func:`light_cone_matrices` for matrices (..., E, E) (entry d = sum over the
    block of Re(P_d)[i, j] M[i, j])."""
    signs, source = _light_cone_tables(n, np.asarray(embed, np.int64).tobytes())
    flat = np.ascontiguousarray(mats, dtype=float).reshape(-1, len(source))
    out = np.empty((len(flat), 4**n))
    _from_matrices(flat, signs, source, out)
    return out.reshape(mats.shape[:-2] + (4**n,))


@numba.njit(cache=True)
def _butterflies(t: np.ndarray) -> None:
    """Each base-4 digit of t (4^n,) in place, (a, b, c, d) -> (a + d, b + c, b - c, a - d): a Pauli coefficient's
    (I, X, iY, Z) to its real 2x2 matrix's entries (00, 01, 10, 11), and (the map is its own transpose) back."""
    low = 1
    while low < t.size:
        for start in range(0, t.size, 4 * low):
            for i in range(start, start + low):
                a, b, c, d = t[i], t[i + low], t[i + 2 * low], t[i + 3 * low]
                t[i], t[i + low], t[i + 2 * low], t[i + 3 * low] = a + d, b + c, b - c, a - d
        low *= 4


@numba.njit(cache=True)
def _to_matrices(coeffs: np.ndarray, signs: np.ndarray, source: np.ndarray, out: np.ndarray) -> None:
    t = np.empty(coeffs.shape[1])
    for b in range(coeffs.shape[0]):
        for i in range(t.size):
            t[i] = coeffs[b, i] * signs[i]
        _butterflies(t)
        for m in range(source.size):
            out[b, m] = t[source[m]]


@numba.njit(cache=True)
def _from_matrices(mats: np.ndarray, signs: np.ndarray, source: np.ndarray, out: np.ndarray) -> None:
    t = np.empty(out.shape[1])
    for b in range(mats.shape[0]):
        t[:] = 0.0
        for m in range(source.size):
            t[source[m]] = mats[b, m]
        _butterflies(t)
        for i in range(t.size):
            out[b, i] = t[i] * signs[i]


@numba.njit(cache=True)
def _sparse(m: np.ndarray, d: int, by_column: bool, count: np.ndarray, index: np.ndarray, value: np.ndarray) -> None:
    """The nonzeros of the top left d x d of ``m``, per column (``by_column``: out[a] = sum_c x[c] m[c, a]) or per
    row (out[a] = sum_c m[a, c] x[c]): a CNOT's PTM has one per column, a noisy gate's a few."""
    for a in range(d):
        count[a] = 0
        for c in range(d):
            v = m[c, a] if by_column else m[a, c]
            if v != 0.0:
                index[a, count[a]] = c
                value[a, count[a]] = v
                count[a] += 1


@numba.njit(cache=True)
def _apply(h: np.ndarray, out: np.ndarray, offset: np.ndarray, starts: np.ndarray, low: int, count: np.ndarray,
           source: np.ndarray, value: np.ndarray) -> None:
    """out = h M on an operation's digits for h (K, 4^n) C-ordered, M given by its nonzeros (:func:`_sparse`, their
    digits as offsets in ``source``): index = start + offset[a] + l, a the operation's digits (argument 0 least
    significant) and l < ``low`` the digits below its lowest qubit. With ``low`` 1 each output is one sum; else the
    l run is a contiguous slice, innermost (separate one-dimensional views: LLVM vectorises those loops, not the
    two-dimensional index)."""
    d, size = len(count), h.shape[1]
    hf, of = h.reshape(h.size), out.reshape(out.size)
    permutes = True  # a signed permutation (a CNOT's PTM): one product per output
    for a in range(d):
        permutes = permutes and count[a] == 1
    for k in range(h.shape[0]):
        for start in starts:
            at = k * size + start
            if low == 1 and permutes:
                for a in range(d):
                    of[at + offset[a]] = value[a, 0] * hf[at + source[a, 0]]
                continue
            for a in range(d):
                if low == 1:
                    acc = 0.0
                    for t in range(count[a]):
                        acc += value[a, t] * hf[at + source[a, t]]
                    of[at + offset[a]] = acc
                    continue
                o = of[at + offset[a]:at + offset[a] + low]
                if count[a] == 0:
                    o[:] = 0.0
                    continue
                x, v = hf[at + source[a, 0]:at + source[a, 0] + low], value[a, 0]
                for l in range(low):
                    o[l] = v * x[l]
                for t in range(1, count[a]):
                    x, v = hf[at + source[a, t]:at + source[a, t] + low], value[a, t]
                    for l in range(low):
                        o[l] += v * x[l]


@numba.njit(cache=True)
def _apply1(h: np.ndarray, out: np.ndarray, low: int, m: np.ndarray, transpose: bool) -> None:
    """:func:`_apply` for a one-qubit operation given densely by its 4x4 PTM ``m`` (h M, or M h with ``transpose``),
    h (K, 4^n) C-ordered and the qubit's digit of stride ``low``: four loads, sixteen products and four stores per
    index, the matrix held in registers. The digit's four values are four neighbours (``low`` 1), four runs of
    four (4), or four slices (16 and up), each loop in the shape LLVM vectorises."""
    if transpose:
        m = m.T.copy()
    m00, m01, m02, m03 = m[0, 0], m[0, 1], m[0, 2], m[0, 3]
    m10, m11, m12, m13 = m[1, 0], m[1, 1], m[1, 2], m[1, 3]
    m20, m21, m22, m23 = m[2, 0], m[2, 1], m[2, 2], m[2, 3]
    m30, m31, m32, m33 = m[3, 0], m[3, 1], m[3, 2], m[3, 3]
    hf, of = h.reshape(h.size), out.reshape(out.size)
    if low == 1:
        for i in range(0, hf.size, 4):
            x0, x1, x2, x3 = hf[i], hf[i + 1], hf[i + 2], hf[i + 3]
            of[i] = x0 * m00 + x1 * m10 + x2 * m20 + x3 * m30
            of[i + 1] = x0 * m01 + x1 * m11 + x2 * m21 + x3 * m31
            of[i + 2] = x0 * m02 + x1 * m12 + x2 * m22 + x3 * m32
            of[i + 3] = x0 * m03 + x1 * m13 + x2 * m23 + x3 * m33
    elif low == 4:
        for start in range(0, hf.size, 16):
            for i in range(start, start + 4):
                x0, x1, x2, x3 = hf[i], hf[i + 4], hf[i + 8], hf[i + 12]
                of[i] = x0 * m00 + x1 * m10 + x2 * m20 + x3 * m30
                of[i + 4] = x0 * m01 + x1 * m11 + x2 * m21 + x3 * m31
                of[i + 8] = x0 * m02 + x1 * m12 + x2 * m22 + x3 * m32
                of[i + 12] = x0 * m03 + x1 * m13 + x2 * m23 + x3 * m33
    else:
        for start in range(0, hf.size, 4 * low):
            h0, h1 = hf[start:start + low], hf[start + low:start + 2 * low]
            h2, h3 = hf[start + 2 * low:start + 3 * low], hf[start + 3 * low:start + 4 * low]
            o0, o1 = of[start:start + low], of[start + low:start + 2 * low]
            o2, o3 = of[start + 2 * low:start + 3 * low], of[start + 3 * low:start + 4 * low]
            for l in range(low):
                x0, x1, x2, x3 = h0[l], h1[l], h2[l], h3[l]
                o0[l] = x0 * m00 + x1 * m10 + x2 * m20 + x3 * m30
                o1[l] = x0 * m01 + x1 * m11 + x2 * m21 + x3 * m31
                o2[l] = x0 * m02 + x1 * m12 + x2 * m22 + x3 * m32
                o3[l] = x0 * m03 + x1 * m13 + x2 * m23 + x3 * m33


@numba.njit(cache=True)
def _angles(row: np.ndarray, links: tuple, const: np.ndarray, theta: np.ndarray) -> None:
    """theta = row @ coeffs + const, from the coefficients by angle (:func:`_links`: an angle reads one or two
    parameters, so no loop over all of them)."""
    start, param, coeff = links
    for j in range(len(const)):
        acc = const[j]
        for t in range(start[j], start[j + 1]):
            acc += row[param[t]] * coeff[t]
        theta[j] = acc


@numba.njit(cache=True)
def _turn(f: np.ndarray, cs: float, sn: float, step: np.ndarray, turn: np.ndarray) -> None:
    """A rotation step S = F A + cos F B + sin F C and dS / dangle, for ``f`` = (F A, F B, F C) (3, 4, 4)."""
    for a in range(4):
        for b in range(4):
            step[a, b] = f[0, a, b] + cs * f[1, a, b] + sn * f[2, a, b]
            turn[a, b] = cs * f[2, a, b] - sn * f[1, a, b]


@numba.njit(cache=True)
def _matvec(m: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    for a in range(4):
        out[a] = m[a, 0] * x[0] + m[a, 1] * x[1] + m[a, 2] * x[2] + m[a, 3] * x[3]


@numba.njit(cache=True)
def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for i in range(4):
        for j in range(4):
            out[i, j] = a[i, 0] * b[0, j] + a[i, 1] * b[1, j] + a[i, 2] * b[2, j] + a[i, 3] * b[3, j]


@numba.njit(cache=True)
def _body(n, observables, representatives, folded, images, b_start, b_terms, b_links, b_const, width, offsets, starts,
          low, chain, fixed_dense, fixed_count, fixed_source, fixed_value):
    """Per body setting: each chained block's PTM (S_m ... S_1 F_0) and its derivatives by its angles, and the
    observables folded back through the body into ``folded``, the image before each chained block kept in
    ``images``. One-qubit operations go dense (:func:`_apply1`), two-qubit ones (fixed) by the nonzeros the plan
    holds ([j, 0] by column, [j, 1] by row)."""
    k_count, size = observables.shape[0], 4 ** n
    groups, ops = representatives.shape[0], width.shape[0]
    mb, cb = b_terms.shape[0], b_terms.shape[1]
    turns = np.zeros((ops, groups, mb, 4, 4))
    mats = np.zeros((ops, groups, 4, 4))  # each one-qubit operation's PTM: a chain's product, or the fixed one
    steps, dsteps, before = np.empty((mb, 4, 4)), np.empty((mb, 4, 4)), np.empty((mb + 1, 4, 4))
    after, tmp, tmp2 = np.empty((4, 4)), np.empty((4, 4)), np.empty((4, 4))
    theta = np.empty(b_const.shape[0])
    for g in range(groups):
        _angles(representatives[g], b_links, b_const, theta)
        for j in range(ops):
            c = chain[j]
            if c < 0:
                if width[j] == 4:
                    mats[j, g] = fixed_dense[j]
                continue
            before[0] = b_start[c]
            for i in range(mb):
                _turn(b_terms[i, c], np.cos(theta[i * cb + c]), np.sin(theta[i * cb + c]), steps[i], dsteps[i])
                _matmul(steps[i], before[i], before[i + 1])
            mats[j, g] = before[mb]
            for a in range(4):
                for b in range(4):
                    after[a, b] = 1.0 if a == b else 0.0
            for i in range(mb - 1, -1, -1):
                _matmul(dsteps[i], before[i], tmp)
                _matmul(after, tmp, turns[j, g, i])
                _matmul(after, steps[i], tmp2)
                after[:, :] = tmp2
    # the image before each chained block, which the walk needs (a fixed operation's is never read): the operation
    # after it writes it in place, so keeping it costs no copy
    slot = _slots(chain)
    spare = np.empty((2, k_count, size))
    for g in range(groups):
        h = observables
        if ops and slot[ops - 1] >= 0:  # the last operation's image: the observables themselves
            images[slot[ops - 1], g] = observables
        for j in range(ops - 1, -1, -1):
            out = folded[g] if j == 0 else images[slot[j - 1], g] if slot[j - 1] >= 0 else spare[j % 2]
            d = width[j]
            if d == 4:
                _apply1(h, out, low[j], mats[j, g], False)
            else:
                _apply(h, out, offsets[j, :d], starts[j, :size // d // low[j]], low[j], fixed_count[j, 0, :d],
                       fixed_source[j, 0], fixed_value[j, 0])
            h = out
        if ops == 0:
            folded[g] = observables
    return turns, mats


@numba.njit(cache=True)
def _slots(chain: np.ndarray) -> np.ndarray:
    """Each operation's place among the chained blocks (their kept images), -1 for a fixed one."""
    slot = np.full(len(chain), -1, np.int64)
    kept = 0
    for j in range(len(chain)):
        if chain[j] >= 0:
            slot[j] = kept
            kept += 1
    return slot


@numba.njit(cache=True)
def _prefix(n, q, theta, p_start, p_terms, x, tangents):
    """Qubit q's Bloch vector (1, x, y, z) from |0> into ``x`` (4,), and its derivatives by each of its rotation
    angles into ``tangents`` (m, 4), at the prefix angles ``theta``."""
    y = np.empty(4)
    step, turn = np.empty((4, 4)), np.empty((4, 4))
    for a in range(4):
        x[a] = p_start[q, a, 0] + p_start[q, a, 3]
    for i in range(p_terms.shape[0]):
        _turn(p_terms[i, q], np.cos(theta[i * n + q]), np.sin(theta[i * n + q]), step, turn)
        for j in range(i):  # the earlier tangents go through this step too
            _matvec(step, tangents[j], y)
            tangents[j] = y
        _matvec(turn, x, tangents[i])
        _matvec(step, x, y)
        x[:] = y


@numba.njit(cache=True)
def _rows(n, values, group, folded, p_start, p_terms, p_links, p_const):
    """Row by row: each row's prefixes, and its values and environments (the derivative by each qubit's Bloch
    vector), contracting the most significant qubit first."""
    rows, k_count, size, mp = values.shape[0], folded.shape[1], 4 ** n, p_terms.shape[0]
    bloch = np.empty((n, rows, 4))
    tangents = np.zeros((n, rows, mp, 4))
    theta = np.empty(p_const.shape[0])
    for r in range(rows):
        _angles(values[r], p_links, p_const, theta)
        for q in range(n):
            _prefix(n, q, theta, p_start, p_terms, bloch[q, r], tangents[q, r])
    out = np.empty((k_count, rows))
    env = np.empty((rows, k_count, n, 4))
    low = np.zeros((n, size // 4))  # low[q]: the product of the Bloch vectors of the qubits below q
    t = np.empty(size)
    for r in range(rows):
        low[0, 0] = 1.0
        for q in range(n - 1):
            inner = 4 ** q
            for a in range(4):
                for j in range(inner):
                    low[q + 1, a * inner + j] = bloch[q, r, a] * low[q, j]
        for k in range(k_count):
            t[:] = folded[group[r], k]
            for q in range(n - 1, -1, -1):
                inner = 4 ** q
                b0, b1, b2, b3 = bloch[q, r, 0], bloch[q, r, 1], bloch[q, r, 2], bloch[q, r, 3]
                e0 = e1 = e2 = e3 = 0.0
                for j in range(inner):
                    lj = low[q, j]
                    t0, t1, t2, t3 = t[j], t[inner + j], t[2 * inner + j], t[3 * inner + j]
                    e0 += t0 * lj
                    e1 += t1 * lj
                    e2 += t2 * lj
                    e3 += t3 * lj
                    t[j] = t0 * b0 + t1 * b1 + t2 * b2 + t3 * b3  # read above before written
                env[r, k, q, 0], env[r, k, q, 1], env[r, k, q, 2], env[r, k, q, 3] = e0, e1, e2, e3
            out[k, r] = t[0]
    return out, bloch, tangents, env


@numba.njit(cache=True)
def _row_pull(n, g, group, row_setting, count, groups, bloch, tangents, env, p_links, params):
    """(per row d/d parameters (R, P) through the prefixes, their sums by setting (count, P), the cotangent state
    (G, K, 4^n): each body setting's sum over its rows of g_rk times the row's product state)."""
    rows, k_count = g.shape
    size, mp = 4 ** n, tangents.shape[2]
    start, param, coeff = p_links
    per_row = np.zeros((rows, params))
    for r in range(rows):
        for q in range(n):
            for i in range(mp):
                along = 0.0
                for k in range(k_count):
                    w = g[r, k]
                    for a in range(4):
                        along += w * env[r, k, q, a] * tangents[q, r, i, a]
                for t in range(start[i * n + q], start[i * n + q + 1]):
                    per_row[r, param[t]] += along * coeff[t]
    d = np.zeros((count, params))
    for r in range(rows):
        for p in range(params):
            d[row_setting[r], p] += per_row[r, p]
    s = np.zeros((groups, k_count, size))
    full = np.empty(size)
    for r in range(rows):
        full[0] = 1.0
        for q in range(n):
            inner = 4 ** q
            for a in range(3, -1, -1):  # from the top, so that full[:inner] is read before it is overwritten
                for j in range(inner):
                    full[a * inner + j] = bloch[q, r, a] * full[j]
        for k in range(k_count):
            w = g[r, k]
            if w != 0.0:
                for i in range(size):
                    s[group[r], k, i] += w * full[i]
    return per_row, d, s


@numba.njit(cache=True)
def _grid(n, values, group, groups, p_start, p_terms, p_links, p_const, most):
    """The rows as a grid: each group's distinct prefix settings per qubit (by the qubit's angles) and each row's
    cell among their combinations (qubit 0's setting fastest), with the settings' Bloch vectors and tangents.
    Returns (cell (R,), sizes (G, n), tables (G, n, U, 4), tangents (G, n, U, m, 4)); sizes[0, 0] = -1 where the
    rows form no small grid (a qubit with more than ``most`` settings in a group, or more cells than
    ``GRID_GROWTH`` times a group's rows)."""
    rows, mp = values.shape[0], p_terms.shape[0]
    sizes = np.zeros((groups, n), np.int64)
    keys = np.empty((groups, n, most, mp))
    chosen = np.empty((groups, n, most), np.int64)
    local = np.empty((rows, n), np.int64)
    members = np.zeros(groups, np.int64)
    theta = np.empty(p_const.shape[0])
    failed = False
    for r in range(rows):
        gr = group[r]
        members[gr] += 1
        _angles(values[r], p_links, p_const, theta)
        for q in range(n):
            found = -1
            for u in range(sizes[gr, q]):
                same = True
                for i in range(mp):
                    if keys[gr, q, u, i] != theta[i * n + q]:
                        same = False
                        break
                if same:
                    found = u
                    break
            if found < 0:
                found = sizes[gr, q]
                if found == most:
                    failed = True
                    break
                for i in range(mp):
                    keys[gr, q, found, i] = theta[i * n + q]
                chosen[gr, q, found] = r
                sizes[gr, q] += 1
            local[r, q] = found
        if failed:
            break
    for gr in range(groups):
        cells = 1
        for q in range(n):
            cells *= sizes[gr, q]
        if cells > GRID_GROWTH * members[gr]:
            failed = True
    tables = np.zeros((groups, n, most, 4))
    tangents = np.zeros((groups, n, most, mp, 4))
    cell = np.zeros(rows, np.int64)
    if failed:
        sizes[0, 0] = -1
        return cell, sizes, tables, tangents
    for gr in range(groups):
        for q in range(n):
            for u in range(sizes[gr, q]):
                _angles(values[chosen[gr, q, u]], p_links, p_const, theta)
                _prefix(n, q, theta, p_start, p_terms, tables[gr, q, u], tangents[gr, q, u])
    for r in range(rows):
        stride = 1
        for q in range(n):
            cell[r] += local[r, q] * stride
            stride *= sizes[group[r], q]
    return cell, sizes, tables, tangents


@numba.njit(cache=True)
def _map_digits(src, n, a_sizes, b_sizes, maps, keep):
    """``src`` with digits of sizes a_q (qubit 0's fastest) -> digits of sizes b_q: digit q mapped by maps[q]
    (a_q, b_q), except the digit ``keep`` (0 <= keep < n), which stays (a_keep == b_keep). The most significant
    digit goes first, each one a loop over (higher digits done, this digit, lower digits to do)."""
    cur = src.copy()
    for q in range(n - 1, -1, -1):
        if q == keep:
            continue
        low, high = 1, 1
        for j in range(q):
            low *= a_sizes[j]
        for j in range(q + 1, n):
            high *= b_sizes[j]
        a, b = a_sizes[q], b_sizes[q]
        new = np.zeros(high * b * low)
        for h in range(high):
            for i in range(a):
                for j in range(b):
                    m = maps[q, i, j]
                    if m != 0.0:
                        src_at, dst_at = (h * a + i) * low, (h * b + j) * low
                        for l in range(low):
                            new[dst_at + l] += cur[src_at + l] * m
        cur = new
    return cur


@numba.njit(cache=True)
def _digit_maps(tables, sizes, n):
    """(Pauli digit -> setting maps (n, D, D): each table transposed, setting -> Pauli digit maps: the tables
    themselves, the Pauli digits' sizes (all 4)) for :func:`_map_digits`, from one group's tables (n, U, 4)."""
    width = max(4, tables.shape[1])
    to_cells, to_pauli = np.zeros((n, width, width)), np.zeros((n, width, width))
    for q in range(n):
        for u in range(sizes[q]):
            for a in range(4):
                to_cells[q, a, u] = to_pauli[q, u, a] = tables[q, u, a]
    return to_cells, to_pauli, np.full(n, 4, np.int64)


@numba.njit(cache=True)
def _grid_values(n, group, folded, cell, sizes, tables):
    """(K, R): each group's folded observables contracted with every qubit's table of settings (all cells at
    once), and each row's value read from its cell."""
    groups, k_count = folded.shape[0], folded.shape[1]
    grid = []
    for g in range(groups):
        maps, _, pauli = _digit_maps(tables[g], sizes[g], n)
        for k in range(k_count):
            grid.append(_map_digits(folded[g, k], n, pauli, sizes[g], maps, -1))
    out = np.empty((k_count, len(cell)))
    for r in range(len(cell)):
        for k in range(k_count):
            out[k, r] = grid[group[r] * k_count + k][cell[r]]
    return out


@numba.njit(cache=True)
def _grid_pull(n, g, group, owner, count, folded, cell, sizes, tables, tangents, p_links, params):
    """(the prefix parameters' derivatives by setting (count, P), the cotangent state (G, K, 4^n)) on the grid: the
    cotangents summed into their cells, expanded through the tables; qubit q's derivative from the folded
    observables contracted with every other qubit's table (q's digit left open) against the cells."""
    rows, k_count = g.shape
    groups, size, mp = folded.shape[0], 4 ** n, tangents.shape[3]
    start, param, coeff = p_links
    d = np.zeros((count, params))
    s = np.zeros((groups, k_count, size))
    by_vector = np.zeros((n, tables.shape[2], 4))
    for gi in range(groups):
        cells = 1
        for q in range(n):
            cells *= sizes[gi, q]
        on_grid = np.zeros((k_count, cells))
        for r in range(rows):
            if group[r] == gi:
                for k in range(k_count):
                    on_grid[k, cell[r]] += g[r, k]
        maps, back, pauli = _digit_maps(tables[gi], sizes[gi], n)
        for k in range(k_count):
            s[gi, k] = _map_digits(on_grid[k], n, sizes[gi], pauli, back, -1)
        by_vector[:, :, :] = 0.0
        for q in range(n):
            open_sizes = sizes[gi].copy()
            open_sizes[q] = 4
            stride_cell, stride_open = np.ones(n, np.int64), np.ones(n, np.int64)
            for j in range(1, n):
                stride_cell[j] = stride_cell[j - 1] * sizes[gi, j - 1]
                stride_open[j] = stride_open[j - 1] * open_sizes[j - 1]
            for k in range(k_count):
                opened = _map_digits(folded[gi, k], n, pauli, open_sizes, maps, q)
                for c in range(cells):
                    w = on_grid[k, c]
                    if w == 0.0:
                        continue
                    at = 0
                    for j in range(n):
                        if j != q:
                            at += (c // stride_cell[j] % sizes[gi, j]) * stride_open[j]
                    u = c // stride_cell[q] % sizes[gi, q]
                    for a in range(4):
                        by_vector[q, u, a] += w * opened[at + a * stride_open[q]]
        for q in range(n):
            for i in range(mp):
                along = 0.0
                for u in range(sizes[gi, q]):
                    for a in range(4):
                        along += tangents[gi, q, u, i, a] * by_vector[q, u, a]
                for t in range(start[i * n + q], start[i * n + q + 1]):
                    d[owner[gi], param[t]] += along * coeff[t]
    return d, s


@numba.njit(cache=True, fastmath={"reassoc"})
def _environment(h: np.ndarray, s: np.ndarray, low: int, m: np.ndarray) -> None:
    """m[a, b] = sum over observables and the other digits of h[.., a, ..] s[.., b, ..], a and b a one-qubit
    operation's digit of stride ``low``, for h and s (K, 4^n) C-ordered: then sum(h (dR) * s) = sum(dR * m) for any
    dR on that qubit. Neighbouring digits (``low`` 1) are one matrix product (BLAS); runs of four, sixteen sums in
    registers; longer runs, slices whose sums ``reassoc`` lets LLVM split into vector lanes. The order of every sum
    is fixed by the shapes, so a setting's is the same in any stack."""
    hf, sf = h.reshape(h.size), s.reshape(s.size)
    if low == 1:
        m[:, :] = np.dot(hf.reshape(hf.size // 4, 4).T, sf.reshape(sf.size // 4, 4))
        return
    if low == 4:
        m00 = m01 = m02 = m03 = m10 = m11 = m12 = m13 = 0.0
        m20 = m21 = m22 = m23 = m30 = m31 = m32 = m33 = 0.0
        for start in range(0, hf.size, 16):
            for i in range(start, start + 4):
                h0, h1, h2, h3 = hf[i], hf[i + 4], hf[i + 8], hf[i + 12]
                s0, s1, s2, s3 = sf[i], sf[i + 4], sf[i + 8], sf[i + 12]
                m00, m01, m02, m03 = m00 + h0 * s0, m01 + h0 * s1, m02 + h0 * s2, m03 + h0 * s3
                m10, m11, m12, m13 = m10 + h1 * s0, m11 + h1 * s1, m12 + h1 * s2, m13 + h1 * s3
                m20, m21, m22, m23 = m20 + h2 * s0, m21 + h2 * s1, m22 + h2 * s2, m23 + h2 * s3
                m30, m31, m32, m33 = m30 + h3 * s0, m31 + h3 * s1, m32 + h3 * s2, m33 + h3 * s3
        m[0, 0], m[0, 1], m[0, 2], m[0, 3] = m00, m01, m02, m03
        m[1, 0], m[1, 1], m[1, 2], m[1, 3] = m10, m11, m12, m13
        m[2, 0], m[2, 1], m[2, 2], m[2, 3] = m20, m21, m22, m23
        m[3, 0], m[3, 1], m[3, 2], m[3, 3] = m30, m31, m32, m33
        return
    acc = np.zeros(16)
    for start in range(0, hf.size, 4 * low):
        for a in range(4):
            x = hf[start + a * low:start + (a + 1) * low]
            for b in range(4):
                y = sf[start + b * low:start + (b + 1) * low]
                t = 0.0
                for l in range(low):
                    t += x[l] * y[l]
                acc[4 * a + b] += t
    for a in range(4):
        for b in range(4):
            m[a, b] = acc[4 * a + b]


@numba.njit(cache=True)
def _walk(n, s, owner, images, turns, mats, fixed_dense, fixed_count, fixed_source, fixed_value, b_links, cb,
          width, offsets, starts, low, chain, d):
    """The cotangent state s (G, K, 4^n) walked forward through the body, s -> R_j s, each chained block adding
    sum(dR_j/dangle * M) to ``d`` (by setting), with M its environment of the image h_j and s."""
    ops, groups, k_count, size = len(chain), s.shape[0], s.shape[1], s.shape[2]
    slot = _slots(chain)
    start_links, param, coeff = b_links
    m = np.zeros((4, 4))
    spare = np.empty((2, k_count, size))  # the state moves between these, never copied
    for gi in range(groups):  # one setting at a time: its state stays in cache through the body
        state = s[gi]
        for j in range(ops):
            dj, run, c = width[j], low[j], chain[j]
            if c >= 0:
                _environment(images[slot[j], gi], state, run, m)
                for i in range(turns.shape[2]):
                    t = 0.0
                    for a in range(4):
                        for b in range(4):
                            t += turns[j, gi, i, a, b] * m[a, b]
                    column = i * cb + c
                    for u in range(start_links[column], start_links[column + 1]):
                        d[owner[gi], param[u]] += coeff[u] * t
            moved = spare[j % 2]
            if dj == 4:
                _apply1(state, moved, run, mats[j, gi], True)
            else:
                _apply(state, moved, offsets[j, :dj], starts[j, :size // dj // run], run, fixed_count[j, 1, :dj],
                       fixed_source[j, 1], fixed_value[j, 1])
            state = moved


__all__ = ["BodyImages", "KernelPlan", "KernelState", "MAX_QUBITS", "active", "body_images", "compile_kernels",
           "forward", "kernel_plan", "light_cone_cotangent", "light_cone_matrices", "numpy_route", "pullback", "walk"]
