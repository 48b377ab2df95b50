"""The quantum head's settings (logit scale, ansatz depth, learning rate) chosen on a validation split carved from the
training images, never on the test set (issue 24).

    rows = head_grid(base, HeadGrid((1.0, 5.0, 20.0), (2, 4), (0.01, 0.05)), data, out)
    best = choose(rows)                         # by validation accuracy; ties to the first in grid order

Procedure: :func:`qresnet.data.validation_split` carves ``fraction`` of the training images (stratified, seeded);
every setting of the grid trains on the rest and is scored on the carved part; the best validation accuracy wins.
Only then does :func:`final_runs` train the chosen and the default settings on the whole training split and score
them on the test split, once each.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qresnet.config import TrainConfig
from qresnet.data import Dataset, validation_split
from qresnet.errors import ConfigError
from qresnet.run.train import train


@dataclass(frozen=True)
class HeadGrid:
    """The settings tried: every head scale x ansatz repetitions x learning rate."""

    scales: tuple[float, ...]
    reps: tuple[int, ...]
    lrs: tuple[float, ...]

    def __post_init__(self) -> None:
        for name in ("scales", "reps", "lrs"):
            values = tuple(getattr(self, name))
            if not values:
                raise ConfigError(f"HeadGrid.{name} is empty; give at least one value")
            object.__setattr__(self, name, values)

    @classmethod
    def coerce(cls, value: HeadGrid | dict[str, Any]) -> HeadGrid:
        return value if isinstance(value, HeadGrid) else cls(**value)

    def settings(self) -> list[dict[str, Any]]:
        """The grid's settings as TrainConfig overrides, scale slowest."""
        return [{"head_scale": float(s), "head_reps": int(r), "lr": float(lr)}
                for s, r, lr in itertools.product(self.scales, self.reps, self.lrs)]


def _accuracies(config: TrainConfig, data: Dataset, out: Path) -> dict[str, float]:
    result = train(config, out, progress=False, data=data, overwrite=True)
    last = result.metrics[-1]
    return {"train_acc": last.train_acc, "held_out_acc": last.test_acc}


def _name(setting: dict[str, Any]) -> str:
    return f"scale{setting['head_scale']:g}-reps{setting['head_reps']}-lr{setting['lr']:g}"


def head_grid(base: TrainConfig, grid: HeadGrid | dict[str, Any], data: Dataset, out: str | Path,
              fraction: float = 0.25) -> list[dict[str, Any]]:
    """Every setting of ``grid`` trained on ``data``'s training split less a validation part (``fraction``, seeded
    by ``base.seed``) and scored on that part: one row per setting with ``val_acc`` (the test split is not used)."""
    if base.head != "quantum":
        raise ConfigError(f"head={base.head!r}: the head grid tunes the quantum head; use head='quantum'")
    carved = validation_split(data, fraction, base.seed)
    rows = []
    for setting in HeadGrid.coerce(grid).settings():
        config = dataclasses.replace(base, **setting)
        acc = _accuracies(config, carved, Path(out) / "grid" / _name(setting))
        rows.append({**setting, "train_acc": acc["train_acc"], "val_acc": acc["held_out_acc"]})
    return rows


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the best validation accuracy (the first of equals, in grid order)."""
    if not rows:
        raise ConfigError("no grid rows to choose from")
    return max(rows, key=lambda row: row["val_acc"])  # max keeps the first of equal keys


def final_runs(base: TrainConfig, chosen: dict[str, Any], data: Dataset, out: str | Path) -> list[dict[str, Any]]:
    """The default and the chosen settings, each trained on the whole training split and scored on the test split."""
    rows = []
    for label, setting in (("default", {}), ("chosen", {k: chosen[k] for k in ("head_scale", "head_reps", "lr")})):
        config = dataclasses.replace(base, **setting)
        acc = _accuracies(config, data, Path(out) / "final" / label)
        rows.append({"settings": label, "head_scale": config.head_scale, "head_reps": config.head_reps,
                     "lr": config.lr, "train_acc": acc["train_acc"], "test_acc": acc["held_out_acc"]})
    return rows
