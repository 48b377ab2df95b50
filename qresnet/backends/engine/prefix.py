"""Every qubit's prefix at once: the Bloch vectors of all rows and qubits, and their tangents, in a few array operations.

A prefix (:mod:`qresnet.backends.engine.program`) keeps a qubit in a product state: fixed PTMs (gates with their
noise) and parameterised gates. Where every parameterised gate is a Pauli rotation with an affine angle, each
qubit's prefix is F_m Rot_m ... F_1 Rot_1 F_0 with Rot_i = A + cos(angle) B + sin(angle) C; padded to a common m
with identities, all qubits and rows go together (a :class:`PrefixPlan`): one product for every angle, then m
steps on (R, n, 4) arrays, where a loop over qubits and operations costs some ten numpy calls per operation and
qubit. Other prefixes (u, u3, angles that are not affine) keep that loop
(:func:`~qresnet.backends.engine.gradient.prefix_tangents`).

The derivatives come as :class:`PrefixTangents`: the Bloch vectors' tangents along J directions (a rotation's
angle, or a parameter), each direction's qubit, and the chain rule from directions to parameters as one matrix.
With the environments of :func:`~qresnet.backends.engine.simulate.environments` (a value's derivative by each
qubit's Bloch vector), every prefix derivative of every row is two products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qresnet.backends.engine.program import Program

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


@dataclass(frozen=True)
class PrefixPlan:
    """Every qubit's prefix as F_m Rot_m ... F_1 Rot_1 F_0, padded to one m; rotation (i, q) is column i n + q."""

    fixed: np.ndarray  # (m + 1, n, 4, 4): F_0 .. F_m per qubit
    terms: np.ndarray  # (3, m, n, 4, 4): A, B, C per rotation (padding: I, 0, 0)
    coeffs: np.ndarray  # (P, m n): rotation angles = values @ coeffs + const
    const: np.ndarray  # (m n,)

    @classmethod
    def of(cls, program: Program) -> PrefixPlan | None:
        """The plan of ``program``'s prefixes, or None where some parameterised prefix step is not a Pauli
        rotation with an affine angle."""
        chains = []
        for steps in program.prefix:
            fixed, rotations = [np.eye(4)], []
            for step in steps:
                if step.fixed is not None:
                    fixed[-1] = step.fixed @ fixed[-1]
                    continue
                if step.rotation is None or step.angles.nonlinear:
                    return None
                rotations.append(step)
                fixed.append(np.eye(4) if step.noise is None else step.noise)  # the noise after the rotation
            chains.append((fixed, rotations))
        n, m = len(chains), max((len(r) for _, r in chains), default=0)
        plan = cls(np.tile(np.eye(4), (m + 1, n, 1, 1)), np.zeros((3, m, n, 4, 4)),
                   np.zeros((len(program.parameters), m * n)), np.zeros(m * n))
        plan.terms[0] = np.eye(4)
        for q, (fixed, rotations) in enumerate(chains):
            plan.fixed[:len(fixed), q] = fixed
            for i, step in enumerate(rotations):
                plan.terms[:, i, q] = step.rotation
                plan.coeffs[:, i * n + q] = step.angles.coeffs[:, 0]
                plan.const[i * n + q] = step.angles.const[0]
        return plan

    def run(self, values: np.ndarray, tangents: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(Bloch vectors (R, n, 4), their derivatives by each rotation's angle (R, m, n, 4), or None)."""
        m, n = self.terms.shape[1], self.terms.shape[2]
        rows = len(values)
        r = np.broadcast_to(self.fixed[0] @ ZERO_STATE, (rows, n, 4))
        if m == 0:
            return r, (np.zeros((rows, 0, n, 4)) if tangents else None)
        theta = (values @ self.coeffs + self.const).reshape(rows, m, n, 1, 1)
        cos, sin = np.cos(theta), np.sin(theta)
        a, b, c = self.terms
        steps = self.fixed[1:] @ (a + cos * b + sin * c)  # (R, m, n, 4, 4): F_i Rot_i
        if not tangents:
            for i in range(m):
                r = (steps[:, i] @ r[..., None])[..., 0]
            return r, None
        turns = self.fixed[1:] @ (cos * c - sin * b)  # F_i dRot_i / d angle
        out = np.empty((rows, m, n, 4))
        for i in range(m):
            if i:  # the earlier tangents go through this step too
                out[:, :i] = (steps[:, None, i] @ out[:, :i, ..., None])[..., 0]
            out[:, i] = (turns[:, i] @ r[..., None])[..., 0]
            r = (steps[:, i] @ r[..., None])[..., 0]
        return r, out

    def tangents(self, values: np.ndarray) -> PrefixTangents:
        """:class:`PrefixTangents` along every rotation angle."""
        r, out = self.run(values)
        rows, m, n = out.shape[:3]
        return PrefixTangents([r[:, q] for q in range(n)], out.reshape(rows, m * n, 4),
                              np.tile(np.arange(n), m), self.coeffs.T)


def prefix_plan(program: Program) -> PrefixPlan | None:
    """``program``'s :class:`PrefixPlan` (None: the per-qubit loop), made once per program."""
    if "prefix_plan" not in program.derived:
        program.derived["prefix_plan"] = PrefixPlan.of(program)
    return program.derived["prefix_plan"]


__all__ = ["PrefixPlan", "PrefixTangents", "prefix_plan"]
