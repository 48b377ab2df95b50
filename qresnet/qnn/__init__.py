"""EstimatorQNN + TorchConnector wiring: the filter response and the batched parameter-shift gradient."""

from __future__ import annotations

from collections.abc import Sequence

from qiskit import QuantumCircuit
from qiskit.primitives import BaseEstimatorV2
from qiskit.quantum_info import SparsePauliOp
from qiskit_machine_learning.neural_networks import EstimatorQNN

from qresnet.circuits import CircuitTemplate
from qresnet.errors import ConfigError
from qresnet.qnn.connector import Float64TorchConnector
from qresnet.qnn.gradient import BatchedParamShiftGradient
from qresnet.qnn.response import design_points, evaluate_response, response_tensor


def make_qnn(
    template: CircuitTemplate,
    estimator: BaseEstimatorV2,
    circuit: QuantumCircuit | None = None,
    observables: Sequence[SparsePauliOp] | None = None,
    input_gradients: bool = False,
    gradient: str = "batched",
) -> EstimatorQNN:
    """An ``EstimatorQNN`` on a template's (transpiled) circuit with ``pass_manager=None``.

    ``gradient`` is ``batched`` (:class:`BatchedParamShiftGradient`) or ``stock``
    (qiskit-machine-learning's ``ParamShiftEstimatorGradient``, one PUB per row and shift).
    Precision is left to the estimator (``None``): exact on Aer unless shots were asked for.
    """
    from qiskit_machine_learning.gradients import ParamShiftEstimatorGradient

    if gradient == "batched":
        grad = BatchedParamShiftGradient(estimator)
    elif gradient == "stock":
        grad = ParamShiftEstimatorGradient(estimator)
    else:
        raise ConfigError(f"gradient={gradient!r} must be 'batched' or 'stock'")
    return EstimatorQNN(
        circuit=template.circuit if circuit is None else circuit,
        estimator=estimator,
        observables=list(template.observables if observables is None else observables),
        input_params=list(template.input_params),
        weight_params=list(template.weight_params),
        gradient=grad,
        input_gradients=input_gradients,
        default_precision=None,
        pass_manager=None,
    )


__all__ = [
    "BatchedParamShiftGradient",
    "Float64TorchConnector",
    "design_points",
    "evaluate_response",
    "make_qnn",
    "response_tensor",
]
