"""Stage 2 of a quantum-head submission: the head circuits, built from the device's layer values.

The head's input is the final map of each test image, which depends on the device's response
tensors: it exists only once every stage-1 job (layers, validation) has results. Then
:func:`record_head_stage` runs the checkpoint's model forward on the test set with those
tensors, takes the Mottonen angles of each flattened final map (``amplitude_angles``: padded
to 2^10, normalised, all-zero as |0...0>), puts them as the rows of the manifest's pending
``head`` part (the trained head weights are bound in each), plans the part's jobs under the
submission's limits and records the new manifest and the jobs in one ledger transaction;
only then are they sent (:func:`qresnet.jobs.submission.send_pending`), tagged like stage 1's,
so a crash at any point is completed by the next ``fetch`` and no job is sent twice. The rows
are a deterministic function of stage 1's stored results, so a stage rebuilt after a crash
before that transaction is the same stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from qiskit.primitives import PrimitiveResult

from qresnet.backends import Backend
from qresnet.backends.limits import assemble, plan_jobs
from qresnet.circuits import amplitude_angles
from qresnet.errors import JobsError
from qresnet.jobs.ledger import JobRecord, Ledger, SubmissionRecord, decode_result
from qresnet.jobs.manifest import Manifest
from qresnet.jobs.options import SubmitOptions
from qresnet.jobs.run import TrainedRun
from qresnet.jobs.submission import job_plan
from qresnet.nn import ResQuNN
from qresnet.qnn import response_tensor


def part_values(manifest: Manifest, jobs: Sequence[JobRecord], results: Sequence[PrimitiveResult],
                cost: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each ready part's device values and standard errors ``(evs, stds)``, put together from its jobs' results."""
    pub_results = assemble(job_plan(manifest, jobs, cost), results)
    return {part.name: (np.asarray(r.data.evs, dtype=float), np.asarray(r.data.stds, dtype=float))
            for part, r in zip(manifest.ready_parts(), pub_results)}


def device_responses(record: SubmissionRecord, manifest: Manifest, model: ResQuNN,
                     values: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[torch.Tensor]:
    """Each layer's response tensor from its 81 device values; the checkpoint's weights must be those sent."""
    layer_parts = manifest.layer_parts()
    for part, layer in zip(layer_parts, model.layers):
        if not np.array_equal(part.weights, layer.weight.detach().numpy()):
            raise JobsError(f"the weights of {part.name} in {record.checkpoint} differ from those sent in submission "
                            f"{record.id}: restore that checkpoint to evaluate it")
    head = manifest.head_part()
    if head is not None and not np.array_equal(head.weights, model.head.weight.detach().numpy()):
        raise JobsError(f"the quantum head weights in {record.checkpoint} differ from those of submission {record.id}: "
                        "restore that checkpoint to evaluate it")
    return [response_tensor(torch.as_tensor(values[part.name][0]).reshape(-1, 1), layer.template.num_inputs)
            for part, layer in zip(layer_parts, model.layers)]


def head_inputs(run: TrainedRun, model: ResQuNN, responses: Sequence[torch.Tensor]) -> np.ndarray:
    """The head's encoding angles of every test image, (N, 2^n - 1), from the final maps under ``responses``."""
    return amplitude_angles(run.features(model, responses).numpy(), model.head.num_qubits)


def head_stage_due(manifest: Manifest, jobs: Sequence[JobRecord]) -> bool:
    """Whether stage 2 can be built now: a pending head, and every stage-1 job with its result."""
    head = manifest.head_part()
    return head is not None and head.pending and bool(jobs) and all(job.result is not None for job in jobs)


def record_head_stage(ledger: Ledger, submission_id: str, backend: Backend) -> int:
    """Build stage 2 from the stored stage-1 results and record it (rows and jobs, one transaction).

    Returns how many jobs were recorded: 0 if the stage is recorded already, or not due yet.
    Nothing is sent here; ``backend`` (the submission's) only builds the checkpoint's model.
    """
    with ledger.sending():  # no other process builds or sends this submission's jobs meanwhile
        record = ledger.submission(submission_id)
        if record.status == "cancelled":
            return 0
        manifest = Manifest.from_json(record.manifest)
        jobs = ledger.jobs(record.id)
        if not head_stage_due(manifest, jobs):
            return 0
        run = TrainedRun.load(record.run_dir, record.checkpoint)
        model = run.model(backend)  # the weights; its circuits are not run
        values = part_values(manifest, jobs, [decode_result(job.result) for job in jobs], record.cost)
        inputs = head_inputs(run, model, device_responses(record, manifest, model, values))
        head = manifest.head_part().with_inputs(inputs)
        filled = manifest.with_part(head)
        index = [part.name for part in filled.ready_parts()].index("head")
        plan = plan_jobs([head.pub], SubmitOptions.coerce(record.options).limits())
        slices = [[(index, s.start, s.stop) for s in job] for job in plan.jobs]
        ledger.extend(record.id, record.manifest, filled.to_json(), slices)
        return len(slices)


def unrecorded_head_jobs(record: SubmissionRecord, jobs: Sequence[JobRecord]) -> int:
    """Stage-2 jobs counted at submit and not yet in the ledger (0 once they are, or without a quantum head).

    From the counts alone (stage 1 has ``cost.jobs - head_stage.jobs`` jobs), without decoding the manifest.
    """
    head = record.cost.get("head_stage")
    if not head:
        return 0
    return int(head["jobs"]) if len(jobs) <= int(record.cost["jobs"]) - int(head["jobs"]) else 0
