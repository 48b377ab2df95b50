"""The design study: do the paper's two central claims hold under other filter designs, and against a classical layer?

    qresnet reproduce --study design --data-dir ../shared/data --jobs 2 --out reports/design
    qresnet reproduce --study design --budget tiny --out /tmp/d     # the pipeline on the embedded digits, in minutes

The claims (docs/reproduction.md, claims 1 and 3): a trainable quanvolution layer beats its frozen benchmark (one
layer, and the two-layer ``O1+O2``), and ``O1+O2`` beats ``X+O1``. Each :data:`VARIANTS` entry changes one thing
of the default filter (the reference): the ansatz family (seeded random layers, strongly entangling), the readout
(each qubit's <Z>, four channels), the encoding (RY(x) instead of RY(pi x)), or the layer itself (the classical
control of the default's size, ``--filter classical``). A variant is two ordinary sweeps, one and two layers (a
sweep has one layer count), in ``OUT/<variant>/single`` and ``OUT/<variant>/pair``, so the study resumes and runs
on processes or Ray like any sweep. Every claim is decided per variant by the paired rule of
:mod:`qresnet.study.evidence` (:func:`~qresnet.study.evidence.beats`); a variant's verdict is compared with the
reference's. The classical control also answers Q6 (does the quantum layer beat a classical layer of its size?),
paired by seed with the reference's quantum runs. ``design.md``, ``design.json`` and ``design.png`` hold the
result; :func:`design_section` renders it for docs/reproduction.md.

**The ``full`` budget** (:data:`FULL`): MNIST, 10 classes x 100 (800 train, 200 test: one image is 0.5 points),
15 epochs (the reproduction's; the paper's 30 would double the steps), 20 seeds (the paired interval's width goes
with t(n - 1) / sqrt(n): at 10 seeds, O1+O2 against X+O1 and the per-qubit and RY(x) verdicts stayed inconclusive;
20 give an interval about 1.5x narrower), batch 16, Adam 0.01 (the paper's), ``aer`` only (noise is the robustness
study's question). A seed is 6 runs per variant (one layer trainable and frozen; ``O1+O2`` and ``X+O1`` trainable
and frozen): 30 quantum and 6 classical runs, 720 runs in 10 sweeps, each run 15 x 50 = 750 steps. Measured here
(stacked, --jobs 2, no per-run curves): 360 runs, seeds 10-19, in 7.4 minutes; the whole budget from scratch is
about 15. The study reports its own wall time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qresnet.choices import BUDGETS
from qresnet.circuits import FilterSpec
from qresnet.errors import ConfigError, ResultError
from qresnet.provenance import environment
from qresnet.run.lock import OutputLock
from qresnet.run.rundir import atomic_write_json, atomic_write_text
from qresnet.study import evidence as ev
from qresnet.study.report import Runs, Setting, write_comparison_report
from qresnet.study.sweep import SweepConfig, run_sweep

BACKEND = "aer"
REFERENCE = "default"  # the variant every other is compared with: today's filter
FULL: dict[str, Any] = dict(dataset="mnist", per_class=100, epochs=15, seeds=tuple(range(20)), lr=0.01)
TINY: dict[str, Any] = dict(dataset="digits", per_class=8, epochs=1, seeds=(0,), lr=0.05)
SHAPES = {"single": ("single", dict(layers=1, configs=("none",))),  # preset, and what differs from it
           "pair": ("paper", dict(layers=2, configs=("O1+O2", "X+O1")))}


@dataclass(frozen=True)
class DesignVariant:
    """One change to the default design: a filter (:class:`FilterSpec` fields), or the classical control of the
    reference's size (``filter`` classical), whose runs the reference's sweeps hold (``filters`` quantum and classical,
    so each comparison report answers Q6 too)."""

    name: str  # its directory under the study's OUT
    change: str  # what it changes, in words
    quanv: FilterSpec = field(default_factory=FilterSpec)
    filter: str = "quantum"

    def __post_init__(self) -> None:
        object.__setattr__(self, "quanv", FilterSpec.coerce(self.quanv))

    @classmethod
    def coerce(cls, value: DesignVariant | str) -> DesignVariant:
        """A variant from itself or its name in :data:`VARIANTS`."""
        if isinstance(value, DesignVariant):
            return value
        for variant in VARIANTS:
            if variant.name == value:
                return variant
        raise ConfigError(f"design variant {value!r} is not one of {', '.join(v.name for v in VARIANTS)}")

    @property
    def home(self) -> str:
        """The variant whose sweeps hold this one's runs: itself, or the reference for the classical control."""
        return REFERENCE if self.filter == "classical" else self.name

    def sweeps(self, common: Mapping[str, Any], filters: tuple[str, ...] = ("quantum",)) -> dict[str, SweepConfig]:
        """Its sweeps, one and two layers, with the budget's ``common`` settings and the layers' ``filters``."""
        return {study: SweepConfig.from_preset(preset, **{**common, **shape}, quanv=self.quanv, filters=filters)
                for study, (preset, shape) in SHAPES.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "change": self.change, "quanv": self.quanv.to_dict(), "filter": self.filter}


VARIANTS: tuple[DesignVariant, ...] = (
    DesignVariant(REFERENCE, "the paper's filter: 2x2, RY(pi x), 2 x (RY, RZ, CNOT chain), mean of the four <Z>"),
    DesignVariant("random", "a seeded random-layers ansatz (random RX/RY/RZ rotations and CNOTs, seed 0)",
                  FilterSpec(ansatz="random")),
    DesignVariant("strongly-entangling", "a strongly entangling ansatz (Rot on every qubit, CNOTs at growing range)",
                  FilterSpec(ansatz="strongly_entangling")),
    DesignVariant("per-qubit", "per-qubit readout: each qubit's <Z>, 4 channels per layer",
                  FilterSpec(readout="per-qubit")),
    DesignVariant("ry", "RY(x) encoding instead of RY(pi x)", FilterSpec(encoding="ry")),
    DesignVariant("classical", "the classical control: a tanh network of the default filter's windows, channels and "
                  "16 trainable parameters, in place of the circuit", filter="classical"),
)


def select_variants(names: Sequence[DesignVariant | str] | None = None) -> tuple[DesignVariant, ...]:
    """The variants to run (default: all), distinct, the reference among them."""
    chosen = VARIANTS if names is None else tuple(DesignVariant.coerce(n) for n in names)
    seen = [v.name for v in chosen]
    if len(set(seen)) < len(seen):
        raise ConfigError(f"design variants {', '.join(seen)} name one twice")
    if REFERENCE not in seen:
        raise ConfigError(f"design variants {', '.join(seen) or '(none)'} lack {REFERENCE!r}, the reference every "
                          "verdict is compared with")
    reference = next(v for v in chosen if v.name == REFERENCE)
    for v in chosen:
        if v.filter == "classical" and v.quanv != reference.quanv:
            raise ConfigError(f"design variant {v.name!r}: the classical control runs in the reference's sweeps, so "
                              "its filter must be the reference's")
    return chosen


def design_plan(budget: str = "full", data_dir: str | None = None,
                variants: Sequence[DesignVariant | str] | None = None) -> dict[str, SweepConfig]:
    """Every sweep of the study, keyed ``<variant>/<single|pair>``: :data:`FULL` (MNIST) or :data:`TINY` (digits).
    The reference's sweeps also run the classical control when it is chosen."""
    if budget not in BUDGETS:
        raise ConfigError(f"budget={budget!r} must be one of {', '.join(BUDGETS)}")
    chosen = select_variants(variants)
    common = {**(FULL if budget == "full" else TINY), "backends": (BACKEND,), "batch_size": 16,
              "classes": None, "data_dir": data_dir if budget == "full" else None}
    kinds = {v.home: tuple(dict.fromkeys(u.filter for u in chosen if u.home == v.home)) for v in chosen}
    return {f"{v.name}/{study}": sweep for v in chosen if v.home == v.name
            for study, sweep in v.sweeps(common, kinds[v.name]).items()}


# --- the claims ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DesignClaim:
    """A paired comparison a - b of (configuration, frozen) runs, decided by :func:`evidence.beats`; ``control``:
    b is the classical control's run and a the reference's quantum one (Q6)."""

    key: str
    text: str
    a: tuple[str, bool]
    b: tuple[str, bool]
    control: bool = False


CLAIMS: tuple[DesignClaim, ...] = (
    DesignClaim("frozen-1", "trainable beats frozen, one layer", ("none", False), ("none", True)),
    DesignClaim("frozen-O1+O2", "trainable beats frozen, O1+O2", ("O1+O2", False), ("O1+O2", True)),
    DesignClaim("O1+O2>X+O1", "O1+O2 beats X+O1", ("O1+O2", False), ("X+O1", False)),
)
CONTROL_CLAIMS: tuple[DesignClaim, ...] = (  # Q6, on the classical variant's row
    DesignClaim("Q6-1", "quantum beats classical, one layer", ("none", False), ("none", False), control=True),
    DesignClaim("Q6-O1+O2", "quantum beats classical, O1+O2", ("O1+O2", False), ("O1+O2", False), control=True),
)


@dataclass(frozen=True)
class DesignRow:
    """One claim under one variant: the paired difference, its verdict, the reference's verdict, and whether the
    two agree (``same``, ``changed``; ``reference`` for the reference's own row, ``-`` where there is none)."""

    variant: str
    claim: str
    text: str
    difference: ev.Paired | None
    verdict: str
    reference: str | None
    holds: str

    def describe(self) -> str:
        return f"**{self.verdict}**" + ("" if self.difference is None else f" {self.difference.describe()}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "difference": None if self.difference is None else self.difference.to_dict()}


def decide_design(results: Mapping[str, Runs], variants: Sequence[DesignVariant | str] | None = None,
                  backend: str = BACKEND) -> list[DesignRow]:
    """Every claim under every variant from each variant's runs (the rows of the sweeps that hold them, see
    :attr:`DesignVariant.home`); a variant without runs decides ``not tested``. The classical control's row adds Q6:
    the reference's quantum runs (in the same sweeps) minus the control's, paired by seed."""
    chosen = select_variants(variants)
    empty = Runs([])
    decided: list[tuple[DesignVariant, DesignClaim, ev.Paired | None]] = []
    for variant in chosen:
        runs = results.get(variant.name, empty)
        setting = Setting(backend, "linear", variant.filter)
        for claim in CLAIMS:
            decided.append((variant, claim, runs.difference((setting, *claim.a), (setting, *claim.b))))
        if variant.filter == "classical":
            quantum = Setting(backend, "linear")
            decided += [(variant, c, runs.difference((quantum, *c.a), (setting, *c.b))) for c in CONTROL_CLAIMS]
    reference = {c.key: ev.beats(d) for v, c, d in decided if v.name == REFERENCE}
    rows = []
    for variant, claim, difference in decided:
        verdict, theirs = ev.beats(difference), reference.get(claim.key)
        holds = ("reference" if variant.name == REFERENCE else "-" if claim.control or verdict == ev.NOT_TESTED
                 or theirs in (None, ev.NOT_TESTED) else "same" if verdict == theirs else "changed")
        rows.append(DesignRow(variant.name, claim.key, claim.text, difference, verdict,
                              None if variant.name == REFERENCE or claim.control else theirs, holds))
    return rows


def summary(rows: Sequence[DesignRow]) -> list[str]:
    """Per claim, one line: its reference verdict and the variants under which it changed."""
    lines = []
    for claim in CLAIMS:
        mine = [r for r in rows if r.claim == claim.key]
        ref = next((r.verdict for r in mine if r.holds == "reference"), ev.NOT_TESTED)
        changed = [f"{r.variant} ({r.verdict})" for r in mine if r.holds == "changed"]
        untested = [r.variant for r in mine if r.holds == "-"]
        lines.append(f"- **{claim.text}**: {ref} on the default design; "
                     + (f"changed under {', '.join(changed)}" if changed else "the same under every variant tested")
                     + (f"; not tested under {', '.join(untested)}" if untested else ""))
    for claim in CONTROL_CLAIMS:
        q6 = [r for r in rows if r.claim == claim.key]
        lines += [f"- **Q6, {claim.text}**: {r.verdict}" + ("" if r.difference is None else
                                                           f", quantum - classical {r.difference.describe()}")
                  for r in q6]
    return lines


# --- the study ----------------------------------------------------------------------------------------------------

def run_design_study(out: str | Path, budget: str = "full", data_dir: str | None = None, jobs: int = 1,
                     executor: str = "processes", ray_address: str | None = None, progress: bool = True,
                     variants: Sequence[DesignVariant | str] | None = None, stack: int | None = None,
                     plan: Mapping[str, SweepConfig] | None = None) -> Path:
    """Every variant's sweeps (resumable; ``out`` locked throughout), the verdicts, ``design.md``, ``design.json``
    and ``design.png``; returns design.md's path. ``plan`` replaces :func:`design_plan` (keys
    ``<variant>/<study>``; tests: a smaller one). ``stack``: as :func:`run_sweep`'s."""
    chosen = select_variants(variants)
    plan = design_plan(budget, data_dir, chosen) if plan is None else dict(plan)
    homes = {key.split("/")[0] for key in plan} - {v.home for v in chosen}
    if homes:
        raise ConfigError(f"design plan sweeps {', '.join(sorted(homes))} name no chosen variant")
    out = Path(out)
    with OutputLock(out):
        began = time.perf_counter()
        rows: dict[str, list] = {}
        for key, sweep in plan.items():
            result = run_sweep(sweep, out / key, jobs=jobs, progress=progress, executor=executor,
                               ray_address=ray_address, stack=stack)
            write_comparison_report(result, out / key)
            rows.setdefault(key.split("/")[0], []).extend(result.runs)
        results = {v.name: Runs(rows.get(v.home, [])) for v in chosen}
        decided = decide_design(results, chosen)
        figure = design_figure(results, chosen, out / "design.png")
        seconds = time.perf_counter() - began
        document = {
            "budget": budget, "rules": ev.RULES, "backend": BACKEND, "variants": [v.to_dict() for v in chosen],
            "claims": [asdict(c) for c in (*CLAIMS, *CONTROL_CLAIMS)], "rows": [r.to_dict() for r in decided],
            "summary": summary(decided), "accuracies": accuracies(results, chosen),
            "studies": {key: sweep.to_dict() for key, sweep in plan.items()},
            "runs": sum(len(found) for found in rows.values()),
            "training_seconds": sum(run.wall_time_s for found in rows.values() for run in found),
            "seconds_this_invocation": seconds, "figure": figure, "environment": environment()}
        atomic_write_json(out / "design.json", document)
        lines = [f"# The design study (budget `{budget}`)", "", design_section(document, figure_dir="."), "## Studies",
                 "", *(f"- [{key}]({key}/report.md): {sweep.layers} layer(s), {len(sweep.runs())} runs"
                       for key, sweep in plan.items()), ""]
        report = out / "design.md"
        atomic_write_text(report, "\n".join(lines))
    return report


def accuracies(results: Mapping[str, Runs], variants: Sequence[DesignVariant],
               backend: str = BACKEND) -> list[dict[str, Any]]:
    """Each variant's final test accuracy per configuration, trainable and frozen: mean and interval over seeds."""
    out = []
    for variant in variants:
        runs = results.get(variant.name)
        setting = Setting(backend, "linear", variant.filter)
        for config in ("none", "O1+O2", "X+O1"):
            for frozen in (False, True):
                value = None if runs is None else runs.accuracy(setting, config, frozen)
                if value is not None:
                    out.append({"variant": variant.name, "filter": variant.filter, "config": config,
                                "frozen": frozen, **value.to_dict()})
    return out


def design_figure(results: Mapping[str, Runs], variants: Sequence[DesignVariant], path: Path) -> str | None:
    """``design.png``: per configuration (one layer, O1+O2, X+O1) a panel of each variant's test accuracy, trainable
    (filled) and frozen (open), mean with its 95% interval over seeds; the classical control in its own colour.
    Returns the file's name, or None when there is nothing to draw."""
    points = accuracies(results, variants)
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qresnet.run.figures import save_figure

    names = [v.name for v in variants]
    configs = [c for c in ("none", "O1+O2", "X+O1") if any(p["config"] == c for p in points)]
    fig, axes = plt.subplots(1, len(configs), figsize=(4.2 * len(configs), 4.2), sharey=True, squeeze=False)
    for ax, config in zip(axes[0], configs):
        for p in (p for p in points if p["config"] == config):
            x = names.index(p["variant"]) + (0.12 if p["frozen"] else -0.12)
            colour = "C3" if p["filter"] == "classical" else "C0"
            err = None if p["low"] is None else [[p["mean"] - p["low"]], [p["high"] - p["mean"]]]
            ax.errorbar(x, p["mean"], yerr=err, fmt="s" if p["frozen"] else "o", color=colour, capsize=3,
                        mfc="white" if p["frozen"] else colour)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title("one layer" if config == "none" else config, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final test accuracy\n(mean, 95% interval over seeds)")
    axes[0][0].set_ylim(0, 1)
    handles = [plt.Line2D([], [], color="C0", marker="o", ls="", label="quantum, trainable"),
               plt.Line2D([], [], color="C0", marker="s", mfc="white", ls="", label="quantum, frozen"),
               plt.Line2D([], [], color="C3", marker="o", ls="", label="classical control, trainable"),
               plt.Line2D([], [], color="C3", marker="s", mfc="white", ls="", label="classical control, frozen")]
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=4)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(fig, path)
    return path.name


def design_section(document: Mapping[str, Any] | str | Path, figure_dir: str = "reproduction") -> str:
    """The design study as a section of docs/reproduction.md (and the body of design.md), from ``design.json`` (its
    path or its contents): what ran, the table (variant x claim: verdict, paired difference with its interval), the
    summary per claim, the figure (under ``figure_dir``), the wall time and the machine.

        python -c "from qresnet.study.design_study import design_section; print(design_section('OUT/design.json'))"
    """
    if not isinstance(document, Mapping):
        try:
            document = json.loads(Path(document).read_text())
        except (OSError, ValueError) as exc:
            raise ResultError(f"cannot read the design study's {document} ({exc})") from None
    rows = [DesignRow(**{**r, "difference": None if r["difference"] is None else ev.Paired(**r["difference"])})
            for r in document["rows"]]
    variants = document["variants"]
    claims = [c for c in document["claims"] if any(r.claim == c["key"] for r in rows)]
    by = {(r.variant, r.claim): r for r in rows}
    sweep = next(iter(document["studies"].values()))
    env = document["environment"]
    seeds = sweep["seeds"]
    lines = [
        "## Design study: do the central claims hold under other filters, and against a classical layer?", "",
        f"**Command:** `qresnet reproduce --study design --budget {document['budget']}"
        + (" --data-dir ../shared/data --jobs 2" if sweep["dataset"] == "mnist" else "") + "`", "",
        f"**What ran:** {document['runs']} runs on `{document['backend']}`: {sweep['dataset']}, "
        f"{sweep['per_class']} per class, {sweep['epochs']} epoch(s), {len(seeds)} seed(s) "
        f"({', '.join(map(str, seeds))}),"
        f" batch {sweep['batch_size']}, Adam {sweep['lr']:g}; per variant one layer and the two-layer O1+O2 and X+O1, "
        "trainable and frozen. A seed fixes the split and the initial weights, so every difference is paired by seed.",
        "", "**Variants:**", "", *(f"- `{v['name']}`: {v['change']}" for v in variants), "",
        document["rules"], "",
        "Each cell: the verdict (does the first beat the second), the paired difference of final test accuracy "
        "with its 95% interval; *changed* marks a verdict that differs from the default design's.", "",
        "| variant | " + " | ".join(c["text"] for c in claims) + " |", "|---|" + "---|" * len(claims)]
    for v in variants:
        cells = []
        for c in claims:
            r = by.get((v["name"], c["key"]))
            cells.append("-" if r is None else r.describe() + (" *changed*" if r.holds == "changed" else ""))
        lines.append(f"| {v['name']} | " + " | ".join(cells) + " |")
    lines += ["", *document["summary"], ""]
    if document.get("figure"):
        lines += [f"![{document['figure']}]({figure_dir}/{document['figure']})", ""]
    lines += [f"**Wall time:** {document['seconds_this_invocation'] / 60:.1f} min for this invocation "
              f"({document['training_seconds'] / 60:.1f} min of training summed over runs; runs a study already held "
              "are reused, not repeated).", "",
              f"**Machine:** {env.get('platform', '?')}, {env.get('cpu_count', '?')} cores, load "
              f"{(env.get('load_average') or [float('nan')])[0]:.3g} at the end, Python {env.get('python', '?')}; "
              + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v) + ".", ""]
    return "\n".join(lines)
