"""Reverse-mode derivatives: the values now, one vector-Jacobian product later.

A training step needs d loss / d weights = sum over rows r and observables k of g_rk df_rk/dw,
not the whole Jacobian. Forward-mode (:mod:`qresnet.backends.engine.gradient`) carries one
tangent per weight through the circuit; a quantum head has hundreds of weights, so that is
hundreds of images per observable. Reverse mode carries the cotangent g instead: one extra
sweep whatever the number of weights.

- Product-state programs (a filter: the inputs in each qubit's prefix, the body after them):
  f_rk = o_k R_L ... R_1 b_r with b_r the tensor product of the row's Bloch vectors. The
  cotangent state is s_k = sum_r g_rk b_r, walked forward as below; a prefix parameter
  (an input, or a weight before the first CNOT) is differentiated per row, as in forward mode.
- Amplitude-encoded circuits, Heisenberg (any noise): f_rk = o_k R_L ... R_1 w_r, with w_r
  the encoded state's Pauli vector on the light cone, o_k the observable's and R_j the
  operations' PTMs. The
  forward sweep keeps each image h_j = o R_L ... R_(j+1). The pullback forms the one state
  s = sum_r g_rk w_r per observable (the adjoint of the Pauli-to-matrix map applied to
  sum_r g_rk rho_r) and walks it forward, s -> R_j s, adding h_j (dR_j / dp) s at each
  parameterised operation.
- Statevector (ideal circuits): the forward pass keeps phi = U psi per row; the pullback starts
  from lambda = sum_k g_rk O_k phi and walks the gates backwards as the adjoint method does
  (:mod:`qresnet.backends.engine.adjoint`), one lambda per row instead of one per observable.

Product-state programs, and the encoded light cone's body sweep, walk and Pauli-to-matrix maps, run compiled where the
kernel takes them (:mod:`qresnet.backends.engine.kernel`: one run's or a stack's step in a few calls); the numpy code
here serves every other program and is the reference the kernel is tested against.

The input (feature) part is per row; the weight part is summed over rows, which is what
autograd wants of a weight shared by the batch. With ``segments`` (row -> setting, S settings: a stack of
runs whose rows carry different weights) the weight part is summed over each setting's rows apart, (S, W);
the rows are then grouped by (setting, body values), so that no group's cotangent mixes two settings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from qresnet.backends.engine.adjoint import _initial_states, _input_gradients
from qresnet.backends.engine.encoded import (
    EncodedProgram,
    _amplitudes,
    _light_cone_matrices,
    amplitude_order,
    light_cone_cotangent,
    project_to_features,
)
from qresnet.backends.engine.gradient import body_operations, prefix_states
from qresnet.backends.engine.grid import prefix_grid
from qresnet.backends.engine.program import Program
from qresnet.backends.engine.simulate import (
    _apply,
    _apply_unitary,
    _step_unitary,
    environments,
    group_members,
    observable_vectors,
    op_environment,
    pauli_apply,
    row_chunks,
)
from qresnet.backends.primitives import Pullback, group_rows
from qresnet.errors import EngineUnsupportedError


def _images(program: Program, observables: np.ndarray, representatives: np.ndarray) -> tuple[np.ndarray, list, list]:
    """The backward sweep that keeps what the pullback needs: (the folded observables (G, K, 4^n), the image
    before each body operation, and (operation, R, {p: dR/dp}) per body operation), both in forward order."""
    n = program.num_qubits
    images, ops = [], []
    h = np.broadcast_to(observables, (len(representatives),) + observables.shape).copy()
    for op, (r, derivatives) in zip(reversed(program.body), reversed(body_operations(program, representatives))):
        images.append(h)
        ops.append((op, r, derivatives))
        h = _apply(h, r, op.qubits, n)
    return h, images[::-1], ops[::-1]


def _body_sweep(program: Program, observables: np.ndarray, representatives: np.ndarray
                ) -> tuple[np.ndarray, Callable[[np.ndarray, np.ndarray | None, int], np.ndarray]]:
    """(the folded observables (G, K, 4^n), walk): the body's backward sweep, compiled where the kernel takes the
    program (:func:`~qresnet.backends.engine.kernel.body_images`), and the walk (cotangent state (G, K, 4^n),
    group -> setting or None, settings) -> (settings, P) that :func:`_walk` computes from it."""
    from qresnet.backends.engine import kernel

    plan = kernel.kernel_plan(program)
    if plan is None:
        folded, images, ops = _images(program, observables, representatives)
        return folded, lambda s, owner, count: _walk(s, images, ops, program.num_qubits, len(program.parameters),
                                                     owner, count)
    body = kernel.body_images(plan, observables, representatives)

    def walk(s: np.ndarray, owner: np.ndarray | None, count: int) -> np.ndarray:
        d = np.zeros((count, len(program.parameters)))
        kernel.walk(plan, body, np.ascontiguousarray(s, dtype=float), np.zeros(len(s), np.int64) if owner is None
                    else owner, d)
        return d

    return body.folded, walk


def segment_count(segments: np.ndarray | None) -> int:
    """S, the number of settings ``segments`` (row -> setting) names; 1 without segments."""
    return 1 if segments is None or not len(segments) else int(segments.max()) + 1


def segment_sum(x: np.ndarray, segments: np.ndarray | None, count: int) -> np.ndarray:
    """(count, ...): the sums of ``x``'s rows by segment (row -> setting); (1, ...) the sum of all without."""
    if segments is None:
        return x.sum(axis=0)[None]
    # each setting's own rows summed alone (not one product over every row: its rounding would depend on the
    # other settings), so a run's numbers do not depend on which runs share its stack
    out = np.zeros((count,) + x.shape[1:])
    for setting, rows in enumerate(group_members(segments, count)):
        out[setting] = x[rows].sum(axis=0)
    return out


def group_by_setting(body: np.ndarray, segments: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct body values (G, B), row -> group (R,), group -> setting (G,)): rows grouped by their body values,
    and by their setting too with ``segments``, so that a group never spans two settings."""
    if segments is None:
        if len(body) and (body == body[0]).all():  # one run's rows: its weights in every row
            return body[:1], np.zeros(len(body), dtype=np.int64), np.zeros(1, dtype=np.int64)
        settings, group = group_rows(body)
        return settings, group, np.zeros(len(settings), dtype=np.int64)
    keyed, group = group_rows(np.column_stack([segments.astype(float), body]))
    return keyed[:, 1:], group, keyed[:, 0].astype(np.int64)


def _walk(s: np.ndarray, images: list, ops: list, n: int, size: int, owner: np.ndarray | None = None,
          count: int = 1) -> np.ndarray:
    """Sum over body operations j and their parameters p of h_j (dR_j/dp) s_(j-1): the cotangent state s
    (G, K, 4^n) carried forward through the body, s -> R_j s. Returns (count, size) by setting and program
    parameter: with ``owner`` (group -> setting) each group's terms go to its setting, else all to one."""
    out = np.zeros((count, size))
    for h_j, (op, r, derivatives) in zip(images, ops):
        if derivatives:
            m = op_environment(h_j, s, op.qubits, n)  # (G, d, d): one product for all of the op's parameters
            stacked = np.stack([np.broadcast_to(dr, m.shape) for dr in derivatives.values()])
            if owner is None:
                out[0, list(derivatives)] += stacked.reshape(len(stacked), -1) @ m.reshape(-1)  # sum(dR/dp * M)
            else:  # per group first: dR/dp may differ between groups
                per_group = np.einsum("pgx,gx->gp", stacked.reshape(len(stacked), len(m), -1), m.reshape(len(m), -1))
                out[:, list(derivatives)] += segment_sum(per_group, owner, count)
        s = _apply(s, r.T if r.ndim == 2 else np.swapaxes(r, -1, -2), op.qubits, n)
    return out


def _by_setting(d: np.ndarray, segments: np.ndarray | None) -> np.ndarray:
    """(count, P) -> (P,) without segments (the one sum), else unchanged."""
    return d[0] if segments is None else d


def cotangent_states(g: np.ndarray, group: np.ndarray, bloch: list[np.ndarray], count: int,
                     max_bytes: int | None = None) -> np.ndarray:
    """(G, K, 4^n): s_gk = sum over the rows r of setting g of g_rk b_r, with b_r the row's product of Bloch
    vectors (qubit q the base-4 digit q), built in chunks of rows within ``max_bytes``."""
    n = len(bloch)
    s = np.zeros((count, g.shape[1], 4**n))
    for setting, members in enumerate(group_members(group, count)):
        for rows in row_chunks(members, 4**n, max_bytes):
            states = bloch[-1][rows]
            for b in reversed(bloch[:-1]):
                states = (states[:, :, None] * b[rows][:, None, :]).reshape(len(rows), -1)
            s[setting] += g[rows].T @ states
    return s


def program_pullback(program: Program, observables: np.ndarray, values: np.ndarray, inputs: list[int],
                     weights: list[int], segments: np.ndarray | None = None) -> tuple[np.ndarray, Pullback]:
    """(values (K, R), pullback) of a product-state program: ``inputs`` (prefix columns, per row) and
    ``weights`` (any columns, summed over rows, or over each segment's rows), in ``program.parameters`` order."""
    n, rows, k, count = program.num_qubits, len(values), observables.shape[0], segment_count(segments)
    if n == 0:  # nothing simulated: the identity coefficient, no derivative
        zeros = np.zeros(len(weights)) if segments is None else np.zeros((count, len(weights)))
        return np.repeat(observables[:, :1], rows, axis=1), lambda g: (np.zeros((rows, len(inputs))) if inputs else None,
                                                                       zeros)
    settings, group, owner = group_by_setting(values[:, program.body_columns], segments)
    representatives = np.zeros((len(settings), len(program.parameters)))
    representatives[:, program.body_columns] = settings
    from qresnet.backends.engine import kernel  # numba loads on the first pullback, not with the package

    plan = kernel.kernel_plan(program)
    if plan is not None:  # compiled: the grid or the rows, in a few calls
        out, state = kernel.forward(plan, observables, values, group, representatives, rows_only=bool(inputs))

        def pull_compiled(g: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
            g = np.asarray(g, dtype=float).reshape(rows, k)
            row_setting = np.zeros(rows, dtype=np.int64) if segments is None else segments
            per_row, d = kernel.pullback(plan, state, g, group, row_setting, owner, count)
            return (per_row[:, inputs] if inputs else None), _by_setting(d[:, weights], segments)

        return out, pull_compiled
    folded, images, ops = _images(program, observables, representatives)
    # the design points of a filter (or a stack's): a few Bloch vectors per qubit, not one per row
    grid = None if inputs else prefix_grid(program, values, group, len(settings))
    if grid is not None:
        out = grid.values(folded)
    else:
        prefix = prefix_states(program, values, frozenset(inputs) | frozenset(weights))
        out, env = environments(folded, group, prefix.bloch)
    by_group = None if segments is None else owner

    def pull(g: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        g = np.asarray(g, dtype=float).reshape(rows, k)
        per_row = None
        if grid is not None:
            on_grid = grid.scatter(g)
            s = grid.cotangent_state(on_grid)  # (G, K, 4^n)
            prefix_part = segment_sum(grid.prefix_gradients(folded, on_grid), by_group, count)
        else:
            s = cotangent_states(g, group, prefix.bloch, len(settings))
            per_row = prefix.pullback(env, g)  # the prefix parameters, row by row
            prefix_part = segment_sum(per_row, segments, count)
        d = _walk(s, images, ops, n, len(program.parameters), by_group, count) + prefix_part
        return (per_row[:, inputs] if inputs else None), _by_setting(d[:, weights], segments)

    return out, pull


def heisenberg_pullback(ep: EncodedProgram, terms: list[dict[str, float]], values: np.ndarray,
                        want_features: bool, segments: np.ndarray | None = None) -> tuple[np.ndarray, Pullback]:
    """(values (K, R), pullback) on the light cone of ``terms``, noise included; the body's derivatives (P,), or
    (S, P) by setting with ``segments``."""
    program = ep.program
    observables = observable_vectors(terms, program)
    settings, group, owner = group_by_setting(values[:, ep.body_columns], segments)
    samples, sample = group_rows(values[:, ep.feature_columns])
    axes, embed = ep.reduced_layout
    psi, a = _amplitudes(ep, samples, axes)
    rho = a @ np.swapaxes(a, 1, 2)  # (S, 2^k, 2^k) reduced states
    representatives = np.zeros((len(settings), len(program.parameters)))
    representatives[:, program.body_columns] = settings
    k, g_count = observables.shape[0], len(settings)
    h, walk = _body_sweep(program, observables, representatives)
    matrices = _light_cone_matrices(ep, h, embed)  # (G, K, 2^k, 2^k): Re E^dagger(O) on the encoded qubits
    members = group_members(group, g_count)
    out = np.empty((k, len(values)))
    flat, rho_flat = matrices.reshape(g_count, k, -1), rho.reshape(len(rho), -1)
    for gi, rows in enumerate(members):  # each group against its own samples only (a stack: S groups, S batches)
        mine, at = np.unique(sample[rows], return_inverse=True)
        out[:, rows] = (flat[gi] @ rho_flat[mine].T)[:, at.reshape(-1)]

    def pull(g: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        g = np.asarray(g, dtype=float).reshape(len(values), k)
        weighted = np.empty((g_count, k, len(embed) ** 2))
        for gi, rows in enumerate(members):
            weighted[gi] = g[rows].T @ rho[sample[rows]].reshape(len(rows), -1)  # sum_r g_rk rho_r
        s = light_cone_cotangent(ep, weighted.reshape(g_count, k, len(embed), len(embed)), embed)  # (G, K, 4^n)
        d_weights = walk(s, None if segments is None else owner, segment_count(segments))
        d_features = None
        if want_features:
            d_features = _feature_pullback(ep, matrices, g, members, samples, sample, psi, a)
        return d_features, _by_setting(d_weights, segments)

    return out, pull


def _feature_pullback(ep: EncodedProgram, matrices: np.ndarray, g: np.ndarray, members: list[np.ndarray],
                      samples: np.ndarray, sample: np.ndarray, psi: np.ndarray, a: np.ndarray) -> np.ndarray:
    """(R, F): sum_k g_rk df_rk / d features, from d/dpsi = 2 (sum_k g_rk Re O'_k) psi, projected onto the sphere;
    ``members`` the rows of each group, ``psi`` and ``a`` the samples' states as :func:`_amplitudes` gives them."""
    k, d = matrices.shape[1], a.shape[1]
    v = np.empty((len(g), d, a.shape[2]))
    for gi, mine in enumerate(members):  # per group, so that sum_k g_rk O'_k stays a few rows in cache
        combined = (g[mine] @ matrices[gi].reshape(k, -1)).reshape(len(mine), d, d)
        v[mine] = combined @ a[sample[mine]]
    v = amplitude_order(ep, 2.0 * v)  # d/dpsi, back from light-cone bits in front
    return project_to_features(ep, v[:, None], psi[sample], samples[sample])[:, 0]


def statevector_pullback(ep: EncodedProgram, terms: list[dict[str, float]], values: np.ndarray,
                         want_features: bool, segments: np.ndarray | None = None) -> tuple[np.ndarray, Pullback]:
    """(values (K, R), pullback) for an ideal encoded circuit over its whole register; the body's derivatives
    (P,), or (S, P) by setting with ``segments``."""
    program, n = ep.program, ep.program.num_qubits
    weights = values[:, ep.body_columns]
    features = values[:, ep.feature_columns]
    psi, phi = _initial_states(ep, features)
    for step in program.steps:
        phi = _apply_unitary(phi, _step_unitary(step, weights, program.parameters), step.qubits, n)
    compact = {q: i for i, q in enumerate(program.physical)}
    o_phi = np.stack([pauli_apply(phi, t, compact) for t in terms])  # (K, R, 2^n)
    out = np.einsum("ri,kri->kr", phi.conj(), o_phi).real

    def pull(g: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        g = np.asarray(g, dtype=float).reshape(len(values), len(terms))
        lam = np.einsum("rk,kri->ri", g, o_phi)  # sum_k g_rk O_k phi_r
        state = phi
        count = segment_count(segments)
        d_weights = np.zeros((count, len(program.parameters)))
        for step in reversed(program.steps):
            u = _step_unitary(step, weights, program.parameters)
            used = [] if step.angles is None else np.flatnonzero(np.any(step.angles.coeffs != 0, axis=1))
            if len(used):
                if step.generator is None or step.angles.nonlinear:
                    raise EngineUnsupportedError(
                        f"the statevector adjoint differentiates Pauli rotations with affine angles; instruction "
                        f"{step.operation.name!r} on qubits {step.qubits} is not one (transpile to rz, sx, cx first)")
                d_row = np.einsum("ri,ri->r", lam.conj(), _apply_unitary(state, step.generator, step.qubits, n)).imag
                d_angle = segment_sum(d_row, segments, count)  # (count,): each setting's rows apart
                for p in used:
                    d_weights[:, p] += step.angles.coeffs[p, 0] * d_angle
            u_dagger = u.conj().T if u.ndim == 2 else np.swapaxes(u, -1, -2).conj()
            state = _apply_unitary(state, u_dagger, step.qubits, n)
            lam = _apply_unitary(lam, u_dagger, step.qubits, n)
        d_features = None
        if want_features:
            d_features = _input_gradients(ep, lam[None], psi, features)[0]  # lam already carries g
        return d_features, _by_setting(d_weights, segments)

    return out, pull


__all__ = ["Pullback", "heisenberg_pullback", "program_pullback", "segment_count", "segment_sum", "statevector_pullback"]
