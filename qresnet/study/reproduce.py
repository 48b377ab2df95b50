"""The reproduction study: each of the paper's claims decided with intervals, on ``aer`` and ``aer:fake_torino``.

The claims (:mod:`qresnet.study.claims`): 1 to 6 and 9 to 11 the paper's, 7 (all 64 three-layer
configurations) and 8 (does device noise change a verdict, and by how much in each configuration) beyond it.

    qresnet reproduce --data-dir ../shared/data --jobs 2 --out reports/reproduction
    qresnet reproduce --budget tiny --out /tmp/r            # the whole pipeline on the embedded digits, in minutes

At the paper's settings without deviation (:data:`FULL_EPOCHS` = 30 epochs, batch 16, Adam 0.01, 10 classes x 200
for the linear head, classes 0-3 x 200 for the quantum head). The studies are ordinary sweeps
(:func:`qresnet.study.sweep.run_sweep`) in ``OUT/<study>/``, each with its own comparison report, so the study is
resumable and runs on processes or Ray like any sweep. First a pilot (:mod:`qresnet.study.power`: the first
``pilot`` seeds of every planned study) estimates each comparison's spread; the plan it gives (``power.json``)
fixes each study's seeds before the main runs, which reuse the pilot's runs as their first seeds. The gradient
claims also use the gradient audit. :func:`~qresnet.study.claims.decide` turns the results into one row per claim
and backend; :mod:`qresnet.study.paper` sets the paper's figures beside ours. A claim that does not reproduce gets
its :data:`VARIANTS` run (one targeted change each, in ``OUT/variant-<name>/``) and reported beside the default
verdict. ``reproduction.md`` (with its figures), ``claims.json`` and ``power.json`` hold them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qresnet.backends import resolve_backend
from qresnet.choices import BUDGETS
from qresnet.data import load_digits_images
from qresnet.errors import ConfigError
from qresnet.provenance import environment
from qresnet.residual import ResidualSpec
from qresnet.run.lock import OutputLock
from qresnet.run.rundir import atomic_write_json, atomic_write_text
from qresnet.study import evidence as ev
from qresnet.study.audit import AuditRow, gradient_audit
from qresnet.study.claims import BACKENDS, CLAIMS, NOT_REPRODUCED, PARTS, ClaimRow, decide, noise_changes
from qresnet.study.paper import PAPER_TEXT, PaperRow, paper_rows, paper_table
from qresnet.study.power import POWER_TEXT, UNPLANNED, ClaimPlan, PowerRule, extend_seeds, plan_claims, study_seeds
from qresnet.study.report import Runs, Setting, write_comparison_report
from qresnet.study.sweep import SweepConfig, run_sweep

FULL_EPOCHS = 30  # the paper's schedule: with stacked runs the paper's settings need no shortcut
THREE_LAYER = dict(per_class=50, epochs=4, seeds=(0, 1, 2))  # claim 7's reduced budget: 384 runs in minutes
PLANNED = ("single", "paper", "paper-quantum")  # the studies whose seeds the power plan sets (claim 7's are fixed)
POWER = {"full": PowerRule(), "tiny": PowerRule(pilot=2, cap=3)}  # tiny: a pilot and a plan small enough for tests


def studies(budget: str = "full", data_dir: str | None = None,
            seeds: Mapping[str, int] | None = None) -> dict[str, SweepConfig]:
    """The sweeps the claims need: the paper's settings (``full``, MNIST, :data:`FULL_EPOCHS` epochs) and every
    three-layer configuration at :data:`THREE_LAYER`'s budget, or a tiny digits run. ``seeds`` gives each planned
    study's seed count (seeds 0 to n-1; the power plan's), by default the pilot's."""
    if budget not in BUDGETS:
        raise ConfigError(f"budget={budget!r} must be one of {', '.join(BUDGETS)}")
    counts = {name: (seeds or {}).get(name, POWER[budget].pilot) for name in PLANNED}
    if budget == "tiny":  # the pipeline end to end in minutes: its verdicts say nothing about the paper
        common = dict(dataset="digits", per_class=8, epochs=1, backends=BACKENDS, lr=0.05)
        return {"single": SweepConfig.from_preset("single", **common, seeds=range(counts["single"])),
                "paper": SweepConfig.from_preset("paper", **common, seeds=range(counts["paper"])),
                "paper-quantum": SweepConfig.from_preset("paper-quantum", **common, heads=("quantum",),
                                                         seeds=range(counts["paper-quantum"])),
                "three": SweepConfig.from_preset("paper", **{**common, "layers": 3, "backends": BACKENDS[:1],
                                                             "seeds": (0,)})}
    full = dict(data_dir=data_dir, backends=BACKENDS, epochs=FULL_EPOCHS)
    return {"single": SweepConfig.from_preset("single", **full, seeds=range(counts["single"])),
            "paper": SweepConfig.from_preset("paper", **full, seeds=range(counts["paper"])),
            "paper-quantum": SweepConfig.from_preset("paper-quantum", **full, seeds=range(counts["paper-quantum"])),
            "three": SweepConfig.from_preset("paper", **{**full, **THREE_LAYER, "layers": 3, "configs": "all",
                                                         "backends": BACKENDS[:1]})}


def audits(budget: str, backends: Sequence[str] = BACKENDS) -> dict[str, list[AuditRow]]:
    """Claims 2 and 6 also read the gradient audit (one batch, every paper configuration of 2 and 3 layers)."""
    images, labels = load_digits_images(4 if budget == "tiny" else 16, seed=0)
    out = {}
    for backend in backends:
        chosen = resolve_backend(backend)
        out[backend] = (gradient_audit(chosen, images, labels, 2, "paper")
                        + gradient_audit(chosen, images, labels, 3, "paper"))
    return out


@dataclass(frozen=True)
class Variant:
    """One targeted change for a claim that did not reproduce: the most likely cause, tested, beside the default."""

    claim: int
    name: str  # its study directory is variant-<name>
    change: str  # what changes and why it is the likely cause, in one sentence
    study: str  # the study it varies
    overrides: dict[str, Any]  # SweepConfig fields that differ from that study's

    def sweep(self, plan: dict[str, SweepConfig]) -> SweepConfig:
        return dataclasses.replace(plan[self.study], **self.overrides)


VARIANTS: tuple[Variant, ...] = (
    # claim 7: in the full study the gain falls with the layers reached; but the head sees the input X in 21 of
    # the 24 configurations that reach all three layers and in 8 of the 16 that reach one, and a head that sees X
    # is carried by it (claim 4). The same budget, only the configurations whose head does not see X.
    Variant(7, "no-input-to-head", "only the configurations whose head does not see the input X (a head that sees "
            "X is carried by it, as claim 4 says, and seeing X goes with reaching more layers)", "three",
            {"configs": tuple(c.notation for c in ResidualSpec.enumerate(3) if not c.sees_input)}),
)


def variants_needed(claims: Sequence[ClaimRow], variants: Sequence[Variant] = ()) -> list[Variant]:
    """The variants whose claim is not reproduced on some backend, in order."""
    failed = {r.number for r in claims if r.verdict == NOT_REPRODUCED and r.variant is None}
    return [v for v in variants if v.claim in failed]


def noisy_minus_ideal(results: dict[str, Runs]) -> list[tuple[str, ev.Paired]]:
    """Claim 8, configuration by configuration: aer:fake_torino - aer, paired by seed, for every study that has both:
    (table row, the difference)."""
    rows = []
    for name, runs in results.items():
        for head in dict.fromkeys(s.head for s in runs.settings):
            ideal, noisy = Setting(BACKENDS[0], head), Setting(BACKENDS[1], head)
            for config in runs.configs:
                for frozen in (False, True):
                    d = runs.difference((noisy, config, frozen), (ideal, config, frozen))
                    if d is not None:
                        rows.append((f"| {name} | {head} | {config} | {'frozen' if frozen else 'trainable'} | "
                                     f"{d.describe()} |", d))
    return rows


def _excludes_zero(d: ev.Paired) -> bool:
    """Whether a difference's interval lies on one side of 0 (from the numbers, not from the rounded text)."""
    return d.low is not None and (d.low > 0 or d.high < 0)


def _figures(results: dict[str, Runs], out: Path, against_paper: Sequence[PaperRow] = ()) -> list[str]:
    """reproduction_claims.png: the paired differences behind every claim made of parts, per backend;
    reproduction_paper.png: our relative gain with its interval beside the paper's figure, per claim, split and
    backend; reproduction_reach.png: claim 7, each three-layer configuration's mean gain over its frozen benchmark
    against the layers the gradient reaches. Returns the names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    from qresnet.run.figures import save_figure

    pairs = [(number, part) for number, _, _ in CLAIMS for part in PARTS.get(number, ())]
    written = []
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(pairs) + 1.5))
    labels = []
    for i, (claim, part) in enumerate(pairs):
        labels.append(f"claim {claim}: {part.label}" + (" (quantum head)" if part.head == "quantum" else ""))
        for j, backend in enumerate(BACKENDS):
            runs = results.get(part.study)
            d = part.difference(runs, backend) if runs else None
            if d is None:
                continue
            y = i + (j - 0.5) * 0.3
            err = None if d.low is None else [[d.mean - d.low], [d.high - d.mean]]
            ax.errorbar(d.mean, y, xerr=err, fmt="o", color=f"C{j}", label=backend if i == 0 else None, capsize=3)
    ax.axvline(0, color="grey", lw=0.8)
    ax.axvspan(-ev.MARGIN, ev.MARGIN, color="grey", alpha=0.12, label=f"+-{ev.MARGIN:g}")
    ax.set_yticks(range(len(pairs)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("paired difference in final test accuracy (mean over seeds, 95% interval)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, out / "reproduction_claims.png")
    written.append("reproduction_claims.png")
    if against_paper:
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(against_paper) + 1.5))
        labelled: set[str] = set()  # one legend entry per backend
        for i, row in enumerate(against_paper):
            color = f"C{BACKENDS.index(row.backend)}" if row.backend in BACKENDS else "C2"
            if row.relative is not None:
                err = None if row.relative.low is None else [[row.relative.mean - row.relative.low],
                                                             [row.relative.high - row.relative.mean]]
                ax.errorbar(row.relative.mean, i, xerr=err, fmt="o", color=color, capsize=3,
                            label=None if row.backend in labelled else f"ours, {row.backend}")
                labelled.add(row.backend)
            ax.plot(row.paper, i, "D", color="black", markersize=5, label="the paper" if i == 0 else None)
        ax.set_yticks(range(len(against_paper)),
                      [f"claim {r.claim}: {r.label}, {'training' if r.split == 'train' else 'held-out'}, {r.backend}"
                       for r in against_paper], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="grey", lw=0.8)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("relative gain (a - b) / b: ours with its 95% interval, the paper's figure")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        save_figure(fig, out / "reproduction_paper.png")
        written.append("reproduction_paper.png")
    three = results.get("three")
    if three is not None and three.rows:
        s = Setting(BACKENDS[0], "linear")
        points = [(sum(three.get(s, c, False)[0].predicted_reach), three.difference((s, c, False), (s, c, True)))
                  for c in three.configs if three.get(s, c, False)]
        points = [(x, d) for x, d in points if d is not None]
        if points:
            fig, ax = plt.subplots(figsize=(6, 4))
            rng = np.random.default_rng(0)
            xs = np.array([x for x, _ in points], dtype=float)
            ax.scatter(xs + rng.uniform(-0.12, 0.12, len(xs)), [d.mean for _, d in points], s=14, alpha=0.7)
            if len(set(xs)) > 1 and len(points) >= 3:
                trend = ev.slope(xs, [d.mean for _, d in points])
                grid = np.array([xs.min(), xs.max()])
                intercept = np.mean([d.mean for _, d in points]) - trend.mean * xs.mean()
                ax.plot(grid, intercept + trend.mean * grid, color="C1", label=f"slope {trend.describe()}")
                ax.legend(fontsize=8)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xticks(sorted(set(int(x) for x in xs)))
            ax.set_xlabel("layers the gradient reaches (the reach rule)")
            ax.set_ylabel("trainable - frozen (mean over seeds)")
            ax.set_title("claim 7: every three-layer configuration, linear head, aer", fontsize=9)
            fig.tight_layout()
            save_figure(fig, out / "reproduction_reach.png")
            written.append("reproduction_reach.png")
    return written


def run_reproduction(out: str | Path, budget: str = "full", data_dir: str | None = None, jobs: int = 1,
                     executor: str = "processes", ray_address: str | None = None, progress: bool = True,
                     plan: dict[str, SweepConfig] | None = None, variants: Sequence[Variant] | None = None,
                     stack: int | None = None, power: PowerRule | Mapping[str, Any] | None = None) -> Path:
    """The pilot, the power plan (``power.json``), every study with its planned seeds (resumable), the audits, the
    claims, the variants of claims that did not reproduce; writes ``reproduction.md``, its figures and
    ``claims.json``. ``plan`` replaces :func:`studies` as the pilot (tests: a tiny plan; its seeds are the pilot's),
    ``power`` the budget's :data:`POWER` rule (a mapping: the fields that differ from it, e.g. ``{"cap": 20}``).
    ``out`` is locked throughout (:class:`OutputLock`): a second reproduction on it refuses. ``stack``: as
    :func:`run_sweep`'s (None: from memory)."""
    with OutputLock(out):
        return _reproduce_locked(Path(out), budget, data_dir, jobs, executor, ray_address, progress, plan, variants,
                                 stack, power_rule(budget, power))


def power_rule(budget: str, power: PowerRule | Mapping[str, Any] | None) -> PowerRule:
    """The budget's :data:`POWER` rule, or ``power``: a rule, or a mapping of the fields that differ from the budget's."""
    if budget not in POWER:
        raise ConfigError(f"budget={budget!r} must be one of {', '.join(BUDGETS)}")
    rule = PowerRule.coerce({**dataclasses.asdict(POWER[budget]), **power}) if isinstance(power, Mapping) else (
        POWER[budget] if power is None else PowerRule.coerce(power))
    unknown = [study for study, _ in rule.study_caps if study not in PLANNED]
    if unknown:
        raise ConfigError(f"seed cap for study {unknown[0]!r}: the power plan sets the seeds of {', '.join(PLANNED)} "
                          "only")
    return rule


def _reproduce_locked(out: Path, budget: str, data_dir: str | None, jobs: int, executor: str, ray_address: str | None,
                      progress: bool, plan: dict[str, SweepConfig] | None, variants: Sequence[Variant] | None,
                      stack: int | None, power: PowerRule) -> Path:
    """:func:`run_reproduction`, with ``out`` locked."""
    pilot = studies(budget, data_dir, dict.fromkeys(PLANNED, power.pilot)) if plan is None else plan
    variants = VARIANTS if variants is None else variants
    began = time.perf_counter()

    def study(name: str, sweep: SweepConfig, report: bool = True) -> Runs:
        result = run_sweep(sweep, out / name, jobs=jobs, progress=progress, executor=executor, ray_address=ray_address,
                           stack=stack)
        if report:
            write_comparison_report(result, out / name)
        return Runs(result.runs)

    # the pilot: the planned studies' first seeds (a resumed reproduction reads them back, so it plans the same
    # seeds); the plan is fixed (power.json) before any further run, and the main study reports them with the rest
    pilot_results = {name: study(name, sweep, report=False) for name, sweep in pilot.items() if name in PLANNED}
    backends = tuple(dict.fromkeys(str(b) for sweep in pilot.values() for b in sweep.backends))
    plans = plan_claims(pilot_results, power, [b for b in BACKENDS if b in backends])
    counts = study_seeds(plans, {name: len(pilot[name].seeds) for name in pilot_results})
    main = (studies(budget, data_dir, counts) if plan is None else
            {name: dataclasses.replace(sweep, seeds=extend_seeds(sweep.seeds, counts[name])) if name in counts else sweep
             for name, sweep in plan.items()})
    atomic_write_json(out / "power.json", {
        "rule": dataclasses.asdict(power), "formula": POWER_TEXT, "claims": [p.to_dict() for p in plans],
        "unplanned": {str(k): v for k, v in UNPLANNED.items()},
        "studies": {name: {"pilot_seeds": len(pilot[name].seeds), "seeds": len(sweep.seeds), "runs": len(sweep.runs())}
                    for name, sweep in main.items()}})
    results = {name: study(name, sweep) for name, sweep in main.items()}
    audit = audits(budget, backends)
    claims = decide(results, audit)
    variant_rows = []
    for variant in variants_needed(claims, variants):
        varied = {**results, variant.study: study(f"variant-{variant.name}", variant.sweep(main))}
        variant_rows += [dataclasses.replace(r, variant=variant.name, test=f"{r.test}; variant: {variant.change}")
                         for r in decide(varied, audit) if r.number == variant.claim]
    against_paper = paper_rows(results, [b for b in BACKENDS if b in backends])
    figures = _figures(results, out, against_paper)
    seconds = time.perf_counter() - began
    atomic_write_json(out / "claims.json", {
        "budget": budget, "rules": ev.RULES, "claims": [r.to_dict() for r in claims],
        "variants": [r.to_dict() for r in variant_rows], "noise_changes_verdicts": noise_changes(claims),
        "paper": [r.to_dict() for r in against_paper], "power": [p.to_dict() for p in plans],
        "studies": {name: sweep.to_dict() for name, sweep in main.items()},
        "seconds_this_invocation": seconds, "environment": environment()})
    lines = _report(budget, main, results, claims, variant_rows, variants, against_paper, plans, power)
    lines += ["## Figures", "", *(f"![{f}]({f})" for f in figures), "",
              "## Studies", "", *(f"- [{name}]({name}/report.md): {len(results[name].rows)} runs" for name in results),
              *(f"- [variant-{v.name}](variant-{v.name}/report.md)" for v in variants_needed(claims, variants)), "",
              f"This invocation took {seconds:.0f} s (runs a study already held are reused, not repeated).", ""]
    report = out / "reproduction.md"
    atomic_write_text(report, "\n".join(lines))
    return report


def _report(budget: str, main: Mapping[str, SweepConfig], results: Mapping[str, Runs], claims: Sequence[ClaimRow],
            variant_rows: Sequence[ClaimRow], variants: Sequence[Variant], against_paper: Sequence[PaperRow],
            plans: Sequence[ClaimPlan], power: PowerRule) -> list[str]:
    """reproduction.md up to its figures: the claims table, each claim's test, result and verdict, the paper's
    figures beside ours, the power plan, and claim 8 configuration by configuration."""
    changes = noise_changes(claims)
    settings = "; ".join(f"{name}: {s.epochs} epochs, batch {s.batch_size}, Adam {s.lr:g}, {len(s.seeds)} seeds, "
                         f"{len(s.runs())} runs" for name, s in main.items())
    lines = [f"# Reproduction of the ResQuNN claims (budget `{budget}`)", "", f"Studies: {settings}.", "", ev.RULES, "",
             "| claim | " + " | ".join(BACKENDS) + " |", "|---|" + "---|" * len(BACKENDS)]
    by = {(r.number, r.backend): r for r in claims}
    lines += [f"| {n}. {claim} | " + " | ".join(f"**{by[(n, b)].verdict}**" if (n, b) in by else "not tested"
                                                 for b in BACKENDS) + " |" for n, claim, _ in CLAIMS]
    lines += [f"| 8. Device noise changes a verdict. | {'yes: ' + '; '.join(changes) if changes else 'no'} |"
              + " |" * (len(BACKENDS) - 1), ""]
    for n, claim, test in CLAIMS:
        lines += [f"### Claim {n}", "", claim, "", f"Test: {test}.", "", "| backend | result | verdict |", "|---|---|---|"]
        lines += [f"| {r.backend} | {r.result} | **{r.verdict}** |" for r in claims if r.number == n]
        for v in [v for v in variants if any(r.variant == v.name and r.number == n for r in variant_rows)]:
            lines += ["", f"Variant `{v.name}`: {v.change}.", "", "| backend | result | verdict |", "|---|---|---|"]
            lines += [f"| {r.backend} | {r.result} | **{r.verdict}** |" for r in variant_rows if r.variant == v.name]
        lines.append("")
    lines += ["## The paper's figures beside ours", "", PAPER_TEXT, "", *paper_table(against_paper), ""]
    lines += ["## Seeds planned by power", "", POWER_TEXT, "",
              f"This study: a pilot of {power.pilot} seeds, w = D / {power.factor:g}, at most {power.cap} seeds"
              + "".join(f"; at most {cap} for `{study}`" for study, cap in power.study_caps) + ".", "",
              "| claim | study | pilot seeds | s | w | planned seeds | capped (asks for) | why |",
              "|---|---|---|---|---|---|---|---|"]
    for p in plans:
        d = p.driver
        capped = f"yes ({p.asks if p.asks is not None else 'no n decides'})" if p.capped else "no"
        lines.append(f"| {p.claim} | {p.study} | {d.pilot_n if d else '-'} | {f'{d.s:.3f}' if d else '-'} | "
                     f"{f'{d.w:.4f}' if d else '-'} | {p.n} | {capped} | {p.why} |")
    lines += [f"| {n} | - | - | - | - | - | - | {why} |" for n, why in UNPLANNED.items()]
    differences = noisy_minus_ideal(results)
    outside = [d for _, d in differences if _excludes_zero(d)]
    lines += ["", "### Claim 8: noisy minus ideal", "",
              *(f"- verdict changed: {c}" for c in changes or ["no claim has a different verdict on the two backends"]),
              f"- configuration by configuration (aer:fake_torino - aer, paired by seed): {len(outside)} of "
              f"{len(differences)} intervals exclude 0", "",
              "| study | head | configuration | runs | noisy - ideal |", "|---|---|---|---|---|",
              *(line for line, _ in differences), ""]
    return lines
