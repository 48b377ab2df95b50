"""What the engine's primitive and its differentiator share: compiled programs, observables, and the route choice.

One :class:`EngineCore` belongs to each :class:`~qresnet.backends.engine.EngineEstimator`; its
:class:`~qresnet.backends.engine.EngineDifferentiator` works on the same core, so a circuit is compiled
once whichever of the two asks first, and both count the rows they evaluate in one place.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp

from qresnet.backends.engine.adjoint import statevector_values
from qresnet.backends.engine.encoded import compile_encoded, encoded_values, opens_with_encoding
from qresnet.backends.engine.program import Program, compile_circuit
from qresnet.backends.engine.route import (
    HEISENBERG_IDEAL_QUBITS,
    MAX_IDEAL_QUBITS,
    MAX_NOISY_QUBITS,
    Route,
    RouteKind,
)
from qresnet.backends.engine.simulate import PER_GROUP_LOOP, heisenberg, observable_vectors, statevector
from qresnet.backends.primitives import group_rows
from qresnet.backends.readout import fold_readout
from qresnet.errors import ConfigError, EngineUnsupportedError

T = TypeVar("T")
CACHED_ENTRIES = 256  # per cache, least recently used dropped: some clients send a new circuit per run
Terms = dict[str, float]  # an observable as {Pauli label: coefficient}


class EngineCore:
    """The noise model and readout errors, the caches of what is worked out once, the one route choice, and
    ``rows_evaluated`` (parameter sets x observables, for cost reports).

    Caches and their keys:

    - per circuit (:class:`CircuitCache`): the circuit object, held and checked on every hit together with
      its instruction and parameter counts, plus a key per kind of entry (``("program", extra qubits)``,
      ``("encoded", support)``, ``("columns", id(parameter list))``, ...);
    - folded observables: the observable's content (its sorted (label, coefficient) pairs);
    - observable terms: a ``SparsePauliOp``'s content (Pauli bits, phases and coefficients, as bytes).
    """

    def __init__(self, noise_model=None, readout: Mapping[int, tuple[float, float]] | None = None):
        self.noise_model = noise_model
        self.readout = dict(readout or {})
        self.rows_evaluated = 0
        self._circuits = CircuitCache(CACHED_ENTRIES)
        self._folded: dict[tuple, Terms] = {}
        self._observable_terms: dict[tuple, Terms] = {}

    @property
    def noisy(self) -> bool:
        return self.noise_model is not None

    def route(self, circuit: QuantumCircuit, support: set[int], rows: np.ndarray | None = None) -> Route:
        """The route for ``circuit`` and observables on qubits ``support``: the engine's one route choice.

        ``rows``: the parameter rows whose values are wanted; for values, an ideal product-state circuit takes
        the statevector route when it is wide or its rows have many body settings. None: derivatives are
        wanted, which product-state programs get on the Heisenberg route only (so within its bound, noisy or
        not). An encoded circuit whose light cone is over its bound is refused here (no fallback runs it)."""
        if self.encoded_circuit(circuit):
            return self._encoded_route(circuit, support)
        touched = self.touched(circuit)
        width = len(touched | support)
        bound = MAX_IDEAL_QUBITS if rows is not None and not self.noisy else MAX_NOISY_QUBITS
        if width > bound:
            return Route(RouteKind.TOO_WIDE, width, bound)
        program = self.program(circuit, tuple(sorted(support - touched)))
        if rows is None:
            return Route(RouteKind.HEISENBERG, program.num_qubits, bound, program=program)
        grouping = group_rows(rows[:, program.body_columns])
        if not self.noisy and (program.num_qubits > HEISENBERG_IDEAL_QUBITS or len(grouping[0]) > PER_GROUP_LOOP):
            return Route(RouteKind.STATEVECTOR, program.num_qubits, bound, program=program)  # cheaper per row
        return Route(RouteKind.HEISENBERG, program.num_qubits, bound, program=program, grouping=grouping)

    def _encoded_route(self, circuit: QuantumCircuit, support: set[int]) -> Route:
        """The light cone of ``support`` behind the encoding (Heisenberg), or, ideal with a cone wider than
        ``HEISENBERG_IDEAL_QUBITS`` (a head measuring many qubits), the whole register (statevector)."""
        cone = self._circuits.get(circuit, ("encoded", tuple(sorted(support))),
                                  lambda: compile_encoded(circuit, self.noise_model, support))
        width = cone.program.num_qubits
        if not self.noisy and width > HEISENBERG_IDEAL_QUBITS:
            touched = self.touched(circuit) | support
            if len(touched) > MAX_IDEAL_QUBITS:
                raise EngineUnsupportedError(f"the amplitude-encoded circuit touches {len(touched)} qubits; the "
                                             f"engine's statevector route takes at most {MAX_IDEAL_QUBITS}")
            whole = self._circuits.get(circuit, ("encoded-statevector", tuple(sorted(touched))),
                                       lambda: compile_encoded(circuit, None, touched))
            return Route(RouteKind.ENCODED_STATEVECTOR, whole.program.num_qubits, MAX_IDEAL_QUBITS, encoded=whole)
        if width > MAX_NOISY_QUBITS:
            raise EngineUnsupportedError(f"the observables' light cone behind the amplitude encoding spans {width} "
                                         f"qubits; the engine handles at most {MAX_NOISY_QUBITS} (use fewer ansatz "
                                         "repetitions or measured qubits)")
        return Route(RouteKind.ENCODED_CONE, width, MAX_NOISY_QUBITS, encoded=cone)

    def program(self, circuit: QuantumCircuit, extra: tuple[int, ...]) -> Program:
        """The compiled product-state program of ``circuit``, with the idle qubits ``extra`` added."""
        return self._circuits.get(circuit, ("program", extra), lambda: compile_circuit(circuit, self.noise_model, extra))

    def touched(self, circuit: QuantumCircuit) -> set[int]:
        return self._circuits.get(circuit, ("touched",), lambda: {
            circuit.find_bit(q).index for inst in circuit.data for q in inst.qubits if inst.operation.name != "barrier"})

    def encoded_circuit(self, circuit: QuantumCircuit) -> bool:
        """Whether ``circuit`` opens with an amplitude encoding (then it takes an encoded route)."""
        return self._circuits.get(circuit, ("opens",), lambda: opens_with_encoding(circuit))

    def fold(self, terms: Terms) -> Terms:
        """``terms`` with the readout errors folded in (the exact readout-inclusive observable)."""
        key = tuple(sorted(terms.items()))
        if key not in self._folded:
            if len(self._folded) >= CACHED_ENTRIES:
                self._folded.clear()
            self._folded[key] = fold_readout(terms, self.readout)
        return self._folded[key]

    def exact_terms(self, terms: Sequence[Terms]) -> list[Terms]:
        """The observables whose exact values ``run`` gives for ``terms``: readout folded in where there is some."""
        return [self.fold(t) for t in terms] if self.readout else list(terms)

    def terms(self, observables: Sequence[SparsePauliOp]) -> list[Terms]:
        """{Pauli label: coeff} per observable, readout folded in as :meth:`exact_terms` folds it.

        Kept per observable content (a training step sends the same observables every call); an observable
        with symbolic coefficients is converted every time."""
        out = []
        for o in observables:
            paulis = o.paulis
            key = None if o.coeffs.dtype == object else (
                paulis.z.shape, paulis.z.tobytes(), paulis.x.tobytes(), paulis.phase.tobytes(), o.coeffs.tobytes())
            found = self._observable_terms.get(key) if key is not None else None
            if found is None:
                s = o.simplify()
                found = self.exact_terms([dict(zip(s.paulis.to_labels(), s.coeffs.real))])[0]
                if key is not None:
                    if len(self._observable_terms) >= CACHED_ENTRIES:
                        self._observable_terms.clear()
                    self._observable_terms[key] = found
            out.append(found)
        return out

    def columns(self, circuit: QuantumCircuit, parameters: Sequence[Parameter] | None) -> list[int]:
        """The columns of ``parameters`` in ``circuit.parameters`` (all of them for None).

        Kept per circuit and parameter list object (a QNN sends the same lists every step; a head has hundreds
        of features, and hashing Parameters costs more than the step's arithmetic): the entry holds the list and
        its contents, and is redone when the list is another or was edited since."""
        if parameters is None:
            return list(range(circuit.num_parameters))

        def make() -> _Columns:
            index = self._circuits.get(circuit, ("index",), lambda: {p: j for j, p in enumerate(circuit.parameters)})
            missing = [p.name for p in parameters if p not in index]
            if missing:
                raise ConfigError(f"parameters {missing} are not parameters of circuit {circuit.name!r}")
            return _Columns(parameters, tuple(parameters), [index[p] for p in parameters])

        return self._circuits.get(circuit, ("columns", id(parameters)), make, lambda e: e.holds(parameters)).columns


def route_values(route: Route, terms: list[Terms], rows: np.ndarray) -> np.ndarray:
    """(K, R) exact values of ``terms`` at ``rows`` on ``route`` (any route but ``TOO_WIDE``)."""
    kind = route.kind
    if kind is RouteKind.ENCODED_STATEVECTOR:
        return statevector_values(route.encoded, terms, rows)
    if kind is RouteKind.ENCODED_CONE:
        return encoded_values(route.encoded, terms, rows)
    if kind is RouteKind.STATEVECTOR:
        return statevector(route.program, terms, rows)
    if kind is RouteKind.HEISENBERG:
        return heisenberg(route.program, observable_vectors(terms, route.program), rows, route.grouping)
    raise EngineUnsupportedError(f"route {kind.value!r} has no values in the engine")


@dataclass(frozen=True)
class _Columns:
    """A parameter list's columns, with the list object and its contents when they were looked up."""

    source: Sequence[Parameter]
    contents: tuple[Parameter, ...]
    columns: list[int]

    def holds(self, parameters: Sequence[Parameter]) -> bool:
        """Whether ``parameters`` is the same list, with the same Parameters, as when this entry was made."""
        return (self.source is parameters and len(self.contents) == len(parameters)
                and all(a is b for a, b in zip(self.contents, parameters)))


@dataclass(frozen=True)
class _CircuitEntry:
    circuit: QuantumCircuit  # held, so that its id is not reused while the entry lives
    stamp: tuple[int, int]  # (instructions, parameters) when the entry was made
    value: Any


class CircuitCache:
    """What the engine works out once per circuit object (and key), kept with the circuit itself.

    Keyed on (id(circuit), key): each entry holds its circuit, so the id is not reused while the entry
    lives, and a hit checks that it is the same object with the same instruction and parameter counts (a
    circuit extended in place after a run is worked out again; an instruction replaced in place is not seen,
    so copy a circuit before editing it). ``valid`` checks a hit further (an entry keyed on another object's
    id). At most ``size`` entries, least recently used dropped first.
    """

    def __init__(self, size: int):
        self._size = size
        self._entries: OrderedDict[tuple, _CircuitEntry] = OrderedDict()

    def get(self, circuit: QuantumCircuit, key: tuple, make: Callable[[], T],
            valid: Callable[[T], bool] | None = None) -> T:
        full = (id(circuit),) + key
        stamp = (len(circuit.data), circuit.num_parameters)
        entry = self._entries.get(full)
        if (entry is None or entry.circuit is not circuit or entry.stamp != stamp
                or (valid is not None and not valid(entry.value))):
            entry = self._entries[full] = _CircuitEntry(circuit, stamp, make())
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        self._entries.move_to_end(full)
        return entry.value


def parameter_rows(circuit: QuantumCircuit, values: np.ndarray) -> np.ndarray:
    """``values`` as (R, P) float rows, checked against the circuit's parameter count."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    if values.shape[1] != circuit.num_parameters:
        raise ConfigError(f"values has {values.shape[1]} columns; the circuit has {circuit.num_parameters} parameters")
    return values


def support_of(terms: Sequence[Terms]) -> set[int]:
    """Qubits on which some Pauli label of ``terms`` is not the identity (Qiskit order: qubit 0 last)."""
    return {pos for t in terms for label in t for pos, c in enumerate(reversed(label)) if c != "I"}
