"""Ideal circuits that open with an amplitude encoding, by statevector and its adjoint pass.

The Heisenberg route carries each observable back through the backward light cone, 4^w numbers
per observable for a cone of w qubits: a 10-class head measures 10 qubits, so w = 10 and the
images fill gigabytes. Without noise the state itself is small: 2^n amplitudes per sample. The
forward pass applies the ansatz to every encoded state, phi = U psi; each value is
<phi|O|phi>. The adjoint pass walks the gates backwards with lambda = O phi (one per observable
and sample), un-applying each gate from phi and lambda; a Pauli rotation exp(-i theta P / 2) on
the way gives d f / d theta = Im <lambda| P |phi_after>, and at the start lambda =
U^dagger O U psi gives the input gradient d f / d psi = 2 Re lambda, projected onto the sphere
(the normalisation) as the Heisenberg route does it.
"""

from __future__ import annotations

import numpy as np

from qresnet.backends.engine.encoded import EncodedProgram, project_to_features
from qresnet.backends.engine.simulate import _apply_unitary, _step_unitary, pauli_apply
from qresnet.circuits.head import encoded_state
from qresnet.errors import EngineUnsupportedError


def _embedding(ep: EncodedProgram) -> np.ndarray:
    """The compact statevector index of each amplitude index: amplitude bit j lives on compact qubit
    ``compact[encoding_qubits[j]]``; the other simulated qubits stay |0>."""
    compact = {q: i for i, q in enumerate(ep.program.physical)}
    amplitudes = np.arange(1 << len(ep.encoding_qubits))
    out = np.zeros_like(amplitudes)
    for j, q in enumerate(ep.encoding_qubits):
        out |= ((amplitudes >> j) & 1) << compact[q]
    return out


def _initial_states(ep: EncodedProgram, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(psi (S, 2^ne) in amplitude order, the same states on the program's compact qubits (S, 2^n))."""
    psi = encoded_state(features, len(ep.encoding_qubits))
    states = np.zeros((len(psi), 1 << ep.program.num_qubits), dtype=complex)
    states[:, _embedding(ep)] = psi
    return psi, states


def _forward(ep: EncodedProgram, states: np.ndarray, values: np.ndarray) -> np.ndarray:
    program = ep.program
    phi = states
    for step in program.steps:
        phi = _apply_unitary(phi, _step_unitary(step, values, program.parameters), step.qubits, program.num_qubits)
    return phi


def _program_values(ep: EncodedProgram, values: np.ndarray) -> np.ndarray:
    return values[:, ep.body_columns]


def statevector_values(ep: EncodedProgram, terms: list[dict[str, float]], values: np.ndarray) -> np.ndarray:
    """(K, R) exact values of an ideal encoded circuit, one statevector per row."""
    _, states = _initial_states(ep, values[:, ep.feature_columns])
    phi = _forward(ep, states, _program_values(ep, values))
    compact = {q: i for i, q in enumerate(ep.program.physical)}
    return np.array([np.einsum("ri,ri->r", phi.conj(), pauli_apply(phi, t, compact)).real for t in terms])


def statevector_value_gradients(ep: EncodedProgram, terms: list[dict[str, float]], values: np.ndarray,
                                wanted: frozenset[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(values (K, R), derivatives (K, R, P)) by the circuit's parameters (``wanted`` columns, others 0):
    a forward pass per row, then one adjoint pass carrying O phi for every observable."""
    program, n = ep.program, ep.program.num_qubits
    weights = _program_values(ep, values)
    features = values[:, ep.feature_columns]
    psi, states = _initial_states(ep, features)
    phi = _forward(ep, states, weights)
    compact = {q: i for i, q in enumerate(program.physical)}
    k, rows = len(terms), len(values)
    lam = np.stack([pauli_apply(phi, t, compact) for t in terms])  # (K, R, 2^n)
    out = np.einsum("ri,kri->kr", phi.conj(), lam).real
    grads = np.zeros((k, rows, values.shape[1]))
    body = {j: int(c) for j, c in enumerate(ep.body_columns)}  # program parameter -> circuit column
    for step in reversed(program.steps):
        u = _step_unitary(step, weights, program.parameters)
        used = [] if step.angles is None else [p for p in np.flatnonzero(np.any(step.angles.coeffs != 0, axis=1))
                                               if wanted is None or body[int(p)] in wanted]
        if used:
            if step.generator is None or step.angles.nonlinear:
                raise EngineUnsupportedError(
                    f"the statevector adjoint differentiates Pauli rotations with affine angles; instruction "
                    f"{step.operation.name!r} on qubits {step.qubits} is not one (transpile to rz, sx, cx first)")
            p_phi = _apply_unitary(phi, step.generator, step.qubits, n)  # P phi_after
            d_angle = np.einsum("kri,ri->kr", lam.conj(), p_phi).imag  # d f / d theta
            for p in used:
                grads[:, :, body[int(p)]] += step.angles.coeffs[p, 0] * d_angle
        u_dagger = u.conj().T if u.ndim == 2 else np.swapaxes(u, -1, -2).conj()
        phi = _apply_unitary(phi, u_dagger, step.qubits, n)
        lam = _apply_unitary(lam.reshape(k * rows, -1), u_dagger if u.ndim == 2 else np.tile(u_dagger, (k, 1, 1)),
                             step.qubits, n).reshape(k, rows, -1)
    if wanted is None or wanted & set(ep.feature_columns.tolist()):
        grads[:, :, ep.feature_columns] = _input_gradients(ep, lam, psi, features)
    return out, grads


def _input_gradients(ep: EncodedProgram, lam: np.ndarray, psi: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(K, R, F): d f / d features from lambda = U^dagger O U psi at the start, on the compact qubits."""
    v = 2.0 * lam[:, :, _embedding(ep)].real  # d f / d psi for real psi, in amplitude order
    return project_to_features(ep, v.transpose(1, 0, 2), psi, features).transpose(1, 0, 2)
