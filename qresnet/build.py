"""A model from a config and a backend: the quanvolution layers, the head, what a run says about them, a step's cost.

    backend = resolve_backend(config.backend, config.backend_options)
    model = build_model(config, backend, data.image_shape, data.num_classes)

Works for every backend kind: on ``local:`` and ``ibm:`` nothing is sent (nor a Batch or Session
opened) until the model first runs, so the jobs layer builds its models on the device backend.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from qresnet.backends import Backend
from qresnet.backends.limits import DEFAULT_RUNTIME_SHOTS
from qresnet.circuits import quantum_head, quanv_filter
from qresnet.config import TrainConfig
from qresnet.errors import ConfigError
from qresnet.nn import DEFAULT_SCALE, QuantumHead, QuanvLayer, ResQuNN
from qresnet.nn.head import NO_INPUT_GRADIENT

HEAD_QUBITS = 10
PAPER_HEAD_CLASSES = 4


def quanv_layers(
    backend: Backend, num_layers: int, *, mode: str = "response", input_gradients: bool = False,
    gradient: str = "batched", seed: int = 0,
) -> list[QuanvLayer]:
    """``num_layers`` quanvolution layers on ``backend``: the filter transpiled once, each layer seeded ``seed + k``."""
    template = quanv_filter()
    transpiled = backend.transpile(template)
    estimator = backend.estimator()
    return [QuanvLayer(template, estimator, circuit=transpiled.circuit, observables=transpiled.observables,
                       mode=mode, input_gradients=input_gradients, gradient=gradient, seed=seed + k)
            for k in range(num_layers)]


def head_encoding(backend: Backend) -> str:
    """``state`` where the backend prepares the encoded state exactly (the engine), else ``angles``."""
    return "state" if backend.prepares_encoded_states else "angles"


def quantum_head_layer(backend: Backend, num_features: int, num_classes: int, *, scale: float = DEFAULT_SCALE,
                       seed: int = 0) -> QuantumHead:
    """The 10-qubit head on ``backend``: exact state preparation on the engine, the transpiled encoding elsewhere."""
    if not 1 <= num_classes <= HEAD_QUBITS:
        raise ConfigError(f"the quantum head measures one of its {HEAD_QUBITS} qubits per class; got {num_classes} classes")
    if num_features > 1 << HEAD_QUBITS:
        raise ConfigError(f"the final map has {num_features} values; {HEAD_QUBITS} qubits encode at most {1 << HEAD_QUBITS}")
    encoding = head_encoding(backend)
    if num_classes > PAPER_HEAD_CLASSES and encoding == "state":
        warnings.warn(f"the quantum head measures {num_classes} qubits; the paper's measures {PAPER_HEAD_CLASSES}. The "
                      "engine simulates the measured qubits' backward light cone, which then spans all 10 qubits: a training "
                      "step takes minutes instead of ~0.3 s (pick 4 classes with --classes for the paper's head)", stacklevel=2)
    template = quantum_head(HEAD_QUBITS, num_classes, encoding=encoding,
                            num_features=num_features if encoding == "state" else None)
    transpiled = backend.transpile(template)
    return QuantumHead(template, backend.estimator(), circuit=transpiled.circuit, observables=transpiled.observables,
                       scale=scale, seed=seed + 1000)


def head_notes(config: TrainConfig, backend: Backend, model: ResQuNN) -> list[str]:
    """What every report says about how the quantum head was simulated."""
    if config.head != "quantum":
        return []
    notes = []
    if model.head.encoding == "state":
        notes.append("head encoding: the amplitude-encoded state is prepared exactly"
                     + ("; the device noise acts on the transpiled ansatz and the readout" if backend.spec.noisy else ""))
        notes.append("head input gradient: exact (engine, adjoint through the state preparation)")
    else:
        notes.append("head encoding: the transpiled state-preparation circuit, one circuit per sample")
        notes.append(NO_INPUT_GRADIENT)
    return notes


def build_model(config: TrainConfig, backend: Backend, image_shape: tuple[int, int], num_classes: int) -> ResQuNN:
    """The run's ResQuNN on ``backend``, its weights seeded from ``config.seed``; frozen if the config says so."""
    layers = quanv_layers(backend, config.layers, mode=config.mode, input_gradients=config.input_gradients,
                          seed=config.seed)
    head = None
    if config.head == "quantum":
        size = config.residual.node_shapes(tuple(image_shape), layers[0].kernel_size)[-1]
        head = quantum_head_layer(backend, size[0] * size[1], num_classes, scale=config.head_scale, seed=config.seed)
    model = ResQuNN(layers, config.residual, image_shape, num_classes, seed=config.seed, head=head)
    return model.freeze_quantum() if config.frozen else model


@dataclass(frozen=True)
class StepCost:
    """What one training step sends to a device: parameter sets (circuits), shots, two-qubit gates."""

    circuits: int
    shots: int
    two_qubit_gates: int

    def describe(self, steps: int) -> str:
        return (f"device training: per step {self.circuits} circuits x {self.shots} shots, {self.two_qubit_gates} "
                f"two-qubit gates; {steps} steps: {steps * self.circuits} circuits, {steps * self.circuits * self.shots} "
                f"shots, {steps * self.two_qubit_gates} two-qubit gates")


def step_cost(model: ResQuNN, backend: Backend, batch_size: int) -> StepCost:
    """Upper bound for one step: each layer's 81 design points, and 81 x 2W shifts for trainable weights;
    a quantum head's batch, and B x 2W shifts. Counted from the templates the backend runs."""
    circuits = gates = 0
    for layer in model.layers:
        per = 3 ** layer.template.num_inputs * (1 + (2 * layer.template.num_weights if layer.weight.requires_grad else 0))
        circuits += per
        gates += per * backend.transpile(layer.template).cost.two_qubit_gates
    if isinstance(model.head, QuantumHead):
        per = batch_size * (1 + 2 * model.head.template.num_weights)
        circuits += per
        gates += per * backend.transpile(model.head.template).cost.two_qubit_gates
    shots = backend.options.shots or DEFAULT_RUNTIME_SHOTS
    return StepCost(circuits, shots, gates)
