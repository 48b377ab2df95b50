"""A model from a config and a backend: the quanvolution layers, the head, what a run says about them, a step's cost
(its run's cost, which needs no model, is in :mod:`qresnet.run.cost`).

    backend = resolve_backend(config.backend, config.backend_options)
    model = build_model(config, backend, data.image_shape, data.num_classes)

Works for every backend kind: on ``local:`` and ``ibm:`` nothing is sent (nor a Batch or Session
opened) until the model first runs, so the jobs layer builds its models on the device backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from qresnet.backends import Backend
from qresnet.backends.limits import DEFAULT_RUNTIME_SHOTS
from qresnet.choices import DEFAULT_HEAD_REPS, DEFAULT_HEAD_SCALE
from qresnet.circuits import FilterSpec, quantum_head
from qresnet.config import TrainConfig
from qresnet.errors import ConfigError, LayoutError
from qresnet.nn import ClassicalFilterLayer, QuantumHead, QuanvLayer, ResQuNN
from qresnet.nn.head import NO_INPUT_GRADIENT
from qresnet.qnn import gradient_name
from qresnet.run.cost import HEAD_QUBITS, StepCost, choose_mode, layer_rows

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
    gradient: str = "auto", seed: int = 0, spec: FilterSpec | None = None,
) -> list[QuanvLayer]:
    """``num_layers`` quanvolution layers on ``backend`` running ``spec``'s filter (default: today's), transpiled
    once, each layer seeded ``seed + k``."""
    spec = FilterSpec.coerce(spec)
    template = spec.template()
    transpiled = backend.transpile(template)
    estimator = backend.estimator()
    return [QuanvLayer(template, estimator, circuit=transpiled.circuit, observables=transpiled.observables,
                       mode=mode, input_gradients=input_gradients, gradient=gradient, seed=seed + k,
                       **spec.layer_options)
            for k in range(num_layers)]


def classical_layers(spec: FilterSpec, num_layers: int, *, input_gradients: bool = False,
                     seed: int = 0) -> list[ClassicalFilterLayer]:
    """The classical control of :func:`quanv_layers`: the same windows, channels and trainable parameter count."""
    template = spec.template()
    return [ClassicalFilterLayer.like(template, input_gradients=input_gradients, seed=seed + k, **spec.layer_options)
            for k in range(num_layers)]


def head_encoding(backend: Backend) -> str:
    """``state`` where the backend prepares the encoded state exactly (the engine), else ``angles``."""
    return "state" if backend.prepares_encoded_states else "angles"


def quantum_head_layer(backend: Backend, num_features: int, num_classes: int, *, scale: float = DEFAULT_HEAD_SCALE,
                       seed: int = 0, reps: int = DEFAULT_HEAD_REPS) -> QuantumHead:
    """The 10-qubit head on ``backend`` (``reps`` ansatz repetitions): exact state preparation on the engine, the
    transpiled encoding elsewhere."""
    if not 1 <= num_classes <= HEAD_QUBITS:
        raise ConfigError(f"the quantum head measures one of its {HEAD_QUBITS} qubits per class; got {num_classes} classes")
    if num_features > 1 << HEAD_QUBITS:
        raise ConfigError(f"the final map has {num_features} values; {HEAD_QUBITS} qubits encode at most {1 << HEAD_QUBITS}")
    encoding = head_encoding(backend)
    template = quantum_head(HEAD_QUBITS, num_classes, reps, encoding=encoding,
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
                     + (f"; the {backend.name} noise acts on the transpiled ansatz"
                        + (" and the readout" if backend.readout() else "") if backend.spec.noisy else ""))
        notes.append("head input gradient: exact (engine, adjoint through the state preparation)")
    else:
        notes.append("head encoding: the transpiled state-preparation circuit, one circuit per sample")
        notes.append(NO_INPUT_GRADIENT)
    notes.append(f"head weight gradient: {gradient_name(model.head.qnn)}")
    return notes


def gradient_method(model: ResQuNN) -> str:
    """How the model's quantum weights are differentiated: ``engine-exact`` (the engine's exact derivatives) or
    ``parameter-shift``, one word when every quantum module agrees, else ``layers <name>, head <name>``; the
    classical control's layers are ``autograd``."""
    names = {"layers": {gradient_name(layer.qnn) if isinstance(layer, QuanvLayer) else "autograd"
                        for layer in model.layers}}
    if isinstance(model.head, QuantumHead):
        names["head"] = {gradient_name(model.head.qnn)}
    distinct = set().union(*names.values())
    if len(distinct) == 1:
        return distinct.pop()
    return ", ".join(f"{part} {'/'.join(sorted(found))}" for part, found in names.items())


def build_model(config: TrainConfig, backend: Backend, image_shape: tuple[int, int], num_classes: int) -> ResQuNN:
    """The run's ResQuNN on ``backend``, its weights seeded from ``config.seed``; frozen if the config says so.
    Its layers run ``config.quanv``'s filter (in the mode :func:`choose_mode` picks), or are its classical control."""
    spec = config.quanv
    template = spec.template()
    if config.filter == "classical":
        layers = classical_layers(spec, config.layers, input_gradients=config.input_gradients, seed=config.seed)
        templates = []
    else:
        circuit = backend.transpile(template).circuit
        mode, _ = choose_mode(config, template, image_shape, circuit)
        layers = quanv_layers(backend, config.layers, mode=mode, input_gradients=config.input_gradients,
                              seed=config.seed, spec=spec)
        templates = [template]
    head = None
    if config.head == "quantum":
        size = config.residual.node_shapes(tuple(image_shape), spec.kernel_size, spec.stride, spec.padding)[-1]
        channels = config.residual.node_channels([spec.channels] * config.layers)[-1]
        head = quantum_head_layer(backend, channels * size[0] * size[1], num_classes, scale=config.head_scale,
                                  seed=config.seed, reps=config.head_reps)
        templates.append(head.template)
    if templates:
        check_layout_width(backend.options.initial_layout, [(t.name, t.num_qubits) for t in templates])
    model = ResQuNN(layers, config.residual, image_shape, num_classes, seed=config.seed, head=head)
    return model.freeze_quantum() if config.frozen else model


def filter_notes(config: TrainConfig, backend: Backend, image_shape: tuple[int, int]) -> list[str]:
    """What the run's filter is and costs, said before it starts: its size, the mode and why (rows counted), and
    the circuits a training step sends (parameter shift: 1 + 2P per row); or the classical control."""
    spec = config.quanv
    template = spec.template()
    what = (f"filter: {template.name}, {spec.kernel_size}x{spec.kernel_size} windows, stride {spec.stride}, "
            f"{spec.filters_per_layer} filter(s) x {template.num_outputs} output(s) = {spec.channels} channel(s) per "
            f"layer, {template.num_weights} weights per filter")
    if config.filter == "classical":
        return [what, "filter: the classical control (tanh network with as many trainable parameters); no circuits"]
    mode, why = choose_mode(config, template, image_shape, backend.transpile(template).circuit)
    rows = layer_rows(config, template, image_shape)[mode] * spec.filters_per_layer
    circuits = rows * (1 + (0 if config.frozen else 2 * template.num_weights))
    return [what, why, f"filter cost: {rows} rows per training batch for {spec.filters_per_layer} filter(s); "
                       f"{circuits} circuits per step by parameter shift (1 + 2 x {template.num_weights} per row)"]


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


def step_cost(model: ResQuNN, backend: Backend, batch_size: int, image_shape: tuple[int, int]) -> StepCost:
    """Upper bound for one step: each layer's rows (response mode: its 3^q design points; per-patch mode: every
    window of every image and input channel of the batch) per filter, each with 2W shifts for trainable weights
    (and 2q for the inputs of a per-patch layer with input gradients); a quantum head's batch, and B x 2W shifts.
    Counted from the templates the backend runs."""
    first = model.layers[0]
    shapes = model.residual.node_shapes(tuple(image_shape), first.kernel_size, first.stride, first.padding)
    channels = model.residual.node_channels([layer.num_channels for layer in model.layers])
    circuits = gates = 0
    for k, layer in enumerate(model.layers):
        if not isinstance(layer, QuanvLayer):  # the classical control runs none
            continue
        template = layer.template
        if layer.mode == "response":
            rows, shifts = 3 ** template.num_inputs, 0
        else:
            rows = batch_size * channels[k] * math.prod(layer.output_shape(*shapes[k]))
            shifts = 2 * template.num_inputs if layer.input_gradients else 0
        shifts += 2 * template.num_weights if layer.weight.requires_grad else 0
        per = layer.filters * rows * (1 + shifts)
        circuits += per
        gates += per * backend.transpile(template).cost.two_qubit_gates
    if isinstance(model.head, QuantumHead):
        per = batch_size * (1 + 2 * model.head.template.num_weights)
        circuits += per
        gates += per * backend.transpile(model.head.template).cost.two_qubit_gates
    shots = backend.options.shots or DEFAULT_RUNTIME_SHOTS
    return StepCost(circuits, shots, gates)
