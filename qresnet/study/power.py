"""Seeds planned by power: a pilot estimates each comparison's spread, and the study runs the seeds that decide it.

The rule, fixed before the main runs (no optional stopping: the observed verdict never adds a seed):

1. The pilot runs every planned study with the first ``pilot`` seeds (5 by default). Those runs are the main
   study's first seeds: the main study reuses them and adds seeds after them.
2. For each part of each claim (:data:`qresnet.study.claims.PARTS`) and each backend, the pilot gives the paired
   differences' mean d and standard deviation s. Its rule's decisive distance D
   (:func:`~qresnet.study.claims.decisive_distance`: how far the interval's half-width may reach from d and still
   decide: d to 0 or +MARGIN - d for *beats*, ||d| - MARGIN| for *close*, |d - MARGIN| for *little*) sets the target half-width w = D / ``factor``, with
   factor = 1 + z(POWER) / z(0.975) = 1.43 for POWER = 80%: the main study's mean, normal around d with standard
   error w / z(0.975), then clears the boundary in 80% of studies if the pilot's d and s hold (the usual
   n = ((z(0.975) + z(0.80)) s / D)^2, with Student-t quantiles).
3. n is the smallest number of seeds, at least the pilot's (and 3, the fewest that decide), whose expected 95%
   half-width t_{0.975, n-1} s / sqrt(n) is at most w; at most ``cap`` (40). A claim takes the largest n over
   its parts and backends; a study, the largest over the claims it serves.
4. At the cap, the plan states the smallest half-width the cap reaches, t_{0.975, cap-1} s / sqrt(cap): the claim
   is decided only if its mean lies at least that far from the boundary.

A part without an estimate (fewer than 2 pilot seeds, or a comparison the pilot lacks) asks for no more seeds than
the pilot ran, and says so. Claims 2 and 6 (gradients, exact) and 7 (a fixed reduced budget over 64
configurations) are not planned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from scipy import stats

from qresnet.errors import ConfigError
from qresnet.study import evidence as ev
from qresnet.study.claims import BACKENDS, PARTS, decisive_distance
from qresnet.study.report import Runs
from qresnet.values import checked_int

PILOT_SEEDS = 5
MAX_SEEDS = 40
POWER = 0.80  # the chance the planned study decides the claim, if the pilot's mean and spread hold
FACTOR = 1 + float(stats.norm.ppf(POWER) / stats.norm.ppf(0.5 + ev.CONFIDENCE / 2))  # about 1.43
POWER_TEXT = (
    "A pilot (the first seeds of every planned study, which stay the main study's first seeds) gives each part of "
    "each claim, per backend, its paired mean d and standard deviation s. The decisive distance D is how far the "
    "interval's half-width may reach from d and still decide the part's rule: max(d, MARGIN - d) for beats, "
    "||d| - MARGIN| for close, |d - MARGIN| for little. The target half-width is w = D / factor (factor = 1 + "
    "z(0.80) / z(0.975) = 1.43: 80% power if the pilot's d and s hold), and the planned n "
    "is the smallest n, at least the pilot's and 3, with t(0.975, n - 1) s / sqrt(n) <= w, at most the cap; a claim "
    "takes the largest n over its parts and backends, a study the largest over its claims. n is fixed before the main "
    "runs: no seed is added for the verdict it would give. At the cap the table states the cap's half-width "
    "t(0.975, cap - 1) s / sqrt(cap): the claim is decided only if its mean lies at least that far from the boundary.")
UNPLANNED = {2: "decided exactly (gradient norms and the audit): no seeds to plan",
             6: "decided exactly (the gradient audit): no seeds to plan",
             7: "a fixed reduced budget over all 64 configurations (its power is over configurations, not seeds)"}


def half_width(s: float, n: int, confidence: float = ev.CONFIDENCE) -> float:
    """The expected half-width of the Student-t interval of a mean of n paired differences of spread s."""
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * s / math.sqrt(n)


@dataclass(frozen=True)
class PowerRule:
    """How many seeds the pilot runs, the most the study may run, and the target half-width's share of the
    decisive distance (w = D / factor)."""

    pilot: int = PILOT_SEEDS
    cap: int = MAX_SEEDS
    factor: float = FACTOR
    study_caps: tuple[tuple[str, int], ...] = ()  # (study, cap) pairs that replace ``cap`` for those studies

    def __post_init__(self) -> None:
        object.__setattr__(self, "pilot", checked_int(self.pilot, "pilot seeds", 2))
        object.__setattr__(self, "cap", checked_int(self.cap, "seed cap", self.pilot))
        if not (isinstance(self.factor, (int, float)) and math.isfinite(self.factor) and self.factor > 0):
            raise ConfigError(f"factor={self.factor!r} must be a positive number")
        pairs = dict(self.study_caps.items() if isinstance(self.study_caps, Mapping) else self.study_caps)
        object.__setattr__(self, "study_caps", tuple(sorted(
            (str(study), checked_int(cap, f"seed cap of study {study}", self.pilot)) for study, cap in pairs.items())))

    def for_study(self, study: str | None) -> PowerRule:
        """This rule with ``study``'s own cap, if it has one."""
        caps = dict(self.study_caps)
        return self if study not in caps else replace(self, cap=caps[study], study_caps=())

    @classmethod
    def coerce(cls, value: PowerRule | Mapping[str, Any] | None) -> PowerRule:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls(**value)
        raise ConfigError(f"power rule {value!r} must be a PowerRule or a mapping of pilot, cap and factor")

    @property
    def least(self) -> int:
        return max(self.pilot, ev.MIN_SEEDS)

    def seeds(self, s: float, w: float) -> tuple[int, bool]:
        """The smallest n in [least, cap] with expected half-width <= w, and whether the cap stopped the search."""
        return self.within_cap(self.uncapped(s, w))

    def within_cap(self, asks: int | None) -> tuple[int, bool]:
        """(n, capped) for a part that asks for ``asks`` seeds (None: no n decides it)."""
        return (asks, False) if asks is not None and asks <= self.cap else (self.cap, True)

    def uncapped(self, s: float, w: float) -> int | None:
        """The smallest n, at least :attr:`least`, with expected half-width <= w, whatever the cap (None if w <= 0
        while s > 0: no n decides). What a capped plan would have asked for."""
        if s == 0:
            return self.least
        if w <= 0:
            return None
        # t >= z, so no n below (z s / w)^2 qualifies: start there, not at least
        n = max(self.least, math.floor((float(stats.norm.ppf(0.5 + ev.CONFIDENCE / 2)) * s / w) ** 2))
        while half_width(s, n) > w:
            n += 1
        return n


@dataclass(frozen=True)
class PartPlan:
    """One part of a claim on one backend: the pilot's estimate and the seeds it asks for."""

    label: str
    backend: str
    rule: str
    pilot_n: int
    mean: float | None
    s: float | None
    distance: float | None
    w: float | None
    n: int
    capped: bool
    asks: int | None = None  # the n the rule asks for without the cap (None: no n decides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClaimPlan:
    """A claim's seeds: the largest its parts ask for, and the part that asks for them."""

    claim: int
    study: str | None
    n: int
    capped: bool
    parts: tuple[PartPlan, ...]
    why: str
    cap_half_width: float | None = None  # at the cap: the smallest half-width the cap reaches for the driving part

    @property
    def asks(self) -> int | None:
        """The seeds the claim would take without the cap: its driver's (the most any part asks for; None: a part
        that no n decides)."""
        d = self.driver
        return self.n if d is None else d.asks

    @property
    def driver(self) -> PartPlan | None:
        planned = [p for p in self.parts if p.s is not None]
        return max(planned, key=_demand) if planned else None

    def to_dict(self) -> dict[str, Any]:
        d = self.driver
        return {"claim": self.claim, "study": self.study, "pilot_n": d.pilot_n if d else None,
                "s": d.s if d else None, "w": d.w if d else None, "planned_n": self.n, "capped": self.capped,
                "asks_uncapped": self.asks,
                "cap_half_width": self.cap_half_width, "why": self.why, "parts": [p.to_dict() for p in self.parts]}


def _demand(part: PartPlan) -> tuple[int, float, float]:
    """What makes a part drive its claim's plan: its seeds, then (at the cap, where many parts share that n) the
    seeds it asks for without the cap (none decides: the most), then its spread."""
    return part.n, math.inf if part.asks is None else part.asks, part.s or 0.0


def plan_part(part_label: str, rule: str, backend: str, value: ev.Paired | None, power: PowerRule) -> PartPlan:
    """One part's seeds from its pilot difference."""
    if value is None or value.std is None:  # nothing to estimate from: the part keeps the seeds the pilot has
        n = 0 if value is None else value.n
        return PartPlan(part_label, backend, rule, n, None if value is None else value.mean, None, None, None, n, False,
                        n)
    distance = decisive_distance(rule, value.mean)
    w = distance / power.factor
    asks = power.uncapped(value.std, w)
    n, capped = power.within_cap(asks)
    return PartPlan(part_label, backend, rule, value.n, value.mean, value.std, distance, w, n, capped, asks)


def plan_claims(pilot: Mapping[str, Runs], power: PowerRule, backends: Sequence[str] = BACKENDS) -> list[ClaimPlan]:
    """Every planned claim's seeds from the pilot's runs (:data:`PARTS`), then the unplanned ones, stated."""
    plans = []
    for number, parts in PARTS.items():
        runs = pilot.get(parts[0].study) or Runs([])
        rule = power.for_study(parts[0].study)
        part_plans = tuple(plan_part(p.label, p.rule, b, p.difference(runs, b), rule)
                           for p in parts for b in backends)
        n = max(p.n for p in part_plans)
        capped = any(p.capped for p in part_plans)
        driver = max(part_plans, key=_demand)
        if driver.s is None:
            why = f"no estimate from the pilot ({driver.label} on {driver.backend}): the study keeps the pilot's seeds"
            plans.append(ClaimPlan(number, parts[0].study, n, False, part_plans, why))
            continue
        why = (f"{driver.label} on {driver.backend}: pilot mean {driver.mean:+.3f}, s {driver.s:.3f}, "
               f"{driver.rule} boundary {driver.distance:.3f} away, w = {driver.w:.4f}")
        cap_half = half_width(driver.s, rule.cap) if capped else None
        if capped:
            wanted = f"it asks for {driver.asks}" if driver.asks is not None else "no number of seeds decides it"
            why += (f"; capped at {rule.cap} ({wanted}): the cap's half-width is {cap_half:.3f}, so the claim is "
                    f"decided only if its mean lies at least that far from the boundary")
        plans.append(ClaimPlan(number, parts[0].study, n, capped, part_plans, why, cap_half))
    return plans


def study_seeds(plans: Sequence[ClaimPlan], pilot_counts: Mapping[str, int]) -> dict[str, int]:
    """Each study's seeds: the largest over the claims it serves; a study no claim plans keeps its pilot's."""
    counts = dict(pilot_counts)
    for plan in plans:
        if plan.study in counts:
            counts[plan.study] = max(counts[plan.study], plan.n)
    return counts


def extend_seeds(seeds: Sequence[int], n: int) -> tuple[int, ...]:
    """The pilot's seeds, then the next ones after the largest, up to n (the pilot's runs are the first seeds)."""
    seeds = tuple(seeds)
    return seeds + tuple(range(max(seeds) + 1, max(seeds) + 1 + n - len(seeds))) if n > len(seeds) else seeds
