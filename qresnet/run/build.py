"""A model from a config and a backend: the quanvolution layers, the head, what a run says about them, a step's cost.

    backend = resolve_backend(config.backend, config.backend_options)
    model = build_model(config, backend, data.image_shape, data.num_classes)

Works for every backend kind: on ``local:`` and ``ibm:`` nothing is sent (nor a Batch or Session
opened) until the model first runs, so the jobs layer builds its models on the device backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache

from qresnet.backends import Backend
from qresnet.backends.limits import DEFAULT_RUNTIME_SHOTS, qpu_seconds
from qresnet.choices import DEFAULT_HEAD_SCALE
from qresnet.circuits import quantum_head, quanv_filter
from qresnet.config import TrainConfig
from qresnet.errors import ConfigError, LayoutError
from qresnet.nn import QuantumHead, QuanvLayer, ResQuNN
from qresnet.nn.head import NO_INPUT_GRADIENT
from qresnet.qnn import gradient_name

HEAD_QUBITS = 10
PAPER_HEAD_CLASSES = 4
# a 4-class head step on the engine (its light cone spans 6 qubits), measured on this project's 2-core machine;
# the work grows about 8-fold per qubit of light cone (4^w Pauli images, 2^w amplitudes per sample): a 10-class
# step was still running after 600 s (benchmarks/head_step.py)
HEAD_STEP_SECONDS_AT_6_QUBITS = 0.3
HEAD_STEP_GROWTH_PER_QUBIT = 8
LONG_STEP_SECONDS = 5.0


def check_layout_width(layout: tuple[int, ...] | None, templates: Sequence[tuple[str, int]]) -> None:
    """An ``initial_layout`` must fit one of the run's templates, given as (name, qubits): it applies to those of
    its width, so one that fits none would be dropped without a word."""
    widths = sorted({n for _, n in templates})
    if layout is not None and len(layout) not in widths:
        names = ", ".join(f"{name} ({n})" for name, n in templates)
        raise LayoutError(f"--initial-layout {','.join(map(str, layout))} has {len(layout)} qubits, but this run's "
                          f"templates have {' or '.join(map(str, widths))} ({names}); give one qubit per template qubit")


def quanv_layers(
    backend: Backend, num_layers: int, *, mode: str = "response", input_gradients: bool = False,
    gradient: str = "auto", seed: int = 0,
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


def quantum_head_layer(backend: Backend, num_features: int, num_classes: int, *, scale: float = DEFAULT_HEAD_SCALE,
                       seed: int = 0) -> QuantumHead:
    """The 10-qubit head on ``backend``: exact state preparation on the engine, the transpiled encoding elsewhere."""
    if not 1 <= num_classes <= HEAD_QUBITS:
        raise ConfigError(f"the quantum head measures one of its {HEAD_QUBITS} qubits per class; got {num_classes} classes")
    if num_features > 1 << HEAD_QUBITS:
        raise ConfigError(f"the final map has {num_features} values; {HEAD_QUBITS} qubits encode at most {1 << HEAD_QUBITS}")
    encoding = head_encoding(backend)
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
    notes.append(f"head weight gradient: {gradient_name(model.head.qnn)}")
    return notes


def gradient_method(model: ResQuNN) -> str:
    """How the model's quantum weights are differentiated: ``engine-exact`` (the engine's exact derivatives) or
    ``parameter-shift``, one word when every quantum module agrees, else ``layers <name>, head <name>``."""
    names = {"layers": {gradient_name(layer.qnn) for layer in model.layers}}
    if isinstance(model.head, QuantumHead):
        names["head"] = {gradient_name(model.head.qnn)}
    distinct = set().union(*names.values())
    if len(distinct) == 1:
        return distinct.pop()
    return ", ".join(f"{part} {'/'.join(sorted(found))}" for part, found in names.items())


def build_model(config: TrainConfig, backend: Backend, image_shape: tuple[int, int], num_classes: int) -> ResQuNN:
    """The run's ResQuNN on ``backend``, its weights seeded from ``config.seed``; frozen if the config says so."""
    layers = quanv_layers(backend, config.layers, mode=config.mode, input_gradients=config.input_gradients,
                          seed=config.seed)
    head = None
    if config.head == "quantum":
        size = config.residual.node_shapes(tuple(image_shape), layers[0].kernel_size)[-1]
        head = quantum_head_layer(backend, size[0] * size[1], num_classes, scale=config.head_scale, seed=config.seed)
    templates = [layers[0].template] + ([head.template] if head is not None else [])
    check_layout_width(backend.options.initial_layout, [(t.name, t.num_qubits) for t in templates])
    model = ResQuNN(layers, config.residual, image_shape, num_classes, seed=config.seed, head=head)
    return model.freeze_quantum() if config.frozen else model


def estimated_cost_notes(model: ResQuNN, config: TrainConfig, train_size: int) -> list[str]:
    """One line for a run whose training steps will be long, with the estimate, said before it starts. Only noisy
    heads: an ideal head measuring many qubits takes the engine's statevector route (a 10-class step in about
    0.15 s), a noisy one carries density-matrix images of its whole light cone."""
    head = model.head
    if (not isinstance(head, QuantumHead) or head.encoding != "state" or head.num_outputs <= PAPER_HEAD_CLASSES
            or not config.backend.noisy):
        return []
    width = min(HEAD_QUBITS, head.num_outputs + 2)  # two ansatz repetitions widen each measured qubit's cone by 2
    step = HEAD_STEP_SECONDS_AT_6_QUBITS * HEAD_STEP_GROWTH_PER_QUBIT ** (width - 6)
    if step < LONG_STEP_SECONDS:
        return []
    steps = math.ceil(train_size / config.batch_size) * config.epochs
    return [f"note: the quantum head measures {head.num_outputs} qubits (the paper's measures {PAPER_HEAD_CLASSES}), so the "
            f"engine simulates a {width}-qubit light cone: about {step:.0f} s per training step, about "
            f"{steps * step / 3600:.1f} h for {steps} steps; --classes 0,1,2,3 gives the paper's 4-class head"]


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


@cache
def _device_filter():
    """The filter template whose costs :func:`run_cost` counts, one object, so a backend transpiles it once."""
    return quanv_filter()


@cache
def _angle_head(num_classes: int):
    """The hardware form of the head (the transpiled Mottonen encoding), one template object per class count,
    so that a backend transpiles it once."""
    return quantum_head(HEAD_QUBITS, num_classes)


@dataclass(frozen=True)
class RunCost:
    """What a run costs (audit question 5): qubits, re-encoding boundaries, circuits per training step, and on the
    backend's device one epoch of training and one evaluation of the test set (circuits, shots, QPU seconds)."""

    qubits: tuple[int, ...]
    boundaries: int  # measure-and-re-encode boundaries crossed per forward pass
    circuits_per_step: int  # parameter sets per training step: each one circuit on a device
    device: str | None
    shots: int
    device_train_epoch_circuits: int | None
    device_train_epoch_qpu_seconds: float | None
    device_test_eval_circuits: int | None
    device_test_eval_qpu_seconds: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def run_cost(config: TrainConfig, backend: Backend, num_classes: int, train_size: int, test_size: int) -> RunCost:
    """The cost of a run of ``config`` with the templates ``backend`` runs; device figures need a device (noisy
    ``aer:<device>``, ``local:``, ``ibm:``) and follow :func:`qresnet.backends.limits.qpu_seconds`, with one job per
    forward and one per gradient of a step. On a device the head runs its transpiled angle encoding."""
    quanv = _device_filter()
    design = 3 ** quanv.num_inputs  # the filter-response method: 81 circuits per layer and weight setting
    per_layer = design * (1 + (0 if config.frozen else 2 * quanv.num_weights))
    per_step = [(quanv, config.layers * per_layer)]
    evaluation = [(quanv, config.layers * design)]
    qubits = [quanv.num_qubits]
    if config.head == "quantum":
        head = _angle_head(num_classes)
        per_step.append((head, config.batch_size * (1 + 2 * head.num_weights)))
        evaluation.append((head, test_size))
        qubits.append(head.num_qubits)
    steps = math.ceil(train_size / config.batch_size)
    shots = backend.options.shots or DEFAULT_RUNTIME_SHOTS
    device = None if backend.device is None else backend.spec.device
    train_circuits = test_circuits = train_seconds = test_seconds = None
    if device is not None:
        isa = {id(t): backend.transpile(t).circuit for t, _ in per_step}
        train_circuits = steps * sum(n for _, n in per_step)
        train_seconds = qpu_seconds([(isa[id(t)], steps * n) for t, n in per_step], shots, backend.device, 2 * steps)
        test_circuits = sum(n for _, n in evaluation)
        test_seconds = qpu_seconds([(isa[id(t)], n) for t, n in evaluation], shots, backend.device, len(evaluation))
    return RunCost(tuple(qubits), config.layers - 1 + (config.head == "quantum"), sum(n for _, n in per_step), device,
                   shots, train_circuits, train_seconds, test_circuits, test_seconds)
