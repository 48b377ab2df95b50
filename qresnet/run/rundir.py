"""A run directory: its files by name, its identity, atomic writes, and reading them back. Everything else asks this module.

    run = RunDir("runs/demo")
    run.config_path, run.metrics_path, run.summary_path, run.curves_path
    run.epoch_checkpoint(3)       # checkpoints/epoch_003.pt
    run.latest_state()            # the newest readable epoch or step checkpoint, loaded

Every write goes to a temporary file beside the target and is renamed over it, so a reader
(or a resume after kill -9) sees the old file or the new one, never half of one; a write that
fails (a full disk, no permission) removes its temporary file and says which path and how much
room it needed. ``config.json`` records the run's *identity*: every value that determines its
numbers (see :func:`identity_differences`), so that a resume or a sweep reuses a run only when
nothing that matters changed.

One source for the identity: it is derived from ``config.json``'s config when read (with the data
digest and package versions recorded beside it); every checkpoint carries the identity it was
trained under and its SHA-256, and every epoch checkpoint the metrics rows training recorded up to
it. :meth:`RunDir.integrity_problems` names each disagreement between them (an edited config.json,
metrics.csv or summary.json), and :meth:`RunDir.resume_point` resumes from the checkpoints' record,
never from an edited file.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qresnet.config import TrainConfig
from qresnet.errors import QresnetError, ResultError, RunDirError
from qresnet.run.lock import LOCK_NAME
from qresnet.run.result import EpochMetrics, RunResult, metric_fields

RUN_FILES = ("config.json", "metrics.csv", "summary.json", "curves.png", "head_encoding_noise.json", "checkpoints",
             LOCK_NAME)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``data`` to ``path`` through ``path.tmp`` and a rename; no temporary file survives a failure."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunDirError(_write_failure(path, exc, len(data))) from None


def _write_failure(path: Path, exc: OSError, size: int) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        room = f"; {free:,} bytes are free there" if free is not None else ""
        return f"cannot write {path}: the disk is full ({size:,} bytes needed{room}); free some space and run again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: {exc.strerror}; make the directory writable or choose another --out"
    return f"cannot write {path}: {exc.strerror or exc}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any, default: Any = None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=default))


@dataclass(frozen=True)
class RunDir:
    """The files of one training run (``qresnet train``, or one run of a sweep)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def new(cls, root: str | Path = "runs") -> RunDir:
        """A fresh directory name under ``root``, stamped with the time."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(root) / stamp
        suffix = 1
        while path.exists():
            path = Path(root) / f"{stamp}-{suffix}"
            suffix += 1
        return cls(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def curves_path(self) -> Path:
        return self.path / "curves.png"

    @property
    def head_noise_path(self) -> Path:
        return self.path / "head_encoding_noise.json"

    @property
    def tmp_files(self) -> list[Path]:
        """Temporary files a killed write left behind (never read; removed when the run starts again)."""
        return [p for d in (self.path, self.checkpoints) if d.is_dir() for p in d.glob("*.tmp")]

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def initial_checkpoint(self) -> Path:
        """The weights before the first step (never pruned)."""
        return self.checkpoints / "initial.pt"

    @property
    def step_checkpoint(self) -> Path:
        return self.checkpoints / "step.pt"

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch_{epoch:03d}.pt"

    def device_dir(self, submission_id: str) -> Path:
        """Where the device report of a submission of this run goes."""
        return self.path / "device" / submission_id

    def epoch_checkpoints(self) -> list[Path]:
        """Every epoch checkpoint, oldest first."""
        return sorted(self.checkpoints.glob("epoch_*.pt")) if self.checkpoints.is_dir() else []

    def started(self) -> bool:
        """Whether a run started here (its config.json is written first): resumable from its newest checkpoint,
        or from its initial state when no epoch finished (``initial.pt``, or the seed's weights)."""
        return self.config_path.is_file()

    def holds_files(self) -> bool:
        """Whether the directory holds anything besides what a killed start leaves (temporary files, empty
        folders, a lock): such a directory is as good as empty, and never blocks a new run."""
        return self.path.is_dir() and any(p.is_file() and not p.name.endswith(".tmp") and p.name != LOCK_NAME
                                          for p in self.path.rglob("*"))

    def check_clearable(self) -> None:
        """Refuse to ``clear`` a directory that is not a run's, or holds anything besides a run's files."""
        # device/ holds reports of submissions that name this run's checkpoints: never deleted here
        others = sorted(p.name for p in self.path.iterdir() if p.name not in RUN_FILES and not p.name.endswith(".tmp"))
        if not self.config_path.is_file():
            raise RunDirError(f"{self.path} is not a run directory (no config.json); --overwrite only replaces runs: "
                              "choose another --out")
        if others:
            raise RunDirError(f"{self.path} holds more than a run's own files ({', '.join(others[:5])}); --overwrite "
                              "replaces only those: move the others away, or choose another --out")

    def clear(self) -> None:
        """Remove a run's files (``--overwrite``); a directory that holds anything else is refused."""
        self.check_clearable()
        for item in self.path.iterdir():
            if item.name == LOCK_NAME:  # the lock of the process clearing it
                continue
            if item.is_dir():
                shutil.rmtree(item)
            else:
                item.unlink()

    def remove_tmp_files(self) -> None:
        for path in self.tmp_files:
            path.unlink(missing_ok=True)

    def latest_state(self) -> tuple[dict[str, Any] | None, list[str]]:
        """The newest readable state, and a line for each newer checkpoint that could not be read.

        The newest is the last epoch checkpoint, or the step checkpoint if it is further along; a
        truncated or corrupt file is skipped (and named) in favour of the one before it.
        """
        skipped: list[str] = []
        state = self.newest_readable(reversed(self.epoch_checkpoints()), skipped)
        if self.step_checkpoint.is_file():
            step = self.newest_readable([self.step_checkpoint], skipped)
            if step is not None and (state is None or step["epoch"] > state["epoch"]):
                return step, skipped
        return state, skipped

    def newest_readable(self, paths: Iterable[Path], skipped: list[str]) -> dict[str, Any] | None:
        """The first of ``paths`` that loads (with its path under ``"path"``); the others go to ``skipped``."""
        for path in paths:
            try:
                state = self.load_checkpoint(path)
            except Exception as exc:  # torch raises EOFError, RuntimeError, UnpicklingError ... for a damaged file
                skipped.append(f"skipped {path}: it cannot be read ({type(exc).__name__}: {str(exc)[:80]})")
                continue
            return {**state, "path": path}
        return None

    @staticmethod
    def load_checkpoint(path: Path) -> dict[str, Any]:
        import torch  # here, not at the top: readers of a run's files (reports) need no torch

        return torch.load(path, weights_only=False, map_location="cpu")

    def save_checkpoint(self, state: dict[str, Any], path: Path, identity: dict[str, Any] | None = None,
                        history: Sequence[EpochMetrics] | None = None) -> None:
        """``state`` to ``path``, stamped with the run's ``identity`` (and its digest) and, for an epoch or step
        checkpoint, the metrics rows of the epochs finished so far (``history``), as training computed them."""
        import torch

        stamps: dict[str, Any] = {}
        if identity is not None:
            stamps.update(identity=identity, identity_sha256=identity_sha256(identity))
        if history is not None:
            stamps["history"] = [row.to_row() for row in history]
        buffer = io.BytesIO()  # serialised in memory first: a full disk is then a Python OSError with the size
        torch.save({**state, **stamps}, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def prune_checkpoints(self, keep: int, best_epoch: int | None) -> None:
        """Keep the last ``keep`` epoch checkpoints and the best one; the history lives in metrics.csv."""
        saved = self.epoch_checkpoints()
        for path in saved[:-keep]:
            if best_epoch is None or path != self.epoch_checkpoint(best_epoch):
                path.unlink(missing_ok=True)

    def read_config(self) -> dict[str, Any]:
        """``config.json`` as written by ``qresnet train``."""
        if not self.config_path.is_file():
            raise RunDirError(f"{self.path} has no config.json: pass a run directory written by `qresnet train`")
        try:
            return json.loads(self.config_path.read_text())
        except (OSError, ValueError) as exc:
            raise RunDirError(f"cannot read {self.config_path} ({exc}); the run directory is damaged") from None

    def read_identity(self) -> dict[str, Any] | None:
        """What the run was trained with (see :func:`identity_differences`), derived from config.json's config and
        the data digest and package versions recorded beside it; None for a run that predates identities."""
        record = self.read_config()
        stored = record.get("identity")
        return None if stored is None else derive_identity(record.get("config"), stored, self.config_path)

    def read_result(self) -> RunResult | None:
        """The finished session's result: ``summary.json`` with the history of ``metrics.csv``; None when there is
        no summary or it is damaged (the run is then resumed from its checkpoints). An unreadable field raises
        :class:`ResultError` naming it."""
        try:
            summary = json.loads(self.summary_path.read_text()) if self.summary_path.is_file() else None
        except ValueError:
            return None
        if not isinstance(summary, dict):
            return None
        return RunResult.from_dict({**summary, "metrics": self.read_metrics()}, str(self.summary_path))

    def read_metrics(self) -> list[EpochMetrics]:
        """Every finished epoch's row of ``metrics.csv``, or [] before the first."""
        if not self.metrics_path.is_file():
            return []
        with open(self.metrics_path) as handle:
            rows = list(csv.DictReader(handle))
        try:
            return [EpochMetrics.from_row(row, f"{self.metrics_path}, row {i + 1}") for i, row in enumerate(rows)]
        except ValueError as exc:  # a number that does not parse: the file is damaged
            if isinstance(exc, ResultError):
                raise
            raise ResultError(f"cannot read {self.metrics_path} ({exc}); the run directory is damaged") from None

    def write_config(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.config_path, record)

    def write_summary(self, result: RunResult) -> None:
        """``summary.json``: the result without its history, which ``metrics.csv`` holds."""
        atomic_write_json(self.summary_path, result.to_dict(metrics=False))

    def write_metrics(self, metrics: Sequence[EpochMetrics]) -> None:
        layers = len(metrics[0].grad_norm_layers) if metrics else 0
        fields = metric_fields(layers)
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        for row in (m.to_row() for m in metrics):  # repr keeps every float exact, so a resumed run reads back what it wrote
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
        atomic_write_bytes(self.metrics_path, text.getvalue().encode())


def identity_differences(recorded: dict[str, Any] | None, expected: dict[str, Any]) -> list[str]:
    """``field: recorded -> expected`` for every value of a run's identity that differs (nested keys dotted).

    >>> identity_differences({"lr": 0.03, "backend_options": {"shots": None}}, {"lr": 0.5, "backend_options": {"shots": 100}})
    ['backend_options.shots: None -> 100', 'lr: 0.03 -> 0.5']
    """
    if recorded is None:
        return ["identity: not recorded (the run predates run identities) -> recorded now"]
    flat_a, flat_b = _flatten(recorded), _flatten(expected)
    return [f"{key}: {flat_a.get(key, '(absent)')} -> {flat_b.get(key, '(absent)')}"
            for key in sorted(set(flat_a) | set(flat_b)) if flat_a.get(key) != flat_b.get(key)]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def identity_sha256(identity: dict[str, Any]) -> str:
    """The digest a checkpoint carries of the identity it was trained under (canonical JSON, keys sorted)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def derive_identity(config: Any, stored: dict[str, Any], where: Path) -> dict[str, Any]:
    """The identity of a stored ``config`` (the dict config.json keeps), with the data digest and package
    versions of the ``stored`` identity: what the run's numbers depend on, read from one source."""
    try:
        identity = TrainConfig.from_dict(dict(config)).identity(stored.get("data_sha256"))
    except (QresnetError, TypeError, ValueError) as exc:
        raise RunDirError(f"{where} holds a config that is not valid ({exc}); the run directory was edited or is "
                          "damaged") from None
    return {**identity, "packages": stored.get("packages")}


def disagreements(a: dict[str, Any] | None, b: dict[str, Any] | None, a_name: str, b_name: str) -> list[str]:
    """``field: <a> in a_name, <b> in b_name`` for every (dotted) field where two identities differ."""
    # both as JSON would store them: a tuple read back from config.json is a list, and the same value
    flat_a, flat_b = (_flatten(json.loads(json.dumps(x or {}, default=str))) for x in (a, b))
    return [f"{key} is {flat_a.get(key, '(absent)')} in {a_name}, {flat_b.get(key, '(absent)')} in {b_name}"
            for key in sorted(set(flat_a) | set(flat_b)) if flat_a.get(key) != flat_b.get(key)]
