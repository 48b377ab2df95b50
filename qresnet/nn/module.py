"""The shared part of the quantum torch modules: one template's QNN behind a float64 ``TorchConnector``."""

from __future__ import annotations

import numpy as np
from qiskit_machine_learning.neural_networks import EstimatorQNN
from torch import nn

from qresnet.circuits import CircuitTemplate
from qresnet.qnn import Float64TorchConnector


class QuantumModule(nn.Module):
    """Holds ``template``, ``qnn`` and ``connector``; weights start uniform in [-pi, pi) from ``seed`` unless given."""

    template: CircuitTemplate
    qnn: EstimatorQNN
    connector: Float64TorchConnector

    def _connect(self, qnn: EstimatorQNN, initial_weights: np.ndarray | None, seed: int | None) -> None:
        self.qnn = qnn
        if initial_weights is None:
            initial_weights = np.random.default_rng(seed).uniform(-np.pi, np.pi, self.template.num_weights)
        self.connector = Float64TorchConnector(qnn, initial_weights)

    @property
    def weight(self) -> nn.Parameter:
        return self.connector.weight

    @property
    def num_outputs(self) -> int:
        return self.template.num_outputs
