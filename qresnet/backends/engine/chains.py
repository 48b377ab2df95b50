"""Runs of single-qubit operations as stacked arrays: every qubit's prefix at once, every body block at once.

A chain is a run of single-qubit steps (:mod:`qresnet.backends.engine.program`): fixed PTMs (gates with their
noise) and Pauli rotations with affine angles, Rot = A + cos(angle) B + sin(angle) C. Written as
F_0 then S_1 ... S_m with S_i = F_i Rot_i (F_i the fixed PTMs after rotation i, its noise first), so that
S_i = F_i A + cos F_i B + sin F_i C with the three products made once, and padded to one m with identities,
all chains go together (:class:`Chains`): one product for every angle, then m steps on stacked arrays, where a
loop over chains and steps costs some ten numpy calls a step. Chains with other parameterised gates (u, u3,
angles that are not affine) keep that loop.

- The prefixes (one chain per qubit, applied to |0>, per row): :meth:`Chains.states` gives the Bloch vectors and
  their tangents along each rotation angle, as :class:`PrefixTangents` (the chain rule to parameters is one
  matrix); with the environments of :func:`~qresnet.backends.engine.simulate.environments`, every prefix
  derivative of every row is two products.
- The body's blocks (per body setting): :meth:`Chains.matrices` gives each block's PTM and its derivative by each
  rotation angle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qresnet.backends.engine.program import Program, Step

ZERO_STATE = np.array([1.0, 0.0, 0.0, 1.0])  # |0><0| as a Bloch vector (1, x, y, z)


@dataclass(frozen=True)
class PrefixTangents:
    """Bloch vectors after the prefixes and their derivatives along J directions."""

    bloch: list[np.ndarray]  # n of (R, 4)
    tangents: np.ndarray  # (R, J, 4): d Bloch vector of qubit ``qubit[j]`` along direction j
    qubit: np.ndarray  # (J,)
    chain: np.ndarray  # (J, P): d direction / d parameter

    def gradients(self, env: np.ndarray) -> np.ndarray:
        """(R, K, P): each row's derivatives by the parameters, from environments ``env`` (R, K, n, 4)."""
        along = np.einsum("rkjx,rjx->rkj", env[:, :, self.qubit], self.tangents)
        return along @ self.chain

    def pullback(self, env: np.ndarray, g: np.ndarray) -> np.ndarray:
        """(R, P): sum_k g_rk d value_rk / d parameter, per row, for cotangents ``g`` (R, K)."""
        weighted = np.einsum("rk,rkjx->rjx", g, env[:, :, self.qubit])
        return np.einsum("rjx,rjx->rj", weighted, self.tangents) @ self.chain


def chainable(steps: Sequence[Step]) -> bool:
    """Whether every parameterised step of ``steps`` is a Pauli rotation with an affine angle."""
    return all(s.fixed is not None or (s.rotation is not None and not s.angles.nonlinear) for s in steps)


@dataclass(frozen=True)
class Chains:
    """C chains as F_0, then S_i = F_i Rot_i for i = 1..m (padding: S_i = I); rotation (i, c) is column i C + c."""

    start: np.ndarray  # (C, 4, 4): F_0
    terms: np.ndarray  # (m, C, 3, 4, 4): F_i A_i, F_i B_i, F_i C_i
    coeffs: np.ndarray  # (P, m C): rotation angles = values @ coeffs + const
    const: np.ndarray  # (m C,)

    @classmethod
    def of(cls, runs: Sequence[Sequence[Step]], parameters: int) -> Chains | None:
        """The chains of ``runs`` (lists of single-qubit steps), or None where a parameterised step is not a Pauli
        rotation with an affine angle."""
        if not all(chainable(steps) for steps in runs):
            return None
        parsed = []
        for steps in runs:
            fixed, rotations = [np.eye(4)], []
            for step in steps:
                if step.fixed is not None:
                    fixed[-1] = step.fixed @ fixed[-1]
                    continue
                rotations.append(step)
                fixed.append(np.eye(4) if step.noise is None else step.noise)  # the noise after the rotation
            parsed.append((fixed, rotations))
        count, m = len(parsed), max((len(r) for _, r in parsed), default=0)
        chains = cls(np.stack([f[0] for f, _ in parsed]) if parsed else np.zeros((0, 4, 4)),
                     np.zeros((m, count, 3, 4, 4)), np.zeros((parameters, m * count)), np.zeros(m * count))
        chains.terms[:, :, 0] = np.eye(4)
        for c, (fixed, rotations) in enumerate(parsed):
            for i, step in enumerate(rotations):
                chains.terms[i, c] = fixed[i + 1] @ np.stack(step.rotation)
                chains.coeffs[:, i * count + c] = step.angles.coeffs[:, 0]
                chains.const[i * count + c] = step.angles.const[0]
        return chains

    def _angles(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cos, sin) of every rotation angle, (N, m, C)."""
        theta = (values @ self.coeffs + self.const).reshape(len(values), *self.terms.shape[:2])
        return np.cos(theta), np.sin(theta)

    def states(self, values: np.ndarray, tangents: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(Bloch vectors (C, R, 4) of the chains applied to |0>, their derivatives by each rotation angle
        (C, R, m, 4), empty without ``tangents``). Vectors and tangents go through each step as one product."""
        m, count = self.terms.shape[:2]
        rows = len(values)
        x = np.zeros((count, rows, 1 + m if tangents else 1, 4))  # slot 0: the state; slot 1 + i: d / d angle i
        x[:, :, 0] = (self.start @ ZERO_STATE)[:, None]
        if m:
            cos, sin = (a.T[:, :, :, None] for a in self._angles(values))  # (C, m, R, 1)
            weights = self.terms.transpose(0, 1, 4, 2, 3).reshape(m, count, 4, 12)  # x @ w: (F A x, F B x, F C x)
        for i in range(m):
            y = (x.reshape(count, -1, 4) @ weights[i]).reshape(count, rows, -1, 3, 4)
            c, s = cos[:, i, :, None], sin[:, i, :, None]  # (C, R, 1, 1)
            turned = c[..., 0] * y[:, :, 0, 2] - s[..., 0] * y[:, :, 0, 1]
            x = y[..., 0, :] + c * y[..., 1, :] + s * y[..., 2, :]
            if tangents:
                x[:, :, 1 + i] = turned
        return x[:, :, 0], x[:, :, 1:]

    def prefix_tangents(self, values: np.ndarray) -> PrefixTangents:
        """:class:`PrefixTangents` along every rotation angle, the chains being the qubits' prefixes."""
        r, t = self.states(values)
        count, rows, m = t.shape[:3]
        return PrefixTangents(list(r), t.transpose(1, 2, 0, 3).reshape(rows, m * count, 4),
                              np.tile(np.arange(count), m), self.coeffs.T)

    def matrices(self, values: np.ndarray, derivatives: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(PTMs (N, C, 4, 4), their derivatives by each rotation angle (N, m, C, 4, 4) or None) at N rows."""
        m = self.terms.shape[0]
        total = np.broadcast_to(self.start, (len(values),) + self.start.shape)
        if m == 0:
            return total, (np.zeros((len(values), 0) + self.start.shape) if derivatives else None)
        cos, sin = (a[..., None, None] for a in self._angles(values))
        fa, fb, fc = (self.terms[:, :, j] for j in range(3))
        steps = fa + cos * fb + sin * fc  # (N, m, C, 4, 4)
        before = [total]  # before[i]: the chain's product up to rotation i
        for i in range(m):
            before.append(steps[:, i] @ before[-1])
        if not derivatives:
            return before[m], None
        turns = cos * fc - sin * fb
        out = np.empty(steps.shape)
        after = None  # the product of the steps after rotation i
        for i in range(m - 1, -1, -1):
            d = turns[:, i] @ before[i]
            out[:, i] = d if after is None else after @ d
            after = steps[:, i] if after is None else after @ steps[:, i]
        return before[m], out


@dataclass(frozen=True)
class BodyPlan:
    """The body's operations for a sweep: blocks of Pauli rotations as one :class:`Chains` (chain ``slot[j]``),
    parameter-free operations as their PTM (``fixed[j]``), any other operation as it is (both None)."""

    chains: Chains | None
    slot: tuple[int | None, ...]
    fixed: tuple[np.ndarray | None, ...]
    columns: tuple[tuple[np.ndarray, np.ndarray], ...]  # per chain: (parameter columns, their angle coeffs (p, m))

    @classmethod
    def of(cls, program: Program) -> BodyPlan:
        slot, fixed, runs = [], [], []
        for op in program.body:
            steps = getattr(op, "steps", [op])
            if all(step.fixed is not None for step in steps):  # a fused block of fixed steps is one step
                fixed.append(steps[0].fixed if len(steps) == 1 else op.ptm(np.zeros((1, 0)), ()))
                slot.append(None)
            elif len(op.qubits) == 1 and chainable(steps):
                fixed.append(None)
                slot.append(len(runs))
                runs.append(steps)
            else:
                fixed.append(None)
                slot.append(None)
        chains = Chains.of(runs, len(program.parameters)) if runs else None
        columns = []
        for c in range(len(runs)):
            coeffs = chains.coeffs[:, c::len(runs)]  # (P, m): rotation i of chain c is column i C + c
            used = np.flatnonzero(np.any(coeffs != 0, axis=1))
            columns.append((used, coeffs[used]))
        return cls(chains, tuple(slot), tuple(fixed), tuple(columns))

    def chain_operations(self, values: np.ndarray, wanted: frozenset[int] | None = None, derivatives: bool = True
                         ) -> dict[int, tuple[np.ndarray, dict[int, np.ndarray]]]:
        """{body index: (R (N, 4, 4), {parameter column: dR / d value (N, 4, 4)})} of the chained blocks at N rows of
        ``values``, with derivatives by the ``wanted`` columns (None: all), or none."""
        if self.chains is None:
            return {}
        mats, turns = self.chains.matrices(values, derivatives)
        out = {}
        for j, c in enumerate(self.slot):
            if c is None:
                continue
            if not derivatives:
                out[j] = (mats[:, c], {})
                continue
            used, coeffs = self.columns[c]
            by_column = np.einsum("pi,nixy->pnxy", coeffs, turns[:, :, c])
            out[j] = (mats[:, c], {int(p): by_column[i] for i, p in enumerate(used)
                                   if wanted is None or int(p) in wanted})
        return out


def body_plan(program: Program) -> BodyPlan:
    """``program``'s :class:`BodyPlan`, made once per program."""
    if "body_plan" not in program.derived:
        program.derived["body_plan"] = BodyPlan.of(program)
    return program.derived["body_plan"]


def prefix_chains(program: Program) -> Chains | None:
    """The chains of ``program``'s prefixes, one per qubit (None: the per-qubit loop), made once per program."""
    if "prefix_chains" not in program.derived:
        program.derived["prefix_chains"] = Chains.of(program.prefix, len(program.parameters))
    return program.derived["prefix_chains"]


__all__ = ["BodyPlan", "Chains", "chainable", "PrefixTangents", "body_plan", "prefix_chains"]
