"""The paper's figures beside ours: absolute and relative differences, on the training and the held-out split.

The paper states three improvements as percentages: a trainable single layer over its frozen benchmark (about
36%), O1+O2 over X+O1 (about 31% in training and 45% in validation accuracy) and O1+O2 over its frozen benchmark
(about 66% and 64%). We read them as relative gains, (a - b) / b of the mean accuracies. Our "validation" is the
held-out test split (20% of the images, fixed by the seed, never used to choose anything: the final epoch is
reported, not the best); our "training" is the accuracy on the training split after the final epoch (a
``RunResult`` records both per epoch). The paper gives one figure for the single layer, without the split: it
stands beside both.

The relative gain's interval is the paired ratio of means by the delta method: with R = mean(a) / mean(b) and
d_i = a_i - R b_i over the n seeds, se(R) = sd(d) / (sqrt(n) mean(b)), and the interval is
R - 1 +- t_{0.975, n-1} se(R). The paper's figure lies inside our interval or it does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from qresnet.study import evidence as ev
from qresnet.study.claims import BACKENDS, PARTS, Part
from qresnet.study.report import Runs

PAPER_TEXT = (
    "The paper states its improvements as percentages; we read them as relative gains, (a - b) / b of the mean "
    "accuracies over seeds. Its validation accuracy is our held-out test split (20% of the images, fixed by the seed, "
    "never used to choose anything: the final epoch is reported, not the best); its training accuracy is our accuracy "
    "on the training split after the final epoch. Our relative interval is the paired ratio of means by the delta "
    "method: R = mean(a) / mean(b), d_i = a_i - R b_i, se = sd(d) / (sqrt(n) mean(b)), R - 1 +- t(0.975, n - 1) se. "
    "The absolute column is the paired difference a - b with its paired t interval; the paper's figure is also shown "
    "in absolute terms at our mean b.")
SPLIT_NAMES = {"train": "training", "test": "held-out test (the paper's validation)"}


@dataclass(frozen=True)
class PaperFigure:
    """A relative improvement the paper reports for a claim's part, per split (None: the paper gives none)."""

    claim: int
    part: Part
    train: float | None
    test: float | None
    note: str = ""


PAPER_FIGURES: tuple[PaperFigure, ...] = (
    PaperFigure(1, PARTS[1][0], 0.36, 0.36, "the paper gives one figure, about 36%, without naming the split"),
    PaperFigure(3, PARTS[3][0], 0.31, 0.45),
    PaperFigure(11, PARTS[11][0], 0.66, 0.64),
)


@dataclass(frozen=True)
class RelativeGain:
    """mean(a) / mean(b) - 1 over paired seeds, with its delta-method interval (None for one seed)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def contains(self, value: float) -> bool | None:
        return None if self.low is None else self.low <= value <= self.high

    def describe(self) -> str:
        if self.low is None:
            return f"{self.mean:+.1%} (1 seed: no interval)"
        return f"{self.mean:+.1%} [{self.low:+.1%}, {self.high:+.1%}]"


def relative_gain(a: Sequence[float], b: Sequence[float], confidence: float = ev.CONFIDENCE) -> RelativeGain | None:
    """The paired relative gain of a over b (see the module's docstring); None when b's mean is not positive."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"a relative gain needs equal, non-empty samples, got {len(x)} and {len(y)}")
    if y.mean() <= 0:
        return None
    ratio = float(x.mean() / y.mean())
    if len(x) == 1:
        return RelativeGain(ratio - 1, None, None, 1)
    se = float(np.std(x - ratio * y, ddof=1)) / (math.sqrt(len(x)) * float(y.mean()))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * se
    return RelativeGain(ratio - 1, ratio - 1 - half, ratio - 1 + half, len(x))


@dataclass(frozen=True)
class PaperRow:
    """One figure of the paper beside ours, on one backend and split."""

    claim: int
    label: str
    backend: str
    split: str
    mean_a: float
    mean_b: float
    absolute: ev.Paired
    relative: RelativeGain | None
    paper: float
    inside: bool | None  # whether the paper's figure lies inside our relative interval

    @property
    def gap(self) -> float | None:
        """Ours minus the paper's, in relative terms."""
        return None if self.relative is None else self.relative.mean - self.paper

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["absolute"], out["relative"] = self.absolute.to_dict(), None if self.relative is None else asdict(self.relative)
        out["gap"] = self.gap
        return out

    def line(self) -> str:
        inside = {True: "yes", False: "**no**", None: "-"}[self.inside]
        relative = "-" if self.relative is None else self.relative.describe()
        gap = "-" if self.gap is None else f"{self.gap * 100:+.1f} pp"
        return (f"| {self.claim} | {self.label} | {self.backend} | {SPLIT_NAMES[self.split]} | {self.mean_a:.3f} / "
                f"{self.mean_b:.3f} | {self.absolute.describe()} | {relative} | {self.paper:+.0%} (at our b: "
                f"{self.paper * self.mean_b:+.3f}) | {gap} | {inside} |")


def paper_rows(results: Mapping[str, Runs], backends: Sequence[str] = BACKENDS,
               figures: Sequence[PaperFigure] = PAPER_FIGURES) -> list[PaperRow]:
    """Every paper figure beside ours, per backend and split, where the study has paired runs."""
    rows = []
    for figure in figures:
        runs = results.get(figure.part.study) or Runs([])
        for backend in backends:
            for split, paper in (("train", figure.train), ("test", figure.test)):
                a, b = figure.part.values(runs, backend, split)
                if paper is None or not a:
                    continue
                relative = relative_gain(a, b)
                rows.append(PaperRow(figure.claim, figure.part.label, backend, split, float(np.mean(a)),
                                     float(np.mean(b)), ev.paired(a, b), relative, paper,
                                     None if relative is None else relative.contains(paper)))
    return rows


def paper_table(rows: Sequence[PaperRow], figures: Sequence[PaperFigure] = PAPER_FIGURES) -> list[str]:
    """The markdown table of :func:`paper_rows`, with the reading of the paper's figures stated."""
    notes = [f"- claim {f.claim}: {f.note}" for f in figures if f.note]
    return ["| claim | comparison a - b | backend | split | ours: mean a / mean b | ours: a - b (absolute) | ours: "
            "(a - b) / b (relative) | paper (relative; absolute at our b) | ours - paper (relative, percentage points) | "
            "paper inside our interval |",
            "|---|---|---|---|---|---|---|---|---|---|", *(r.line() for r in rows), "", *notes]
