"""The engine's exact gradient for ``EstimatorQNN``, and the typed calls the torch connector makes of it.

:class:`EngineGradient` asks an estimator's :class:`~qresnet.backends.primitives.Differentiator` (the
engine in exact mode) for exact derivatives: one call per distinct circuit as a ``BaseEstimatorGradient``,
and, for the torch connector, one call per QNN evaluation (:meth:`EngineGradient.evaluate`) whose kind is a
:class:`QNNCall`: values only, values and Jacobians, or values and a pullback, with the input gradient
asked for or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.primitives import BaseEstimatorV2
from qiskit.providers import Options
from qiskit.quantum_info import SparsePauliOp
from qiskit.quantum_info.operators.base_operator import BaseOperator
from qiskit_machine_learning.gradients.base.estimator_gradient_result import EstimatorGradientResult
from qiskit_machine_learning.neural_networks import EstimatorQNN

from qresnet.backends.primitives import Differentiable, Differentiator, PreparedPullback, Pullback, group_rows
from qresnet.errors import CapabilityError, ConfigError, EngineUnsupportedError
from qresnet.qnn.gradient import CACHED_CIRCUITS, ValidatedOnce, distinct_observables, parameter_keys


class Derivatives(Enum):
    """What comes with a QNN's values from one engine call."""

    NONE = "values only"
    JACOBIANS = "values and Jacobians"
    PULLBACK = "values and a pullback"


@dataclass(frozen=True)
class QNNCall:
    """One evaluation of a QNN through :meth:`EngineGradient.evaluate`: the derivatives that come with the
    values, and whether they include the inputs' (the weights' always come, for a QNN with weights)."""

    derivatives: Derivatives = Derivatives.NONE
    input_gradients: bool = False

    def __post_init__(self) -> None:
        if self.derivatives is Derivatives.NONE and self.input_gradients:
            raise ConfigError("QNNCall(derivatives=NONE, input_gradients=True): values alone have no input gradient")


@dataclass(frozen=True, eq=False)
class QNNEvaluation:
    """What :meth:`EngineGradient.evaluate` returns: the values (N, K) and the derivatives the call asked for."""

    values: np.ndarray
    input_jacobian: np.ndarray | None = None  # (N, K, I): JACOBIANS with input_gradients
    weight_jacobian: np.ndarray | None = None  # (N, K, W): JACOBIANS, for a QNN with weights
    pullback: Pullback | None = None  # PULLBACK: g (N, K) -> (d/d inputs (N, I) or None, d/d weights (W,) or (S, W))


@dataclass
class _QNNLayout:
    """What :class:`EngineGradient` reads of a QNN once: its circuit and observables (copies the QNN hands out,
    kept so that the engine compiles them once) and its parameter split (lists kept so that the engine looks
    their columns up once)."""

    qnn: EstimatorQNN  # held, so that its id is not reused while the entry lives
    circuit: QuantumCircuit
    observables: list[SparsePauliOp]
    input_columns: list[int]
    weight_columns: list[int]
    input_params: list[Parameter]
    weight_params: list[Parameter]
    all_params: list[Parameter]  # inputs then weights
    pulls_back: bool | None = field(default=None)  # asked once: the circuit and inputs do not change
    prepared: dict[bool, PreparedPullback] = field(default_factory=dict)  # by input_gradients: the step's pullback

    @classmethod
    def of(cls, qnn: EstimatorQNN) -> _QNNLayout:
        circuit = qnn.circuit
        index = {p: j for j, p in enumerate(circuit.parameters)}
        inputs, weights = list(qnn.input_params), list(qnn.weight_params)
        return cls(qnn, circuit, list(qnn.observables), [index[p] for p in inputs], [index[p] for p in weights],
                   inputs, weights, inputs + weights)

    def rows(self, inputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The circuit's parameter rows for QNN inputs (N, I) and weights (W,)."""
        inputs = np.asarray(inputs, dtype=float).reshape(-1, len(self.input_columns))
        rows = np.empty((len(inputs), self.circuit.num_parameters))
        rows[:, self.input_columns] = inputs
        rows[:, self.weight_columns] = weights
        return rows


class EngineGradient(ValidatedOnce):
    """Exact gradients from an estimator's :class:`~qresnet.backends.primitives.Differentiator` (the engine).

    For exact simulation the exact derivative is the parameter-shift value, and the engine gets
    every derivative of a circuit's rows in one sweep per distinct body setting (about the cost of
    two evaluations) instead of 2P + 1 settings: one ``value_and_gradients`` call per distinct
    circuit and ``run``. With shots, or on estimators without the ability, use
    :class:`~qresnet.qnn.BatchedParamShiftGradient`.

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
        if not isinstance(estimator, Differentiable):
            raise CapabilityError(f"estimator={type(estimator).__name__} has no exact gradients (no Differentiator); "
                                  "use BatchedParamShiftGradient")
        if not estimator.differentiator.gives_exact_values:
            raise CapabilityError(f"estimator={type(estimator).__name__} samples shots, so its values are estimates and "
                                  "their exact derivatives are not what it measures; use BatchedParamShiftGradient")
        super().__init__(estimator)
        self.differentiator: Differentiator = estimator.differentiator
        self.calls = 0  # differentiator calls with derivatives: one per distinct circuit and run (or QNN evaluation)
        self._layouts: dict[int, _QNNLayout] = {}  # keyed on id(qnn); the entry holds the QNN and is checked on a hit

    def layout(self, qnn: EstimatorQNN) -> _QNNLayout:
        """``qnn``'s circuit, observables and parameter split, read once per QNN (an ``EstimatorQNN`` cannot change
        them after it is made: its properties hand out copies and have no setters)."""
        entry = self._layouts.get(id(qnn))
        if entry is None or entry.qnn is not qnn:
            if len(self._layouts) >= CACHED_CIRCUITS:
                self._layouts.clear()
            entry = self._layouts[id(qnn)] = _QNNLayout.of(qnn)
        return entry

    def pulls_back(self, qnn: EstimatorQNN) -> bool:
        """Whether ``Derivatives.PULLBACK`` serves ``qnn``: the differentiator has reverse-mode derivatives for
        its circuit, observables and inputs."""
        layout = self.layout(qnn)
        if layout.pulls_back is None:
            layout.pulls_back = self.differentiator.pulls_back(layout.circuit, layout.observables, layout.input_params)
        return layout.pulls_back

    def evaluate(self, qnn: EstimatorQNN, inputs: np.ndarray, weights: np.ndarray, call: QNNCall) -> QNNEvaluation:
        """``qnn.forward`` (N, K) straight from the engine, with what ``call`` asks for from the same call.

        ``NONE``: the exact values (no PUB: EstimatorQNN binds every parameter by name on each call, which costs
        more than a quantum head's arithmetic); a circuit too wide for the engine goes through ``qnn.forward``,
        so the estimator's fallback takes it. ``JACOBIANS``: ``qnn.backward``'s input (if asked for) and weight
        gradients with the values, for a training step that needs both at the same point. ``PULLBACK``
        (where :meth:`pulls_back`): reverse mode, the cotangent carried once where Jacobians carry one
        derivative per weight (a head has dozens)."""
        layout = self.layout(qnn)
        rows = layout.rows(inputs, weights)
        if call.derivatives is Derivatives.NONE:
            try:
                return QNNEvaluation(self.differentiator.exact_values(layout.circuit, layout.observables, rows))
            except EngineUnsupportedError:
                return QNNEvaluation(np.asarray(qnn.forward(inputs, weights), dtype=float))
        return self._derivatives(layout, rows, call)

    def _derivatives(self, layout: _QNNLayout, rows: np.ndarray, call: QNNCall,
                     segments: np.ndarray | None = None) -> QNNEvaluation:
        """One engine call with derivatives (``call`` asks for some): a pullback, with ``segments`` if given, or
        the Jacobians per row."""
        self.calls += 1
        if call.derivatives is Derivatives.PULLBACK:
            prepared = layout.prepared.get(call.input_gradients)
            if prepared is None:
                inputs = layout.input_params if call.input_gradients else ()
                prepared = layout.prepared[call.input_gradients] = self.differentiator.prepare_pullback(
                    layout.circuit, layout.observables, inputs, layout.weight_params)
            values, pullback = prepared(rows, segments)
            return QNNEvaluation(values, pullback=pullback)
        wanted = layout.all_params if call.input_gradients else layout.weight_params
        values, derivatives = self.differentiator.value_and_gradients(layout.circuit, layout.observables, rows, wanted)
        split = len(layout.input_columns) if call.input_gradients else 0
        return QNNEvaluation(values, derivatives[:, :, :split] if call.input_gradients else None,
                             derivatives[:, :, split:] if len(layout.weight_columns) else None)

    def evaluate_segmented(self, qnn: EstimatorQNN, inputs: np.ndarray, weights: np.ndarray, segments: np.ndarray,
                           call: QNNCall) -> QNNEvaluation:
        """``qnn.forward`` of rows r at inputs (R, I) with the weights of their setting, ``weights[segments[r]]``
        (S settings (S, W)), in ONE engine call: a stack of runs. ``PULLBACK``: the pullback's weight part is
        (S, W), each setting's rows apart; ``JACOBIANS``: the Jacobians are per row (R, K, W), as in :meth:`evaluate`;
        ``NONE``: the values (R, K), run by setting through ``qnn.forward`` if the circuit is too wide."""
        layout = self.layout(qnn)
        inputs = np.asarray(inputs, dtype=float).reshape(-1, len(layout.input_columns))
        weights = np.asarray(weights, dtype=float).reshape(-1, len(layout.weight_columns))
        segments = np.asarray(segments)
        if segments.shape != (len(inputs),) or segments.dtype.kind not in "iu" or (
                len(segments) and not 0 <= segments.min() <= segments.max() < len(weights)):
            raise ConfigError(f"segments={segments!r} must name one of the {len(weights)} settings for each of "
                              f"the {len(inputs)} rows")
        rows = np.empty((len(inputs), layout.circuit.num_parameters))
        rows[:, layout.input_columns] = inputs
        rows[:, layout.weight_columns] = weights[segments]
        if call.derivatives is Derivatives.NONE:
            try:
                return QNNEvaluation(self.differentiator.exact_values(layout.circuit, layout.observables, rows))
            except EngineUnsupportedError:
                values = np.empty((len(inputs), len(layout.observables)))
                for setting, w in enumerate(weights):
                    mine = segments == setting
                    values[mine] = np.asarray(qnn.forward(inputs[mine], w), dtype=float).reshape(-1, values.shape[1])
                return QNNEvaluation(values)
        return self._derivatives(layout, rows, call, segments)

    def _run(self, circuits: Sequence[QuantumCircuit], observables: Sequence[BaseOperator],
             parameter_values: Sequence[Sequence[float]] | np.ndarray, parameters: Sequence[Sequence[Parameter]],
             **options) -> EstimatorGradientResult:
        groups: dict[int, list[int]] = {}  # entries by id(circuit), within this call (the circuits are alive in it)
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
        _, derivatives = self.differentiator.value_and_gradients(circuit, obs_list, rows, wanted)  # (U, K, P')
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
