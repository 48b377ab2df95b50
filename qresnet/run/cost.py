"""What a run costs, counted from the templates a backend runs, with no model built (so reports need no torch).

    cost = run_cost(config, resolve_backend("aer:fake_torino"), num_classes=10, train_size=1600, test_size=400)
    cost.circuits_per_step, cost.device_train_epoch_qpu_seconds

:func:`run_cost` answers the audit's cost question for a configuration; :class:`StepCost` is what
one training step of a built model sends to a device (``build.step_cost`` counts it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cache

from qresnet.backends import Backend
from qresnet.backends.limits import DEFAULT_RUNTIME_SHOTS, qpu_seconds
from qresnet.circuits import CircuitTemplate, FilterSpec, quantum_head, quanv_filter
from qresnet.config import TrainConfig
from qresnet.errors import ConfigError
from qresnet.residual import map_size

HEAD_QUBITS = 10  # the paper's quantum head: 10 qubits, amplitude-encoding up to 1024 values


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



def layer_rows(config: TrainConfig, template: CircuitTemplate, image_shape: tuple[int, int]) -> dict[str, int]:
    """Rows (parameter sets) one training batch evaluates per filter in each mode, summed over the layers: response
    mode runs the 3^q design points once per layer, per-patch mode every patch of every image and input channel."""
    spec = config.quanv
    shapes = config.residual.node_shapes(tuple(image_shape), spec.kernel_size, spec.stride, spec.padding)
    channels = config.residual.node_channels([spec.channels] * config.layers)
    per_patch = sum(config.batch_size * channels[k] * _windows(shapes[k], spec) for k in range(config.layers))
    return {"response": config.layers * 3 ** template.num_inputs, "per-patch": per_patch}


def _windows(shape: tuple[int, int], spec: FilterSpec) -> int:
    return (map_size(shape[0], spec.kernel_size, spec.stride, spec.padding)
            * map_size(shape[1], spec.kernel_size, spec.stride, spec.padding))


def choose_mode(config: TrainConfig, template: CircuitTemplate, image_shape: tuple[int, int],
                circuit=None) -> tuple[str, str]:
    """The mode the run's layers use and why: the config's, except that ``auto`` takes the one with fewer rows
    (:func:`layer_rows`), and a filter whose inputs break the response condition runs per-patch."""
    rows = layer_rows(config, template, image_shape)
    check = template.check_rotations(circuit)
    counts = (f"{rows['response']} design-point rows ({config.layers} layers x 3^{template.num_inputs}) vs "
              f"{rows['per-patch']} patch rows ({config.batch_size} images, every window of every layer)")
    if not check.ok:
        if config.mode == "response" and config.quanv.circuit_path is None:
            raise ConfigError(f"mode='response' needs every input in exactly one rotation ({check.describe()}); "
                              "use mode='per-patch'")
        return "per-patch", (f"filter mode per-patch: the response condition fails ({check.describe()}), so every "
                             f"patch runs its circuit: {rows['per-patch']} rows per filter per batch")
    if config.mode != "auto":
        return config.mode, f"filter mode {config.mode} (as configured): {counts} per filter per batch"
    mode = "response" if rows["response"] <= rows["per-patch"] else "per-patch"
    return mode, f"filter mode {mode} (auto, fewer rows): {counts} per filter per batch"


@cache
def _device_filter():
    """The filter template whose costs :func:`run_cost` counts, one object, so a backend transpiles it once."""
    return quanv_filter()


@cache
def _angle_head(num_classes: int, reps: int):
    """The hardware form of the head (the transpiled Mottonen encoding), one template object per class count and
    depth, so that a backend transpiles it once."""
    return quantum_head(HEAD_QUBITS, num_classes, reps)


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


def run_cost(config: TrainConfig, backend: Backend, num_classes: int, train_size: int, test_size: int,
             mode: str = "response", image_shape: tuple[int, int] | None = None) -> RunCost:
    """The cost of a run of ``config`` with the templates ``backend`` runs, its layers in ``mode`` (per-patch needs
    the ``image_shape``); device figures need a device (noisy ``aer:<device>``, ``local:``, ``ibm:``) and follow
    :func:`qresnet.backends.limits.qpu_seconds`, with one job per forward and one per gradient of a step. On a
    device the head runs its transpiled angle encoding."""
    quanv = _device_filter() if config.quanv == FilterSpec() else config.quanv.template()
    if mode == "response":  # the filter-response method: 3^q rows per layer and filter (81 for today's filter)
        rows = config.layers * 3 ** quanv.num_inputs * config.quanv.filters_per_layer
        test_rows = rows  # a whole test set's stack
    else:  # every window of every image, layer and input channel
        if image_shape is None:
            raise ValueError("run_cost: a per-patch run's cost needs its image_shape")
        rows = layer_rows(config, quanv, image_shape)["per-patch"] * config.quanv.filters_per_layer
        test_rows = rows // config.batch_size * test_size
    per_step, evaluation, qubits = [], [], []
    if config.filter == "quantum":  # the classical control runs no circuit
        per_step = [(quanv, rows * (1 + (0 if config.frozen else 2 * quanv.num_weights)))]
        evaluation = [(quanv, test_rows)]
        qubits = [quanv.num_qubits]
    if config.head == "quantum":
        head = _angle_head(num_classes, config.head_reps)
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
        jobs = 2 * steps if per_step else 0  # a forward and a gradient job per step, when there are circuits
        train_seconds = qpu_seconds([(isa[id(t)], steps * n) for t, n in per_step], shots, backend.device, jobs)
        test_circuits = sum(n for _, n in evaluation)
        test_seconds = qpu_seconds([(isa[id(t)], n) for t, n in evaluation], shots, backend.device, len(evaluation))
    boundaries = (config.layers - 1 if config.filter == "quantum" else 0) + (config.head == "quantum")
    return RunCost(tuple(qubits), boundaries, sum(n for _, n in per_step), device,
                   shots, train_circuits, train_seconds, test_circuits, test_seconds)
