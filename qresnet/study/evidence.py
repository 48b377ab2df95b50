"""Evidence from a sweep: intervals over seeds, paired differences and their tests, and the audit's verdicts.

Every comparison report answers the paper's question, *which part of the model is actually
learning?*, with six audit questions per configuration. The rules that turn numbers into
verdicts live here, once, and :data:`RULES` states them in every report.

Statistics (``scipy.stats``): a mean over seeds has a 95% Student-t interval; a paired
difference (trainable minus frozen, noisy minus ideal: the same seed means the same data split
and the same initial weights) has the paired t-test's 95% interval and p-value. Why the paired
t-test: with 3 to 10 seeds the Wilcoxon signed-rank test cannot reach p < 0.05 below 6 pairs
(its smallest two-sided p is 2/2^n: 0.25 for 3 pairs, 0.0625 for 5), so it could never decide; the
t-test can, and accuracy differences bounded in [-1, 1] over the same splits are close enough to
normal for it. The per-seed test-set standard error sqrt(p(1 - p) / n_test) is reported beside the
spread over seeds, so a reader sees whether seeds or test size dominate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
MIN_SEEDS = 3  # fewer seeds give no verdict but "inconclusive"
MARGIN = 0.02  # a gain the interval keeps below 2 points of accuracy is no gain worth claiming
SAME = 1e-12  # a spread this small relative to the mean is rounding, not variation

YES, NO, INCONCLUSIVE, NOT_TESTED = "yes", "no", "inconclusive", "not tested"

RULES = (
    f"Verdicts: a difference *beats* its benchmark (yes) when its {CONFIDENCE:.0%} paired interval lies above 0; it "
    f"does not (no) when the interval lies below +{MARGIN:g} (a gain of {MARGIN * 100:g} points or more is ruled out); "
    f"anything else, or fewer than {MIN_SEEDS} seeds, is inconclusive. Q1: yes when every layer before the last "
    "receives a gradient in every seed, no when one is dead (its gradient norm is exactly 0 in every epoch of every "
    "seed). Q2: the Q3 rule on the quantum-head runs, which have no classical head to carry them. Q4: no when a layer "
    "cannot reach the head along skip edges (its weights never learn), yes when every layer reaches it and the head "
    "does not see the raw input X, inconclusive when it also sees X (the frozen benchmark then sees X too, and only Q3 "
    "says whether the layers add anything). Q5: yes when qubits, re-encoding boundaries, circuits per step, seconds "
    "per epoch and device costs are all reported. Q6: the Q3 rule on trainable quantum minus its classical control "
    "(the same windows, stride, channels and trainable parameter count, paired by seed); not tested without one.")


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` seeds with its interval (``low``/``high`` None for one seed) and the spread."""

    mean: float
    low: float | None
    high: float | None
    n: int
    std: float | None  # sample standard deviation over seeds

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.low is None:
            return f"{self.mean:.3f} (1 seed: no interval)"
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class Paired(Interval):
    """A paired difference a - b over seeds: the interval of its mean, the paired t-test, and the sign counts."""

    p_value: float | None = None
    wins: int = 0
    losses: int = 0
    ties: int = 0

    def describe(self) -> str:
        text = f"{self.mean:+.3f}" + (f" [{self.low:+.3f}, {self.high:+.3f}]" if self.low is not None else
                                       " (1 seed: no interval)")
        if self.p_value is not None:
            text += f", p = {self.p_value:.3g}"
        elif self.n > 1:
            text += ", the same in every seed"
        return text


def mean_interval(values: Sequence[float], bounds: tuple[float, float] | None = None) -> Interval:
    """The mean of ``values`` with its Student-t interval at :data:`CONFIDENCE`; ``bounds`` clip the interval to
    the values' possible range (accuracies: (0, 1)), where the t-interval of a mean near 1 would pass it."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, None, None, 1, None)
    std = float(x.std(ddof=1))
    if std <= SAME * max(1.0, abs(mean)):  # equal but for rounding (0.9 - 0.8 vs 0.8 - 0.7): no spread at all
        return Interval(mean, mean, mean, n, 0.0)
    low, high = stats.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, float(low), float(high), n, std)


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """a - b paired by position (by seed): the paired t-test's interval and p-value."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"paired differences need equal, non-empty samples, got {len(x)} and {len(y)}")
    d = x - y
    signs = dict(wins=int((d > 0).sum()), losses=int((d < 0).sum()), ties=int((d == 0).sum()))
    base = mean_interval(d)
    if base.low is None or base.std == 0.0:
        return Paired(base.mean, base.low, base.high, base.n, base.std, None, **signs)
    test = stats.ttest_rel(x, y)
    low, high = test.confidence_interval(CONFIDENCE)
    return Paired(base.mean, float(low), float(high), base.n, base.std, float(test.pvalue), **signs)


def slope(x: Sequence[float], y: Sequence[float]) -> Interval:
    """The least-squares slope of y on x with its Student-t interval (n - 2 degrees of freedom)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(xs) != len(ys) or len(xs) < 3 or np.ptp(xs) == 0:
        raise ValueError(f"a slope needs at least 3 points with distinct x, got {len(xs)}")
    fit = stats.linregress(xs, ys)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(xs) - 2) * fit.stderr
    return Interval(float(fit.slope), float(fit.slope - half), float(fit.slope + half), len(xs), float(fit.stderr))


def binomial_error(accuracy: float, test_images: int) -> float:
    """The binomial standard error of one run's test accuracy."""
    return math.sqrt(accuracy * (1 - accuracy) / test_images)


# --- verdicts -----------------------------------------------------------------------------------------------------

def beats(difference: Paired | None) -> str:
    """Q2 and Q3: does a model beat its benchmark, by the paired interval."""
    if difference is None:
        return NOT_TESTED
    if difference.n < MIN_SEEDS or difference.low is None:
        return INCONCLUSIVE
    if difference.low > 0:
        return YES
    if difference.high < MARGIN:
        return NO
    return INCONCLUSIVE


def earlier_layers_learn(measured: Sequence[Sequence[bool]]) -> str:
    """Q1: ``measured[s][k]``: whether layer k+1 got a nonzero gradient in some epoch of seed s."""
    earlier = [flags[:-1] for flags in measured]
    if not earlier or not earlier[0]:
        return YES  # one layer: it is the last, and the last always learns
    alive = np.asarray(earlier, dtype=bool)
    if alive.all():
        return YES
    if (~alive.any(axis=0)).any():  # some layer dead in every seed
        return NO
    return INCONCLUSIVE


def placement_justified(reaches: Sequence[bool], sees_input: bool) -> str:
    """Q4: from the reach rule alone (docs/design.md section 2)."""
    if not all(reaches):
        return NO
    return INCONCLUSIVE if sees_input else YES


def costs_reported(costs: dict) -> str:
    """Q5: every cost the checklist asks for is a number."""
    needed = ("qubits", "boundaries", "circuits_per_step", "seconds_per_epoch", "device_train_epoch_qpu_seconds",
              "device_test_eval_qpu_seconds")
    return YES if all(costs.get(k) is not None for k in needed) else NO
