"""``qresnet jobs``: submit a trained checkpoint to a device, follow it in the ledger, fetch its report.

    qresnet jobs submit runs/demo --backend ibm:ibm_torino --shots 4000 --validate-patches 32
    qresnet jobs list
    qresnet jobs status ID --watch
    qresnet jobs fetch --all
    qresnet jobs cancel ID

``qresnet/cli/main.py`` adds these with ``add_jobs_parser(sub)``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from qresnet.cli.arguments import add_backend_arguments, backend_options, print_table
from qresnet.errors import JobsError

if TYPE_CHECKING:  # the commands import Qiskit and torch when they run, so that --help stays fast
    from qresnet.jobs.ledger import JobRecord, Ledger
    from qresnet.jobs.options import SubmitOptions

LEDGER_HELP = "the ledger database (default ~/.qresnet/jobs.sqlite)"


def add_jobs_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``jobs`` and its subcommands to a ``qresnet`` parser's subparsers."""
    parser = subparsers.add_parser("jobs", help="evaluate a trained checkpoint on a device; the submissions ledger")
    parser.set_defaults(run=run_jobs)
    sub = parser.add_subparsers(dest="jobs_command", required=True)

    p = sub.add_parser("submit", help="send a run's checkpoint to local:<fake device> or ibm:<device> "
                       "(a quantum head's circuits, one per test image, follow from `fetch` once the layers are in)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    add_backend_arguments(p, backend="local:<fake device> | ibm:<device>", required=True)
    p.add_argument("--checkpoint", default=None, help="a checkpoint file (default: the run's last one)")
    p.add_argument("--validate-patches", type=int, default=32, metavar="K",
                   help="test-set patches of layer 1 also run directly, to measure the response method's error (default 32)")
    p.add_argument("--seed", type=int, default=None, help="local: simulator seed")
    p.add_argument("--max-two-qubit-gates", type=int, default=None, help="per job (default: the Runtime limit, 10000)")
    p.add_argument("--max-executions", type=int, default=None, help="circuits x shots per job (default 10 million)")
    p.add_argument("--dry-run", action="store_true", help="print the cost and stop")
    p.add_argument("--yes", action="store_true", help="send without asking")
    p.add_argument("--force", action="store_true", help="send a manifest that was submitted before")

    sub.add_parser("list", help="every submission in the ledger")
    p = sub.add_parser("status", help="job status from the service")
    p.add_argument("id", nargs="?", default=None, help="a submission id or its prefix (default: every unfinished one)")
    p.add_argument("--watch", action="store_true", help="poll until every job is final")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between polls with --watch (default 30)")
    p = sub.add_parser("fetch", help="results into the ledger; the device report once all jobs are in")
    p.add_argument("id", nargs="?", default=None)
    p.add_argument("--all", action="store_true", help="every unfinished submission")
    p = sub.add_parser("cancel", help="cancel a submission's unfinished jobs")
    p.add_argument("id")
    for p in sub.choices.values():
        p.add_argument("--ledger", default=None, help=LEDGER_HELP)


def _submit_options(args: argparse.Namespace) -> SubmitOptions:
    from qresnet.jobs.options import SubmitOptions

    limits = {"validate_patches": args.validate_patches, "max_two_qubit_gates": args.max_two_qubit_gates,
              "max_executions": args.max_executions}
    return SubmitOptions(backend_options(args, seed=args.seed), **{k: v for k, v in limits.items() if v is not None})


def _ask(prompt: str) -> bool:
    try:
        return input(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cmd_submit(args: argparse.Namespace, ledger: Ledger) -> int:
    from qresnet.jobs.submission import check_new, prepare, submit

    prepared = prepare(args.run_dir, args.backend, _submit_options(args), checkpoint=args.checkpoint)
    try:
        for line in prepared.run.skipped:
            print(f"checkpoint: {line}")
        parts = ", ".join(f"{p.name} ({p.rows}{', at stage 2' if p.pending else ''})" for p in prepared.manifest.parts)
        print(f"submit {prepared.run.checkpoint} to {prepared.manifest.backend}: {parts}")
        print(f"cost: {prepared.cost.describe()}")
        print(f"manifest sha256 {prepared.manifest.digest}")
        if args.dry_run:
            print("dry run: nothing was sent")
            return 0
        check_new(ledger, prepared.manifest.digest, args.force)
        cost = prepared.cost
        what = f"{cost.jobs} job(s)"
        if cost.head_stage is not None:
            what = (f"{cost.stage1_jobs} job(s) now and {cost.head_stage.jobs} quantum-head job(s) when `qresnet jobs fetch` "
                    "finds their results")
        if not args.yes and not _ask(f"send {what} to {prepared.manifest.backend}? [y/N] "):
            print("nothing was sent")
            return 1
        submission_id = submit(prepared, ledger, force=args.force)
    finally:
        prepared.transport.close()
    jobs = ledger.jobs(submission_id)
    batch = ledger.submission(submission_id).batch_id
    print(f"submission {submission_id}: {len(jobs)} job(s) " + ", ".join(str(job.job_id) for job in jobs)
          + (f" in batch {batch}" if batch else ""))
    print(f"follow it with `qresnet jobs status {submission_id}`; get the report with `qresnet jobs fetch {submission_id}`")
    if prepared.cost.head_stage is not None:
        print(f"stage 2 ({prepared.cost.head_stage.jobs} quantum-head job(s)) is sent by the first `qresnet jobs fetch "
              f"{submission_id}` after these jobs are done")
    return 0


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def cmd_list(args: argparse.Namespace, ledger: Ledger) -> int:
    from qresnet.jobs.stages import unrecorded_head_jobs

    rows = []
    for record in ledger.submissions():
        jobs = ledger.jobs(record.id)
        unrecorded = 0 if record.status == "cancelled" else unrecorded_head_jobs(record, jobs)
        rows.append({"id": record.id, "run": Path(record.run_dir).name, "backend": record.backend, "status": record.status,
                     "jobs": f"{sum(j.result is not None for j in jobs)}/{len(jobs) + unrecorded} fetched",
                     "created": _when(record.created)})
    if not rows:
        print(f"no submissions in {ledger.path}")
        return 0
    print_table(rows, ["id", "run", "backend", "status", "jobs", "created"])
    return 0


def _print_jobs(submission_id: str, jobs: list[JobRecord]) -> None:
    print(f"submission {submission_id}:")
    print_table([{"job": j.index, "job id": j.job_id or "-", "status": j.status,
                   "result": "fetched" if j.result is not None else "-", "sent": _when(j.sent),
                   "message": j.message or ""} for j in jobs], ["job", "job id", "status", "result", "sent", "message"])
    if any(j.status == "pending" for j in jobs):
        print(f"some jobs were never sent (an interrupted submit): `qresnet jobs fetch {submission_id}` sends them")


def cmd_status(args: argparse.Namespace, ledger: Ledger) -> int:
    from qresnet.jobs.ledger import FINAL_SUBMISSION_STATES
    from qresnet.jobs.retrieval import refresh, watch
    from qresnet.jobs.stages import unrecorded_head_jobs

    keys = [args.id] if args.id else [r.id for r in ledger.submissions() if r.status not in FINAL_SUBMISSION_STATES]
    if not keys:
        print("no unfinished submissions; `qresnet jobs list` shows them all")
    for key in keys:
        record = ledger.submission(key)
        if args.watch:
            watch(ledger, record.id, interval=args.interval, on_poll=lambda jobs: _print_jobs(record.id, jobs))
        else:
            _print_jobs(record.id, refresh(ledger, record.id))
        unrecorded = 0 if record.status == "cancelled" else unrecorded_head_jobs(record, ledger.jobs(record.id))
        if unrecorded:
            print(f"stage 2 ({unrecorded} quantum-head job(s)) is sent by `qresnet jobs fetch {record.id}` once these are done")
    return 0


def cmd_fetch(args: argparse.Namespace, ledger: Ledger) -> int:
    from qresnet.jobs.retrieval import fetch, fetch_all

    if args.all == bool(args.id):
        raise JobsError("give a submission id or --all (not both)")
    outcomes = fetch_all(ledger) if args.all else [fetch(ledger, args.id)]
    if not outcomes:
        print("no unfinished submissions to fetch")
    for outcome in outcomes:
        for note in outcome.notes:
            print(f"{outcome.submission}: {note}")
        print(f"{outcome.submission}: {outcome.status}, {outcome.done} job(s) fetched, {outcome.failed} failed, "
              f"{outcome.waiting} still running")
        if outcome.report is not None:
            print(outcome.report.read_text())
            print(f"report: {outcome.report}")
        elif outcome.status == "failed":
            print(f"{outcome.submission}: {ledger.submission(outcome.submission).message}")
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def cmd_cancel(args: argparse.Namespace, ledger: Ledger) -> int:
    from qresnet.jobs.retrieval import cancel

    for line in cancel(ledger, args.id):
        print(line)
    return 0


COMMANDS = {"submit": cmd_submit, "list": cmd_list, "status": cmd_status, "fetch": cmd_fetch, "cancel": cmd_cancel}


def run_jobs(args: argparse.Namespace) -> int:
    """Run a parsed ``qresnet jobs`` command."""
    from qresnet.jobs.ledger import open_ledger

    with open_ledger(args.ledger) if args.ledger else open_ledger() as ledger:  # a refused command leaves no ledger
        return COMMANDS[args.jobs_command](args, ledger)
