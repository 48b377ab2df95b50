"""Rows that form a grid: each qubit's prefix takes a few distinct settings, and the rows are their combinations.

A filter's response needs its 3^q design points: per qubit only 3 distinct prefix settings (its input at 0,
pi/2, pi), combined in every way. A row's value is the folded observable o_g (one per body setting g, 4^n
Pauli coefficients) contracted with each qubit's Bloch vector b_q, which depends on that qubit's prefix setting
only. So the Bloch vectors are computed for the distinct settings alone (3 per qubit instead of 81 rows), and
o_g is contracted one qubit at a time with the table of its settings' vectors, giving every combination at once
(the grid); a row's value is its cell. The pullback goes the same way back: the cotangents scattered onto the
grid, contracted with the same tables, give the cotangent state; the derivative by a prefix parameter is the
grid contracted with every table but one, times that table's tangents. Exact like the row-by-row route
(:func:`~qresnet.backends.engine.pullback.program_pullback`), in a few products whose size is the grid's, not the
rows'.

It applies when the rows' prefix settings per qubit are the same number in every body setting and their grid is
not much larger than the rows (:func:`prefix_grid` says None otherwise), and only to derivatives summed over
rows (per-row input gradients need the rows). Where the compiled kernel takes the program
(:mod:`qresnet.backends.engine.kernel`), its own grid runs instead, per body setting; this route serves the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qresnet.backends.engine.chains import Chains, PrefixTangents, prefix_chains
from qresnet.backends.engine.program import Program
from qresnet.backends.primitives import group_rows

GRID_GROWTH = 2  # at most this many cells per row: a grid far larger than its rows would cost more than the rows
GRID_MIN_ROWS = 256  # below this the row route is as fast (one run's 81 design points: 0.97x; a stack of 8: 1.55x)


@dataclass(frozen=True)
class PrefixGrid:
    """The distinct prefix settings of each qubit per body setting (group), and each row's cell."""

    sizes: tuple[int, ...]  # u_q: distinct settings of qubit q in every group
    cell: np.ndarray  # (R,): each row's cell in its group's grid, qubit 0's index fastest
    group: np.ndarray  # (R,): each row's group
    groups: int
    prefix: PrefixTangents  # Bloch vectors and tangents at the G * u rows of the tables (u = max u_q)

    def tables(self) -> list[np.ndarray]:
        """Per qubit q, (G, u_q, 4): the Bloch vectors of its settings, group by group."""
        u = max(self.sizes)
        return [b.reshape(self.groups, u, 4)[:, :size] for b, size in zip(self.prefix.bloch, self.sizes)]

    def values(self, folded: np.ndarray) -> np.ndarray:
        """(K, R): each row's value from the folded observables (G, K, 4^n)."""
        grid = along_qubits(folded, [np.swapaxes(t, 1, 2) for t in self.tables()])  # (G, K, cells)
        return grid[self.group, :, self.cell].T

    def scatter(self, g: np.ndarray) -> np.ndarray:
        """(G, K, cells): the rows' cotangents (R, K) summed into their cells."""
        cells = int(np.prod(self.sizes))
        out = np.zeros((self.groups * cells, g.shape[1]))
        np.add.at(out, self.group * cells + self.cell, g)
        return out.reshape(self.groups, cells, -1).transpose(0, 2, 1)

    def cotangent_state(self, on_grid: np.ndarray) -> np.ndarray:
        """(G, K, 4^n): sum over rows of g_rk times the row's product of Bloch vectors, from the scattered
        cotangents (G, K, cells)."""
        return along_qubits(on_grid, self.tables())

    def prefix_gradients(self, folded: np.ndarray, on_grid: np.ndarray) -> np.ndarray:
        """(G, P): per group, the sum over its rows and observables of g_rk d value_rk / d prefix parameter.

        For qubit q, the folded observables contracted with every other qubit's table (q's Pauli digit left open),
        against the scattered cotangents, give the derivative by q's Bloch vector at each of its settings; times
        the tangents along each rotation angle, then the chain rule to parameters."""
        tables = self.tables()
        n, groups, u, k = len(tables), self.groups, max(self.sizes), folded.shape[1]
        to_cells = [np.swapaxes(t, 1, 2) for t in tables]
        by_vector = np.zeros((groups, n, u, 4))  # d / d (qubit q's Bloch vector at setting i); padding stays 0
        for q in range(n):
            open_q = along_qubits(folded, [_PAULI_DIGIT if p == q else m for p, m in enumerate(to_cells)])
            axis = 2 + (n - 1 - q)  # qubit q's digit among (G, K, digits most significant first)
            dims = [4 if p == q else self.sizes[p] for p in reversed(range(n))]
            left = np.moveaxis(open_q.reshape(groups, k, *dims), axis, -1).reshape(groups, -1, 4)
            right = np.moveaxis(on_grid.reshape(groups, k, *self.sizes[::-1]), axis, -1).reshape(groups, -1, self.sizes[q])
            by_vector[:, q, :self.sizes[q]] = np.einsum("gax,gai->gix", left, right)
        tangents = self.prefix.tangents.reshape(groups, u, -1, 4)  # (G, u, J, 4)
        along = np.einsum("gujx,gjux->gj", tangents, by_vector[:, self.prefix.qubit])
        return along @ self.prefix.chain


_PAULI_DIGIT = np.eye(4)[None]  # a digit left as it is


def along_qubits(t: np.ndarray, maps: list[np.ndarray]) -> np.ndarray:
    """t (G, A, D) with D the digits d_(n-1) ... d_0 (qubit 0's fastest), each qubit's digit mapped by
    ``maps[q]`` (G or 1, d_q, e_q): (G, A, e_(n-1) ... e_0). The most significant digit goes first and to the
    end, so that after all n the order is kept."""
    groups, a = t.shape[:2]
    for m in reversed(maps):
        t = np.einsum("gadr,gde->gare", t.reshape(groups, a, m.shape[1], -1), m).reshape(groups, a, -1)
    return t


def prefix_grid(program: Program, values: np.ndarray, group: np.ndarray, groups: int) -> PrefixGrid | None:
    """The rows' :class:`PrefixGrid` (``group``: row -> body setting, ``groups`` of them), or None where the
    rows do not form a small grid: fewer than :data:`GRID_MIN_ROWS`, prefixes that are not chains or share a
    parameter between qubits, a qubit with a different number of settings in two groups, or more than
    :data:`GRID_GROWTH` cells a row."""
    chains = _grid_chains(program)
    if len(values) < GRID_MIN_ROWS or chains is None:
        return None
    columns = program.prefix_columns
    sizes, locals_, representatives, cells = [], [], [], 1
    for q in range(program.num_qubits):
        distinct, inverse = group_rows(np.column_stack([group, values[:, columns[q]]]))  # settings within groups
        owner = distinct[:, 0].astype(np.int64)
        counts = np.bincount(owner, minlength=groups)
        if counts.min() != counts.max() or groups * counts[0] * cells > GRID_GROWTH * len(values):
            return None
        size = int(counts[0])
        order = np.argsort(owner, kind="stable")  # the settings group by group
        local = np.empty(len(distinct), dtype=np.int64)
        local[order] = np.tile(np.arange(size), groups)
        sizes.append(size)
        cells *= size
        locals_.append(local[inverse])
        representatives.append(distinct[order][:, 1:] if columns[q] else None)
    u = max(sizes)
    table_rows = np.zeros((groups * u, values.shape[1]))
    for q, (size, chosen) in enumerate(zip(sizes, representatives)):
        if chosen is not None:  # padding to u repeats a group's last setting; no row's cell uses it
            padded = chosen.reshape(groups, size, -1)[:, np.minimum(np.arange(u), size - 1)]
            table_rows[:, columns[q]] = padded.reshape(groups * u, -1)
    strides = np.cumprod([1] + sizes[:-1])
    cell = sum(s * idx for s, idx in zip(strides, locals_))
    return PrefixGrid(tuple(sizes), np.asarray(cell, dtype=np.int64), group, groups,
                      chains.prefix_tangents(table_rows))


def _grid_chains(program: Program) -> Chains | None:
    """``program``'s prefix chains if its qubits' prefixes read disjoint parameters (a table row then sets each
    qubit's columns alone), else None; decided once per program."""
    if "grid_chains" not in program.derived:
        columns = program.prefix_columns
        disjoint = len(set().union(*map(set, columns))) == sum(map(len, columns))
        program.derived["grid_chains"] = prefix_chains(program) if disjoint else None
    return program.derived["grid_chains"]
