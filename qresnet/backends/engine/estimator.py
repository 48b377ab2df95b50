"""The engine as an ``EstimatorV2``: a PUB's whole broadcast of parameter values as array operations.

It takes any circuit an estimator takes without measurements or control flow: sub-circuits
and library blocks are opened once per circuit (cached), identity observables on circuits
that touch no qubit give their coefficient. Its results carry the metadata Qiskit's
estimators give (``target_precision``, ``circuit_metadata``) and the engine's own (``shots``,
``route``, ``num_qubits``).

Precision keeps its ``EstimatorV2`` meaning: a PUB's precision p > 0 asks for an estimate
with standard error p, which the engine meets with ceil(1/p^2) real shots; precision 0 is
exact. ``EngineEstimator(exact=True)`` returns exact values whatever precision arrives (they
meet any target), which is what a caller with a fixed default precision, such as
qiskit-machine-learning's ``EstimatorQNN`` (1/64), needs for exact values.

>>> import math
>>> from qiskit import QuantumCircuit
>>> from qiskit.circuit.library import real_amplitudes
>>> from qiskit.quantum_info import SparsePauliOp
>>> qc = QuantumCircuit(2); _ = qc.append(real_amplitudes(2, reps=1), [0, 1])  # a parameterised sub-circuit
>>> pub = (qc, SparsePauliOp("ZZ"), [0.0, 0.0, math.pi, 0.0])  # ry(pi) on qubit 0 after the cx: <ZZ> = -1
>>> result = EngineEstimator(exact=True).run([pub], precision=1 / 64).result()[0]
>>> float(result.data.evs), result.metadata["shots"], result.metadata["target_precision"]
(-1.0, None, 0.015625)
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.primitives import BaseEstimatorV2, DataBin, PrimitiveResult, PubResult
from qiskit.primitives.containers import EstimatorPubLike, ObservablesArray
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.quantum_info import SparsePauliOp

from qresnet.backends.engine.adjoint import statevector_value_gradients, statevector_values
from qresnet.backends.engine.encoded import (
    EncodedProgram,
    compile_encoded,
    encoded_gradients,
    encoded_value_gradients,
    encoded_values,
    opens_with_encoding,
)
from qresnet.backends.engine.gradient import heisenberg_gradients
from qresnet.backends.engine.program import Program, compile_circuit
from qresnet.backends.engine.pullback import Pullback, heisenberg_pullback, program_pullback, statevector_pullback
from qresnet.backends.engine.sampling import sample_expectations
from qresnet.backends.engine.simulate import PER_GROUP_LOOP, heisenberg, observable_vectors, statevector
from qresnet.backends.primitives import CompletedJob, group_rows
from qresnet.backends.readout import fold_readout
from qresnet.errors import ConfigError, EngineUnsupportedError

log = logging.getLogger(__name__)

# Memory bounds: the Heisenberg route holds 4^n doubles per observable and body setting
# (n = 10: 8 MiB each), the statevector route 2^n complex numbers per row (n = 20: 16 MiB each).
MAX_NOISY_QUBITS = 10
MAX_IDEAL_QUBITS = 20
HEISENBERG_IDEAL_QUBITS = 6  # ideal circuits up to this width take the Heisenberg route too
MAX_PULLBACK_BYTES = 1 << 30  # reverse mode keeps one image per operation; past this, forward mode (chunked)


T = TypeVar("T")
CACHED_CIRCUITS = 256  # compiled entries kept, least recently used dropped: some clients send a new circuit per run
MAX_SHOTS = 1 << 40  # a precision asking for more shots than this is a request for exact values in disguise
PAULI_CHARACTERS = frozenset("IXYZ")


class EngineEstimator(BaseEstimatorV2):
    """Exact (or shot-sampled) expectation values of whole PUBs at once, noiseless or with an Aer noise model.

    ``noise_model``: an Aer ``NoiseModel``; its quantum errors attach to each instruction and
    qubit set as in Aer. ``readout``: per physical qubit (P(1|0), P(0|1)), folded into the
    observables for exact values and applied to outcome probabilities for shots. Circuits
    wider than the engine's memory bound (``MAX_NOISY_QUBITS`` with noise, ``MAX_IDEAL_QUBITS``
    without) go to ``fallback`` (an Aer estimator), with a warning.

    Precision, as ``EstimatorV2`` defines it: a PUB's precision p > 0 asks for standard error
    p, met with ceil(1/p^2) shots per commuting group of the observable; precision 0 is exact.
    A PUB without one takes ``shots`` (None: exact). ``exact=True`` gives exact values whatever
    precision a PUB asks for (exact values meet any target; ``target_precision`` still reports
    the request): use it under a caller that always sends a precision, such as
    qiskit-machine-learning's ``EstimatorQNN`` (1/64 unless ``default_precision=0``). An
    estimator made with neither ``shots`` nor ``exact`` warns, once, the first time a precision
    makes it sample.

    Seeding. Every sampled entry of a PUB is an independent estimate (an observable repeated
    in a PUB included). ``seed=None``: fresh randomness every run. An integer seed: a sampled
    PUB's values depend only on the seed, its position in the run and its contents (circuit
    shape, observables, parameter values, shots), so running the same PUBs again gives the
    same values whatever ran before, as Aer's ``seed_simulator`` does, while PUBs that differ
    in any value (the next training step, a shifted parameter) draw independently. A numpy
    ``Generator``: one stream across runs, as ``StatevectorEstimator(seed=Generator)``.

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
        seed: int | np.random.Generator | None = None,
        fallback: BaseEstimatorV2 | None = None,
        *,
        exact: bool = False,
    ):
        if shots is not None and not (_is_int(shots) and shots >= 1):
            raise ConfigError(f"shots={shots!r} must be a positive integer, or None for exact values")
        if exact and shots is not None:
            raise ConfigError(f"exact=True with shots={shots}: ask for exact values or for shots, not both")
        if seed is not None and not isinstance(seed, np.random.Generator) and not (_is_int(seed) and seed >= 0):
            raise ConfigError(f"seed={seed!r} must be a non-negative integer, a numpy Generator or None")
        self.noise_model = noise_model
        self.readout = dict(readout or {})
        self.shots = shots
        self.seed = seed
        self.exact = bool(exact)
        self.fallback = fallback
        self._cache = _CircuitCache(CACHED_CIRCUITS)
        self._folded: dict[tuple, dict[str, float]] = {}
        self._observable_terms: dict[int, tuple[Any, dict[str, float]]] = {}
        self._column_lists: dict[int, tuple] = {}  # id(parameter list) -> (list, circuit, its contents, columns)
        self._warned_precision = False
        self.rows_evaluated = 0  # parameter sets x observables, for cost reports

    def run(self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None) -> CompletedJob:
        results = []
        for position, pub in enumerate(pubs):
            results.append(self._run_pub(EstimatorPub.coerce(pub, precision), position))
        return CompletedJob(PrimitiveResult(results, metadata={"version": 2, "simulator": "qresnet-engine"}), "qresnet-engine")

    def _shots_for(self, precision: float | None) -> int | None:
        """The shots a PUB of this precision takes (None: exact): the one place precision is read."""
        if self.exact or precision == 0:
            return None
        if precision is None:
            return self.shots
        shots = math.ceil(1.0 / precision**2)
        if shots > MAX_SHOTS:
            raise ConfigError(f"precision={precision:g} asks for {shots:.3g} shots; pass precision=0 for exact values")
        if self.shots is None and not self._warned_precision:
            self._warned_precision = True
            warnings.warn(
                f"EngineEstimator: a PUB asks for precision {precision:g}, so it samples ceil(1/precision^2) = "
                f"{shots} shots instead of giving exact values (the EstimatorV2 meaning of precision). For exact "
                f"values pass precision=0 (qiskit-machine-learning: EstimatorQNN(..., default_precision=0)) or create "
                f"EngineEstimator(exact=True); create it with shots=N to sample on purpose. Warned once per estimator.",
                UserWarning, stacklevel=4)
        return shots

    def _program(self, circuit: QuantumCircuit, extra: tuple[int, ...]) -> Program:
        return self._cache.get(circuit, ("program", extra), lambda: compile_circuit(circuit, self.noise_model, extra))

    def _touched(self, circuit: QuantumCircuit) -> set[int]:
        return self._cache.get(circuit, ("touched",), lambda: {
            circuit.find_bit(q).index for inst in circuit.data for q in inst.qubits if inst.operation.name != "barrier"})

    def _fold(self, terms: dict[str, float]) -> dict[str, float]:
        key = tuple(sorted(terms.items()))
        if key not in self._folded:
            self._folded[key] = fold_readout(terms, self.readout)
        return self._folded[key]

    def _run_pub(self, pub: EstimatorPub, position: int) -> PubResult:
        layout = _layout(pub)
        found = self._route(pub.circuit, layout.values, _support(layout.terms))
        if found is None:
            touched = self._touched(pub.circuit) | _support(layout.terms)
            return self._fall_back(pub, len(touched), self.noise_model is not None)
        exact, route, width = found
        return self._finish(pub, layout, exact, self._shots_for(pub.precision), position, route, width)

    def _route(self, circuit: QuantumCircuit, values: np.ndarray, support: set[int]
               ) -> tuple[Callable[[list[dict[str, float]]], np.ndarray], str, int] | None:
        """(exact values (K, R) of {label: coeff} observables at ``values``, the route's name, its width), or
        None when the circuit is too wide for the engine (a fallback's job)."""
        if self._encoded_circuit(circuit):
            wide = self._encoded_statevector(circuit, support)
            if wide is not None:
                return (lambda terms: statevector_values(wide, terms, values)), "state-preparation-statevector", \
                    wide.program.num_qubits
            encoded = self._encoded(circuit, support)
            return (lambda terms: encoded_values(encoded, terms, values)), "state-preparation", encoded.program.num_qubits
        touched = self._touched(circuit)
        noisy = self.noise_model is not None
        if len(touched | support) > (MAX_NOISY_QUBITS if noisy else MAX_IDEAL_QUBITS):
            return None
        program = self._program(circuit, tuple(sorted(support - touched)))
        grouping = group_rows(values[:, program.body_columns])
        if not noisy and (program.num_qubits > HEISENBERG_IDEAL_QUBITS or len(grouping[0]) > PER_GROUP_LOOP):
            # ideal with many body settings: a statevector per row is cheaper
            return (lambda terms: statevector(program, terms, values)), "statevector", program.num_qubits
        return ((lambda terms: heisenberg(program, observable_vectors(terms, program), values, grouping)), "heisenberg",
                program.num_qubits)

    def exact_values(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp], values: np.ndarray) -> np.ndarray:
        """(R, K) exact values, as :meth:`run` computes them at precision 0 (noise model and readout included),
        without a PUB: for callers that evaluate the same circuit every step (a QNN's forward pass)."""
        terms = self._terms(observables)
        values = _parameter_rows(circuit, values)
        found = self._route(circuit, values, _support(terms))
        if found is None:
            raise EngineUnsupportedError(f"circuit {circuit.name!r} is too wide for the engine; run it as a PUB "
                                         "(the fallback estimator takes it)")
        self.rows_evaluated += len(values) * len(terms)
        return found[0](terms).T

    def _finish(self, pub: EstimatorPub, layout: _PubLayout, exact: Callable[[list[dict[str, float]]], np.ndarray],
                shots: int | None, position: int, route: str, width: int) -> PubResult:
        """Exact values of the distinct observables broadcast to the PUB's shape, or an independent sample per entry."""
        if shots is None:
            table = exact([self._fold(t) for t in layout.terms] if self.readout else list(layout.terms))
            evs = table[layout.obs_index, layout.row_index]
            stds = np.zeros_like(evs)
        else:
            rng = self._sampling_rng(pub, layout, shots, position)
            evs, stds = np.empty(pub.shape), np.empty(pub.shape)
            flat_obs, flat_rows = layout.obs_index.ravel(), layout.row_index.ravel()
            for u, terms in enumerate(layout.terms):
                entries = np.flatnonzero(flat_obs == u)
                mean, std = sample_expectations(terms, exact, shots, rng, self.readout, flat_rows[entries])
                evs.flat[entries], stds.flat[entries] = mean, std
        self.rows_evaluated += int(np.prod(pub.shape, dtype=int))
        if pub.precision is not None:
            target = pub.precision
        else:
            target = 0.0 if shots is None else 1 / math.sqrt(shots)
        metadata = {"target_precision": float(target), "circuit_metadata": pub.circuit.metadata, "shots": shots,
                    "simulator": "qresnet-engine", "route": route, "num_qubits": width}
        return PubResult(DataBin(evs=evs, stds=stds, shape=pub.shape), metadata=metadata)

    def _sampling_rng(self, pub: EstimatorPub, layout: _PubLayout, shots: int, position: int) -> np.random.Generator:
        """The generator a sampled PUB draws from (the seeding rule of the class docstring)."""
        if self.seed is None or isinstance(self.seed, np.random.Generator):
            return np.random.default_rng(self.seed)
        circuit = pub.circuit
        digest = hashlib.blake2b(digest_size=16)
        digest.update(repr((position, shots, circuit.num_qubits, len(circuit.data), [p.name for p in circuit.parameters],
                            pub.observables.shape, pub.shape, layout.keys)).encode())
        digest.update(np.ascontiguousarray(layout.values, dtype=float).tobytes())
        return np.random.default_rng([int(self.seed), int.from_bytes(digest.digest(), "little")])

    def _encoded_circuit(self, circuit: QuantumCircuit) -> bool:
        return self._cache.get(circuit, ("opens",), lambda: opens_with_encoding(circuit))

    def _encoded(self, circuit: QuantumCircuit, support: set[int]) -> EncodedProgram:
        """The compiled light cone of ``support`` behind the circuit's encoding (the Heisenberg route)."""
        key = ("encoded", tuple(sorted(support)))
        program = self._cache.get(circuit, key, lambda: compile_encoded(circuit, self.noise_model, support))
        width = program.program.num_qubits
        if width > MAX_NOISY_QUBITS:
            raise EngineUnsupportedError(f"the observables' light cone behind the amplitude encoding spans {width} qubits; the engine "
                             f"handles at most {MAX_NOISY_QUBITS} (use fewer ansatz repetitions or measured qubits)")
        return program

    def _encoded_statevector(self, circuit: QuantumCircuit, support: set[int]) -> EncodedProgram | None:
        """For ideal circuits whose light cone is wider than ``HEISENBERG_IDEAL_QUBITS`` (a head measuring many
        qubits), the whole register behind the encoding, for the statevector route; else None."""
        if self.noise_model is not None:
            return None
        key = ("encoded-cone-width", tuple(sorted(support)))
        width = self._cache.get(circuit, key, lambda: compile_encoded(circuit, None, support).program.num_qubits)
        if width <= HEISENBERG_IDEAL_QUBITS:
            return None
        touched = self._touched(circuit) | support
        if len(touched) > MAX_IDEAL_QUBITS:
            raise EngineUnsupportedError(f"the amplitude-encoded circuit touches {len(touched)} qubits; the engine's "
                                         f"statevector route takes at most {MAX_IDEAL_QUBITS}")
        return self._cache.get(circuit, ("encoded-statevector",), lambda: compile_encoded(circuit, None, touched))

    @property
    def gives_exact_values(self) -> bool:
        """Whether a PUB without a precision gets exact values (no shots): then exact derivatives are what
        parameter shift would give, and :meth:`value_and_gradients` may stand in for it."""
        return self.exact or self.shots is None

    def _terms(self, observables: Sequence[SparsePauliOp]) -> list[dict[str, float]]:
        """{Pauli label: coeff} per observable, readout folded in as :meth:`run` folds it for exact values.

        Kept per observable object (a training step sends the same ones every call), the object held
        so that its id is not reused while the entry lives."""
        out = []
        for o in observables:
            entry = self._observable_terms.get(id(o))
            if entry is None or entry[0] is not o:
                s = o.simplify()
                plain = dict(zip(s.paulis.to_labels(), s.coeffs.real))
                if len(self._observable_terms) >= CACHED_CIRCUITS:
                    self._observable_terms.clear()
                entry = self._observable_terms[id(o)] = (o, self._fold(plain) if self.readout else plain)
            out.append(entry[1])
        return out

    def value_and_gradients(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp], values: np.ndarray,
                            parameters: Sequence[Parameter] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(R, K) exact values and (R, K, P) exact derivatives by ``parameters`` (default: all of
        ``circuit.parameters``, in that order; ``values`` columns are always in that order).

        As :meth:`run` computes values at precision 0 (noise model and readout included), with one
        backward sweep per distinct setting of the circuit's body that carries the observables and
        their derivatives by the body's parameters; prefix parameters (the inputs) are differentiated
        analytically from each qubit's Bloch vector, and an amplitude encoding's features by the
        adjoint of the state preparation (:mod:`qresnet.backends.engine.gradient`).
        """
        terms = self._terms(observables)
        values = _parameter_rows(circuit, values)
        columns = self._columns(circuit, parameters)
        wanted = frozenset(columns)
        support = _support(terms)
        self.rows_evaluated += len(values) * len(terms)
        if self._encoded_circuit(circuit):
            wide = self._encoded_statevector(circuit, support)
            if wide is not None:
                out, grads = statevector_value_gradients(wide, terms, values, wanted)
            else:
                out, grads = encoded_value_gradients(self._encoded(circuit, support), terms, values, wanted)
        else:
            touched = self._touched(circuit)
            width = len(touched | support)
            if width > MAX_NOISY_QUBITS:
                raise EngineUnsupportedError(
                    f"circuit {circuit.name!r} touches {width} qubits; the engine's exact gradients take at most "
                    f"{MAX_NOISY_QUBITS} (its Heisenberg images hold 4^n numbers): use parameter shift")
            program = self._program(circuit, tuple(sorted(support - touched)))
            out, grads = heisenberg_gradients(program, observable_vectors(terms, program), values, wanted)
        return out.T, grads[:, :, columns].transpose(1, 0, 2)

    def pulls_back(self, circuit: QuantumCircuit, inputs: Sequence[Parameter] = ()) -> bool:
        """Whether :meth:`value_and_pullback` takes ``circuit`` with these per-row ``inputs``: an amplitude
        encoding's features, or parameters of the qubits' product-state prefixes (a filter's encoding)."""
        if self._encoded_circuit(circuit):
            return True
        if len(self._touched(circuit)) > MAX_NOISY_QUBITS:
            return False
        return not set(self._columns(circuit, inputs)) & set(self._program(circuit, ()).body_columns)

    def value_and_pullback(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp], values: np.ndarray,
                           inputs: Sequence[Parameter], weights: Sequence[Parameter]) -> tuple[np.ndarray, Pullback]:
        """(R, K) exact values, and the pullback g (R, K) -> (sum_k g_rk df_rk / d inputs per row (R, I), or None
        without inputs; sum_rk g_rk df_rk / d weights (W,)).

        ``inputs`` must be per-row parameters the engine can differentiate row by row (see :meth:`pulls_back`).
        Reverse mode (:mod:`qresnet.backends.engine.pullback`): one extra sweep whatever the number of
        weights, where :meth:`value_and_gradients` carries one tangent per weight. The route is
        :meth:`run`'s (noise model and readout included): a product-state program, the Heisenberg route on an
        encoding's light cone, or the statevector route for ideal encoded circuits whose cone is wider than
        ``HEISENBERG_IDEAL_QUBITS``.
        """
        terms = self._terms(observables)
        values = _parameter_rows(circuit, values)
        input_columns, weight_columns = self._columns(circuit, inputs), self._columns(circuit, weights)
        if set(input_columns) & set(weight_columns):
            raise ConfigError("value_and_pullback: a parameter cannot be both an input (per row) and a weight (summed)")
        if not self.pulls_back(circuit, inputs):
            raise EngineUnsupportedError("value_and_pullback differentiates inputs row by row only where they enter "
                                         "before any multi-qubit gate (or are an amplitude encoding's features)")
        support = _support(terms)
        self.rows_evaluated += len(values) * len(terms)
        if not self._encoded_circuit(circuit):
            program = self._program(circuit, tuple(sorted(support - self._touched(circuit))))
            out, pullback = program_pullback(program, observable_vectors(terms, program), values, input_columns,
                                             weight_columns)
            return out.T, pullback
        wide = self._encoded_statevector(circuit, support)
        ep, route = (wide, statevector_pullback) if wide is not None else (self._encoded(circuit, support), heisenberg_pullback)
        feature_at = {int(c): f for f, c in enumerate(ep.feature_columns)}
        if any(c not in feature_at for c in input_columns) or any(c in feature_at for c in weight_columns):
            raise EngineUnsupportedError("value_and_pullback of an encoded circuit takes its features as the inputs "
                                         "and parameters after the encoding as the weights")
        program_at = {int(c): j for j, c in enumerate(ep.body_columns)}
        kept = len(ep.program.body) * len(terms) * 4**ep.program.num_qubits * 8  # the images reverse mode keeps
        if route is heisenberg_pullback and kept > MAX_PULLBACK_BYTES:
            # a wide noisy cone (a 10-class noisy head): forward-mode tangents, chunked, instead of every image
            out, grads = encoded_value_gradients(ep, terms, values, frozenset(input_columns) | frozenset(weight_columns))

            def contracted(g: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
                g = np.asarray(g, dtype=float).reshape(len(values), len(terms))
                d_inputs = np.einsum("rk,krp->rp", g, grads[:, :, input_columns]) if input_columns else None
                return d_inputs, np.einsum("rk,krp->p", g, grads[:, :, weight_columns])

            return out.T, contracted
        out, pull = route(ep, terms, values, bool(input_columns))
        features = [feature_at[c] for c in input_columns]

        def pullback(g: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
            d_features, d_body = pull(g)
            d_weights = np.array([d_body[program_at[c]] if c in program_at else 0.0 for c in weight_columns])
            return (None if d_features is None else d_features[:, features]), d_weights

        return out.T, pullback

    def _columns(self, circuit: QuantumCircuit, parameters: Sequence[Parameter] | None) -> list[int]:
        """The columns of ``parameters`` in ``circuit.parameters`` (all of them for None).

        Kept per sequence object (a QNN sends the same lists every step; a head has hundreds of features,
        and hashing Parameters costs more than the step's arithmetic), the object held so that its id is not
        reused while the entry lives."""
        if parameters is None:
            return list(range(circuit.num_parameters))
        entry = self._column_lists.get(id(parameters))
        if (entry is None or entry[0] is not parameters or entry[1] is not circuit or len(entry[2]) != len(parameters)
                or any(a is not b for a, b in zip(entry[2], parameters))):  # the same list, edited since
            if len(self._column_lists) >= CACHED_CIRCUITS:
                self._column_lists.clear()
            entry = self._column_lists[id(parameters)] = (parameters, circuit, tuple(parameters),
                                                          self._lookup(circuit, parameters))
        return entry[3]

    def _lookup(self, circuit: QuantumCircuit, parameters: Sequence[Parameter]) -> list[int]:
        index = self._cache.get(circuit, ("index",), lambda: {p: j for j, p in enumerate(circuit.parameters)})
        missing = [p.name for p in parameters if p not in index]
        if missing:
            raise ConfigError(f"parameters {missing} are not parameters of circuit {circuit.name!r}")
        return [index[p] for p in parameters]

    def encoding_gradients(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp],
                           values: np.ndarray) -> np.ndarray:
        """(R, K, F): exact derivatives of each observable's value by the features of the circuit's encoding.

        The noise model and the readout errors are included as in :meth:`run`; with shots, the
        values are sampled but these derivatives stay exact (an adjoint pass has no shot noise).
        """
        terms = self._terms(observables)
        support = _support(terms)
        values = np.atleast_2d(np.asarray(values, dtype=float))
        if not self._encoded_circuit(circuit):
            raise EngineUnsupportedError("encoding_gradients needs a circuit that opens with an amplitude_encoding")
        self.rows_evaluated += len(values) * len(terms)
        wide = self._encoded_statevector(circuit, support)
        if wide is not None:
            features = frozenset(wide.feature_columns.tolist())
            return statevector_value_gradients(wide, terms, values, features)[1][:, :, wide.feature_columns].transpose(1, 0, 2)
        return encoded_gradients(self._encoded(circuit, support), terms, values)

    def _fall_back(self, pub: EstimatorPub, width: int, noisy: bool) -> PubResult:
        bound = MAX_NOISY_QUBITS if noisy else MAX_IDEAL_QUBITS
        if self.fallback is None:
            raise EngineUnsupportedError(f"circuit touches {width} qubits; the engine simulates at most {bound} "
                             f"({'noisy' if noisy else 'ideal'}) and has no fallback estimator")
        message = (f"circuit touches {width} qubits, over the engine's bound of {bound} "
                   f"({'density' if noisy else 'statevector'} memory); evaluating it with Aer instead")
        warnings.warn(message, stacklevel=4)
        log.warning(message)
        if self.exact:  # exact means exact on the fallback too, whatever precision the PUB asks for
            pub = EstimatorPub(pub.circuit, pub.observables, pub.parameter_values, 0.0, validate=False)
        return self.fallback.run([pub]).result()[0]


@dataclass(frozen=True)
class _PubLayout:
    """A PUB laid out for evaluation: its distinct observables, its parameter rows, and the source of each entry."""

    terms: tuple[dict[str, float], ...]  # distinct observables {Pauli label: coeff}, in order of first appearance
    values: np.ndarray  # (R, P) parameter rows, columns in circuit.parameters order
    obs_index: np.ndarray  # (PUB shape): the distinct observable of each entry
    row_index: np.ndarray  # (PUB shape): the parameter row of each entry
    keys: tuple[tuple, ...]  # each observable of the PUB as sorted (label, coeff) pairs


def _layout(pub: EstimatorPub) -> _PubLayout:
    """Lay ``pub`` out, checking that the engine can take its observables (the one place it does)."""
    obs: ObservablesArray = pub.observables
    flat = [obs[i] for i in np.ndindex(obs.shape)] if obs.shape else [obs[()]]
    keys = tuple(tuple(sorted(o.items())) for o in flat)
    first: dict[tuple, int] = {}
    terms: list[dict[str, float]] = []
    for position, (o, key) in enumerate(zip(flat, keys)):
        if key not in first:
            first[key] = len(terms)
            terms.append(o)
            _check_paulis(o, np.unravel_index(position, obs.shape) if obs.shape else ())
    obs_index = np.array([first[k] for k in keys]).reshape(obs.shape)
    values = pub.parameter_values.as_array(pub.circuit.parameters)
    param_shape = values.shape[:-1]
    values = values.reshape(int(np.prod(param_shape, dtype=int)), pub.circuit.num_parameters)
    row_index = np.arange(len(values)).reshape(param_shape)
    obs_b, row_b = np.broadcast_arrays(obs_index, row_index)
    return _PubLayout(tuple(terms), values, obs_b, row_b, keys)


def _check_paulis(terms: dict[str, float], where: tuple) -> None:
    for label in terms:
        other = sorted(set(label) - PAULI_CHARACTERS)
        if other:
            at = f" at index {tuple(int(i) for i in where)}" if where else ""
            raise EngineUnsupportedError(
                f"observable {terms}{at} has the term {label!r} with {other}: projectors or other non-Pauli terms; the "
                f"engine takes Pauli observables (labels of I, X, Y, Z: a SparsePauliOp, a Pauli, a Pauli label, or a "
                f"SparseObservable without projectors). Expand it first, e.g. SparseObservable(...).as_paulis()")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class _CircuitCache:
    """What the engine works out once per circuit object (and key), kept with the circuit itself.

    Keyed by identity: holding the circuit keeps its id from being reused while the entry lives.
    An entry is redone when the circuit's instruction or parameter count changed (a circuit
    extended in place after a run); an instruction replaced in place is not seen, so copy a
    circuit before editing it. At most ``size`` entries, least recently used dropped first.
    """

    def __init__(self, size: int):
        self._size = size
        self._entries: OrderedDict[tuple, tuple[QuantumCircuit, tuple[int, int], Any]] = OrderedDict()

    def get(self, circuit: QuantumCircuit, key: tuple, make: Callable[[], T]) -> T:
        full = (id(circuit),) + key
        stamp = (len(circuit.data), circuit.num_parameters)
        entry = self._entries.get(full)
        if entry is None or entry[0] is not circuit or entry[1] != stamp:
            entry = self._entries[full] = (circuit, stamp, make())
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        self._entries.move_to_end(full)
        return entry[2]


def _parameter_rows(circuit: QuantumCircuit, values: np.ndarray) -> np.ndarray:
    """``values`` as (R, P) float rows, checked against the circuit's parameter count."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    if values.shape[1] != circuit.num_parameters:
        raise ConfigError(f"values has {values.shape[1]} columns; the circuit has {circuit.num_parameters} parameters")
    return values


def _support(terms: list[dict[str, float]]) -> set[int]:
    """Qubits on which some Pauli label of ``terms`` is not the identity (Qiskit order: qubit 0 last)."""
    return {pos for t in terms for label in t for pos, c in enumerate(reversed(label)) if c != "I"}

