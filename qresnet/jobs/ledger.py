"""The ledger: a SQLite database of every submission and its jobs, written in transactions.

A submission row is written, with its manifest and one row per planned job, *before* anything
is sent (a quantum head's stage 2 likewise: its rows and jobs in one transaction, see
:meth:`Ledger.extend`, before its first job is sent); each job's id is written as soon as the service accepts it, and its result as soon as
it is fetched. Every change is one transaction (WAL journal, synchronous writes), so a process
killed at any point leaves rows that the next command completes: unsent jobs are sent (after
looking for them by tag, in case the service accepted one whose id was never written), sent
jobs are fetched. Results are stored with qiskit-ibm-runtime's JSON encoder. Credentials are
never written: options hold at most the name of a saved account.

>>> import tempfile, os
>>> ledger = Ledger(os.path.join(tempfile.mkdtemp(), "jobs.sqlite"))
>>> ledger.submissions()
[]
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qiskit.primitives import PrimitiveResult
from qiskit_ibm_runtime import RuntimeDecoder, RuntimeEncoder

from qresnet.errors import JobsError

DEFAULT_LEDGER = Path("~/.qresnet/jobs.sqlite")
FINAL_JOB_STATES = ("DONE", "ERROR", "CANCELLED")
FINAL_SUBMISSION_STATES = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    backend TEXT NOT NULL,
    options TEXT NOT NULL,
    manifest TEXT NOT NULL,
    cost TEXT NOT NULL,
    batch_id TEXT,
    status TEXT NOT NULL,
    message TEXT,
    report TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS submissions_digest ON submissions(digest);
CREATE TABLE IF NOT EXISTS jobs (
    submission_id TEXT NOT NULL REFERENCES submissions(id),
    idx INTEGER NOT NULL,
    tag TEXT NOT NULL,
    slices TEXT NOT NULL,
    job_id TEXT,
    status TEXT NOT NULL,
    message TEXT,
    result TEXT,
    usage REAL,
    sent REAL,
    finished REAL,
    PRIMARY KEY (submission_id, idx)
);
"""


@dataclass(frozen=True)
class SubmissionRecord:
    """One row of ``submissions``; ``options`` and ``cost`` are decoded JSON, ``manifest`` stays text."""

    id: str
    digest: str
    run_dir: str
    checkpoint: str
    backend: str
    options: dict[str, Any]
    manifest: str
    cost: dict[str, Any]
    batch_id: str | None
    status: str
    message: str | None
    report: str | None
    created: float
    updated: float


@dataclass(frozen=True)
class JobRecord:
    """One row of ``jobs``: job ``index`` of a submission, its PUB slices ``(pub, start, stop)``, and its state.

    ``status`` is ``pending`` until the service accepts the job, then the service's status
    (QUEUED, RUNNING, DONE, ERROR, CANCELLED); ``result`` is the encoded ``PrimitiveResult``.
    """

    submission_id: str
    index: int
    tag: str
    slices: tuple[tuple[int, int, int], ...]
    job_id: str | None
    status: str
    message: str | None
    result: str | None
    usage: float | None
    sent: float | None
    finished: float | None

    @property
    def final(self) -> bool:
        return self.status in FINAL_JOB_STATES


class _ResultEncoder(RuntimeEncoder):
    """RuntimeEncoder, with plain dataclasses in result metadata (e.g. executor timing) written as dicts."""

    def default(self, obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        return super().default(obj)


def encode_result(result: PrimitiveResult) -> str:
    return json.dumps(result, cls=_ResultEncoder)


def decode_result(text: str) -> PrimitiveResult:
    return json.loads(text, cls=RuntimeDecoder)


def job_tag(submission_id: str, index: int) -> str:
    """The tag a job is sent with, by which a later command finds it on the service.

    >>> job_tag("3f9a0c11d2", 4)
    'qresnet:3f9a0c11d2:4'
    """
    return f"qresnet:{submission_id}:{index}"


class Ledger:
    """The submissions database at ``path`` (created on first use)."""

    def __init__(self, path: str | Path = DEFAULT_LEDGER):
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise JobsError(f"cannot open the ledger {self.path} ({exc}); pass another --ledger path") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def sending(self) -> Iterator[None]:
        """Held while jobs are sent, so that two processes never send the same pending job.

        An OS file lock beside the database: a second sender waits, then finds the jobs sent;
        a killed process releases it.
        """
        with open(self.path.parent / f"{self.path.name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic change: committed whole, or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add(self, record: SubmissionRecord, jobs: Sequence[tuple[str, Sequence[tuple[int, int, int]]]]) -> None:
        """A new submission and its planned jobs ``(tag, slices)``, all ``pending``."""
        row = dataclasses.asdict(record)
        row["options"], row["cost"] = json.dumps(record.options), json.dumps(record.cost)
        with self.transaction() as db:
            db.execute(f"INSERT INTO submissions ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
            db.executemany("INSERT INTO jobs (submission_id, idx, tag, slices, status) VALUES (?, ?, ?, ?, 'pending')",
                           [(record.id, i, tag, json.dumps([list(s) for s in slices])) for i, (tag, slices) in enumerate(jobs)])

    def extend(self, submission_id: str, expected_manifest: str, manifest: str,
               jobs: Sequence[Sequence[tuple[int, int, int]]]) -> list[int]:
        """Stage 2 of a submission in one transaction: its new ``manifest`` and its jobs (slices each), all ``pending``.

        Refused if the stored manifest is no longer ``expected_manifest`` (another process added
        the stage first). The jobs are numbered after the existing ones and tagged by
        :func:`job_tag`; returns their indices.
        """
        with self.transaction() as db:
            row = db.execute("SELECT manifest FROM submissions WHERE id = ?", (submission_id,)).fetchone()
            if row is None:
                raise JobsError(f"no submission {submission_id!r} in {self.path}")
            if row[0] != expected_manifest:
                raise JobsError(f"submission {submission_id} changed while its next stage was prepared; fetch it again")
            (first,) = db.execute("SELECT COUNT(*) FROM jobs WHERE submission_id = ?", (submission_id,)).fetchone()
            indices = list(range(first, first + len(jobs)))
            db.execute("UPDATE submissions SET manifest = ?, status = 'submitting', updated = ? WHERE id = ?",
                       (manifest, time.time(), submission_id))
            db.executemany("INSERT INTO jobs (submission_id, idx, tag, slices, status) VALUES (?, ?, ?, ?, 'pending')",
                           [(submission_id, i, job_tag(submission_id, i), json.dumps([list(s) for s in slices]))
                            for i, slices in zip(indices, jobs)])
        return indices

    def update_submission(self, submission_id: str, **fields: Any) -> None:
        with self.transaction():
            self._update("submissions", "id = ?", (submission_id,), {**fields, "updated": time.time()})

    def update_job(self, submission_id: str, index: int, submission: dict[str, Any] | None = None, **fields: Any) -> None:
        """Change job ``index`` and, in the same transaction, the ``submission`` fields given."""
        with self.transaction():
            self._update("jobs", "submission_id = ? AND idx = ?", (submission_id, index), fields)
            self._update("submissions", "id = ?", (submission_id,), {**(submission or {}), "updated": time.time()})

    def _update(self, table: str, where: str, key: tuple, fields: dict[str, Any]) -> None:
        columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
        unknown = set(fields) - columns
        if unknown:
            raise ValueError(f"no columns {sorted(unknown)} in {table}")
        self._db.execute(f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in fields)} WHERE {where}",
                         (*fields.values(), *key))

    def submission(self, key: str) -> SubmissionRecord:
        """The submission whose id is ``key`` or starts with it."""
        rows = self._db.execute("SELECT * FROM submissions WHERE substr(id, 1, ?) = ? ORDER BY created",
                                (len(key), key)).fetchall()
        if len(rows) != 1:
            why = "no submission" if not rows else f"{len(rows)} submissions"
            raise JobsError(f"{why} in {self.path} with id {key!r}; `qresnet jobs list` shows them")
        return self._submission(rows[0])

    def submissions(self, digest: str | None = None) -> list[SubmissionRecord]:
        """All submissions (or those of one manifest hash), oldest first."""
        if digest is None:
            rows = self._db.execute("SELECT * FROM submissions ORDER BY created").fetchall()
        else:
            rows = self._db.execute("SELECT * FROM submissions WHERE digest = ? ORDER BY created", (digest,)).fetchall()
        return [self._submission(row) for row in rows]

    def jobs(self, submission_id: str) -> list[JobRecord]:
        rows = self._db.execute("SELECT * FROM jobs WHERE submission_id = ? ORDER BY idx", (submission_id,)).fetchall()
        return [JobRecord(r[0], r[1], r[2], tuple(tuple(s) for s in json.loads(r[3])), *r[4:]) for r in rows]

    @staticmethod
    def _submission(row: tuple) -> SubmissionRecord:
        values = list(row)
        values[5], values[7] = json.loads(values[5]), json.loads(values[7])
        return SubmissionRecord(*values)


@contextmanager
def open_ledger(path: str | Path = DEFAULT_LEDGER) -> Iterator[Ledger]:
    """The ledger at ``path`` for one command. A ledger the command created and left without a submission is
    removed again, with the directories made for it: a refused (or read-only) command leaves no files behind."""
    target = Path(path).expanduser()
    existed = target.exists()
    made = []  # the directories the ledger will create, deepest first
    for parent in [target.parent, *target.parent.parents]:
        if parent.exists():
            break
        made.append(parent)
    ledger = None
    try:
        ledger = Ledger(target)
        yield ledger
    finally:
        try:
            empty = not existed and (ledger is None or not ledger.submissions())
        except sqlite3.Error:
            empty = False  # unreadable now: leave it for the user to look at
        if ledger is not None:
            ledger.close()
        if empty:
            for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            for directory in made:
                try:
                    directory.rmdir()
                except OSError:
                    break
