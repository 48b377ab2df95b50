"""The quantum head: a feature vector amplitude-encoded into n qubits, a trainable ansatz, <Z> on m qubits.

Encoding. Features are zero-padded to 2^n and normalised; an all-zero vector has no direction
and is encoded as |0...0>, the state the circuit starts in (every encoding angle 0; its input
gradient is defined as 0). Two forms of the same state preparation:

- ``encoding="state"``: one :class:`AmplitudeEncoding` instruction whose parameters are the
  features themselves. Simulators prepare the state exactly (the engine batches it over
  samples and differentiates through it); bound, it defines itself as a ``StatePreparation``.
- ``encoding="angles"`` (the default, and what hardware runs): a parameterised state preparation (Mottonen et al., quant-ph/0407010) for
real amplitudes: level l puts a uniformly controlled RY on qubit n-1-l, controlled by the l
qubits above it, written as 2^l RY gates and 2^l CNOTs in Gray-code order. Its 2^n - 1
  input parameters are those RY angles, each in exactly one rotation, computed from the
  features by :func:`amplitude_angles`; so the template passes the same rotation check as the
  filter, transpiles once per device, and each sample is one binding of that circuit.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Gate, ParameterExpression, ParameterVector
from qiskit.circuit.library import StatePreparation
from qiskit.quantum_info import SparsePauliOp

from qresnet.circuits.ansatz import append_ansatz
from qresnet.circuits.template import CircuitTemplate
from qresnet.errors import TemplateError
from qresnet.values import checked_int


def _gray(i: int) -> int:
    return i ^ (i >> 1)


def _walsh_matrix(level: int) -> np.ndarray:
    """M[j, i] = (-1)^popcount(j & gray(i)): the angle control value j sees from RY number i."""
    size = 1 << level
    j = np.arange(size)[:, None]
    g = np.array([_gray(i) for i in range(size)])[None, :]
    parity = np.vectorize(lambda v: bin(v).count("1") & 1)(j & g)
    return 1.0 - 2.0 * parity


def _append_encoding(circuit: QuantumCircuit, angles: ParameterVector) -> None:
    n = circuit.num_qubits
    k = 0
    for level in range(n):
        target = n - 1 - level
        size = 1 << level
        for i in range(size):
            circuit.ry(angles[k], target)
            k += 1
            if level:
                # the control whose bit flips between gray(i) and gray(i+1), cyclically
                changed = _gray(i) ^ _gray((i + 1) % size)
                circuit.cx(target + 1 + changed.bit_length() - 1, target)


def encoded_state(features: np.ndarray, num_qubits: int = 10) -> np.ndarray:
    """The amplitudes a batch of real feature vectors encodes, shape (..., 2^n): zero-padded, normalised.

    An all-zero vector encodes |0...0>.

    >>> encoded_state([3.0, 4.0], 2), encoded_state([0.0, 0.0], 1)
    (array([0.6, 0.8, 0. , 0. ]), array([1., 0.]))
    """
    x = np.asarray(features, dtype=float)
    dim = 1 << num_qubits
    if x.shape[-1] > dim:
        raise TemplateError(f"features has {x.shape[-1]} values; {num_qubits} qubits hold at most {dim}")
    if not np.all(np.isfinite(x)):
        raise TemplateError("features contains NaN or infinite values")
    batch = x.shape[:-1]
    psi = np.zeros((int(np.prod(batch, dtype=int)), dim))
    psi[:, : x.shape[-1]] = x.reshape(-1, x.shape[-1])
    norms = np.linalg.norm(psi, axis=1)
    zero = norms == 0
    psi[zero, 0], norms[zero] = 1.0, 1.0
    return (psi / norms[:, None]).reshape(*batch, dim)


class AmplitudeEncoding(Gate):
    """Prepare the normalised, zero-padded ``features`` on ``num_qubits`` qubits from |0...0>.

    A gate whose parameters are the features (``len(params) <= 2^n``), so circuits holding it
    stay parameterised. Bound, it defines itself as a ``StatePreparation``.
    """

    def __init__(self, num_qubits: int, params, label: str | None = None):
        if len(params) > 1 << num_qubits:
            raise TemplateError(f"{len(params)} features do not fit {num_qubits} qubits (at most {1 << num_qubits})")
        super().__init__("amplitude_encoding", num_qubits, list(params), label=label)

    def validate_parameter(self, parameter):
        return parameter  # features are any real numbers or parameters

    def _define(self) -> None:
        if any(isinstance(p, ParameterExpression) and p.parameters for p in self.params):
            raise TemplateError("amplitude_encoding has unbound features; bind them before running the circuit")
        values = np.array([float(p) for p in self.params])
        qc = QuantumCircuit(self.num_qubits, name=self.name)
        qc.append(StatePreparation(encoded_state(values, self.num_qubits)), range(self.num_qubits))
        self.definition = qc


def amplitude_angles(features: np.ndarray, num_qubits: int = 10) -> np.ndarray:
    """The head's encoding angles for a batch of real feature vectors, shape (..., 2^n - 1).

    Features are zero-padded to 2^n and normalised; an all-zero vector gets all-zero angles (|0...0>).
    """
    psi = encoded_state(features, num_qubits)
    batch = psi.shape[:-1]
    psi = psi.reshape(-1, 1 << num_qubits)
    out = []
    for level in range(num_qubits):
        t = num_qubits - 1 - level
        blocks = psi.reshape(len(psi), 1 << level, 2, 1 << t)
        if t:
            left, right = np.linalg.norm(blocks[:, :, 0, :], axis=-1), np.linalg.norm(blocks[:, :, 1, :], axis=-1)
        else:
            left, right = blocks[:, :, 0, 0], blocks[:, :, 1, 0]  # signed: the last level carries the signs
        alpha = 2.0 * np.arctan2(right, left)  # rotation wanted for each control value j
        out.append(alpha @ _walsh_matrix(level) / (1 << level))  # M is symmetric-orthogonal up to 2^l
    return np.concatenate(out, axis=1).reshape(*batch, (1 << num_qubits) - 1)


ENCODINGS = ("angles", "state")


def quantum_head(
    num_qubits: int = 10, measured: int = 4, reps: int = 2, entanglement: str = "chain",
    encoding: str = "angles", num_features: int | None = None,
) -> CircuitTemplate:
    """The head template: amplitude encoding into ``num_qubits``, ansatz, <Z_q> for q < ``measured``.

    ``encoding="angles"``: inputs are the 2^n - 1 encoding angles (:func:`amplitude_angles`).
    ``encoding="state"``: inputs are the ``num_features`` (default 2^n) features, in one
    :class:`AmplitudeEncoding`. Equal arguments return the same (immutable) template object.

    >>> t = quantum_head(num_qubits=4, measured=2)
    >>> (t.num_inputs, t.num_weights, t.num_outputs), t is quantum_head(4, 2)
    ((15, 16, 2), True)
    >>> quantum_head(4, 2, encoding="state", num_features=9).num_inputs
    9
    """
    # checked before the cache, where True would find the template of 1
    num_qubits = checked_int(num_qubits, "num_qubits", error=TemplateError)
    measured = checked_int(measured, "measured", maximum=num_qubits, error=TemplateError, hint=" (num_qubits)")
    reps = checked_int(reps, "reps", error=TemplateError)
    if num_features is not None:
        num_features = checked_int(num_features, "num_features", maximum=1 << num_qubits, error=TemplateError,
                                   hint=f" (2^{num_qubits})")
    return _quantum_head(num_qubits, measured, reps, entanglement, encoding, num_features)


@cache
def _quantum_head(num_qubits: int, measured: int, reps: int, entanglement: str, encoding: str,
                  num_features: int | None) -> CircuitTemplate:
    if encoding not in ENCODINGS:
        raise TemplateError(f"encoding={encoding!r} must be one of {', '.join(ENCODINGS)}")
    circuit = QuantumCircuit(num_qubits, name="head")
    if encoding == "angles":
        if num_features is not None:
            raise TemplateError("num_features applies to encoding='state'; the angle encoding takes 2^n - 1 angles")
        inputs = ParameterVector("a", (1 << num_qubits) - 1)
        _append_encoding(circuit, inputs)
    else:
        num_features = (1 << num_qubits) if num_features is None else num_features
        inputs = ParameterVector("x", num_features)
        circuit.append(AmplitudeEncoding(num_qubits, inputs), range(num_qubits))
    weights = append_ansatz(circuit, reps, entanglement)
    observables = tuple(SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], num_qubits) for q in range(measured))
    suffix = "" if encoding == "angles" else f"-state{num_features}"
    return CircuitTemplate(
        name=f"head{num_qubits}q-m{measured}-reps{reps}-{entanglement}{suffix}",
        circuit=circuit,
        input_params=tuple(inputs),
        weight_params=tuple(weights),
        observables=observables,
        input_scale=1.0,
        settings={"template": "head", "num_qubits": num_qubits, "measured": measured, "reps": reps,
                  "entanglement": entanglement, "encoding": encoding, "num_features": num_features},
    )
