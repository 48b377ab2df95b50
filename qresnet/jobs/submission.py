"""Submit a trained checkpoint for evaluation on a device: manifest, job plan, cost, ledger, then the jobs.

    prepared = prepare("runs/demo", "ibm:ibm_torino", SubmitOptions(BackendOptions(shots=4000)))
    print(prepared.cost.describe())
    submission_id = submit(prepared, Ledger())

QPU time is estimated by :func:`qresnet.backends.limits.qpu_seconds` (per job an overhead, per
circuit shots x (repetition delay + duration on the device target)).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.providers import BackendV2

from qresnet.backends import BackendSpec
from qresnet.backends.limits import JobPlan, PubSlice, circuits_per_parameter_set, plan_jobs, qpu_seconds
from qresnet.errors import DuplicateSubmissionError, JobsError, QresnetError
from qresnet.jobs.ledger import JobRecord, Ledger, SubmissionRecord, encode_result, job_tag
from qresnet.jobs.manifest import Manifest, build_manifest
from qresnet.jobs.options import SubmitOptions
from qresnet.jobs.run import TrainedRun
from qresnet.jobs.transport import DEFAULT_RETRY, Retry, RuntimeTransport, open_transport, scrub, status_name



@dataclass(frozen=True)
class Cost:
    """What a submission sends: jobs, circuits (after broadcasting), shots per circuit, executions,
    two-qubit gates, and an estimate of QPU seconds. ``head_stage`` is the part of it that a
    quantum head sends at stage 2 (one circuit per test image, once the layer jobs are in);
    the totals include it.

    >>> print(Cost(jobs=1, circuits=170, shots=4096, executions=696320, two_qubit_gates=1020, qpu_seconds=176.1).describe())
    1 job, 170 circuits x 4096 shots = 696320 executions, 1020 two-qubit gates, about 176 s of QPU time
    >>> head = Cost(jobs=1, circuits=3, shots=4096, executions=12288, two_qubit_gates=7692, qpu_seconds=12.0)
    >>> print(Cost(jobs=1, circuits=170, shots=4096, executions=696320, two_qubit_gates=1020, qpu_seconds=176.1)
    ...       .plus_head(head).describe())
    2 jobs, 173 circuits x 4096 shots = 708608 executions, 8712 two-qubit gates, about 188 s of QPU time
      of which stage 2, the quantum head (sent by `qresnet jobs fetch` once the layer jobs are in): 1 job, 3 circuits (one per test image) = 12288 executions, 7692 two-qubit gates, about 12 s
    """

    jobs: int
    circuits: int
    shots: int
    executions: int
    two_qubit_gates: int
    qpu_seconds: float
    head_stage: Cost | None = None

    def plus_head(self, head: Cost) -> Cost:
        """The cost of both stages, with ``head`` (stage 2) kept as ``head_stage``."""
        return Cost(self.jobs + head.jobs, self.circuits + head.circuits, self.shots, self.executions + head.executions,
                    self.two_qubit_gates + head.two_qubit_gates, self.qpu_seconds + head.qpu_seconds, head_stage=head)

    @property
    def stage1_jobs(self) -> int:
        return self.jobs - (self.head_stage.jobs if self.head_stage is not None else 0)

    def describe(self) -> str:
        text = (f"{self.jobs} job{'s' * (self.jobs != 1)}, {self.circuits} circuits x {self.shots} shots = "
                f"{self.executions} executions, {self.two_qubit_gates} two-qubit gates, "
                f"about {self.qpu_seconds:.0f} s of QPU time")
        head = self.head_stage
        if head is not None:
            text += ("\n  of which stage 2, the quantum head (sent by `qresnet jobs fetch` once the layer jobs are in): "
                     f"{head.jobs} job{'s' * (head.jobs != 1)}, {head.circuits} circuits (one per test image) = "
                     f"{head.executions} executions, {head.two_qubit_gates} two-qubit gates, about {head.qpu_seconds:.0f} s")
        return text

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.head_stage is None:
            out.pop("head_stage")
        return out


def estimate_cost(plan: JobPlan, device: BackendV2 | None, shots: int) -> Cost:
    """Counts from ``plan``; QPU time as in the module docstring."""
    seconds = qpu_seconds([(pub.circuit, circuits) for pub, circuits in zip(plan.pubs, plan.pub_circuits)], shots,
                          device, len(plan.jobs))
    return Cost(len(plan.jobs), plan.circuits, shots, plan.executions, plan.two_qubit_gates, seconds)


@dataclass(frozen=True, eq=False)
class Prepared:
    """A submission ready to send: nothing has touched the ledger or the service's job queue yet."""

    run: TrainedRun
    options: SubmitOptions
    manifest: Manifest
    plan: JobPlan
    cost: Cost
    transport: RuntimeTransport


def prepare(
    run_dir: str | Path,
    backend: str,
    options: SubmitOptions | dict[str, Any] | None = None,
    *,
    checkpoint: str | Path | None = None,
    service: Any = None,
    transport: RuntimeTransport | None = None,
) -> Prepared:
    """Load the run, transpile on ``backend``, build the manifest, plan the jobs and count the cost.

    ``plan`` is stage 1 (the layers and validation patches); a quantum head's stage 2 is planned
    the same way at fetch, and its cost is in ``cost`` already (``cost.head_stage``).

    ``transport`` (default: one opened on ``backend``, connecting ``service`` for ibm:) must run on ``backend``.

    Shots not given in ``options`` are the run's own (``TrainConfig.backend_options.shots``), if it trained with shots.
    """
    options = SubmitOptions.coerce(options)
    run = TrainedRun.load(run_dir, checkpoint)
    if options.backend.shots is None and run.config.backend_options.shots is not None:
        options = options.with_backend(shots=run.config.backend_options.shots)
    transport = transport or open_transport(backend, options, service)
    if transport.backend.name != str(BackendSpec.coerce(backend)):
        raise JobsError(f"the transport runs on {transport.backend.name}, not on {backend}")
    manifest = build_manifest(run, transport.backend, options.runtime(), options.validate_patches)
    limits = options.limits()
    plan = plan_jobs(manifest.pubs, limits)
    cost = estimate_cost(plan, transport.backend.device, limits.shots)
    head = manifest.head_part()
    if head is not None:  # stage 2's circuits are known now, only their angles are not: count them with zeros
        placeholder = head.with_inputs(np.zeros((head.planned, len(head.input_params))))
        cost = cost.plus_head(estimate_cost(plan_jobs([placeholder.pub], limits), transport.backend.device, limits.shots))
    return Prepared(run, options, manifest, plan, cost, transport)


def submit(
    prepared: Prepared,
    ledger: Ledger,
    *,
    force: bool = False,
    retry: Retry = DEFAULT_RETRY,
    on_sent: Callable[[int, Any], None] | None = None,
) -> str:
    """Record the submission, then send its jobs; returns its id. The same manifest twice needs ``force``."""
    digest = prepared.manifest.digest
    check_new(ledger, digest, force)
    now = time.time()
    submission_id = uuid.uuid4().hex[:10]
    record = SubmissionRecord(
        id=submission_id, digest=digest, run_dir=str(prepared.run.run_dir.resolve()),
        checkpoint=str(prepared.run.checkpoint.resolve()), backend=prepared.manifest.backend,
        options=prepared.options.to_dict(), manifest=prepared.manifest.to_json(), cost=prepared.cost.to_dict(),
        batch_id=None, status="submitting", message=None, report=None, created=now, updated=now)
    ledger.add(record, [(job_tag(submission_id, j), [(s.pub, s.start, s.stop) for s in job])
                        for j, job in enumerate(prepared.plan.jobs)])
    send_pending(ledger, submission_id, prepared.transport, retry=retry, on_sent=on_sent)
    return submission_id


def check_new(ledger: Ledger, digest: str, force: bool = False) -> None:
    """Refuse a manifest the ledger holds already (unless cancelled), unless ``force``."""
    earlier = [s for s in ledger.submissions(digest) if s.status != "cancelled"]
    if earlier and not force:
        last = earlier[-1]
        raise DuplicateSubmissionError(
            f"this manifest (sha256 {digest[:12]}) was submitted already as {last.id} ({last.status}); "
            f"`qresnet jobs fetch {last.id}` gets its results, or pass --force to send it again")


def job_plan(manifest: Manifest, jobs: Sequence[JobRecord], cost: dict[str, Any]) -> JobPlan:
    """The plan a submission was sent with, from its ledger rows."""
    pubs = tuple(manifest.pubs)
    circuits = tuple(circuits_per_parameter_set(p) * int(np.prod(p.parameter_values.shape, dtype=int)) for p in pubs)
    return JobPlan(pubs, tuple(tuple(PubSlice(*s) for s in job.slices) for job in jobs), circuits,
                   cost["circuits"], cost["two_qubit_gates"], cost["executions"])


def send_pending(
    ledger: Ledger,
    submission_id: str,
    transport: RuntimeTransport,
    *,
    retry: Retry = DEFAULT_RETRY,
    on_sent: Callable[[int, Any], None] | None = None,
) -> int:
    """Send the submission's jobs that have no job id yet (either stage); returns how many were sent or found.

    Each attempt first looks for the job by its tag, so a job the service accepted before a
    crash (or before a lost response) is adopted, not sent twice. ``on_sent(index, job)`` runs
    after the service accepted a job and before its id is written (a test hook for crashes).
    Local testing mode runs each job at once, and its result is written with its id.
    """
    with ledger.sending():
        record = ledger.submission(submission_id)
        jobs = ledger.jobs(record.id)
        plan = job_plan(Manifest.from_json(record.manifest), jobs, record.cost)
        pending = [job for job in jobs if job.status == "pending"]
        for job in pending:
            _send_job(ledger, job, plan.job_pubs(job.index), transport, retry, on_sent)
        if record.status == "submitting":
            ledger.update_submission(record.id, status="submitted")
        return len(pending)


def _send_job(ledger: Ledger, job: JobRecord, pubs: list[EstimatorPub], transport: RuntimeTransport, retry: Retry,
              on_sent: Callable[[int, Any], None] | None) -> None:
    where = f"job {job.index} of submission {job.submission_id}"
    try:
        sent = retry.call(f"submit {where}", lambda: transport.find(job.tag) or transport.send(pubs, job.tag))
    except QresnetError:
        raise
    except Exception as exc:  # the service refused the job, or stayed unreachable
        reason = scrub(f"{type(exc).__name__}: {exc}")
        raise JobsError(f"sending {where} failed ({reason}); the ledger keeps it: `qresnet jobs fetch {job.submission_id}` "
                        f"sends the unsent jobs, `qresnet jobs cancel {job.submission_id}` drops them") from None
    if on_sent is not None:
        on_sent(job.index, sent)
    fields: dict[str, Any] = {"job_id": sent.job_id(), "status": "QUEUED", "sent": time.time()}
    if transport.local:  # the job has run already, and lives only in this process: keep its result with its id
        fields.update(result=encode_result(sent.result()), status=status_name(sent.status()), usage=0.0,
                      finished=time.time())
    ledger.update_job(job.submission_id, job.index, submission={"batch_id": transport.batch_id()}, **fields)
