"""Gradients for ``EstimatorQNN``: exact from the engine, or parameter shift in one PUB per circuit.

:class:`EngineGradient` asks an estimator with
:class:`~qresnet.backends.primitives.ExactGradients` (the engine in exact mode) for the exact
derivatives, one call per distinct circuit. :class:`BatchedParamShiftGradient` is parameter
shift for any ``EstimatorV2`` (shots, ``local:``, ``ibm:``, Aer):

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

from collections.abc import Callable, Sequence
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
from qiskit_machine_learning.neural_networks import EstimatorQNN

from qresnet.backends.primitives import CompletedJob, ExactGradients, ExactPullbacks, ExactStatePreparation, group_rows
from qresnet.circuits.rotation_check import PAULI_ROTATIONS  # exp(-i g/2 P) up to phase: +-pi/2 shifts hold
from qresnet.errors import CapabilityError, EngineUnsupportedError

ENCODING = "amplitude_encoding"  # the head's exact state preparation: its features are not shifted


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


class _ValidatedOnce(BaseEstimatorGradient):
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
        seen: dict[tuple, int] = {}
        for i, (c, o) in enumerate(zip(circuits, observables)):
            seen.setdefault((id(c), id(o), keys[i]), i)
        for i in seen.values():
            super()._validate_arguments([circuits[i]], [observables[i]], [parameter_values[i]], [parameters[i]])
        widths = {len(row) for row in parameter_values}
        if len({c.num_parameters for c in circuits}) == 1 and widths != {circuits[0].num_parameters}:
            raise ValueError(f"parameter_values rows have {sorted(widths)} values; the circuit has {circuits[0].num_parameters} parameters")

class BatchedParamShiftGradient(_ValidatedOnce):
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
        self._shift_circuits: dict[int, ShiftCircuit | None] = {}

    def _shift_circuit(self, circuit: QuantumCircuit) -> ShiftCircuit | None:
        cached = self._shift_circuits.get(id(circuit), False)
        if cached is False or (cached is not None and cached.source is not circuit):
            cached = shift_circuit(circuit)
            self._shift_circuits[id(circuit)] = cached
        return cached

    def _run(
        self,
        circuits: Sequence[QuantumCircuit],
        observables: Sequence[BaseOperator],
        parameter_values: Sequence[Sequence[float]] | np.ndarray,
        parameters: Sequence[Sequence[Parameter]],
        **options,
    ) -> EstimatorGradientResult:
        shifts = {id(c): self._shift_circuit(c) for c in circuits}
        if any(sc is None for sc in shifts.values()):
            return self._run_translated(circuits, observables, parameter_values, parameters, **options)
        gradients = self._shift_gradients(circuits, shifts, observables, parameter_values, parameters)
        return EstimatorGradientResult(gradients=gradients, metadata=[{"parameters": p} for p in parameters],
                                       options=Options(**options))

    def _shift_gradients(self, circuits, shifts: dict[int, ShiftCircuit], observables, parameter_values, parameters):
        """One PUB per distinct circuit, sent in one job; the gradient of every entry."""
        groups: dict[int, list[int]] = {}
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
        if not isinstance(self._estimator, ExactStatePreparation):
            raise CapabilityError(
                f"{type(self._estimator).__name__} cannot differentiate an amplitude encoding by its features "
                "(no parameter-shift rule exists for them); use the engine (aer backends, --engine engine), "
                "or do not ask for the head's input gradient"
            )
        return self._estimator.encoding_gradients(circuit, observables, rows)

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
    made: dict[int, tuple[Parameter, ...]] = {}
    out = []
    for p in parameters:
        key = made.get(id(p))
        if key is None:
            key = made[id(p)] = tuple(p)
        out.append(key)
    return out


def distinct_observables(observables: Sequence[BaseOperator], members: Sequence[int]) -> tuple[dict[int, int], list]:
    """(position by object id, the distinct objects in order of first appearance) of ``observables[members]``."""
    ids: dict[int, int] = {}
    distinct: list[BaseOperator] = []
    for i in members:
        if id(observables[i]) not in ids:
            ids[id(observables[i])] = len(distinct)
            distinct.append(observables[i])
    return ids, distinct


class EngineGradient(_ValidatedOnce):
    """Exact gradients from an estimator with :class:`~qresnet.backends.primitives.ExactGradients` (the engine).

    For exact simulation the exact derivative is the parameter-shift value, and the engine gets
    every derivative of a circuit's rows in one sweep per distinct body setting (about the cost of
    two evaluations) instead of 2P + 1 settings: one ``value_and_gradients`` call per distinct
    circuit and ``run``. With shots, or on estimators without the ability, use
    :class:`BatchedParamShiftGradient`.

    >>> from qiskit import QuantumCircuit
    >>> from qiskit.circuit import Parameter
    >>> from qiskit.quantum_info import SparsePauliOp
    >>> from qresnet.backends import resolve_backend
    >>> theta = Parameter("theta")
    >>> qc = QuantumCircuit(1); _ = qc.ry(2 * theta, 0)
    >>> grad = EngineGradient(resolve_backend("aer").estimator())
    >>> [round(float(g[0]), 6) for g in grad.run([qc, qc], [SparsePauliOp("Z")] * 2, [[0.3], [0.6]]).result().gradients]
    [-1.129285, -1.864078]
    """

    def __init__(self, estimator: BaseEstimatorV2):
        if not isinstance(estimator, ExactGradients):
            raise CapabilityError(f"estimator={type(estimator).__name__} has no exact gradients (ExactGradients); "
                                  "use BatchedParamShiftGradient")
        if not estimator.gives_exact_values:
            raise CapabilityError(f"estimator={type(estimator).__name__} samples shots, so its values are estimates and "
                                  "their exact derivatives are not what it measures; use BatchedParamShiftGradient")
        super().__init__(estimator)
        self.calls = 0  # value_and_gradients calls: one per distinct circuit and run (or QNN evaluation)
        self._layouts: dict[int, tuple] = {}

    def qnn_jacobians(self, qnn: EstimatorQNN, inputs: np.ndarray, weights: np.ndarray,
                      input_gradients: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``qnn.forward`` and ``qnn.backward`` at once, from one engine call: values (N, K), input gradients
        (N, K, I) if asked for (else None), weight gradients (N, K, W) (None without weights).

        For a training step, which needs both at the same point: the values come with the derivatives at no
        extra cost, and ``EstimatorQNN``'s per-call plumbing (rows repeated per observable, a gradient per
        entry) is skipped. The QNN's circuit, observables and parameter split are read once per QNN."""
        circuit, observables, inputs_at, weights_at = self._layout(qnn)
        rows = self._rows(circuit, inputs_at, weights_at, inputs, weights)
        _, weight_params, both = self._layout(qnn, parameters=True)[4:]
        wanted = both if input_gradients else weight_params
        self.calls += 1
        values, derivatives = self._estimator.value_and_gradients(circuit, observables, rows, wanted)
        split = len(inputs_at) if input_gradients else 0
        return (values, derivatives[:, :, :split] if input_gradients else None,
                derivatives[:, :, split:] if len(weights_at) else None)

    def pulls_back(self, qnn: EstimatorQNN) -> bool:
        """Whether :meth:`qnn_pullback` serves ``qnn``: its estimator has reverse-mode derivatives
        (:class:`~qresnet.backends.primitives.ExactPullbacks`) for its circuit and inputs."""
        entry = self._layouts.get(id(qnn))
        if entry is None or entry[0] is not qnn:
            self._layout(qnn)
            entry = self._layouts[id(qnn)]
        if len(entry) == 8:  # asked once per QNN: its circuit and inputs do not change
            circuit, inputs = entry[1], entry[5]
            entry = self._layouts[id(qnn)] = entry + (isinstance(self._estimator, ExactPullbacks)
                                                      and self._estimator.pulls_back(circuit, inputs),)
        return entry[8]

    def qnn_values(self, qnn: EstimatorQNN, inputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``qnn.forward`` (N, K) straight from the engine's exact values (no PUB: EstimatorQNN binds every
        parameter by name on each call, which costs more than a quantum head's arithmetic); a circuit too wide
        for the engine goes through ``qnn.forward``, so the estimator's fallback takes it."""
        circuit, observables, inputs_at, weights_at = self._layout(qnn)
        try:
            return self._estimator.exact_values(circuit, observables,
                                                self._rows(circuit, inputs_at, weights_at, inputs, weights))
        except EngineUnsupportedError:
            return np.asarray(qnn.forward(inputs, weights), dtype=float)

    def qnn_pullback(self, qnn: EstimatorQNN, inputs: np.ndarray, weights: np.ndarray,
                     input_gradients: bool) -> tuple[np.ndarray, Callable[[np.ndarray], tuple[np.ndarray | None, np.ndarray]]]:
        """``qnn.forward`` (N, K), and the pullback g (N, K) -> (input gradients (N, I) if asked for, else
        None; weight gradients (W,) summed over the rows) that autograd's backward needs.

        Reverse mode: where :meth:`qnn_jacobians` carries one derivative per weight (a head has dozens),
        this carries the cotangent once; the values are those of the same engine call."""
        circuit, observables, inputs_at, weights_at, input_params, weight_params, _ = self._layout(qnn, parameters=True)
        rows = self._rows(circuit, inputs_at, weights_at, inputs, weights)
        self.calls += 1
        return self._estimator.value_and_pullback(circuit, observables, rows, input_params if input_gradients else (),
                                                  weight_params)

    @staticmethod
    def _rows(circuit: QuantumCircuit, inputs_at: list[int], weights_at: list[int], inputs: np.ndarray,
              weights: np.ndarray) -> np.ndarray:
        """The circuit's parameter rows for QNN inputs (N, I) and weights (W,)."""
        inputs = np.asarray(inputs, dtype=float).reshape(-1, len(inputs_at))
        rows = np.empty((len(inputs), circuit.num_parameters))
        rows[:, inputs_at] = inputs
        rows[:, weights_at] = weights
        return rows

    def _layout(self, qnn: EstimatorQNN, parameters: bool = False) -> tuple:
        """(circuit, observables, input columns, weight columns[, input, weight, input then weight parameters])
        of ``qnn``, made once per QNN (the circuit and observables are copies the QNN hands out, kept so that the
        engine compiles them once; the parameter lists are kept so that the engine looks their columns up once)."""
        entry = self._layouts.get(id(qnn))
        if entry is None or entry[0] is not qnn:
            circuit = qnn.circuit
            index = {p: j for j, p in enumerate(circuit.parameters)}
            entry = self._layouts[id(qnn)] = (qnn, circuit, list(qnn.observables),
                                              [index[p] for p in qnn.input_params], [index[p] for p in qnn.weight_params],
                                              list(qnn.input_params), list(qnn.weight_params),
                                              list(qnn.input_params) + list(qnn.weight_params))
        return entry[1:8] if parameters else entry[1:5]

    def _run(self, circuits: Sequence[QuantumCircuit], observables: Sequence[BaseOperator],
             parameter_values: Sequence[Sequence[float]] | np.ndarray, parameters: Sequence[Sequence[Parameter]],
             **options) -> EstimatorGradientResult:
        groups: dict[int, list[int]] = {}
        for i, circuit in enumerate(circuits):
            groups.setdefault(id(circuit), []).append(i)
        gradients: list[np.ndarray] = [np.empty(0)] * len(circuits)
        for members in groups.values():
            self._circuit_gradients(circuits[members[0]], members, observables, parameter_values, parameters, gradients)
        return EstimatorGradientResult(gradients=gradients, metadata=[{"parameters": p} for p in parameters],
                                       options=Options(**options))

    def _circuit_gradients(self, circuit: QuantumCircuit, members: list[int], observables, parameter_values,
                           parameters, gradients: list) -> None:
        """Fill ``gradients[i]`` for the entries ``members`` of one circuit from one engine call."""
        values = np.asarray([parameter_values[i] for i in members], dtype=float)
        rows, inverse = group_rows(values)  # EstimatorQNN repeats every row once per observable
        obs_ids, obs_list = distinct_observables(observables, members)
        self.calls += 1
        keys = parameter_keys([parameters[i] for i in members])
        requested = set().union(*set(keys))
        wanted = [p for p in circuit.parameters if p in requested]  # inputs are not differentiated unless asked for
        _, derivatives = self._estimator.value_and_gradients(circuit, obs_list, rows, wanted)  # (U, K, P')
        index = {p: j for j, p in enumerate(wanted)}
        observable_of = np.array([obs_ids[id(observables[i])] for i in members])
        key_of = {key: j for j, key in enumerate(set(keys))}
        kind = np.array([key_of[key] for key in keys])
        for key, j in key_of.items():  # one gather per observable and parameter list, not per entry
            columns = [index[p] for p in key]
            for k in range(len(obs_list)):
                positions = np.flatnonzero((kind == j) & (observable_of == k))
                block = derivatives[inverse[positions], k][:, columns]
                for position, row in zip(positions, block):
                    gradients[members[position]] = row
