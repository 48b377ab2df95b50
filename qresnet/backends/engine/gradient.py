"""Exact derivatives of a compiled program's values by every circuit parameter, in one sweep per body setting.

A value is Tr[O E_L ... E_1 (rho_row)] with rho_row the product state of the row's prefixes
(docs/design.md section 5). Carrying the observable back through the body, o -> o R_i, the derivative
of the folded observable o_f = O R_L ... R_1 by a body parameter p is carried along with it:
for each body operation, t_p -> t_p R_i + o (dR_i / dp), where o is the image before R_i. So
one backward sweep per distinct body setting gives o_f and its tangents (one 4^n vector per
body parameter and observable), and every row's derivative is the same product-state
contraction as its value. This is forward-mode differentiation of the PTM product: a tangent
per body parameter instead of parameter shift's 2P extra settings, all in one pass over the
body's operations. A prefix parameter changes one qubit's Bloch vector only, so its derivative
is the value's contraction with that qubit's Bloch vector replaced by its derivative
(forward-mode along the prefix, per row).

dR/d angle is exact: a Pauli rotation's PTM is A + cos B + sin C; u, u2 and u3 PTMs are
trigonometric polynomials of degree one in each angle, where the +-pi/2 shift of the PTM is
the derivative. Angles are affine in the parameters (the compiled ``AngleMap``), so the chain
rule back to the parameters is a product with its coefficients.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qiskit.circuit import Parameter

from qresnet.backends.engine.chains import PrefixTangents, body_plan, prefix_chains
from qresnet.backends.engine.program import Block, Program, Step
from qresnet.backends.engine.ptm import unitary_ptm
from qresnet.backends.engine.simulate import _apply, contract, environments
from qresnet.backends.primitives import group_rows
from qresnet.errors import EngineUnsupportedError

DEGREE_ONE_GATES = frozenset({"u", "u3", "u2"})  # PTM entries of degree one in each angle: the shift rule is exact


def _angle_ptm_derivatives(step: Step, angles: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(R (N, d, d), [dR / d angle_a (N, d, d) for each angle a]) of a parameterised step, noise excluded."""
    if step.rotation is not None:
        a, b, c = step.rotation
        theta = angles[:, 0, None, None]
        cos, sin = np.cos(theta), np.sin(theta)
        return a + cos * b + sin * c, [cos * c - sin * b]
    name = step.operation.name if step.operation is not None else "?"
    if name not in DEGREE_ONE_GATES:
        raise EngineUnsupportedError(
            f"exact gradients through instruction {name!r} on qubits {step.qubits} are not available (the engine "
            f"differentiates Pauli rotations and u, u2, u3); decompose it (e.g. transpile to rz, sx, cx) or use "
            f"parameter shift")
    r = unitary_ptm(step.unitary(angles))
    derivatives = []
    for column in range(angles.shape[1]):
        shift = np.zeros(angles.shape[1])
        shift[column] = np.pi / 2
        derivatives.append((unitary_ptm(step.unitary(angles + shift)) - unitary_ptm(step.unitary(angles - shift))) / 2)
    return r, derivatives


def step_derivatives(step: Step, values: np.ndarray, params: Sequence[Parameter],
                     wanted: frozenset[int] | None = None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(R, {parameter column: dR / d value}) of one step for N rows; R is (d, d) when fixed, else (N, d, d).

    ``wanted``: the parameter columns to differentiate by (None: all)."""
    if step.fixed is not None:
        return step.fixed, {}
    if step.angles.nonlinear:
        raise EngineUnsupportedError(
            f"exact gradients need gate angles affine in the parameters; instruction "
            f"{step.operation.name if step.operation is not None else '?'!r} on qubits {step.qubits} has "
            f"{[str(expr) for _, expr, _ in step.angles.nonlinear]}")
    r, by_angle = _angle_ptm_derivatives(step, step.angles(values, params))
    coeffs = step.angles.coeffs  # (P, m): d angle_m / d value_p
    derivatives = {}
    for p in np.flatnonzero(np.any(coeffs != 0, axis=1)):
        if wanted is not None and int(p) not in wanted:
            continue
        d = sum(coeffs[p, m] * by_angle[m] for m in range(len(by_angle)) if coeffs[p, m] != 0)
        derivatives[int(p)] = d if step.noise is None else step.noise @ d
    return (r if step.noise is None else step.noise @ r), derivatives


def op_derivatives(op: Step | Block, values: np.ndarray, params: Sequence[Parameter],
                   wanted: frozenset[int] | None = None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """As :func:`step_derivatives`, for a fused block too (the product rule along its steps)."""
    if isinstance(op, Step):
        return step_derivatives(op, values, params, wanted)
    total, derivatives = None, {}
    for step in op.steps:
        r, d = step_derivatives(step, values, params, wanted)
        if total is None:
            total, derivatives = r, dict(d)
            continue
        derivatives = {p: r @ dp for p, dp in derivatives.items()}
        for p, dr in d.items():
            derivatives[p] = derivatives.get(p, 0) + dr @ total
        total = r @ total
    return total, derivatives


def body_operations(program: Program, values: np.ndarray, wanted: frozenset[int] | None = None,
                    derivatives: bool = True) -> list[tuple[np.ndarray, dict[int, np.ndarray]]]:
    """(R, {parameter column: dR / d value}) of every body operation in forward order, as :func:`op_derivatives`
    gives them (none without ``derivatives``), with the blocks of Pauli rotations all at once
    (:class:`~qresnet.backends.engine.chains.BodyPlan`)."""
    plan = body_plan(program)
    chained = plan.chain_operations(values, wanted, derivatives)
    out = []
    for j, op in enumerate(program.body):
        if plan.fixed[j] is not None:
            out.append((plan.fixed[j], {}))
        elif j in chained:
            out.append(chained[j])
        elif derivatives:
            out.append(op_derivatives(op, values, program.parameters, wanted))
        else:
            out.append((op.ptm(values, program.parameters), {}))
    return out


def body_tangents(program: Program, observables: np.ndarray, settings: np.ndarray,
                  wanted: frozenset[int] | None = None) -> tuple[np.ndarray, list[int]]:
    """(G, 1 + C, K, 4^n): per setting of ``program.body_columns``, the folded observables (slot 0) and their
    derivatives by C body parameters (the wanted ones, listed second), from one backward sweep each."""
    columns = [p for p in program.body_columns if wanted is None or p in wanted]
    slot = {p: 1 + i for i, p in enumerate(columns)}
    n, g, k = program.num_qubits, len(settings), observables.shape[0]
    representatives = np.zeros((g, len(program.parameters)))
    representatives[:, program.body_columns] = settings
    stack = np.zeros((g, 1 + len(columns), k, 4**n))
    stack[:, 0] = observables
    operations = body_operations(program, representatives, wanted)
    for op, (r, derivatives) in zip(reversed(program.body), reversed(operations)):
        before = stack[:, 0]
        moved = _apply(stack.reshape(g, -1, 4**n), r, op.qubits, n).reshape(stack.shape)
        for p, dr in derivatives.items():  # the product rule: o dR, with o the image before this operation
            moved[:, slot[p]] += _apply(before, dr, op.qubits, n)
        stack = moved
    return stack, columns


def _matvec(m: np.ndarray, r: np.ndarray) -> np.ndarray:
    """R r for rows r (N, d) and R (d, d) or (N, d, d)."""
    return r @ m.T if m.ndim == 2 else np.einsum("nij,nj->ni", m, r)


def prefix_tangents(program: Program, values: np.ndarray, q: int,
                    wanted: frozenset[int] | None = None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(Bloch vectors (R, 4) of qubit q after its prefix, {parameter column: their derivatives (R, 4)}),
    computed once per distinct setting of the prefix's parameters."""
    representatives, inverse = program.prefix_rows(values, q)
    r, tangents = _prefix_tangents(program, representatives, q, wanted)
    return r[inverse], {p: t[inverse] for p, t in tangents.items()}


def _turn(r: np.ndarray, plane: tuple[int, int], cos: np.ndarray, sin: np.ndarray, keep: bool = True) -> np.ndarray:
    """r with its (i, j) Bloch components turned by (cos, sin) per row; the others kept, or zero if not ``keep``."""
    i, j = plane
    out = r.copy() if keep else np.zeros_like(r)
    out[:, i] = cos * r[:, i] - sin * r[:, j]
    out[:, j] = sin * r[:, i] + cos * r[:, j]
    return out


def _prefix_tangents(program: Program, values: np.ndarray, q: int,
                     wanted: frozenset[int] | None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    r = np.zeros((len(values), 4))
    r[:, 0] = r[:, 3] = 1.0
    tangents: dict[int, np.ndarray] = {}
    for step in program.prefix[q]:
        if step.plane is not None and step.noise is None and not step.angles.nonlinear:
            # a noiseless single-qubit Pauli rotation turns two Bloch components: no matrices needed
            theta = step.angles(values, program.parameters)[:, 0]
            cos, sin = np.cos(theta), np.sin(theta)
            tangents = {p: _turn(t, step.plane, cos, sin) for p, t in tangents.items()}
            turned = _turn(r, step.plane, -sin, cos, keep=False)  # d/dtheta of the turn
            for p in np.flatnonzero(step.angles.coeffs[:, 0]):
                if wanted is None or int(p) in wanted:
                    tangents[int(p)] = tangents.get(int(p), 0) + step.angles.coeffs[p, 0] * turned
            r = _turn(r, step.plane, cos, sin)
            continue
        m, derivatives = step_derivatives(step, values, program.parameters, wanted)
        tangents = {p: _matvec(m, t) for p, t in tangents.items()}
        for p, dm in derivatives.items():
            tangents[p] = tangents.get(p, 0) + _matvec(dm, r)
        r = _matvec(m, r)
    return r, tangents


def prefix_states(program: Program, values: np.ndarray, wanted: frozenset[int] | None = None) -> PrefixTangents:
    """Every qubit's Bloch vectors after its prefix and their tangents: all qubits at once where the prefixes
    allow :class:`~qresnet.backends.engine.chains.Chains` (tangents by every parameter), else qubit by
    qubit (tangents by the ``wanted`` ones)."""
    chains = prefix_chains(program)
    if chains is not None:
        return chains.prefix_tangents(values)
    prefix = [prefix_tangents(program, values, q, wanted) for q in range(program.num_qubits)]
    pairs = [(q, p, t) for q, (_, tangents) in enumerate(prefix) for p, t in tangents.items()]
    chain = np.zeros((len(pairs), len(program.parameters)))
    chain[np.arange(len(pairs)), [p for _, p, _ in pairs]] = 1.0
    tangents = np.stack([t for _, _, t in pairs], axis=1) if pairs else np.zeros((len(values), 0, 4))
    return PrefixTangents([b for b, _ in prefix], tangents, np.array([q for q, _, _ in pairs], dtype=int), chain)


def heisenberg_gradients(program: Program, observables: np.ndarray, values: np.ndarray,
                         wanted: frozenset[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(values (K, R), derivatives (K, R, P)) by the program's parameters (``wanted`` columns; the others stay 0),
    for observables (K, 4^n)."""
    n, k, rows = program.num_qubits, observables.shape[0], len(values)
    grads = np.zeros((k, rows, len(program.parameters)))
    if n == 0:
        return np.repeat(observables[:, :1], rows, axis=1), grads
    settings, group = group_rows(values[:, program.body_columns])
    stack, columns = body_tangents(program, observables, settings, wanted)
    prefix = prefix_states(program, values, wanted)
    out, env = environments(stack[:, 0], group, prefix.bloch)
    if columns:  # body derivatives: one contraction of the tangent slots of the stack
        body = contract(stack[:, 1:].reshape(len(settings), -1, 4**n), group, prefix.bloch)
        grads[:, :, columns] += body.reshape(len(columns), k, rows).transpose(1, 2, 0)
    # prefix derivatives: each qubit's environment times its Bloch vector's tangents
    kept = sorted(wanted) if wanted is not None else slice(None)
    grads[:, :, kept] += prefix.gradients(env).transpose(1, 0, 2)[:, :, kept]
    return out, grads


__all__ = ["body_operations", "body_tangents", "heisenberg_gradients", "op_derivatives", "prefix_states",
           "prefix_tangents", "step_derivatives"]
