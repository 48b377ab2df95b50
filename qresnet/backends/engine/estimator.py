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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from qiskit.primitives import BaseEstimatorV2, DataBin, PrimitiveResult, PubResult
from qiskit.primitives.containers import EstimatorPubLike, ObservablesArray
from qiskit.primitives.containers.estimator_pub import EstimatorPub

from qresnet.backends.engine.core import EngineCore, Terms, route_values, support_of
from qresnet.backends.engine.differentiator import EngineDifferentiator
from qresnet.backends.engine.route import Route, RouteKind
from qresnet.backends.engine.sampling import sample_expectations
from qresnet.backends.primitives import CompletedJob
from qresnet.errors import ConfigError, EngineUnsupportedError

log = logging.getLogger(__name__)

MAX_SHOTS = 1 << 40  # a precision asking for more shots than this is a request for exact values in disguise
PAULI_CHARACTERS = frozenset("IXYZ")


class EngineEstimator(BaseEstimatorV2):
    """Exact (or shot-sampled) expectation values of whole PUBs at once, noiseless or with an Aer noise model.

    ``noise_model``: an Aer ``NoiseModel``; its quantum errors attach to each instruction and
    qubit set as in Aer. ``readout``: per physical qubit (P(1|0), P(0|1)), folded into the
    observables for exact values and applied to outcome probabilities for shots. Circuits
    wider than the engine's memory bound (``MAX_NOISY_QUBITS`` with noise, ``MAX_IDEAL_QUBITS``
    without, in :mod:`qresnet.backends.engine.route`) go to ``fallback`` (an Aer estimator), with a
    warning. This class is the primitive only: exact values and derivatives without PUBs are its
    ``differentiator`` (an :class:`~qresnet.backends.engine.EngineDifferentiator` on the same
    compiled programs, caches and route choice).

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
        self.shots = shots
        self.seed = seed
        self.exact = bool(exact)
        self.fallback = fallback
        self.core = EngineCore(noise_model, readout)  # programs, observables and routes, shared with the differentiator
        self._warned_precision = False

    @property
    def noise_model(self):
        return self.core.noise_model

    @property
    def readout(self) -> dict[int, tuple[float, float]]:
        return self.core.readout

    @property
    def rows_evaluated(self) -> int:
        """Parameter sets x observables evaluated, by ``run`` and by the differentiator, for cost reports."""
        return self.core.rows_evaluated

    @cached_property
    def differentiator(self) -> EngineDifferentiator:
        """Exact values and derivatives without PUBs, on this estimator's programs and caches
        (:class:`~qresnet.backends.primitives.Differentiable`)."""
        return EngineDifferentiator(self)

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

    def _run_pub(self, pub: EstimatorPub, position: int) -> PubResult:
        layout = _layout(pub)
        route = self.core.route(pub.circuit, support_of(layout.terms), layout.values)
        if route.kind is RouteKind.TOO_WIDE:
            return self._fall_back(pub, route)
        return self._finish(pub, layout, route, self._shots_for(pub.precision), position)

    def _finish(self, pub: EstimatorPub, layout: _PubLayout, route: Route, shots: int | None, position: int
                ) -> PubResult:
        """Exact values of the distinct observables broadcast to the PUB's shape, or an independent sample per entry."""
        def exact(terms: list[Terms]) -> np.ndarray:
            return route_values(route, terms, layout.values)

        if shots is None:
            table = exact(self.core.exact_terms(layout.terms))
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
        self.core.rows_evaluated += int(np.prod(pub.shape, dtype=int))
        if pub.precision is not None:
            target = pub.precision
        else:
            target = 0.0 if shots is None else 1 / math.sqrt(shots)
        metadata = {"target_precision": float(target), "circuit_metadata": pub.circuit.metadata, "shots": shots,
                    "simulator": "qresnet-engine", "route": route.kind.value, "num_qubits": route.width}
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

    def _fall_back(self, pub: EstimatorPub, route: Route) -> PubResult:
        width, bound, noisy = route.width, route.bound, self.core.noisy
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


