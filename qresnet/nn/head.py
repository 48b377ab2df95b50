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

import functools
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
from qresnet.qnn import make_qnn, segmented_qnn, stacks

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
        return self.connector(self.qnn_inputs(features))

    def qnn_inputs(self, features: torch.Tensor) -> torch.Tensor:
        """The QNN's inputs for ``features`` (B, F): the zero-padded features (``state``, detached without input
        gradients) or their amplitude angles (``angles``)."""
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
            return x if self.input_gradients else x.detach()
        angles = amplitude_angles(x.detach().cpu().numpy(), self.num_qubits)
        return torch.as_tensor(angles, dtype=torch.float64)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * self.scores(features)

    @functools.cached_property
    def stack_shape(self) -> tuple:
        """What heads evaluated by one head's QNN must share (:func:`stacked_head_logits`): template, input
        gradients, estimator kind, weights and the transpiled gates, read once (the QNN cannot change). Not the
        backend's noise: :func:`stacked_head_logits` stacks only heads on one estimator object."""
        circuit = self.qnn.circuit
        gates = tuple((ci.operation.name, tuple(circuit.find_bit(q).index for q in ci.qubits)) for ci in circuit.data)
        return (repr(sorted(self.template.settings.items())), self.input_gradients, type(self.qnn.estimator), gates,
                tuple(self.weight.shape))


def stacked_head_logits(heads: Sequence[QuantumHead], features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each head's logits of its own features, ``[heads[s](features[s]) for s]``, in ONE engine call per shape of
    heads that stack (:func:`qresnet.qnn.segmented_qnn`: one :attr:`~QuantumHead.stack_shape` on one estimator
    object, the engine's exact gradient; the first head's QNN evaluates all of its shape; a stack's residual configurations
    give final maps, so heads, of a few widths): each head's weights get the gradient of its own logits only, and
    the features theirs where the heads have input gradients. Batches may differ in size. Heads that do not stack
    (parameter shift, shots) run one by one, and so does every head without gradients (an evaluation): with the
    pullback, one call is 1.1x the separate calls (benchmarks/stacked.py); for values only it took 1.7x to 2x
    them (6 heads on aer and aer:fake_torino), and 1.3x them for a paper stack's evaluation."""
    if len(heads) != len(features):
        raise ConfigError(f"stacked_head_logits: {len(heads)} heads for {len(features)} feature batches")
    if not heads:
        return []
    if not torch.is_grad_enabled():
        return [h(f) for h, f in zip(heads, features)]
    # a stack's residual configurations give heads of several shapes; heads share a call only on one estimator
    # (one backend's noise: stack_shape does not hold it)
    shapes: dict[tuple, list[int]] = {}
    for i, h in enumerate(heads):
        shapes.setdefault((id(h.qnn.estimator), h.stack_shape) if stacks(h.qnn) else ("alone", i), []).append(i)
    out: list[torch.Tensor] = [torch.empty(0)] * len(heads)
    for same in shapes.values():
        if len(same) == 1:
            out[same[0]] = heads[same[0]](features[same[0]])
            continue
        inputs = [heads[i].qnn_inputs(features[i]) for i in same]
        sizes = [len(x) for x in inputs]
        segments = np.repeat(np.arange(len(same)), sizes)
        scores = segmented_qnn(heads[same[0]].qnn, torch.cat(inputs), [heads[i].weight for i in same], segments)
        for i, part in zip(same, torch.split(scores, sizes)):
            out[i] = heads[i].scale * part
    return out
