"""A run directory checked against itself before it is reused or resumed, and the point a resume continues from.

Three records of one run must agree: ``config.json``'s config (the identity is derived from it when
read), the identity block stored beside it, and the identity every checkpoint was trained under.
Any disagreement refuses reuse and resume, naming the field (``config.lr is 0.05 in
checkpoints/epoch_002.pt, 0.5 in config.json``). ``metrics.csv`` and ``summary.json`` are checked
against the metrics rows the newest epoch checkpoint recorded; a sweep refuses to reuse a run whose
files differ (naming the epoch and the field), and a resume continues from the recorded rows and
rewrites ``metrics.csv`` from them: an edited number is reported, never carried forward.

A run with a config but no finished epoch (killed in its first epoch, or while writing its first
checkpoint) resumes from its initial state: ``initial.pt``, or the weights its seed builds when even
that is missing or half-written.
"""

from __future__ import annotations

import json

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qresnet.errors import ResultError, RunDirError
from qresnet.run.result import EpochMetrics
from qresnet.run.rundir import RunDir, derive_identity, disagreements, identity_sha256


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues: the state to load (None: as built from the seed), the epoch and batch to
    continue at, the finished epochs' metrics as training recorded them, and lines to tell the user."""

    model: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    epoch: int = 1
    batch: int = 0
    partial: dict[str, Any] | None = None
    elapsed: float = 0.0
    metrics: tuple[EpochMetrics, ...] = ()
    notes: tuple[str, ...] = ()
    from_seed: bool = False  # no readable initial.pt: the seed's weights are the initial state, to be saved again
    source: Path | None = field(default=None, compare=False)


def _relative(run: RunDir, path: Path) -> str:
    try:
        return str(path.relative_to(run.path))
    except ValueError:
        return str(path)


def identity_problems(run: RunDir) -> list[str]:
    """Each disagreement between config.json's config, its identity block and the checkpoints' identity."""
    record = run.read_config()
    stored = record.get("identity")
    if stored is None:  # a run that predates identities: identity_differences says so
        return []
    try:
        derived = derive_identity(record.get("config"), stored, run.config_path)
    except RunDirError as exc:
        return [str(exc)]
    problems = [f"config.json: {d}" for d in disagreements(stored, derived, "its identity block", "its config")]
    digest = identity_sha256(derived)
    for path in [run.initial_checkpoint, *run.epoch_checkpoints(), run.step_checkpoint]:
        state = run.newest_readable([path], []) if path.is_file() else None  # an unreadable one: resume names it
        if state is None or "identity_sha256" not in state or state["identity_sha256"] == digest:
            continue
        name = _relative(run, path)
        problems += (disagreements(state.get("identity"), derived, name, "config.json")
                     or [f"the identity digest is {state['identity_sha256'][:12]} in {name}, {digest[:12]} in config.json"])
        break  # one checkpoint names the fields
    return problems


def compare_rows(rows: Sequence[Mapping[str, float]], recorded: Sequence[Mapping[str, float]], source: str) -> list[str]:
    """``metrics.csv epoch E FIELD is X, training recorded Y (source)`` for every recorded value the rows differ on."""
    by_epoch = {int(row["epoch"]): row for row in rows}
    out = []
    for want in recorded:
        epoch = int(want["epoch"])
        have = by_epoch.get(epoch)
        if have is None:
            out.append(f"metrics.csv has no row for epoch {epoch}, which {source} recorded")
            continue
        out += [f"metrics.csv epoch {epoch} {name} is {have.get(name, '(absent)')}, training recorded {value} ({source})"
                for name, value in want.items() if have.get(name) != value]
    return out


def _read_rows(run: RunDir) -> tuple[list[dict[str, float]], list[str]]:
    try:
        return [m.to_row() for m in run.read_metrics()], []
    except (RunDirError, ResultError) as exc:  # a hand edit that left a cell unparsable
        return [], [str(exc)]


def _read_summary(run: RunDir) -> dict[str, Any] | None:
    """summary.json as written (its figures, not a :class:`RunResult` derived again from metrics.csv)."""
    try:
        summary = json.loads(run.summary_path.read_text()) if run.summary_path.is_file() else None
    except ValueError:
        return None
    return summary if isinstance(summary, dict) else None


def metrics_problems(run: RunDir) -> list[str]:
    """Each difference between metrics.csv or summary.json and the rows the newest epoch checkpoint recorded."""
    newest = run.newest_readable(reversed(run.epoch_checkpoints()), [])
    if newest is None or "history" not in newest:
        return []  # nothing recorded to check against (no finished epoch, or a run older than the record)
    recorded, source = newest["history"], _relative(run, newest["path"])
    rows, problems = _read_rows(run)
    problems += compare_rows(rows, recorded, source)
    summary = _read_summary(run)
    if summary is not None and recorded and summary.get("epochs_completed") == len(recorded):
        expected = {"final_test_acc": recorded[-1]["test_acc"], "final_train_loss": recorded[-1]["train_loss"],
                    "best_test_acc": max(row["test_acc"] for row in recorded)}
        problems += [f"summary.json {key} is {summary.get(key)}, training recorded {value} ({source})"
                     for key, value in expected.items() if summary.get(key) != value]
    return problems


def integrity_problems(run: RunDir) -> list[str]:
    """Every disagreement of the run directory with itself: its identity's, then its metrics'."""
    return identity_problems(run) + metrics_problems(run)


def check_untouched(run: RunDir, action: str) -> None:
    """Refuse to ``action`` (``--resume``) a run whose config.json disagrees with itself or its checkpoints."""
    problems = identity_problems(run)
    if problems:
        raise RunDirError(f"{action} {run.path}: the run directory disagrees with itself ({'; '.join(problems)}); it "
                          f"was edited after training: restore config.json, or --overwrite {run.path} to train it again")


def resume_point(run: RunDir) -> ResumePoint:
    """The newest readable state of ``run`` (see :meth:`RunDir.latest_state`), or its initial state if no epoch
    finished; the finished rows come from the checkpoint's record, and an edited metrics.csv is rewritten."""
    state, skipped = run.latest_state()
    notes = list(skipped)
    if state is None:
        initial = run.newest_readable([run.initial_checkpoint], notes) if run.initial_checkpoint.is_file() else None
        where = ("checkpoints/initial.pt" if initial is not None
                 else "the initial weights its seed builds (checkpoints/initial.pt is missing or half-written)")
        notes.append(f"no finished epoch of {run.path} can be read: starting it again from {where}")
        return ResumePoint(model=None if initial is None else initial["model"], notes=tuple(notes),
                           from_seed=initial is None)
    in_epoch = "batch" in state  # a step checkpoint: continue inside its epoch
    start = state["epoch"] if in_epoch else state["epoch"] + 1
    rows, unreadable = _read_rows(run)
    rows = [m for m in rows if m["epoch"] < start]  # rows past the checkpoint are trained again
    recorded = state.get("history")
    if recorded is not None:
        recorded = [dict(r) for r in recorded if r["epoch"] < start]
        edited = unreadable + compare_rows(rows, recorded, _relative(run, state["path"]))
        notes += [f"{line}; the recorded value is used" for line in edited]
        if edited and recorded:
            run.write_metrics([EpochMetrics.from_row(row) for row in recorded])
        rows = recorded
    if skipped:
        notes.append(f"continuing from {state['path']}")
    return ResumePoint(model=state["model"], optimizer=state["optimizer"], epoch=start,
                       batch=state["batch"] if in_epoch else 0, partial=state["partial"] if in_epoch else None,
                       elapsed=state["elapsed"], metrics=tuple(EpochMetrics.from_row(row) for row in rows), notes=tuple(notes), source=state["path"])
