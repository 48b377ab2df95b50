"""A run directory: its files by name, atomic writes, and reading them back. Everything else asks this module.

    run = RunDir("runs/demo")
    run.config_path, run.metrics_path, run.summary_path, run.curves_path
    run.epoch_checkpoint(3)       # checkpoints/epoch_003.pt
    run.latest_state()            # the newest epoch or step checkpoint, loaded

Every write goes to a temporary file beside the target and is renamed over it, so a reader
(or a resume after kill -9) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qresnet.errors import RunDirError

METRIC_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


def metric_fields(layers: int) -> list[str]:
    """The columns of ``metrics.csv`` for a model of ``layers`` quanvolution layers."""
    return list(METRIC_FIELDS) + [f"grad_norm_layer{k}" for k in range(1, layers + 1)] + ["grad_norm_head"]


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
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

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
        """Whether at least one epoch finished (there is something to resume)."""
        return bool(self.epoch_checkpoints())

    def latest_state(self) -> dict[str, Any] | None:
        """The newest state: the last epoch checkpoint, or the step checkpoint if it is further along."""
        saved = self.epoch_checkpoints()
        state = self.load_checkpoint(saved[-1]) if saved else None
        if self.step_checkpoint.is_file():
            step = self.load_checkpoint(self.step_checkpoint)
            if state is None or step["epoch"] > state["epoch"]:
                return step
        return state

    @staticmethod
    def load_checkpoint(path: Path) -> dict[str, Any]:
        return torch.load(path, weights_only=False, map_location="cpu")

    def save_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def read_config(self) -> dict[str, Any]:
        """``config.json`` as written by ``qresnet train``."""
        if not self.config_path.is_file():
            raise RunDirError(f"{self.path} has no config.json: pass a run directory written by `qresnet train`")
        return json.loads(self.config_path.read_text())

    def read_summary(self) -> dict[str, Any] | None:
        return json.loads(self.summary_path.read_text()) if self.summary_path.is_file() else None

    def read_metrics(self) -> list[dict[str, float]]:
        with open(self.metrics_path) as handle:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]

    def write_config(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.config_path, record)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path, summary)

    def write_metrics(self, metrics: Sequence[dict[str, float]], layers: int) -> None:
        fields = metric_fields(layers)
        tmp = self.metrics_path.with_name(self.metrics_path.name + ".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for row in metrics:
                writer.writerow({k: repr(row.get(k, "")) if isinstance(row.get(k), float) else row.get(k, "")
                                 for k in fields})
        os.replace(tmp, self.metrics_path)
