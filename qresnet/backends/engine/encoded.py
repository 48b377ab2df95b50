"""Circuits that open with an amplitude encoding: exact state preparation, batched over samples.

For f(x) = Tr[O E(|psi><psi|)] with psi = x / |x| (zero-padded, real) and E the rest of the
circuit (noise included), the observable is carried back once per distinct setting of E's
parameters, O' = E^dagger(O), and every sample is a quadratic form, f = psi^T Re(O') psi.
Only the backward light cone of the observable matters (trace-preserving operations outside
it leave the identity as it is), so O' lives on a few qubits and psi enters through its
reduced density matrix there. The same O' gives the exact input gradient,
df/dpsi = 2 Re(O') psi, projected onto the sphere (the normalisation) and cut to the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np
from qiskit import QuantumCircuit

from qresnet.backends.engine.gradient import body_tangents
from qresnet.backends.engine.program import Program, compile_circuit
from qresnet.backends.engine.simulate import body_images, observable_vectors
from qresnet.backends.primitives import group_rows
from qresnet.errors import EngineUnsupportedError
from qresnet.circuits.head import encoded_state

ENCODING = "amplitude_encoding"
_CHUNK = 1 << 24  # matrix entries per chunk of settings


def opens_with_encoding(circuit: QuantumCircuit) -> bool:
    if any(inst.operation.name == ENCODING for inst in circuit.data[1:]):
        raise EngineUnsupportedError("the engine supports an amplitude_encoding only as the circuit's first instruction")
    return bool(circuit.data) and circuit.data[0].operation.name == ENCODING


@dataclass
class EncodedProgram:
    """The light cone of some observables behind an amplitude encoding, compiled without a product prefix."""

    encoding_qubits: tuple[int, ...]  # physical qubit of amplitude bit i
    feature_columns: np.ndarray  # column of each feature in the circuit's parameter values
    program: Program  # over the light-cone qubits (``program.physical``)
    body_columns: np.ndarray  # the program's parameters as columns of the circuit's values

    @property
    def num_features(self) -> int:
        return len(self.feature_columns)

    @cached_property
    def reduced_layout(self) -> tuple[list[int], np.ndarray]:
        """The amplitude-bit axes of the light-cone qubits (most significant compact qubit first), and
        the light-cone basis index of each reduced basis state (qubits outside the encoding stay |0>)."""
        physical = self.program.physical
        bit_of = {q: i for i, q in enumerate(self.encoding_qubits)}
        encoded = [c for c in range(len(physical) - 1, -1, -1) if physical[c] in bit_of]  # compact, most significant first
        ne = len(self.encoding_qubits)
        axes = [ne - 1 - bit_of[physical[c]] for c in encoded]  # axis of bit i in a C-order (2,)*ne reshape
        embed = np.zeros(1 << len(encoded), dtype=int)
        for m in range(len(embed)):
            for position, c in enumerate(encoded):
                if (m >> (len(encoded) - 1 - position)) & 1:
                    embed[m] |= 1 << c
        return axes, embed


def compile_encoded(circuit: QuantumCircuit, noise_model, support: set[int]) -> EncodedProgram:
    """Compile the part of ``circuit`` after its encoding that can reach qubits ``support``."""
    first = circuit.data[0]
    index = {p: j for j, p in enumerate(circuit.parameters)}
    columns = []
    for value in first.operation.params:
        if value not in index:
            raise EngineUnsupportedError("amplitude_encoding features must be plain parameters in the engine")
        columns.append(index[value])
    cone = set(support)
    kept = []
    for inst in reversed(circuit.data[1:]):
        qubits = {circuit.find_bit(q).index for q in inst.qubits}
        if inst.operation.name != "barrier" and qubits & cone:
            kept.append(inst)
            cone |= qubits
    body = circuit.copy_empty_like()
    for inst in reversed(kept):
        body.append(inst)
    program = compile_circuit(body, noise_model, tuple(sorted(cone)), product_prefix=False)
    return EncodedProgram(
        encoding_qubits=tuple(circuit.find_bit(q).index for q in first.qubits),
        feature_columns=np.array(columns, dtype=int),
        program=program,
        body_columns=np.array([index[p] for p in program.parameters], dtype=int),
    )


# I, X, iY, Z: real. A Pauli string with m factors Y is (-i)^m times its iY string, so its real part is
# (-1)^(m/2) times that string for even m and 0 for odd m (then it is imaginary).
_REAL_PAULI = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, 1], [-1, 0]], [[1, 0], [0, -1]]], dtype=float)


@cache
def _real_signs(n: int) -> np.ndarray:
    """(4^n,) the factor of each iY string in Re(P_d): 0 for an odd number of Y, else (-1)^(m/2)."""
    ys = np.zeros(4**n, dtype=int)
    for q in range(n):
        ys += (np.arange(4**n) // 4**q) % 4 == 2
    return np.where(ys % 2, 0.0, 1.0 - 2.0 * ((ys // 2) % 2))


def _each_qubit(t: np.ndarray, matrix: np.ndarray, n: int) -> np.ndarray:
    """(B, 4^n) -> the (4, 4) ``matrix`` applied to every base-4 digit."""
    b = len(t)
    for a in range(n):
        t = np.matmul(matrix, t.reshape(b * 4**a, 4, 4 ** (n - 1 - a)))
    return t.reshape(b, 4**n)


def pauli_to_matrix(coeffs: np.ndarray, n: int) -> np.ndarray:
    """(..., 4^n) real Pauli coefficients (qubit q the base-4 digit q) -> (..., 2^n, 2^n) the real part of
    their matrices, in real arithmetic (the imaginary part is never needed: states here are real)."""
    batch = coeffs.shape[:-1]
    t = _each_qubit(coeffs.reshape(-1, 4**n) * _real_signs(n), _REAL_PAULI.reshape(4, 4).T, n)
    t = t.reshape((-1,) + (2,) * (2 * n))  # (row bit, column bit) per qubit, qubit n - 1 first
    t = t.transpose([0] + [1 + 2 * q for q in range(n)] + [2 + 2 * q for q in range(n)])
    return t.reshape(*batch, 2**n, 2**n)


def pauli_to_matrix_adjoint(mats: np.ndarray, n: int) -> np.ndarray:
    """The adjoint of :func:`pauli_to_matrix`: (..., 2^n, 2^n) M -> (..., 4^n), entry d = sum_ij Re(P_d)[i, j] M[i, j]."""
    batch = mats.shape[:-2]
    t = mats.reshape((-1,) + (2,) * (2 * n))
    t = t.transpose([0] + [a for q in range(n) for a in (1 + q, 1 + n + q)]).reshape(-1, 4**n)
    return (_each_qubit(t, _REAL_PAULI.reshape(4, 4), n) * _real_signs(n)).reshape(*batch, 4**n)


def _amplitudes(ep: EncodedProgram, features: np.ndarray, axes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(psi (S, 2^ne), A (S, 2^k, 2^rest)): the encoded states, and their light-cone bits moved to the front."""
    ne = len(ep.encoding_qubits)
    psi = encoded_state(features, ne)
    t = psi.reshape((len(psi),) + (2,) * ne)
    t = np.moveaxis(t, [1 + a for a in axes], range(1, 1 + len(axes)))
    return psi, t.reshape(len(psi), 1 << len(axes), -1)


def _light_cone_matrices(ep: EncodedProgram, images: np.ndarray, embed: np.ndarray) -> np.ndarray:
    """(..., 2^k, 2^k): Re of Pauli images (..., 4^n) on the encoded light-cone qubits (others |0>); compiled
    (:func:`~qresnet.backends.engine.kernel.light_cone_matrices`) unless in the numpy route."""
    from qresnet.backends.engine import kernel  # numba loads here, not with the package

    n = ep.program.num_qubits
    if kernel.active():
        return kernel.light_cone_matrices(images, n, embed)
    return pauli_to_matrix(images, n)[..., embed[:, None], embed[None, :]]


def light_cone_cotangent(ep: EncodedProgram, mats: np.ndarray, embed: np.ndarray) -> np.ndarray:
    """(..., 4^n): the adjoint of :func:`_light_cone_matrices` for matrices (..., 2^k, 2^k)."""
    from qresnet.backends.engine import kernel

    n = ep.program.num_qubits
    if kernel.active():
        return kernel.light_cone_cotangent(mats, n, embed)
    full = np.zeros(mats.shape[:-2] + (1 << n, 1 << n))
    full[..., embed[:, None], embed[None, :]] = mats
    return pauli_to_matrix_adjoint(full, n)


def _operators(ep: EncodedProgram, observables: np.ndarray, settings: np.ndarray, embed: np.ndarray) -> np.ndarray:
    """(G, K, 2^k, 2^k): Re E^dagger(O) on the encoded light-cone qubits (others |0>), per setting."""
    n = ep.program.num_qubits
    per_setting = observables.shape[0] * 4**n
    out = np.empty((len(settings), observables.shape[0], len(embed), len(embed)))
    step = max(1, _CHUNK // per_setting)
    for start in range(0, len(settings), step):
        out[start:start + step] = _light_cone_matrices(ep, body_images(ep.program, observables, settings[start:start + step]), embed)
    return out


def _operators_and_tangents(ep: EncodedProgram, observables: np.ndarray, settings: np.ndarray, embed: np.ndarray,
                            wanted: frozenset[int] | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(G, K, 2^k, 2^k) as :func:`_operators`, (G, C, K, 2^k, 2^k) their derivatives by the program's wanted
    body parameters, and those C parameters (program columns)."""
    n, k = ep.program.num_qubits, observables.shape[0]
    columns = [p for p in ep.program.body_columns if wanted is None or p in wanted]
    both = np.empty((len(settings), 1 + len(columns), k, len(embed), len(embed)))
    step = max(1, _CHUNK // ((1 + len(columns)) * k * 4**n))
    for start in range(0, len(settings), step):
        stack, _ = body_tangents(ep.program, observables, settings[start:start + step], wanted)
        both[start:start + step] = _light_cone_matrices(ep, stack, embed)
    return both[:, 0], both[:, 1:], columns


def _groups(ep: EncodedProgram, values: np.ndarray):
    settings, group = group_rows(values[:, ep.body_columns])
    samples, sample = group_rows(values[:, ep.feature_columns])
    return settings, group, samples, sample


def _pairs(ops: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """(K, G, S): Tr(O_gk rho_s) for operators (G, K, d, d) and real symmetric states (S, d, d), one matrix
    product (einsum contracts it several times slower)."""
    g, k = ops.shape[:2]
    return (ops.reshape(g * k, -1) @ rho.reshape(len(rho), -1).T).reshape(g, k, -1).transpose(1, 0, 2)


def encoded_values(ep: EncodedProgram, terms: list[dict[str, float]], values: np.ndarray) -> np.ndarray:
    """(K, R) exact values of {Pauli label: coeff} observables for R rows of the circuit's parameter values."""
    observables = observable_vectors(terms, ep.program)
    settings, group, samples, sample = _groups(ep, values)
    axes, embed = ep.reduced_layout
    _, a = _amplitudes(ep, samples, axes)
    rho = a @ np.swapaxes(a, 1, 2)  # (S, 2^k, 2^k) reduced states
    ops = _operators(ep, observables, settings, embed)
    table = _pairs(ops, rho)  # every (setting, sample) pair: G and S are small
    return table[:, group, sample]


def encoded_gradients(ep: EncodedProgram, terms: list[dict[str, float]], values: np.ndarray) -> np.ndarray:
    """(R, K, F) exact d value / d feature; 0 for an all-zero feature vector."""
    observables = observable_vectors(terms, ep.program)
    settings, group, samples, sample = _groups(ep, values)
    ops = _operators(ep, observables, settings, ep.reduced_layout[1])
    return _feature_gradients(ep, ops, group, samples, sample)


def encoded_value_gradients(ep: EncodedProgram, terms: list[dict[str, float]], values: np.ndarray,
                            wanted: frozenset[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(values (K, R), derivatives (K, R, P)) by the circuit's parameters (``wanted`` columns; the others stay 0):
    the encoded features (adjoint through the state preparation) and the weights behind them (tangents of
    E^dagger(O), one sweep per setting)."""
    observables = observable_vectors(terms, ep.program)
    settings, group, samples, sample = _groups(ep, values)
    axes, embed = ep.reduced_layout
    _, a = _amplitudes(ep, samples, axes)
    rho = a @ np.swapaxes(a, 1, 2)  # (S, 2^k, 2^k) reduced states
    inner = None if wanted is None else frozenset(j for j, c in enumerate(ep.body_columns) if c in wanted)
    ops, tangents, columns = _operators_and_tangents(ep, observables, settings, embed, inner)
    table = _pairs(ops, rho)
    d_table = np.einsum("gckij,sij->kcgs", tangents, rho)  # (K, C, G, S)
    grads = np.zeros((len(terms), len(values), values.shape[1]))
    grads[:, :, ep.body_columns[columns]] = d_table[:, :, group, sample].transpose(0, 2, 1)
    if wanted is None or wanted & set(ep.feature_columns.tolist()):
        grads[:, :, ep.feature_columns] = _feature_gradients(ep, ops, group, samples, sample).transpose(1, 0, 2)
    return table[:, group, sample], grads


def _feature_gradients(ep: EncodedProgram, ops: np.ndarray, group: np.ndarray, samples: np.ndarray,
                       sample: np.ndarray) -> np.ndarray:
    """(R, K, F): df/dpsi = 2 Re(O') psi per row, projected onto the sphere and cut to the features."""
    psi, a = _amplitudes(ep, samples, ep.reduced_layout[0])
    out = np.zeros((len(group), ops.shape[1], ep.num_features))
    for g in range(len(ops)):
        rows = np.flatnonzero(group == g)
        s = sample[rows]
        v = 2.0 * np.einsum("kij,rjx->rkix", ops[g], a[s])  # d f / d psi, light-cone bits in front
        out[rows] = project_to_features(ep, amplitude_order(ep, v), psi[s], samples[s])
    return out


def amplitude_order(ep: EncodedProgram, v: np.ndarray) -> np.ndarray:
    """(..., 2^k, 2^rest) with the light-cone bits in front (as :func:`_amplitudes` lays states out) ->
    (..., 2^ne) in amplitude order."""
    axes, _ = ep.reduced_layout
    lead, ne = v.shape[:-2], len(ep.encoding_qubits)
    t = v.reshape(lead + (2,) * ne)
    return np.moveaxis(t, range(len(lead), len(lead) + len(axes)), [len(lead) + x for x in axes]).reshape(*lead, 1 << ne)


def project_to_features(ep: EncodedProgram, v: np.ndarray, psi: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(R, K, F) d f / d features from v = d f / d psi (R, K, 2^ne): the normalisation's Jacobian
    (I - psi psi^T) / |x|, cut to the features; 0 for an all-zero feature vector."""
    p = psi[:, None, :]
    tangent = v - (v * p).sum(-1, keepdims=True) * p
    norms = np.linalg.norm(features, axis=1)
    scale = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    return tangent[..., : ep.num_features] * scale[:, None, None]
