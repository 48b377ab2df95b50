"""Follow submissions: job status, results into the ledger, the device report, cancellation.

A quantum-head submission has a second stage: once every stage-1 job has results, :func:`fetch`
builds and records the head jobs (:mod:`qresnet.jobs.stages`), sends them and fetches them
like the others; the report waits for both stages.

Every service call goes through :class:`Retry`: transient errors are retried with backoff; a
rejected token stops the command with a :class:`CredentialsError` and leaves the ledger as it
was; any other error is recorded against its job, and the other jobs carry on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qresnet.errors import CredentialsError, JobsError
from qresnet.jobs.ledger import FINAL_SUBMISSION_STATES, JobRecord, Ledger, SubmissionRecord, decode_result, encode_result
from qresnet.jobs.manifest import Manifest
from qresnet.jobs.options import SubmitOptions
from qresnet.jobs.device_report import write_device_report
from qresnet.jobs.stages import head_stage_due, record_head_stage, unrecorded_head_jobs
from qresnet.jobs.submission import send_pending
from qresnet.jobs.transport import DEFAULT_RETRY, Retry, RuntimeTransport, classify, open_transport, scrub, status_name


@dataclass(frozen=True)
class FetchOutcome:
    """Where a submission stands after a fetch: jobs with results, failed jobs, jobs still out, the report."""

    submission: str
    status: str
    done: int
    failed: int
    waiting: int
    report: Path | None
    notes: tuple[str, ...] = ()


class _Connection:
    """The submission's transport, opened on first use (a finished local submission needs none) and closed on exit."""

    def __init__(self, record: SubmissionRecord, transport: RuntimeTransport | None, service: Any):
        self.record, self.transport, self.service = record, transport, service
        self.opened: RuntimeTransport | None = None

    def __call__(self) -> RuntimeTransport:
        if self.transport is None:
            self.transport = self.opened = open_transport(self.record.backend, SubmitOptions.coerce(self.record.options),
                                                          self.service)
        return self.transport

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.opened is not None:
            self.opened.close()


def fetch(
    ledger: Ledger,
    key: str,
    *,
    transport: RuntimeTransport | None = None,
    service: Any = None,
    retry: Retry = DEFAULT_RETRY,
    on_sent: Callable[[int, Any], None] | None = None,
) -> FetchOutcome:
    """Send what a crash left unsent, store every finished job's result, build and send a quantum head's stage 2
    once stage 1 is in, and write the report once all are in. ``on_sent`` as in :func:`send_pending`."""
    record = ledger.submission(key)
    if record.status == "cancelled" or (record.status == "done" and record.report):
        return _outcome(ledger, record, ())
    notes: list[str] = []
    with _Connection(record, transport, service) as connect:
        if any(job.status == "pending" for job in ledger.jobs(record.id)):
            sent = send_pending(ledger, record.id, connect(), retry=retry, on_sent=on_sent)
            notes.append(f"sent {sent} job(s) that an interrupted submit or fetch left unsent")
        _fetch_unfinished(ledger, record.id, connect, retry, notes)
        if unrecorded_head_jobs(record, ledger.jobs(record.id)) and head_stage_due(
                Manifest.from_json(ledger.submission(record.id).manifest), ledger.jobs(record.id)):
            recorded = record_head_stage(ledger, record.id, connect().backend)
            if recorded:
                sent = send_pending(ledger, record.id, connect(), retry=retry, on_sent=on_sent)
                notes.append(f"stage 2: sent {sent} quantum-head job(s), one circuit per test image, built from the "
                             "device's layer values")
                _fetch_unfinished(ledger, record.id, connect, retry, notes)
    jobs = ledger.jobs(record.id)
    failed = [job for job in jobs if _failed(job)]
    if all(job.result is not None for job in jobs) and not unrecorded_head_jobs(ledger.submission(record.id), jobs):
        results = [decode_result(job.result) for job in jobs]
        report = write_device_report(ledger.submission(record.id), jobs, results)
        ledger.update_submission(record.id, status="done", report=str(report), message=None)
    elif failed and all(job.result is not None or _failed(job) for job in jobs):
        message = "; ".join(f"job {job.index} ({job.job_id}) {job.status}: {job.message}" for job in failed)
        ledger.update_submission(record.id, status="failed",
                                 message=f"{message}. Submit again with --force to rerun the checkpoint")
    return _outcome(ledger, ledger.submission(record.id), tuple(notes))


def _fetch_unfinished(ledger: Ledger, submission_id: str, connect: Callable[[], RuntimeTransport], retry: Retry,
                      notes: list[str]) -> None:
    for job in ledger.jobs(submission_id):
        if job.result is None and not _failed(job) and job.job_id is not None:
            note = _fetch_job(ledger, job, connect, retry)
            if note:
                notes.append(note)


def _failed(job: JobRecord) -> bool:
    return job.status in ("ERROR", "CANCELLED")


def _fetch_job(ledger: Ledger, job: JobRecord, connect: Callable[[], RuntimeTransport], retry: Retry) -> str | None:
    """Store one job's status and, once it is done, its result; a note for the user if it could not be reached."""
    what = f"fetch job {job.job_id}"
    try:
        remote = retry.call(what, lambda: connect().job(job.job_id))
        status = status_name(retry.call(what, remote.status))
        if status == "DONE":
            result = retry.call(what, remote.result)
            ledger.update_job(job.submission_id, job.index, status=status, result=encode_result(result),
                              usage=_usage(remote, retry), finished=time.time())
        elif status in ("ERROR", "CANCELLED"):
            message = retry.call(what, remote.error_message) if hasattr(remote, "error_message") else None
            ledger.update_job(job.submission_id, job.index, status=status, message=scrub(message or status.lower()),
                              finished=time.time())
        else:
            ledger.update_job(job.submission_id, job.index, status=status)
    except CredentialsError:
        raise
    except Exception as exc:  # recorded per job, so the other jobs carry on
        text = scrub(f"{type(exc).__name__}: {exc}")
        if classify(exc) == "transient":
            return f"job {job.job_id}: the service did not answer after {retry.attempts} attempts ({text}); fetch again later"
        ledger.update_job(job.submission_id, job.index, status="ERROR", message=text, finished=time.time())
    return None


def _usage(remote: Any, retry: Retry) -> float | None:
    """QPU seconds the service charged for a job, if it says."""
    try:
        return float(retry.call("read job usage", remote.usage))
    except CredentialsError:
        raise
    except Exception:  # usage is informative; a job's result does not depend on it
        return None


def _outcome(ledger: Ledger, record: SubmissionRecord, notes: tuple[str, ...]) -> FetchOutcome:
    """Counts over the ledger's jobs; ``waiting`` includes a quantum head's stage-2 jobs not yet recorded."""
    jobs = ledger.jobs(record.id)
    done = sum(job.result is not None for job in jobs)
    failed = sum(_failed(job) for job in jobs)
    unrecorded = 0 if record.status in FINAL_SUBMISSION_STATES else unrecorded_head_jobs(record, jobs)
    return FetchOutcome(record.id, record.status, done, failed, len(jobs) - done - failed + unrecorded,
                        Path(record.report) if record.report else None, notes)


def fetch_all(ledger: Ledger, *, service: Any = None, retry: Retry = DEFAULT_RETRY) -> list[FetchOutcome]:
    """:func:`fetch` every submission that is not finished; one that cannot go on (say, its run moved) is noted."""
    outcomes = []
    for record in ledger.submissions():
        if record.status in FINAL_SUBMISSION_STATES:
            continue
        try:
            outcomes.append(fetch(ledger, record.id, service=service, retry=retry))
        except JobsError as exc:
            outcomes.append(_outcome(ledger, ledger.submission(record.id), (str(exc),)))
    return outcomes


def refresh(
    ledger: Ledger, key: str, *, transport: RuntimeTransport | None = None, service: Any = None, retry: Retry = DEFAULT_RETRY,
) -> list[JobRecord]:
    """Ask the service for the status of every sent job that is not final; the jobs as the ledger now has them."""
    record = ledger.submission(key)
    with _Connection(record, transport, service) as connect:
        for job in ledger.jobs(record.id):
            if job.job_id is None or job.final:
                continue
            status = status_name(retry.call(f"read the status of job {job.job_id}",
                                            lambda job=job: connect().job(job.job_id).status()))
            ledger.update_job(record.id, job.index, status=status)
    return ledger.jobs(record.id)


def watch(
    ledger: Ledger, key: str, *, interval: float = 30.0, sleep: Callable[[float], None] = time.sleep,
    on_poll: Callable[[list[JobRecord]], None] | None = None, transport: RuntimeTransport | None = None,
    service: Any = None, retry: Retry = DEFAULT_RETRY,
) -> list[JobRecord]:
    """:func:`refresh` every ``interval`` seconds until every job is final."""
    while True:
        jobs = refresh(ledger, key, transport=transport, service=service, retry=retry)
        if on_poll is not None:
            on_poll(jobs)
        if all(job.final for job in jobs):
            return jobs
        sleep(interval)


def cancel(
    ledger: Ledger, key: str, *, transport: RuntimeTransport | None = None, service: Any = None, retry: Retry = DEFAULT_RETRY,
) -> list[str]:
    """Cancel every job that has not finished (and mark unsent ones cancelled, and a quantum head's unbuilt
    stage 2 dropped); returns what was done."""
    record = ledger.submission(key)
    lines: list[str] = []
    cancelled = 0
    with ledger.sending(), _Connection(record, transport, service) as connect:  # no job is sent while we cancel
        for job in ledger.jobs(record.id):
            if job.final or job.result is not None:
                continue
            what = f"cancel job {job.job_id or job.tag}"
            remote = retry.call(what, lambda job=job: connect().job(job.job_id) if job.job_id else connect().find(job.tag))
            if remote is not None:
                try:
                    retry.call(what, remote.cancel)
                except CredentialsError:
                    raise
                except Exception as exc:  # e.g. it finished meanwhile
                    lines.append(f"job {job.index}: could not cancel ({scrub(f'{type(exc).__name__}: {exc}')})")
                    continue
            job_id = job.job_id or (remote.job_id() if remote is not None else None)
            ledger.update_job(record.id, job.index, status="CANCELLED", job_id=job_id, finished=time.time(),
                              message="cancelled" if remote is not None else "cancelled before it was sent")
            lines.append(f"job {job.index} ({job_id or 'never sent'}): cancelled")
            cancelled += 1
        unrecorded = unrecorded_head_jobs(ledger.submission(record.id), ledger.jobs(record.id))
        if unrecorded and record.status not in FINAL_SUBMISSION_STATES:  # fetch builds no stage 2 for a cancelled one
            lines.append(f"stage 2 ({unrecorded} quantum-head job(s), not built yet): will not be sent")
            cancelled += 1
    if not lines:
        raise JobsError(f"submission {record.id} has no unfinished job to cancel; `qresnet jobs fetch {record.id}` "
                        "gets its results")
    if cancelled:
        ledger.update_submission(record.id, status="cancelled")
    return lines
