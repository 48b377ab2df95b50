"""The vectorized simulation engine: an EstimatorV2 over PTMs (Heisenberg) or statevectors, and its differentiator."""

from qresnet.backends.engine.core import CircuitCache
from qresnet.backends.engine.differentiator import EngineDifferentiator
from qresnet.backends.engine.estimator import EngineEstimator
from qresnet.backends.engine.program import compile_circuit
from qresnet.backends.engine.route import MAX_IDEAL_QUBITS, MAX_NOISY_QUBITS, Route, RouteKind

__all__ = ["MAX_IDEAL_QUBITS", "MAX_NOISY_QUBITS", "CircuitCache", "EngineDifferentiator", "EngineEstimator", "Route",
           "RouteKind", "compile_circuit"]
