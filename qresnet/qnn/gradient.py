"""Gradients for ``EstimatorQNN``: parameter shift in one PUB per circuit, and what every gradient here shares.

(The engine's exact gradient, :class:`~qresnet.qnn.EngineGradient`, is in :mod:`qresnet.qnn.engine_gradient`.)
:class:`BatchedParamShiftGradient` is parameter shift for any ``EstimatorV2`` (shots, ``local:``,
``ibm:``, Aer):

qiskit-machine-learning's ``ParamShiftEstimatorGradient`` sends one single-binding PUB per
row, observable and shift (docs/design.md section 6: about 130x slower than one broadcast PUB), and
its preprocessing hashes the circuit and binds every gate angle once per row. Here, per
distinct circuit:

- the *shift circuit* gives every parameterised Pauli rotation its own parameter g_i, built
  once; when every gate angle is affine in the circuit's parameters (as in transpiled
  templates: rz(pi + w)), g = theta @ A + c for all rows at once, and the chain rule back to
  theta is a matrix product with A;
- the distinct rows and their +-pi/2 shifts of the g needed form one array of parameter
  values, broadcast against the distinct observables: one PUB.

Circuits with other parameterised gates or non-affine angles take qiskit-machine-learning's
own preprocessing (translation to rotations, chain rule by binding) and the same one-PUB
evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import copy
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterExpression, ParameterVector
from qiskit.primitives import BaseEstimatorV2
from qiskit.primitives.containers.observables_array import ObservablesArray
from qiskit.providers import Options
from qiskit.quantum_info.operators.base_operator import BaseOperator
from qiskit_machine_learning.gradients import BaseEstimatorGradient, ParamShiftEstimatorGradient
from qiskit_machine_learning.gradients.base.estimator_gradient_result import EstimatorGradientResult

from qresnet.backends.primitives import CompletedJob, Differentiable, group_rows
from qresnet.circuits.rotation_check import PAULI_ROTATIONS  # exp(-i g/2 P) up to phase: +-pi/2 shifts hold
from qresnet.errors import CapabilityError

ENCODING = "amplitude_encoding"  # the head's exact state preparation: its features are not shifted
CACHED_CIRCUITS = 256  # per-circuit (and per-QNN) entries a gradient keeps


@dataclass(frozen=True)
class ShiftCircuit:
    """``circuit`` with one parameter per rotation; g = theta @ coeffs + const (g in ``circuit.parameters`` order).

    Features of an amplitude encoding are carried unchanged (identity columns, marked in ``carried``).
    """

    source: QuantumCircuit
    circuit: QuantumCircuit
    coeffs: np.ndarray  # (P, m)
    const: np.ndarray  # (m,)
    carried: np.ndarray | None = None  # (m,) bool
    features: tuple[int, ...] = ()  # source columns of the encoded features, in encoding order

    def __post_init__(self) -> None:
        if self.carried is None:
            object.__setattr__(self, "carried", np.zeros(self.coeffs.shape[1], dtype=bool))


def shift_circuit(circuit: QuantumCircuit) -> ShiftCircuit | None:
    """The unique-parameter circuit of ``circuit``, or None if some angle is not an affine Pauli-rotation angle."""
    index = {p: j for j, p in enumerate(circuit.parameters)}
    count = sum(1 for inst in circuit.data if inst.operation.name != ENCODING for a in inst.operation.params
                if isinstance(a, ParameterExpression) and a.parameters)
    g = ParameterVector("g", count)
    out = circuit.copy_empty_like()
    exprs: list[ParameterExpression] = []
    features: list[Parameter] = []
    for inst in circuit.data:
        op = inst.operation
        if op.name == ENCODING:
            out.append(inst)
            features.extend(op.params)
            continue
        angles = [a for a in op.params if isinstance(a, ParameterExpression) and a.parameters]
        if not angles:
            out.append(inst)
            continue
        if op.name not in PAULI_ROTATIONS or len(op.params) != 1:
            return None
        angle = angles[0]
        if any(isinstance(s, ParameterExpression) and s.parameters for s in (angle.gradient(p) for p in angle.parameters)):
            return None
        new = op.copy()
        new.params = [g[len(exprs)]]
        exprs.append(angle)
        out.append(new, inst.qubits, inst.clbits)
    order = {p: j for j, p in enumerate(out.parameters)}
    coeffs = np.zeros((len(index), len(order)))
    const = np.zeros(len(order))
    for i, angle in enumerate(exprs):
        column = order[g[i]]
        for p in angle.parameters:
            coeffs[index[p], column] = complex(angle.gradient(p)).real
        const[column] = complex(angle.bind({p: 0.0 for p in angle.parameters}).numeric()).real
    carried = np.zeros(len(order), dtype=bool)
    for feature in features:
        coeffs[index[feature], order[feature]] = 1.0
        carried[order[feature]] = True
    return ShiftCircuit(circuit, out, coeffs, const, carried, tuple(index[f] for f in features))


@dataclass(frozen=True)
class _ShiftEntry:
    """A circuit's shift circuit (None: not every angle is an affine Pauli-rotation angle), with the circuit."""

    source: QuantumCircuit  # held, so that its id is not reused while the entry lives
    stamp: tuple[int, int]  # (instructions, parameters) when the entry was made: a circuit extended since is redone
    shift: ShiftCircuit | None

    def holds(self, circuit: QuantumCircuit) -> bool:
        return self.source is circuit and self.stamp == _stamp(circuit)


def _stamp(circuit: QuantumCircuit) -> tuple[int, int]:
    return len(circuit.data), circuit.num_parameters


class ValidatedOnce(BaseEstimatorGradient):
    """A gradient evaluated when ``run`` is called, its argument checks once per distinct (circuit, observable,
    parameters) instead of once per row."""

    def run(self, circuits: Sequence[QuantumCircuit] | QuantumCircuit, observables: Sequence[BaseOperator] | BaseOperator,
            parameter_values: Sequence[Sequence[float]] | np.ndarray,
            parameters: Sequence[Sequence[Parameter] | None] | None = None, **options) -> CompletedJob:
        """As ``BaseEstimatorGradient.run``, computed at once: the base class starts a thread per call for a job
        its caller (``EstimatorQNN``) waits for at once, and starting it costs more than the engine's exact
        gradient of a filter."""
        if isinstance(circuits, QuantumCircuit):
            circuits = (circuits,)
        if isinstance(observables, BaseOperator):
            observables = (observables,)
        if parameters is None:
            parameters = [circuit.parameters for circuit in circuits]
        else:
            parameters = [p if p is not None else circuits[i].parameters for i, p in enumerate(parameters)]
        self._validate_arguments(circuits, observables, parameter_values, parameters)
        opts = copy(self._default_options)
        opts.update_options(**options)
        return CompletedJob(self._run(circuits, observables, parameter_values, parameters, **opts.__dict__),
                            "qresnet-gradient")

    def _validate_arguments(self, circuits, observables, parameter_values, parameters) -> None:
        """The stock checks, once per distinct (circuit, observable, parameters) instead of once per row."""
        if not (len(circuits) == len(observables) == len(parameter_values) == len(parameters)):
            raise ValueError(
                f"circuits ({len(circuits)}), observables ({len(observables)}), parameter_values "
                f"({len(parameter_values)}) and parameters ({len(parameters)}) must have the same length"
            )
        keys = parameter_keys(parameters)
        seen: dict[tuple, int] = {}  # by (id(circuit), id(observable), parameters), within this call
        for i, (c, o) in enumerate(zip(circuits, observables)):
            seen.setdefault((id(c), id(o), keys[i]), i)
        for i in seen.values():
            super()._validate_arguments([circuits[i]], [observables[i]], [parameter_values[i]], [parameters[i]])
        widths = {len(row) for row in parameter_values}
        if len({c.num_parameters for c in circuits}) == 1 and widths != {circuits[0].num_parameters}:
            raise ValueError(f"parameter_values rows have {sorted(widths)} values; the circuit has {circuits[0].num_parameters} parameters")

class BatchedParamShiftGradient(ValidatedOnce):
    """Parameter-shift gradients for an ``EstimatorV2``, one broadcast PUB per distinct circuit.

    >>> from qiskit import QuantumCircuit
    >>> from qiskit.circuit import Parameter
    >>> from qiskit.quantum_info import SparsePauliOp
    >>> from qiskit_aer.primitives import EstimatorV2
    >>> theta = Parameter("theta")
    >>> qc = QuantumCircuit(1); _ = qc.ry(2 * theta, 0)
    >>> grad = BatchedParamShiftGradient(EstimatorV2(options={"default_precision": 0.0}))
    >>> [round(float(g[0]), 6) for g in grad.run([qc, qc], [SparsePauliOp("Z")] * 2, [[0.3], [0.6]]).result().gradients]
    [-1.129285, -1.864078]
    """

    SUPPORTED_GATES = ParamShiftEstimatorGradient.SUPPORTED_GATES

    def __init__(self, estimator: BaseEstimatorV2, precision: float | None = None):
        super().__init__(estimator)
        self.precision = precision
        self.pubs_sent = 0  # PUBs sent: one per distinct circuit and call
        # keyed on id(circuit); the entry holds the circuit and its instruction and parameter counts, checked on a hit
        self._shift_circuits: dict[int, _ShiftEntry] = {}

    def _shift_circuit(self, circuit: QuantumCircuit) -> ShiftCircuit | None:
        entry = self._shift_circuits.get(id(circuit))
        if entry is None or not entry.holds(circuit):
            if len(self._shift_circuits) >= CACHED_CIRCUITS:  # a client sending a new circuit per call
                self._shift_circuits.clear()
            entry = self._shift_circuits[id(circuit)] = _ShiftEntry(circuit, _stamp(circuit), shift_circuit(circuit))
        return entry.shift

    def _run(
        self,
        circuits: Sequence[QuantumCircuit],
        observables: Sequence[BaseOperator],
        parameter_values: Sequence[Sequence[float]] | np.ndarray,
        parameters: Sequence[Sequence[Parameter]],
        **options,
    ) -> EstimatorGradientResult:
        shifts = {id(c): self._shift_circuit(c) for c in circuits}  # by id(circuit), within this call
        if any(sc is None for sc in shifts.values()):
            return self._run_translated(circuits, observables, parameter_values, parameters, **options)
        gradients = self._shift_gradients(circuits, shifts, observables, parameter_values, parameters)
        return EstimatorGradientResult(gradients=gradients, metadata=[{"parameters": p} for p in parameters],
                                       options=Options(**options))

    def _shift_gradients(self, circuits, shifts: dict[int, ShiftCircuit], observables, parameter_values, parameters):
        """One PUB per distinct circuit, sent in one job; the gradient of every entry."""
        groups: dict[int, list[int]] = {}  # entries by id(circuit), within this call
        for i, circuit in enumerate(circuits):
            groups.setdefault(id(circuit), []).append(i)
        planned = [self._plan(shifts[key], members, observables, parameter_values, parameters)
                   for key, members in groups.items()]
        self.pubs_sent += len(planned)
        results = self._estimator.run([pub for pub, _ in planned], precision=self.precision).result()
        gradients: list[np.ndarray] = [np.empty(0)] * len(circuits)
        for result, (_, finish) in zip(results, planned):
            finish(np.asarray(result.data.evs).reshape(-1, result.data.evs.shape[-1]), gradients)
        return gradients

    def _plan(self, sc: ShiftCircuit, members, observables, parameter_values, parameters):
        """One PUB for all entries of one circuit, and the function that turns its values into gradients."""
        index = {p: j for j, p in enumerate(sc.source.parameters)}
        values = np.asarray([parameter_values[i] for i in members], dtype=float)
        keys = parameter_keys([parameters[i] for i in members])
        columns_of = {key: tuple(index[p] for p in key) for key in set(keys)}
        subset_keys = [columns_of[key] for key in keys]
        subsets = sorted(set(subset_keys))
        # the g to shift: those any requested parameter enters; encoded features are differentiated exactly
        requested = sorted({c for s in subsets for c in s})
        wanted = np.flatnonzero(np.any(sc.coeffs[requested] != 0, axis=0) & ~sc.carried)
        rows, inverse = group_rows(values)
        base = rows @ sc.coeffs + sc.const  # (U, m)
        n = len(wanted)
        delta = np.zeros((2 * n, base.shape[1]))
        delta[np.arange(n), wanted] = np.pi / 2
        delta[n + np.arange(n), wanted] = -np.pi / 2
        shifted = (base[:, None, :] + delta[None]).reshape(-1, base.shape[1])
        obs_ids, obs_list = distinct_observables(observables, members)
        column = np.empty((len(obs_list), 1), dtype=object)  # filled by hand: numpy would iterate a SparsePauliOp
        for k, observable in enumerate(obs_list):
            column[k, 0] = observable

        def finish(evs: np.ndarray, gradients: list) -> None:
            pm = evs.reshape(len(obs_list), len(rows), 2, n)
            d_g = (pm[:, :, 0] - pm[:, :, 1]) / 2  # (K, U, n)
            d_theta = d_g @ sc.coeffs[:, wanted].T  # (K, U, P) by the chain rule
            if set(sc.features) & set(requested):
                d_theta[:, :, list(sc.features)] = self._encoding_gradients(sc.source, obs_list, rows).transpose(1, 0, 2)
            for position, i in enumerate(members):
                k = obs_ids[id(observables[i])]
                gradients[i] = d_theta[k, inverse[position]][list(subset_keys[position])]

        return (sc.circuit, ObservablesArray.coerce(column), shifted), finish

    def _encoding_gradients(self, circuit: QuantumCircuit, observables: list, rows: np.ndarray) -> np.ndarray:
        """(U, K, F) derivatives by the features of an amplitude encoding, from an estimator that has them."""
        if not isinstance(self._estimator, Differentiable):
            raise CapabilityError(
                f"{type(self._estimator).__name__} cannot differentiate an amplitude encoding by its features "
                "(no parameter-shift rule exists for them); use the engine (aer backends, --engine engine), "
                "or do not ask for the head's input gradient"
            )
        return self._estimator.differentiator.encoding_gradients(circuit, observables, rows)

    def _run_translated(self, circuits, observables, parameter_values, parameters, **options) -> EstimatorGradientResult:
        """qiskit-machine-learning's translation and chain rule, with the one-PUB-per-circuit evaluation."""
        g_circuits, g_values, g_parameters = self._preprocess(circuits, parameter_values, parameters, self.SUPPORTED_GATES)
        # the translated circuits already give every rotation its own parameter: the identity shift map
        identity = {id(c): ShiftCircuit(c, c, np.eye(c.num_parameters), np.zeros(c.num_parameters)) for c in g_circuits}
        gradients = self._shift_gradients(g_circuits, identity, observables, g_values, g_parameters)
        unique = EstimatorGradientResult(gradients=gradients, metadata=[{"parameters": p} for p in g_parameters],
                                         options=Options(**options))
        return self._postprocess(unique, circuits, parameter_values, parameters)


def parameter_keys(parameters: Sequence[Sequence[Parameter]]) -> list[tuple[Parameter, ...]]:
    """Each entry's parameters as a tuple, made once per distinct list object (``EstimatorQNN`` passes one
    list for every entry, or a new view per entry when it asks for all parameters)."""
    made: dict[int, tuple[Parameter, ...]] = {}  # by id(list), within this call (``parameters`` keeps them alive)
    out = []
    for p in parameters:
        key = made.get(id(p))
        if key is None:
            key = made[id(p)] = tuple(p)
        out.append(key)
    return out


def distinct_observables(observables: Sequence[BaseOperator], members: Sequence[int]) -> tuple[dict[int, int], list]:
    """(position by object id, the distinct objects in order of first appearance) of ``observables[members]``
    (ids are taken within this call, while ``observables`` keeps the objects alive)."""
    ids: dict[int, int] = {}
    distinct: list[BaseOperator] = []
    for i in members:
        if id(observables[i]) not in ids:
            ids[id(observables[i])] = len(distinct)
            distinct.append(observables[i])
    return ids, distinct
