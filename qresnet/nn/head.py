"""The quantum head: the flattened final map amplitude-encoded, a trainable ansatz, <Z> of m qubits as class scores.

Logits are ``scale * <Z_q>`` for q < m: the raw scores lie in [-1, 1], where a softmax barely
separates classes, so they are multiplied by ``scale`` (default :data:`~qresnet.choices.DEFAULT_HEAD_SCALE`, fixed,
not trained) before the cross-entropy. An all-zero feature vector encodes |0...0>
(``qresnet.circuits.head``), with input gradient 0.

Two encodings of the same state (``template.settings["encoding"]``):

- ``"state"``: the features enter one exact state preparation. The engine evaluates it batched
  over samples and gives exact input gradients, so the quanvolution layers behind the head
  learn through it. Weights train through ``EstimatorQNN`` + ``TorchConnector``: exact derivatives
  from the engine in exact mode, parameter shift with shots.
- ``"angles"``: the 2^n - 1 Mottonen angles of each sample bind the transpiled state-preparation
  circuit, one circuit per sample, as on hardware. No parameter-shift rule reaches the features
  through them, so this head has no input gradient: it says so (``input_gradients`` is False,
  and asking for it raises) rather than pretending.

>>> from qresnet.backends import resolve_backend
>>> from qresnet.circuits import quantum_head
>>> backend = resolve_backend("aer")
>>> template = quantum_head(4, 2, encoding="state", num_features=9)
>>> t = backend.transpile(template)
>>> head = QuantumHead(template, backend.estimator(), circuit=t.circuit, observables=t.observables, seed=0)
>>> head(torch.rand(3, 9, dtype=torch.float64)).shape, head.input_gradients
(torch.Size([3, 2]), True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from qiskit import QuantumCircuit
from qiskit.primitives import BaseEstimatorV2
from qiskit.quantum_info import SparsePauliOp

from qresnet.choices import DEFAULT_HEAD_SCALE
from qresnet.circuits import CircuitTemplate, amplitude_angles
from qresnet.errors import CapabilityError, ConfigError, TemplateError
from qresnet.nn.module import QuantumModule
from qresnet.qnn import make_qnn

NO_INPUT_GRADIENT = ("the head's input gradient does not exist with the angle encoding (hardware, local:, ibm:, "
                     "--engine aer): the quanvolution layers behind a quantum head get no gradient through it")


class QuantumHead(QuantumModule):
    """Class logits from a head template run through ``EstimatorQNN`` + ``TorchConnector``."""

    def __init__(
        self,
        template: CircuitTemplate,
        estimator: BaseEstimatorV2,
        *,
        circuit: QuantumCircuit | None = None,
        observables: Sequence[SparsePauliOp] | None = None,
        scale: float = DEFAULT_HEAD_SCALE,
        input_gradients: bool | None = None,
        initial_weights: np.ndarray | None = None,
        seed: int | None = None,
    ):
        super().__init__()
        settings = template.settings
        if settings.get("template") != "head":
            raise TemplateError(f"template {template.name} is not a quantum head template")
        self.template, self.encoding = template, settings["encoding"]
        self.num_qubits = settings["num_qubits"]
        self.num_features = settings["num_features"] if self.encoding == "state" else 1 << self.num_qubits
        if input_gradients is None:
            input_gradients = self.encoding == "state"
        if input_gradients and self.encoding != "state":
            raise CapabilityError(f"input_gradients=True: {NO_INPUT_GRADIENT}")
        if not (np.isfinite(scale) and scale > 0):
            raise ConfigError(f"scale={scale!r} must be a positive number")
        self.input_gradients, self.scale = bool(input_gradients), float(scale)
        self._connect(make_qnn(template, estimator, circuit, observables, input_gradients=self.input_gradients),
                      initial_weights, seed)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """<Z_q> for each sample, shape (B, m), before scaling."""
        if features.dim() != 2:
            raise ConfigError(f"QuantumHead takes (batch, features) inputs, got shape {tuple(features.shape)}")
        if features.shape[1] > self.num_features:
            raise ConfigError(f"features has {features.shape[1]} values per sample; this head encodes at most "
                               f"{self.num_features} ({self.num_qubits} qubits)")
        if torch.isnan(features).any():
            raise ConfigError("QuantumHead input contains NaN")
        x = features.to(torch.float64)
        if self.encoding == "state":
            if x.shape[1] < self.num_features:
                x = torch.nn.functional.pad(x, (0, self.num_features - x.shape[1]))
            return self.connector(x if self.input_gradients else x.detach())
        angles = amplitude_angles(x.detach().cpu().numpy(), self.num_qubits)
        return self.connector(torch.as_tensor(angles, dtype=torch.float64))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * self.scores(features)
