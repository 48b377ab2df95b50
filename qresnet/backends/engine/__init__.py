"""The vectorized simulation engine: an EstimatorV2 over PTMs (Heisenberg) or statevectors."""

from qresnet.backends.engine.estimator import MAX_IDEAL_QUBITS, MAX_NOISY_QUBITS, EngineEstimator
from qresnet.backends.engine.program import compile_circuit

__all__ = ["MAX_IDEAL_QUBITS", "MAX_NOISY_QUBITS", "EngineEstimator", "compile_circuit"]
