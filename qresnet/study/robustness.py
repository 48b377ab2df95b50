"""The robustness study: the paper's verdicts re-decided at every noise level; the lowest level at which one changes.

    qresnet reproduce --study robustness --data-dir ../shared/data --jobs 2 --out reports/robustness
    qresnet reproduce --study robustness --budget tiny --out /tmp/r     # the pipeline on the embedded digits

The five two-layer paper configurations, trainable and frozen, linear head (10 classes) and quantum head (4 classes),
run on the ideal ``aer`` (the reference, level 0 of every family), on each of the five ``noise:<channel>:<p>``
channels over a grid of p, and on ``aer:<device>@<s>`` over a grid of scales s. One resumable sweep per head
(:func:`qresnet.study.sweep.run_sweep`, in ``OUT/<head>/``, with its comparison report and its ``robustness.png``).
``aer:<device>@0`` is not run: it is the ideal circuit on the device's layout, whose exact values are ``aer``'s.

**The claim.** At every level, each verdict of the paper that these runs can decide is decided again by the rules of
:mod:`qresnet.study.evidence` (the paired 95% interval, at least ``MIN_SEEDS`` seeds; never a point estimate), over
the seeds the level and ``aer`` share, and compared with its verdict on ``aer``: per head and configuration,
*trainable beats frozen* (Q3); *O1+O2 beats X+O1* (linear head, claim 3); *(X+O1)+O2 beats each other trainable
configuration* (quantum head, claim 5's ordering). A verdict **changes** at a level when the evidence there decides
it (yes or no) and differently from ``aer``; one that ``aer`` decides and the level leaves inconclusive has only lost
its decision (the noise widened the interval) and is reported as such, not as a change. Per family the claim is the
lowest level with a change, or none up to the family's largest level. :mod:`qresnet.study.robustness_report` writes
``robustness.md``, ``robustness.json`` and the figure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qresnet.backends.spec import CHANNELS
from qresnet.choices import BUDGETS, HEADS
from qresnet.errors import ConfigError, SweepError
from qresnet.residual import ResidualSpec
from qresnet.run.lock import OutputLock
from qresnet.run.result import RunResult
from qresnet.study import evidence as ev
from qresnet.study.report import Runs, Setting, write_comparison_report
from qresnet.study.report_figures import noise_level
from qresnet.study.sweep import SweepConfig, SweepResult, run_sweep
from qresnet.values import checked_int

REFERENCE = "aer"
PAPER_CONFIGS = tuple(c.notation for c in ResidualSpec.paper(2))
CHANGED, LOST = "changed", "lost its decision"  # how a verdict at a level stands against its verdict on aer

# The cost model behind the budgets, measured on the shared 2-core box (the full budget's seeds 3-9 added to seeds
# 0-2, --jobs 2, default stacks: 2100 linear-head runs in 7.8 min, 1330 quantum-head runs in 10.5 min): a run's
# fixed cost (set-up, checkpoints, summary: its curves are the report's, not drawn per run), a training step with its
# share of the per-epoch evaluation (linear head, 10 classes; quantum head, 4 classes), and per worker process and
# device scale the scaled noise model (25 s) and its transfer matrices (19 s).
RUN_SECONDS = 0.1
STEP_SECONDS = {"linear": 0.004, "quantum": 0.02}
DEVICE_LEVEL_SECONDS = 45.0
SWEEP_SECONDS = 30.0  # per sweep: its worker processes' imports, the data, its comparison report


@dataclass(frozen=True)
class HeadPlan:
    """One head's part of the study: its data (classes, images per class), learning rate, and the noise levels it
    runs at (p of every channel in (0, 1]; device scales s > 0, ``aer`` being level 0 of every family)."""

    head: str
    classes: tuple[int, ...] | None
    per_class: int
    lr: float
    channel_levels: tuple[float, ...]
    device_scales: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ConfigError(f"head={self.head!r} must be one of {', '.join(HEADS)}")
        checked_int(self.per_class, "per_class", 1)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr={self.lr!r} must be a positive number")
        object.__setattr__(self, "channel_levels", _levels(self.channel_levels, "channel level p", 1.0))
        object.__setattr__(self, "device_scales", _levels(self.device_scales, "device scale s", math.inf))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(checked_int(c, "class", 0) for c in self.classes))

    def backends(self, channels: Sequence[str], device: str) -> tuple[str, ...]:
        """``aer``, then every channel at every level, then the device at every scale."""
        return (REFERENCE, *(f"noise:{c}:{p:g}" for c in channels for p in self.channel_levels),
                *(f"aer:{device}@{s:g}" for s in self.device_scales))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _levels(values: Sequence[float], what: str, upper: float) -> tuple[float, ...]:
    """Distinct levels in (0, upper], sorted; one line naming the first that is not."""
    levels = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= upper or \
                not math.isfinite(value):
            allowed = "0 < p <= 1" if upper == 1.0 else "a finite s > 0"
            raise ConfigError(f"{what} {value!r} is out of range; allowed: {allowed} (level 0 is the ideal aer, run "
                              "once for every family)")
        levels.append(float(value))
    if len(set(levels)) < len(levels):
        raise ConfigError(f"{what}s {list(values)!r} repeat a level")
    return tuple(sorted(levels))


@dataclass(frozen=True)
class RobustnessBudget:
    """What the study runs: the data set, epochs and seeds every run shares, each head's :class:`HeadPlan`, the
    channels, the device whose noise is scaled, and the configurations."""

    name: str
    dataset: str
    epochs: int
    seeds: tuple[int, ...]
    heads: tuple[HeadPlan, ...]
    channels: tuple[str, ...] = CHANNELS
    device: str = "fake_torino"
    configs: tuple[str, ...] = PAPER_CONFIGS
    batch_size: int = 16

    def __post_init__(self) -> None:
        checked_int(self.epochs, "epochs", 1)
        checked_int(self.batch_size, "batch_size", 1)
        seeds = tuple(checked_int(s, "seed", 0) for s in self.seeds)
        if not seeds or len(set(seeds)) < len(seeds):
            raise ConfigError(f"seeds={self.seeds!r} must be distinct integers")
        object.__setattr__(self, "seeds", seeds)
        heads = tuple(self.heads)
        if not heads or len({h.head for h in heads}) < len(heads):
            raise ConfigError(f"heads={[h.head for h in heads]!r} must be distinct heads of {', '.join(HEADS)}")
        object.__setattr__(self, "heads", heads)
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown or len(set(self.channels)) < len(self.channels):
            raise ConfigError(f"channels={list(self.channels)!r} must be distinct channels of {', '.join(CHANNELS)}")
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "configs", tuple(ResidualSpec.coerce(c, 2).notation for c in self.configs))

    @classmethod
    def coerce(cls, value: str | RobustnessBudget) -> RobustnessBudget:
        if isinstance(value, RobustnessBudget):
            return value
        if value not in BUDGET_PLANS:
            raise ConfigError(f"budget={value!r} must be one of {', '.join(BUDGETS)}")
        return BUDGET_PLANS[value]

    def sweeps(self, data_dir: str | None = None) -> dict[str, SweepConfig]:
        """One sweep per head (``OUT/<head>/``): every backend of its plan, configuration, trainable, frozen, seed."""
        out = {}
        for plan in self.heads:
            preset = "paper" if plan.head == "linear" else "paper-quantum"
            out[plan.head] = SweepConfig.from_preset(
                preset, dataset=self.dataset, data_dir=data_dir, classes=plan.classes, per_class=plan.per_class,
                layers=2, configs=self.configs, backends=plan.backends(self.channels, self.device), heads=(plan.head,),
                epochs=self.epochs, batch_size=self.batch_size, lr=plan.lr, seeds=self.seeds)
        return out

    def estimate_seconds(self, jobs: int = 2, train_images: dict[str, int] | None = None) -> float:
        """The wall time the cost model above predicts with ``jobs`` processes on an otherwise idle machine.
        ``train_images`` per head (default: 80% of classes x per_class, 10 classes when all)."""
        total = 0.0
        for plan in self.heads:
            images = (train_images or {}).get(plan.head) or int(0.8 * (len(plan.classes or range(10))) * plan.per_class)
            runs = len(plan.backends(self.channels, self.device)) * len(self.configs) * 2 * len(self.seeds)
            steps = self.epochs * -(-images // self.batch_size)
            total += runs * (RUN_SECONDS + steps * STEP_SECONDS[plan.head])
            total += len(plan.device_scales) * max(1, jobs) * DEVICE_LEVEL_SECONDS  # each worker builds each scale
        return total / max(1, jobs) + SWEEP_SECONDS * len(self.heads)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["heads"] = [h.to_dict() for h in self.heads]
        return out


CHANNEL_LEVELS = (0.1, 0.2, 0.4, 0.6, 1.0)
BUDGET_PLANS = {
    # MNIST at a reduced budget: 10 seeds (3, the fewest that decide, left most verdicts on aer inconclusive),
    # 4 epochs, batch 16.
    # - linear head, 10 classes x 40 (320 train / 80 test images, 20 steps an epoch), the paper's lr 0.01, p in 0.1,
    #   0.2, 0.4, 0.6, 1.0 for each channel and s in 1, 3, 10, 30: 30 backends x 5 configurations x 2 x 10 seeds =
    #   3000 runs x (0.1 s + 80 steps x 0.004 s) = 21 min of one core;
    # - quantum head, classes 0-3 x 50 (160 / 40, 10 steps an epoch), lr 0.05 (at 0.01 it stays at chance within
    #   4 epochs), p in 0.1, 0.4, 1.0 and s in 1, 10, 30: 19 backends, 1900 runs x (0.1 s + 40 x 0.02 s) = 28.5 min;
    # - the scaled device models, built once per worker and scale: 7 x 2 x 45 s = 10.5 min;
    # 60 minutes of one core, 30 with --jobs 2, and a minute for the two sweeps' start-up and reports (the quantum
    # head's coarser grid is what keeps it in the window).
    "full": RobustnessBudget(
        "full", "mnist", epochs=4, seeds=tuple(range(10)),
        heads=(HeadPlan("linear", None, 40, 0.01, CHANNEL_LEVELS, (1, 3, 10, 30)),
               HeadPlan("quantum", (0, 1, 2, 3), 50, 0.05, (0.1, 0.4, 1.0), (1, 10, 30)))),
    # the pipeline end to end on the embedded digits in minutes: one seed, so every verdict is inconclusive
    "tiny": RobustnessBudget(
        "tiny", "digits", epochs=1, seeds=(0,),
        heads=(HeadPlan("linear", None, 8, 0.05, (0.5, 1.0), (10,)),
               HeadPlan("quantum", (0, 1, 2, 3), 8, 0.05, (1.0,), ()))),
}


# --- the claim ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decided:
    """One verdict at one backend: its name, yes / no / inconclusive by the evidence rules, and the difference."""

    name: str
    verdict: str
    difference: ev.Paired | None


def verdicts(runs: Runs, backend: str) -> list[Decided]:
    """Every verdict of the paper that ``runs`` can decide on ``backend`` (a head or configuration without runs is
    left out): per head and configuration trainable beats frozen; O1+O2 beats X+O1 (linear head); (X+O1)+O2 beats
    each other trainable configuration (quantum head)."""
    out = []
    for head in HEADS:
        s = Setting(backend, head)
        present = [c for c in runs.configs if runs.get(s, c, False)]
        for config in present:
            d = runs.difference((s, config, False), (s, config, True))
            if d is not None:
                out.append(Decided(f"{config} beats frozen ({head} head)", ev.beats(d), d))
        pairs = ([("O1+O2", "X+O1")] if head == "linear" else
                 [("(X+O1)+O2", c) for c in PAPER_CONFIGS if c != "(X+O1)+O2"])
        for a, b in pairs:
            if a in present and b in present:
                d = runs.difference((s, a, False), (s, b, False))
                out.append(Decided(f"{a} beats {b} ({head} head)", ev.beats(d), d))
    return out


@dataclass(frozen=True)
class Change:
    """A verdict whose decision at a level differs from its decision on ``aer`` (same seeds)."""

    level: float
    backend: str
    name: str
    reference: str  # the verdict on aer
    verdict: str  # the verdict at the level
    kind: str  # CHANGED or LOST
    reference_difference: str
    difference: str

    def describe(self, unit: str) -> str:
        return (f"{self.name}: {self.reference} on aer ({self.reference_difference}), {self.verdict} at {unit} = "
                f"{self.level:g} ({self.difference})")


@dataclass(frozen=True)
class FamilyClaim:
    """One noise family's answer: its levels, the lowest level at which a verdict changes (None: none up to the
    largest), the lowest at which one only loses its decision, the lowest at which a verdict aer decides is decided
    the other way (a *reversal*: yes on aer, no at the level, or the reverse), and every differing verdict."""

    family: str
    unit: str
    levels: tuple[float, ...]
    first_change: float | None
    first_lost: float | None
    differences: tuple[Change, ...] = field(default_factory=tuple)
    first_reversal: float | None = None

    def describe(self) -> str:
        text = self._at(self.first_change, lambda c: c.kind == CHANGED)
        if self.first_lost is not None and (self.first_change is None or self.first_lost < self.first_change):
            text += f" (a verdict first loses its decision at {self.unit} = {self.first_lost:g})"
        return text

    def describe_reversal(self) -> str:
        return self._at(self.first_reversal, reversed_on_aer)

    def _at(self, level: float | None, which: Callable[[Change], bool]) -> str:
        if level is None:
            return f"none up to {self.unit} = {max(self.levels):g}" if self.levels else "none at the levels run"
        return f"{self.unit} = {level:g}: " + "; ".join(c.describe(self.unit) for c in self.differences
                                                       if c.level == level and which(c))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "claim": self.describe(), "reversal": self.describe_reversal()}


def reversed_on_aer(change: Change) -> bool:
    """Whether a change reverses a verdict aer decides (yes -> no or no -> yes), rather than deciding one aer left
    inconclusive."""
    return change.kind == CHANGED and change.reference != ev.INCONCLUSIVE


def _on_seeds(runs: Runs, backends: Sequence[str]) -> Runs:
    """The runs of ``backends`` on the seeds every one of them has (a verdict is compared over the same seeds)."""
    rows = [r for r in runs.rows if str(r.backend) in backends]
    seeds = set.intersection(*({r.seed for r in rows if str(r.backend) == b} for b in backends))
    return Runs([r for r in rows if r.seed in seeds])


def families(runs: Runs) -> dict[str, dict[float, str]]:
    """The noise families in ``runs``: family (``noise:<channel>``, ``aer:<device>``) -> level -> backend."""
    out: dict[str, dict[float, str]] = {}
    for backend in dict.fromkeys(s.backend for s in runs.settings):
        level = noise_level(backend)
        if level is not None:
            out.setdefault(level[0], {})[level[1]] = backend
    return {name: dict(sorted(levels.items())) for name, levels in out.items()}


def decide_family(runs: Runs, family: str, levels: dict[float, str]) -> FamilyClaim:
    """The family's claim: every level's verdicts against ``aer``'s on the seeds both have."""
    unit = "p" if family.startswith("noise:") else "s"
    differences = []
    for level, backend in levels.items():
        shared = _on_seeds(runs, (REFERENCE, backend))
        reference = {d.name: d for d in verdicts(shared, REFERENCE)}
        for here in verdicts(shared, backend):
            there = reference.get(here.name)
            if there is None or there.verdict == here.verdict or ev.NOT_TESTED in (there.verdict, here.verdict):
                continue
            kind = LOST if here.verdict == ev.INCONCLUSIVE else CHANGED
            differences.append(Change(level, backend, here.name, there.verdict, here.verdict, kind,
                                      there.difference.describe(), here.difference.describe()))
    first = {kind: min((c.level for c in differences if c.kind == kind), default=None) for kind in (CHANGED, LOST)}
    reversal = min((c.level for c in differences if reversed_on_aer(c)), default=None)
    return FamilyClaim(family, unit, tuple(levels), first[CHANGED], first[LOST], tuple(differences), reversal)


def decide(runs: Runs) -> list[FamilyClaim]:
    """Every family's claim, channels first (in the order of the backends), then the device."""
    found = families(runs)
    order = sorted(found, key=lambda f: (not f.startswith("noise:"), list(found).index(f)))
    return [decide_family(runs, family, found[family]) for family in order]


@dataclass(frozen=True)
class Drop:
    """Where accuracy first drops under a family's noise: the lowest level whose paired (level - aer) interval lies
    below 0 (the drop exceeds the interval), per head, configuration and trainable or frozen. ``level`` None: no drop
    up to the largest level, or, when ``seeds`` (the fewest paired at a level) is below MIN_SEEDS, none decidable."""

    family: str
    head: str
    config: str
    frozen: bool
    level: float | None
    difference: str
    seeds: int

    @property
    def decidable(self) -> bool:
        return self.level is not None or self.seeds >= ev.MIN_SEEDS


def _first_drop(runs: Runs, family: str, levels: dict[float, str], head: str, config: str, frozen: bool
                ) -> Drop | None:
    seeds = None
    for level, backend in levels.items():
        d = runs.difference((Setting(backend, head), config, frozen), (Setting(REFERENCE, head), config, frozen))
        if d is None:
            continue
        seeds = d.n if seeds is None else min(seeds, d.n)
        if d.n >= ev.MIN_SEEDS and d.high is not None and d.high < 0:
            return Drop(family, head, config, frozen, level, d.describe(), seeds)
    return None if seeds is None else Drop(family, head, config, frozen, None, "", seeds)


def first_drops(runs: Runs) -> list[Drop]:
    """Per family, head, configuration, trainable and frozen (those paired with aer at some level): the first drop."""
    found = [_first_drop(runs, family, levels, head, config, frozen) for family, levels in families(runs).items()
             for head in HEADS for config in runs.configs for frozen in (False, True)]
    return [d for d in found if d is not None]


# --- the study ------------------------------------------------------------------------------------------------------

def run_robustness(out: str | Path, budget: str | RobustnessBudget = "full", data_dir: str | None = None,
                   jobs: int = 1, executor: str = "processes", ray_address: str | None = None, progress: bool = True,
                   stack: int | None = None) -> Path:
    """Every sweep of the budget (resumable, ``OUT/<head>/``), the claims, ``robustness.md``, ``robustness.json`` and
    ``robustness.png``; ``out`` is locked throughout. Returns the path of ``robustness.md``."""
    from qresnet.study.robustness_report import write_robustness

    budget = RobustnessBudget.coerce(budget)
    checked_int(jobs, "--jobs", 1)
    out = Path(out)
    with OutputLock(out):
        began = time.perf_counter()
        rows: list[RunResult] = []
        sweep_seconds, failures = {}, []
        sweeps = budget.sweeps(data_dir)
        for head, sweep in sweeps.items():
            try:
                result = run_sweep(sweep, out / head, jobs=jobs, progress=progress, executor=executor,
                                   ray_address=ray_address, stack=stack)
            except SweepError as exc:  # the study goes on with the runs that finished; the failures are reported
                result, failures = exc.result, failures + exc.failures
            write_comparison_report(result, out / head)
            rows += result.runs
            sweep_seconds[head] = result.wall_time_s
        runs = Runs(rows)
        report = write_robustness(out, budget, runs, decide(runs), first_drops(runs),
                                  {"this_invocation": time.perf_counter() - began, "sweeps": sweep_seconds,
                                   "estimate_jobs": jobs, "estimate": budget.estimate_seconds(jobs)}, failures)
    if failures:  # the exit status says so; the error carries every finished run (under the first sweep's config)
        raise SweepError(SweepResult(next(iter(sweeps.values())), tuple(rows)),
                         failures + [f"the report over the runs that finished: {report}"])
    return report
