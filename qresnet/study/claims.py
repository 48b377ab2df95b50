"""The paper's claims, each decided from a study's runs: what it says, the comparisons that test it, the verdict.

Claims 1 to 7 keep the numbers of the first reproduction; 9, 10 and 11 are the paper's statements it did not
test yet; 8 (does device noise change a verdict) is :func:`noise_changes`. :data:`CLAIMS` lists them in the
paper's order. Most claims are made of :class:`Part` s, paired differences over seeds (same seed: same split
and initial weights), each under one of three rules (:data:`RULE_TEXT`):

- ``beats``: reproduced when the 95% paired interval lies above 0, not when it lies below +MARGIN;
- ``close``: reproduced when the interval lies within +-MARGIN, not when it lies entirely outside;
- ``little`` (trains little or not at all): reproduced when the interval lies below +MARGIN, not when above it.

A claim of several parts is reproduced when every part is, not reproduced when any part is not. Claims 2 and
6 (which layers receive gradients) and 7 (every three-layer configuration) have deciders of their own.
:mod:`qresnet.study.power` plans the seeds from the same parts, by the same boundaries (:func:`decisive_distance`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from qresnet.errors import ConfigError
from qresnet.study import evidence as ev
from qresnet.study.audit import AuditRow
from qresnet.study.report import Runs, Setting

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
BACKENDS = ("aer", "aer:fake_torino")
SPLITS = ("train", "test")  # the final epoch's accuracy on the training set, and on the held-out test set
RULE_TEXT = {
    "beats": f"reproduced if the 95% paired interval lies above 0, not if it lies below +{ev.MARGIN:g}",
    "close": f"reproduced if the interval lies within +-{ev.MARGIN:g}, not if it lies entirely outside",
    "little": f"reproduced if the interval lies below +{ev.MARGIN:g} (a gain of {ev.MARGIN * 100:g} points is ruled "
              "out), not if it lies above it",
}


@dataclass(frozen=True)
class ClaimRow:
    """One claim on one backend: what it says, how it is tested, what came out, and the verdict."""

    number: int
    claim: str
    test: str
    backend: str
    result: str
    verdict: str
    variant: str | None = None  # the variant's name for a variant row

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Part:
    """One paired comparison of a claim: run group ``a`` minus run group ``b`` (each a configuration and whether
    it is frozen) in one study and head, decided by ``rule``."""

    study: str
    head: str
    a: tuple[str, bool]
    b: tuple[str, bool]
    rule: str

    def __post_init__(self) -> None:
        if self.rule not in RULE_TEXT:
            raise ConfigError(f"rule={self.rule!r} must be one of {', '.join(RULE_TEXT)}")

    @property
    def label(self) -> str:
        if self.a[0] == self.b[0] and self.b[1] and not self.a[1]:
            return f"{self.a[0]} - frozen"  # a configuration against its own frozen benchmark
        return " - ".join(f"{c}{' frozen' if frozen else ''}" for c, frozen in (self.a, self.b))

    def values(self, runs: Runs, backend: str, split: str = "test") -> tuple[list[float], list[float]]:
        """The final accuracies of a and b on ``split``, over the seeds both have, in seed order."""
        if split not in SPLITS:
            raise ConfigError(f"split={split!r} must be one of {', '.join(SPLITS)}")
        setting = Setting(backend, self.head)

        def final(group: tuple[str, bool]) -> dict[int, float]:
            return {r.seed: (r.metrics[-1].train_acc if split == "train" else r.metrics[-1].test_acc)
                    for r in runs.get(setting, *group) if r.metrics}
        left, right = final(self.a), final(self.b)
        seeds = sorted(set(left) & set(right))
        return [left[s] for s in seeds], [right[s] for s in seeds]

    def difference(self, runs: Runs, backend: str, split: str = "test") -> ev.Paired | None:
        a, b = self.values(runs, backend, split)
        return ev.paired(a, b) if a else None


def rule_verdict(rule: str, value: ev.Paired | None) -> str:
    """A part's verdict under its rule (see the module's docstring)."""
    if value is None or value.low is None or value.n < ev.MIN_SEEDS:
        return INCONCLUSIVE
    if rule == "beats":
        return REPRODUCED if value.low > 0 else NOT_REPRODUCED if value.high < ev.MARGIN else INCONCLUSIVE
    if rule == "close":
        if -ev.MARGIN < value.low and value.high < ev.MARGIN:
            return REPRODUCED
        return NOT_REPRODUCED if value.low > ev.MARGIN or value.high < -ev.MARGIN else INCONCLUSIVE
    return REPRODUCED if value.high < ev.MARGIN else NOT_REPRODUCED if value.low > ev.MARGIN else INCONCLUSIVE


def decisive_distance(rule: str, mean: float) -> float:
    """How far the half-width of the interval around ``mean`` may reach and still decide the rule: the distance
    from ``mean`` to the boundary of the verdict it points to (the farther one where two verdicts are open)."""
    if rule == "beats":  # above 0 (reproduced) or below +MARGIN (not): whichever leaves more room
        return max(mean, ev.MARGIN - mean)
    if rule == "close":  # inside +-MARGIN, or outside it
        return abs(abs(mean) - ev.MARGIN)
    return abs(mean - ev.MARGIN)  # little: below +MARGIN, or above it


def _all(verdicts: Sequence[str]) -> str:
    """A claim made of parts: reproduced if every part is, not reproduced if any part is not."""
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    return REPRODUCED if verdicts and all(v == REPRODUCED for v in verdicts) else INCONCLUSIVE


def _describe(value: ev.Paired | None) -> str:
    return "-" if value is None else value.describe()


_LIN, _Q = "linear", "quantum"
PARTS: dict[int, tuple[Part, ...]] = {
    1: (Part("single", _LIN, ("none", False), ("none", True), "beats"),),
    3: (Part("paper", _LIN, ("O1+O2", False), ("X+O1", False), "beats"),),
    4: (Part("paper", _LIN, ("X+O2", False), ("X+O2", True), "close"),
        Part("paper", _LIN, ("(X+O1)+O2", False), ("(X+O1)+O2", True), "close")),
    5: (*(Part("paper-quantum", _Q, (c, False), (c, True), "little") for c in ("none", "X+O1", "X+O2")),
        Part("paper-quantum", _Q, ("O1+O2", False), ("O1+O2", True), "beats"),
        *(Part("paper-quantum", _Q, ("(X+O1)+O2", False), (c, False), "beats")
          for c in ("none", "X+O1", "O1+O2", "X+O2"))),
    9: (Part("paper", _LIN, ("none", False), ("none", True), "little"),),
    10: (Part("paper", _LIN, ("X+O1", False), ("none", False), "beats"),),
    11: (Part("paper", _LIN, ("O1+O2", False), ("O1+O2", True), "beats"),),
}


def claim_parts(number: int, results: Mapping[str, Runs], backend: str) -> tuple[str, str]:
    """A claim made of :data:`PARTS`: each part's paired difference on the test set and its rule's verdict."""
    lines, verdicts = [], []
    for part in PARTS[number]:
        value = part.difference(results.get(part.study) or Runs([]), backend)
        verdict = rule_verdict(part.rule, value)
        lines.append(f"{part.label} {_describe(value)} ({part.rule}: {verdict})")
        verdicts.append(verdict)
    return "; ".join(lines), _all(verdicts)


def claim_gradient_access(runs: Runs, audit: Sequence[AuditRow], backend: str) -> tuple[str, str]:
    expected = {"none": (False, True), "X+O1": (False, True), "X+O2": (False, True),
                "O1+O2": (True, True), "(X+O1)+O2": (True, True)}
    measured = {c: [r.measured_reach for r in runs.get(Setting(backend, "linear"), c, False)] for c in expected}
    audited = {row.config: tuple(row.reaches) for row in audit if len(row.reaches) == 2}
    wrong = [c for c, flags in expected.items()
             if any(m != flags for m in measured[c]) or (c in audited and audited[c] != flags)]
    seeds = min((len(m) for m in measured.values()), default=0)
    text = f"measured in {seeds} seeds and the audit: " + ("as the rule says" if not wrong else f"differs for {', '.join(wrong)}")
    return text, NOT_REPRODUCED if wrong else (REPRODUCED if seeds else INCONCLUSIVE)


def claim_three_layers(audit: Sequence[AuditRow]) -> tuple[str, str]:
    three = {row.config: row for row in audit if len(row.reaches) == 3}
    full = sorted(c for c, row in three.items() if all(row.reaches))
    agrees = all(row.agrees for row in three.values())
    expected = sorted(["(O1+O2)+O3", "((X+O1)+O2)+O3"])
    return (f"all three layers get a gradient in {', '.join(full) or 'none'}; the rule agrees: {agrees}",
            REPRODUCED if three and full == expected and agrees else NOT_REPRODUCED if three else INCONCLUSIVE)


def claim_reach_pays(runs: Runs, backend: str) -> tuple[str, str]:
    """Beyond the paper: over every three-layer configuration, does each extra layer the gradient reaches buy
    accuracy over the frozen benchmark? The slope of the per-configuration mean gain on the layers reached."""
    s = Setting(backend, "linear")
    points = []
    for config in runs.configs:
        trained = runs.get(s, config, False)
        gain = runs.difference((s, config, False), (s, config, True))
        if trained and gain is not None:
            points.append((sum(trained[0].predicted_reach), gain.mean))
    if len({x for x, _ in points}) < 2 or len(points) < 3:
        return "fewer than 3 configurations with paired runs", INCONCLUSIVE
    groups: dict[int, list[float]] = {}
    for reach, gain in points:
        groups.setdefault(reach, []).append(gain)
    trend = ev.slope([x for x, _ in points], [y for _, y in points])
    seeds = min(len(runs.get(s, c, False)) for c in runs.configs)
    text = (f"{len(points)} configurations, {seeds} seeds each; mean trainable - frozen by layers reached: "
            + ", ".join(f"{k}: {ev.mean_interval(v).describe()} ({len(v)} configs)" for k, v in sorted(groups.items()))
            + f"; slope per layer {trend.describe()}")
    if seeds < ev.MIN_SEEDS:
        return text, INCONCLUSIVE
    return text, REPRODUCED if trend.low > 0 else NOT_REPRODUCED if trend.high < ev.MARGIN else INCONCLUSIVE


def _parts_test(number: int) -> str:
    parts = PARTS[number]
    rules = dict.fromkeys(p.rule for p in parts)
    return (f"study {parts[0].study}: paired " + ", ".join(p.label for p in parts) + " on the held-out test set; "
            + "; ".join(f"{rule}: {RULE_TEXT[rule]}" for rule in rules))


# (number, claim, test), in the paper's order; numbers 1 to 7 are those of the first reproduction
CLAIMS: tuple[tuple[int, str, str], ...] = (
    (1, "One trainable quanvolution layer beats its frozen benchmark (MNIST, 10 classes, 200 per class); the paper "
        "reports about 36% (relative) improvement.", _parts_test(1)),
    (2, "Without residuals, and with X+O1 and X+O2, only the last layer receives gradients; O1+O2 and (X+O1)+O2 "
        "reach both layers.", "study paper: measured gradient norms of every trainable seed, and the gradient audit"),
    (9, "With the linear head and no residual (none), the two-layer QuNN trains little or not at all.", _parts_test(9)),
    (10, "With the linear head, X+O1 improves over none.", _parts_test(10)),
    (3, "With the linear head, O1+O2 improves over X+O1 (the paper: by about 31% in training and 45% in validation "
        "accuracy).", _parts_test(3)),
    (11, "With the linear head, O1+O2 surpasses its frozen benchmark (the paper: by about 66% in training and 64% in "
         "validation accuracy).", _parts_test(11)),
    (4, "With the linear head, X+O2 and (X+O1)+O2 sit close to their frozen benchmarks.", _parts_test(4)),
    (5, "With the quantum head (MNIST 0-3), none, X+O1 and X+O2 train little or not at all, O1+O2 trains, and "
        "(X+O1)+O2 is best.", _parts_test(5)),
    (6, "For three layers, exactly (O1+O2)+O3 and ((X+O1)+O2)+O3 of the paper's configurations give gradients to "
        "all three layers.", "gradient audit, 3 layers, the paper's configurations"),
    (7, "Beyond the paper: over all 64 three-layer configurations (linear head), each extra layer the gradient "
        "reaches buys accuracy over the frozen benchmark.",
     "study three: slope of the per-configuration mean trainable - frozen on the number of layers the rule says "
     f"learn; reproduced if its 95% interval lies above 0, not if it lies below +{ev.MARGIN:g} per layer"),
)
CLAIM_BACKENDS = {7: BACKENDS[:1]}  # claim 7 is tested on the ideal backend only (its 384 runs at a reduced budget)


def decide(results: Mapping[str, Runs], audit: Mapping[str, Sequence[AuditRow]]) -> list[ClaimRow]:
    """Every claim on every backend, from the studies' runs and the gradient audits."""
    results = {name: results.get(name) or Runs([]) for name in ("single", "paper", "paper-quantum", "three")}
    special: dict[int, Callable[[str], tuple[str, str]]] = {
        2: lambda b: claim_gradient_access(results["paper"], audit.get(b, ()), b),
        6: lambda b: claim_three_layers(audit.get(b, ())),
        7: lambda b: claim_reach_pays(results["three"], b),
    }
    rows = []
    for number, claim, test in CLAIMS:
        for backend in CLAIM_BACKENDS.get(number, BACKENDS):
            decider = special.get(number) or (lambda b, n=number: claim_parts(n, results, b))
            result, verdict = decider(backend)
            rows.append(ClaimRow(number, claim, test, backend, result, verdict))
    return rows


def noise_changes(rows: Sequence[ClaimRow]) -> list[str]:
    """Claim 8: the claims whose verdict differs between the ideal and the noisy backend."""
    by = {(r.number, r.backend): r.verdict for r in rows}
    return [f"claim {n}: {by[(n, BACKENDS[0])]} on {BACKENDS[0]}, {by[(n, BACKENDS[1])]} on {BACKENDS[1]}"
            for n, _, _ in CLAIMS if (n, BACKENDS[1]) in by and by[(n, BACKENDS[0])] != by[(n, BACKENDS[1])]]
