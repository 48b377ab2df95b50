"""The device report of a fetched submission, written beside the run in ``RUN_DIR/device/<submission id>/``.

Each layer's response tensor is rebuilt from its 81 device values, and the checkpoint's whole
model runs forward on the test set with those tensors (no circuit is evaluated). The same
checkpoint is also simulated: noiseless (``aer``) and with the device's noise model (``aer:<fake
device>``, for a ``local:`` fake device or an ``ibm:`` device with a fake snapshot of the same
name). The validation patches, run directly on the device, are compared with the response
method's values for the same patches from the device's own response tensor.

With a quantum head, the device predictions are the argmax of the device's head values (stage
2: one circuit per test image, logits = scale x <Z_q>); the simulations of the same checkpoint
prepare the head's encoded state exactly, and the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from qiskit.primitives import PrimitiveResult

from qresnet.backends import BackendOptions, BackendSpec, resolve_backend
from qresnet.backends.devices import canonical_device_name
from qresnet.backends.limits import two_qubit_gates
from qresnet.errors import BackendSpecError, JobsError
from qresnet.jobs.ledger import JobRecord, SubmissionRecord
from qresnet.jobs.manifest import Manifest
from qresnet.jobs.options import SubmitOptions
from qresnet.jobs.run import TrainedRun
from qresnet.jobs.stages import device_responses, head_inputs, part_values
from qresnet.qnn import evaluate_response
from qresnet.run.rundir import RunDir, atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class DeviceReport:
    """Device accuracy against simulations of the same checkpoint, the validation discrepancy, and the cost."""

    submission: str
    run_dir: str
    checkpoint: str
    backend: str
    test_images: int
    device_accuracy: float
    ideal_accuracy: float
    noisy_backend: str | None
    noisy_accuracy: float | None
    device_predictions: tuple[int, ...]
    validation_patches: int
    validation_max_abs: float | None
    validation_mean_abs: float | None
    validation_mean_std: float | None
    jobs: int
    circuits: int
    shots: int
    executions: int
    per_patch_circuits: int
    qpu_seconds_estimated: float
    qpu_seconds_used: float | None
    wall_seconds: float | None
    head: str = "linear"
    head_circuits: int = 0
    head_two_qubit_gates: int | None = None
    head_scale: float | None = None
    device_head_values: tuple[tuple[float, ...], ...] | None = None
    head_mean_std: float | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        def pct(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        lines = [
            f"# Device evaluation {self.submission}",
            "",
            f"Run `{self.run_dir}`, checkpoint `{Path(self.checkpoint).name}`, backend `{self.backend}`, "
            f"{self.test_images} test images.",
            "",
            "| evaluation | test accuracy |",
            "|---|---|",
            f"| device, {self.backend} ({self.device_source()}) | {pct(self.device_accuracy)} |",
            f"| ideal simulation, aer | {pct(self.ideal_accuracy)} |",
            f"| noisy-model simulation, {self.noisy_backend or 'none available'} | {pct(self.noisy_accuracy)} |",
            "",
        ]
        if self.validation_patches:
            lines += [f"Validation: {self.validation_patches} test-set patches of layer 1 run directly on the device; "
                      f"|response method - direct| max {self.validation_max_abs:.4f}, mean {self.validation_mean_abs:.4f} "
                      f"(mean standard error of a direct value {self.validation_mean_std:.4f}).", ""]
        used = "n/a" if self.qpu_seconds_used is None else f"{self.qpu_seconds_used:.1f} s"
        wall = "n/a" if self.wall_seconds is None else f"{self.wall_seconds:.1f} s"
        for note in self.notes:
            lines += [note, ""]
        head = f", of which {self.head_circuits} quantum-head circuits (stage 2)" if self.head_circuits else ""
        lines += [f"Cost: {self.jobs} job(s), {self.circuits} circuits x {self.shots} shots = {self.executions} executions"
                  f"{head}; per-patch evaluation of the same test set would take {self.per_patch_circuits} circuits. "
                  f"QPU time used {used} (estimated {self.qpu_seconds_estimated:.1f} s), wall time {wall}.", ""]
        return "\n".join(lines)

    def device_source(self) -> str:
        if self.head == "quantum":
            return "response tensors and quantum-head circuits from device values"
        return "response tensors from device values"


def noisy_model_spec(backend: str) -> str | None:
    """``aer:<fake device>`` simulating ``backend``'s noise, if a fake device of that name exists.

    >>> noisy_model_spec("local:fake_manila"), noisy_model_spec("ibm:ibm_torino"), noisy_model_spec("ibm:ibm_nowhere")
    ('aer:fake_manila', 'aer:fake_torino', None)
    """
    device = BackendSpec.coerce(backend).device or ""
    try:
        return f"aer:{canonical_device_name(device.removeprefix('ibm_'))}"
    except BackendSpecError:
        return None


def evaluate(record: SubmissionRecord, jobs: Sequence[JobRecord], results: Sequence[PrimitiveResult]) -> DeviceReport:
    """The report of a submission whose jobs (both stages, for a quantum head) all have ``results``."""
    manifest = Manifest.from_json(record.manifest)
    parts = part_values(manifest, jobs, results, record.cost)
    values = {name: evs for name, (evs, _) in parts.items()}
    stds = {name: std for name, (_, std) in parts.items()}
    run = TrainedRun.load(record.run_dir, record.checkpoint)
    model = run.model(resolve_backend("aer"))
    responses = device_responses(record, manifest, model, parts)
    head = manifest.head_part()
    quantum = run.config.head == "quantum"
    head_fields: dict[str, Any] = {"head": run.config.head, "head_circuits": 0, "head_two_qubit_gates": None,
                                   "head_scale": None, "device_head_values": None, "head_mean_std": None}
    notes: list[str] = []
    if quantum:
        if head is None or head.pending:
            raise JobsError(f"submission {record.id} has no quantum-head results yet; `qresnet jobs fetch {record.id}` "
                            "sends its stage 2")
        expected = head_inputs(run, model, responses)
        if expected.shape != head.inputs.shape or not np.allclose(expected, head.inputs, rtol=0, atol=1e-9):
            raise JobsError(f"the head circuits of submission {record.id} do not follow from its layer values and "
                            f"{record.checkpoint}: restore the checkpoint it was sent with")
        scores = values["head"].reshape(len(head.inputs), -1)
        device = torch.as_tensor(model.head.scale * scores).argmax(1)  # logits = scale * <Z_q>
        gates = two_qubit_gates(head.circuit)
        head_fields.update(head_circuits=len(head.inputs), head_two_qubit_gates=gates, head_scale=model.head.scale,
                           device_head_values=tuple(tuple(float(v) for v in row) for row in scores),
                           head_mean_std=float(stds["head"].mean()))
        notes += [
            f"Quantum head on the device: each test image's final map (from the device response tensors) is "
            f"zero-padded to 2^{model.head.num_qubits}, normalised and amplitude-encoded by the transpiled Mottonen "
            f"state preparation, one circuit per image ({len(head.inputs)} circuits, {gates} two-qubit gates each); "
            f"logits = {model.head.scale:g} x <Z_q> of the device. Sent as stage 2, once the layer jobs were in.",
            "The ideal and noisy-model simulations use the exact state-preparation head (encoding \"state\", "
            "what `build_model` picks on aer backends): the encoded state is prepared exactly, and the noisy model "
            "applies the device noise to the transpiled ansatz and the readout only, not to the state preparation.",
        ]
    else:
        device = run.predict(model, responses)
    options = SubmitOptions.coerce(record.options)
    noisy_spec = noisy_model_spec(record.backend)
    noisy = None
    if noisy_spec is not None:
        layout = options.backend.initial_layout
        if quantum and layout is not None:  # a filter layout does not fit the 10-qubit head: both transpile freely
            notes.append(f"The noisy-model simulation transpiles without --initial-layout {','.join(map(str, layout))} "
                         "(it is the filter's, and the head has more qubits).")
            layout = None
        transpile = BackendOptions(optimization_level=options.backend.optimization_level,
                                   seed_transpiler=options.backend.seed_transpiler, initial_layout=layout)
        noisy = run.accuracy(run.predict(run.model(resolve_backend(noisy_spec, transpile))))
    validation = {"validation_patches": 0, "validation_max_abs": None, "validation_mean_abs": None,
                  "validation_mean_std": None}
    if any(part.name == "validation" for part in manifest.parts):
        part = manifest.part("validation")
        layer = model.layers[part.layer - 1]
        predicted = evaluate_response(responses[part.layer - 1], torch.as_tensor(part.inputs), layer.template.input_scale)
        gap = np.abs(predicted[:, 0].numpy() - values["validation"])
        validation = {"validation_patches": len(gap), "validation_max_abs": float(gap.max()),
                      "validation_mean_abs": float(gap.mean()), "validation_mean_std": float(stds["validation"].mean())}
    kernel = model.layers[0].kernel_size
    shapes = model.residual.node_shapes(run.data.image_shape, kernel)
    per_image = sum(-(-h // kernel) * -(-w // kernel) for h, w in shapes[:-1]) + (1 if quantum else 0)
    usage = [job.usage for job in jobs if job.usage is not None]
    sent = [job.sent for job in jobs if job.sent is not None]
    finished = [job.finished for job in jobs if job.finished is not None]
    cost = record.cost
    return DeviceReport(
        submission=record.id, run_dir=record.run_dir, checkpoint=record.checkpoint, backend=record.backend,
        test_images=len(run.data.y_test), device_accuracy=run.accuracy(device),
        ideal_accuracy=run.accuracy(run.predict(model)), noisy_backend=noisy_spec, noisy_accuracy=noisy,
        device_predictions=tuple(int(p) for p in device), **validation, jobs=cost["jobs"], circuits=cost["circuits"],
        shots=cost["shots"], executions=cost["executions"], per_patch_circuits=len(run.data.y_test) * per_image,
        qpu_seconds_estimated=cost["qpu_seconds"], qpu_seconds_used=sum(usage) if usage else None,
        wall_seconds=max(finished) - min(sent) if sent and finished else None, **head_fields, notes=tuple(notes),
    )


def write_device_report(record: SubmissionRecord, jobs: Sequence[JobRecord], results: Sequence[PrimitiveResult]) -> Path:
    """Evaluate and write ``report.json`` and ``report.md`` in ``RUN_DIR/device/<id>/``; returns the markdown path."""
    report = evaluate(record, jobs, results)
    out = RunDir(record.run_dir).device_dir(record.id)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", report.to_dict())
    atomic_write_text(out / "report.md", report.to_markdown())
    return out / "report.md"
