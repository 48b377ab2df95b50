"""EstimatorQNN + TorchConnector wiring: the filter response, the engine's exact gradient and batched parameter shift."""

from __future__ import annotations

from collections.abc import Sequence

from qiskit import QuantumCircuit
from qiskit.primitives import BaseEstimatorV2
from qiskit.quantum_info import SparsePauliOp
from qiskit_machine_learning.neural_networks import EstimatorQNN

from qiskit_machine_learning.gradients import BaseEstimatorGradient

from qresnet.backends.engine import CircuitCache
from qresnet.backends.primitives import Differentiable
from qresnet.circuits import CircuitTemplate
from qresnet.errors import ConfigError
from qresnet.qnn.connector import Float64TorchConnector
from qresnet.qnn.engine_gradient import Derivatives, EngineGradient, QNNCall, QNNEvaluation
from qresnet.qnn.gradient import CACHED_CIRCUITS, BatchedParamShiftGradient
from qresnet.qnn.response import design_points, evaluate_response, response_tensor, sample_patches
from qresnet.qnn.stacked import segmented_qnn, stacked_qnn, stacks


GRADIENTS = ("auto", "engine", "batched", "stock")
# what a run records about how its quantum weights were differentiated
GRADIENT_NAMES = {EngineGradient: "engine-exact", BatchedParamShiftGradient: "parameter-shift"}


def exact_gradients_available(estimator: BaseEstimatorV2) -> bool:
    """Whether ``estimator`` gives exact values and their exact derivatives (the engine without shots)."""
    return isinstance(estimator, Differentiable) and estimator.differentiator.gives_exact_values


def make_gradient(estimator: BaseEstimatorV2, gradient: str = "auto") -> BaseEstimatorGradient:
    """The gradient object ``gradient`` names: ``auto`` is ``engine`` where exact gradients are available
    (:func:`exact_gradients_available`), else ``batched``; ``stock`` is qiskit-machine-learning's own
    ``ParamShiftEstimatorGradient`` (one PUB per row and shift)."""
    from qiskit_machine_learning.gradients import ParamShiftEstimatorGradient

    if gradient not in GRADIENTS:
        raise ConfigError(f"gradient={gradient!r} must be one of {', '.join(GRADIENTS)}")
    if gradient == "auto":
        gradient = "engine" if exact_gradients_available(estimator) else "batched"
    if gradient == "engine":
        return EngineGradient(estimator)
    if gradient == "batched":
        return BatchedParamShiftGradient(estimator)
    return ParamShiftEstimatorGradient(estimator)


def gradient_name(qnn: EstimatorQNN) -> str:
    """``engine-exact``, ``parameter-shift`` or ``parameter-shift-stock``: how ``qnn`` differentiates."""
    return GRADIENT_NAMES.get(type(qnn.gradient), "parameter-shift-stock")


_RENAMED = CircuitCache(CACHED_CIRCUITS)  # per process: each circuit's renamed copy, by its parameter lists


class _EstimatorQNN(EstimatorQNN):
    """``EstimatorQNN`` whose renamed circuit (inputs, then weights: the primitive's order) is made once per
    circuit object and parameter lists, and shared. qiskit-machine-learning renames per QNN, testing each
    parameter's membership in a list: 0.16 s for the head of a 784-value map, once per run of a sweep; and the
    engine then works out each run's copy again, where the runs of a stack share one circuit."""

    def _reparameterize_circuit(self, circuit: QuantumCircuit, input_params: Sequence | None = None,
                                weight_params: Sequence | None = None) -> QuantumCircuit:
        # the ids are stable while the entry holds the circuit, which holds its parameters
        key = (tuple(map(id, input_params or ())), tuple(map(id, weight_params or ())))
        return _RENAMED.get(circuit, key,
                            lambda: super(_EstimatorQNN, self)._reparameterize_circuit(circuit, input_params,
                                                                                       weight_params))


def make_qnn(
    template: CircuitTemplate,
    estimator: BaseEstimatorV2,
    circuit: QuantumCircuit | None = None,
    observables: Sequence[SparsePauliOp] | None = None,
    input_gradients: bool = False,
    gradient: str = "auto",
) -> EstimatorQNN:
    """An ``EstimatorQNN`` on a template's (transpiled) circuit with ``pass_manager=None``.

    ``gradient`` (:func:`make_gradient`): ``auto`` takes the engine's exact gradient
    (:class:`EngineGradient`) when the estimator is the engine in exact mode, and batched parameter
    shift (:class:`BatchedParamShiftGradient`) otherwise (shots, ``local:``, ``ibm:``, Aer).
    Precision is left to the estimator (``None``): exact on Aer unless shots were asked for.
    """
    return _EstimatorQNN(
        circuit=template.circuit if circuit is None else circuit,
        estimator=estimator,
        observables=list(template.observables if observables is None else observables),
        input_params=list(template.input_params),
        weight_params=list(template.weight_params),
        gradient=make_gradient(estimator, gradient),
        input_gradients=input_gradients,
        default_precision=None,
        pass_manager=None,
    )


__all__ = [
    "GRADIENTS",
    "BatchedParamShiftGradient",
    "Derivatives",
    "EngineGradient",
    "exact_gradients_available",
    "gradient_name",
    "make_gradient",
    "Float64TorchConnector",
    "design_points",
    "sample_patches",
    "evaluate_response",
    "make_qnn",
    "QNNCall",
    "QNNEvaluation",
    "response_tensor",
    "segmented_qnn",
    "stacked_qnn",
    "stacks",
]
