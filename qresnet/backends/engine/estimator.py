"""The engine as an ``EstimatorV2``: a PUB's whole broadcast of parameter values as array operations."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from qiskit import QuantumCircuit
from qiskit.primitives import BaseEstimatorV2, DataBin, PrimitiveResult, PubResult
from qiskit.primitives.containers import EstimatorPubLike
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.quantum_info import SparsePauliOp

from qresnet.backends.engine.encoded import (
    EncodedProgram,
    compile_encoded,
    encoded_gradients,
    encoded_values,
    opens_with_encoding,
)
from qresnet.backends.engine.program import Program, compile_circuit
from qresnet.backends.engine.sampling import sample_expectations
from qresnet.backends.engine.simulate import PER_GROUP_LOOP, heisenberg, observable_vectors, statevector
from qresnet.backends.primitives import CompletedJob, group_rows
from qresnet.backends.readout import fold_readout
from qresnet.errors import EngineUnsupportedError

log = logging.getLogger(__name__)

# Memory bounds: the Heisenberg route holds 4^n doubles per observable and body setting
# (n = 10: 8 MiB each), the statevector route 2^n complex numbers per row (n = 20: 16 MiB each).
MAX_NOISY_QUBITS = 10
MAX_IDEAL_QUBITS = 20
HEISENBERG_IDEAL_QUBITS = 6  # ideal circuits up to this width take the Heisenberg route too


class EngineEstimator(BaseEstimatorV2):
    """Exact (or shot-sampled) expectation values of whole PUBs at once, noiseless or with an Aer noise model.

    ``noise_model``: an Aer ``NoiseModel``; its quantum errors attach to each instruction and
    qubit set as in Aer. ``readout``: per physical qubit (P(1|0), P(0|1)), folded into the
    observables for exact values and applied to outcome probabilities for shots. ``shots=None``
    gives exact values (precision 0); a PUB's own precision p > 0 asks for ceil(1/p^2) shots.
    Circuits wider than the engine's memory bound go to ``fallback`` (an Aer estimator), with a warning.

    >>> from qiskit import QuantumCircuit
    >>> from qiskit.quantum_info import SparsePauliOp
    >>> qc = QuantumCircuit(1); _ = qc.ry(0.5, 0)
    >>> round(float(EngineEstimator().run([(qc, SparsePauliOp("Z"))]).result()[0].data.evs), 12)  # cos(0.5)
    0.87758256189
    """

    def __init__(
        self,
        noise_model=None,
        readout: Mapping[int, tuple[float, float]] | None = None,
        shots: int | None = None,
        seed: int | None = None,
        fallback: BaseEstimatorV2 | None = None,
    ):
        self.noise_model = noise_model
        self.readout = dict(readout or {})
        self.shots = shots
        self.rng = np.random.default_rng(seed)
        self.fallback = fallback
        self._programs: dict[tuple, tuple[QuantumCircuit, Program]] = {}
        self._folded: dict[tuple, dict[str, float]] = {}
        self._qubits: dict[int, tuple[QuantumCircuit, set[int]]] = {}
        self._opens: dict[int, tuple[QuantumCircuit, bool]] = {}
        self._encoded_programs: dict[tuple, tuple[QuantumCircuit, EncodedProgram]] = {}
        self.rows_evaluated = 0  # parameter sets x observables, for cost reports

    def run(self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None) -> CompletedJob:
        results = [self._run_pub(EstimatorPub.coerce(pub, precision)) for pub in pubs]
        return CompletedJob(PrimitiveResult(results, metadata={"version": 2, "simulator": "qresnet-engine"}), "qresnet-engine")

    def _program(self, circuit: QuantumCircuit, extra: tuple[int, ...]) -> Program:
        key = (id(circuit), extra)
        cached = self._programs.get(key)
        if cached is None or cached[0] is not circuit:
            cached = (circuit, compile_circuit(circuit, self.noise_model, extra))
            self._programs[key] = cached
        return cached[1]

    def _touched(self, circuit: QuantumCircuit) -> set[int]:
        cached = self._qubits.get(id(circuit))
        if cached is None or cached[0] is not circuit:
            touched = {circuit.find_bit(q).index for inst in circuit.data for q in inst.qubits
                       if inst.operation.name != "barrier"}
            cached = self._qubits[id(circuit)] = (circuit, touched)
        return cached[1]

    def _fold(self, terms: dict[str, float]) -> dict[str, float]:
        key = tuple(sorted(terms.items()))
        if key not in self._folded:
            self._folded[key] = fold_readout(terms, self.readout)
        return self._folded[key]

    def _run_pub(self, pub: EstimatorPub) -> PubResult:
        circuit = pub.circuit
        precision = pub.precision
        shots = self.shots if precision is None else (None if precision == 0 else math.ceil(1.0 / precision**2))
        # distinct observables and the flat parameter rows
        obs = pub.observables
        flat_obs = [obs[i] for i in np.ndindex(obs.shape)] if obs.shape else [obs[()]]
        keys = [tuple(sorted(o.items())) for o in flat_obs]
        unique = {key: i for i, key in reversed(list(enumerate(keys)))}
        order = sorted(set(unique.values()))
        terms = [flat_obs[i] for i in order]
        obs_index = np.array([order.index(unique[k]) for k in keys]).reshape(obs.shape)
        values = pub.parameter_values.as_array(circuit.parameters)
        param_shape = values.shape[:-1]
        values = values.reshape(int(np.prod(param_shape, dtype=int)), circuit.num_parameters)
        row_index = np.arange(len(values)).reshape(param_shape)
        o_b, r_b = np.broadcast_arrays(obs_index, row_index)

        support = _support(terms)
        if self._encoded_circuit(circuit):
            encoded = self._encoded(circuit, support)

            def exact(term_list: list[dict[str, float]]) -> np.ndarray:
                return encoded_values(encoded, term_list, values)

            route, width = "state-preparation", encoded.program.num_qubits
            return self._finish(pub, terms, exact, shots, route, width, o_b, r_b)
        touched = self._touched(circuit)
        extra = tuple(sorted(support - touched))
        width = len(touched | support)
        noisy = self.noise_model is not None
        if width > (MAX_NOISY_QUBITS if noisy else MAX_IDEAL_QUBITS):
            return self._fall_back(pub, width, noisy)
        program = self._program(circuit, extra)
        grouping = group_rows(values[:, program.body_columns])
        route = "heisenberg"
        if not noisy and (program.num_qubits > HEISENBERG_IDEAL_QUBITS or len(grouping[0]) > PER_GROUP_LOOP):
            route = "statevector"  # ideal with many body settings: a statevector per row is cheaper

        def exact(term_list: list[dict[str, float]]) -> np.ndarray:
            if route == "heisenberg":
                return heisenberg(program, observable_vectors(term_list, program), values, grouping)
            return statevector(program, term_list, values)

        return self._finish(pub, terms, exact, shots, route, program.num_qubits, o_b, r_b)

    def _finish(self, pub: EstimatorPub, terms, exact, shots, route: str, width: int, o_b, r_b) -> PubResult:
        """Exact or sampled values of the distinct observables, broadcast to the PUB's shape."""
        shape = pub.shape
        if shots is None:
            table = exact([self._fold(t) for t in terms] if self.readout else terms)
            stds_table = np.zeros_like(table)
        else:
            pairs = [sample_expectations(t, exact, shots, self.rng, self.readout) for t in terms]
            table = np.array([p[0] for p in pairs])
            stds_table = np.array([p[1] for p in pairs])
        self.rows_evaluated += int(np.prod(shape, dtype=int))
        evs = table[o_b, r_b].reshape(shape)
        stds = stds_table[o_b, r_b].reshape(shape)
        metadata = {"target_precision": 0.0 if shots is None else 1 / math.sqrt(shots), "shots": shots,
                    "simulator": "qresnet-engine", "route": route, "num_qubits": width}
        return PubResult(DataBin(evs=evs, stds=stds, shape=shape), metadata=metadata)

    def _encoded_circuit(self, circuit: QuantumCircuit) -> bool:
        cached = self._opens.get(id(circuit))
        if cached is None or cached[0] is not circuit:
            cached = self._opens[id(circuit)] = (circuit, opens_with_encoding(circuit))
        return cached[1]

    def _encoded(self, circuit: QuantumCircuit, support: set[int]) -> EncodedProgram:
        """The compiled light cone of ``support`` behind the circuit's encoding."""
        key = (id(circuit), tuple(sorted(support)))
        cached = self._encoded_programs.get(key)
        if cached is None or cached[0] is not circuit:
            program = compile_encoded(circuit, self.noise_model, support)
            cached = self._encoded_programs[key] = (circuit, program)
        width = cached[1].program.num_qubits
        if width > MAX_NOISY_QUBITS:
            raise EngineUnsupportedError(f"the observables' light cone behind the amplitude encoding spans {width} qubits; the engine "
                             f"handles at most {MAX_NOISY_QUBITS} (use fewer ansatz repetitions or measured qubits)")
        return cached[1]

    def encoding_gradients(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp],
                           values: np.ndarray) -> np.ndarray:
        """(R, K, F): exact derivatives of each observable's value by the features of the circuit's encoding.

        The noise model and the readout errors are included as in :meth:`run`; with shots, the
        values are sampled but these derivatives stay exact (an adjoint pass has no shot noise).
        """
        plain = [dict(zip(s.paulis.to_labels(), s.coeffs.real)) for s in (o.simplify() for o in observables)]
        terms = [self._fold(t) for t in plain] if self.readout else plain
        support = _support(terms)
        values = np.atleast_2d(np.asarray(values, dtype=float))
        if not self._encoded_circuit(circuit):
            raise EngineUnsupportedError("encoding_gradients needs a circuit that opens with an amplitude_encoding")
        encoded = self._encoded(circuit, support)
        self.rows_evaluated += len(values) * len(terms)
        return encoded_gradients(encoded, terms, values)

    def _fall_back(self, pub: EstimatorPub, width: int, noisy: bool) -> PubResult:
        bound = MAX_NOISY_QUBITS if noisy else MAX_IDEAL_QUBITS
        if self.fallback is None:
            raise EngineUnsupportedError(f"circuit touches {width} qubits; the engine simulates at most {bound} "
                             f"({'noisy' if noisy else 'ideal'}) and has no fallback estimator")
        message = (f"circuit touches {width} qubits, over the engine's bound of {bound} "
                   f"({'density' if noisy else 'statevector'} memory); evaluating it with Aer instead")
        warnings.warn(message, stacklevel=3)
        log.warning(message)
        return self.fallback.run([pub]).result()[0]


def _support(terms: list[dict[str, float]]) -> set[int]:
    """Qubits on which some Pauli label of ``terms`` is not the identity (Qiskit order: qubit 0 last)."""
    return {pos for t in terms for label in t for pos, c in enumerate(reversed(label)) if c != "I"}

