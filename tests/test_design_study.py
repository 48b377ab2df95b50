"""The design study: verdicts per variant on constructed results (no training), the tiny study end to end on the
embedded digits, and bad input refused in one line."""

from __future__ import annotations

import json

import pytest

from qresnet.errors import QresnetError
from qresnet.residual import ResidualSpec
from qresnet.run.result import EpochMetrics, RunResult
from qresnet.study.design_study import (
    VARIANTS,
    DesignVariant,
    decide_design,
    design_plan,
    design_section,
    run_design_study,
    select_variants,
    summary,
)
from qresnet.study.report import Runs

LAYERS = {"none": 1, "O1+O2": 2, "X+O1": 2}


def run(config: str, frozen: bool, seed: int, acc: float, filter: str = "quantum") -> RunResult:
    """One epoch's result with final test accuracy ``acc``."""
    layers = LAYERS[config]
    epoch = EpochMetrics(1, 1.0, acc, 1.0, acc, 0.1, (0.0 if frozen else 1.0,) * layers, 1.0)
    return RunResult("aer", "linear", ResidualSpec.coerce(config, layers), frozen, seed, 1, (epoch,), 300, 100,
                     "engine-exact", f"runs/{config}-{seed}", 0.1, filter=filter)


def rows(accuracies: dict[tuple[str, bool], list[float]], filter: str = "quantum") -> list[RunResult]:
    """(config, frozen) -> each seed's final accuracy, as a sweep ends with them."""
    return [run(config, frozen, seed, acc, filter) for (config, frozen), values in accuracies.items()
            for seed, acc in enumerate(values)]


# paired over 4 seeds: a clear gain (every difference near +0.10), a tie (differences within +-0.002), and a
# difference whose interval spans both 0 and +0.02 (differences +0.10, -0.08, +0.09, -0.07)
HIGH, LOW = [0.90, 0.88, 0.91, 0.89], [0.80, 0.79, 0.80, 0.80]
TIE = [0.801, 0.789, 0.799, 0.801]
MIXED = [0.90, 0.71, 0.89, 0.73]


def by(decided, variant, claim):
    return next(r for r in decided if r.variant == variant and r.claim == claim)


def test_each_variants_verdicts_and_whether_they_hold():
    default = rows({("none", False): HIGH, ("none", True): LOW, ("O1+O2", False): HIGH, ("O1+O2", True): LOW,
                    ("X+O1", False): LOW})
    control = rows({("none", False): LOW, ("none", True): LOW, ("O1+O2", False): HIGH, ("O1+O2", True): LOW,
                    ("X+O1", False): LOW}, "classical")
    # the random ansatz: one layer ties its frozen benchmark, O1+O2 beats frozen, O1+O2 vs X+O1 undecided
    random = rows({("none", False): TIE, ("none", True): LOW, ("O1+O2", False): HIGH, ("O1+O2", True): LOW,
                   ("X+O1", False): MIXED})
    results = {"default": Runs(default + control), "classical": Runs(default + control), "random": Runs(random)}
    decided = decide_design(results, ("default", "random", "classical"))
    assert [(r.verdict, r.holds) for r in decided if r.variant == "default"] == [("yes", "reference")] * 3
    assert (by(decided, "random", "frozen-1").verdict, by(decided, "random", "frozen-1").holds) == ("no", "changed")
    gain = by(decided, "random", "frozen-O1+O2")
    assert (gain.verdict, gain.holds) == ("yes", "same")
    mixed = by(decided, "random", "O1+O2>X+O1")
    assert (mixed.verdict, mixed.holds, mixed.reference) == ("inconclusive", "changed", "yes")
    assert mixed.difference.low < 0 < ev_margin() < mixed.difference.high
    # the classical control: its own claims, then Q6 against the reference's quantum runs, paired by seed
    assert by(decided, "classical", "frozen-1").verdict == "no"  # a trainable control equal to its frozen self
    assert by(decided, "classical", "frozen-O1+O2").holds == "same"
    q6 = by(decided, "classical", "Q6-1")
    assert (q6.verdict, q6.holds, q6.reference) == ("yes", "-", None)
    assert q6.difference.mean == pytest.approx(sum(h - l for h, l in zip(HIGH, LOW)) / 4)
    assert by(decided, "classical", "Q6-O1+O2").verdict == "no"  # the same accuracies in every seed
    lines = summary(decided)
    assert "changed under random (no)" in lines[0] and "the same under every variant" in lines[1]
    assert lines[3].startswith("- **Q6, quantum beats classical, one layer**: yes")


def ev_margin() -> float:
    from qresnet.study.evidence import MARGIN

    return MARGIN


def test_a_variant_without_runs_or_with_too_few_seeds_is_not_decided():
    two_seeds = rows({("none", False): HIGH[:2], ("none", True): LOW[:2]})
    decided = decide_design({"default": Runs(two_seeds)}, ("default", "ry"))
    assert by(decided, "default", "frozen-1").verdict == "inconclusive"  # fewer than 3 seeds
    assert by(decided, "default", "frozen-O1+O2").verdict == "not tested"
    assert [(r.verdict, r.holds) for r in decided if r.variant == "ry"] == [("not tested", "-")] * 3


def test_the_plan_runs_the_control_in_the_reference_sweeps():
    plan = design_plan("tiny")
    quantum = [v.name for v in VARIANTS if v.filter == "quantum"]
    assert sorted(plan) == sorted(f"{name}/{s}" for name in quantum for s in ("single", "pair"))
    assert plan["default/pair"].filters == ("quantum", "classical") and plan["random/pair"].filters == ("quantum",)
    assert plan["per-qubit/single"].quanv.readout == "per-qubit" and plan["ry/pair"].quanv.encoding == "ry"
    assert [c.notation for c in plan["ry/pair"].configs] == ["O1+O2", "X+O1"] and plan["ry/single"].layers == 1
    full = design_plan("full", "/data")
    assert {s.dataset for s in full.values()} == {"mnist"} and full["default/single"].data_dir == "/data"
    assert sum(len(s.runs()) for s in full.values()) == 720  # the budget the module docstring counts
    assert design_plan("tiny", variants=("default",)).keys() == {"default/single", "default/pair"}
    assert design_plan("tiny", variants=("default",))["default/single"].filters == ("quantum",)


@pytest.mark.parametrize("call, message", [
    (lambda: design_plan("huge"), "budget='huge' must be one of full, tiny"),
    (lambda: select_variants(("default", "fancy")), "design variant 'fancy' is not one of default, random"),
    (lambda: select_variants(("random", "ry")), "lack 'default', the reference"),
    (lambda: select_variants(("default", "ry", "ry")), "name one twice"),
    (lambda: select_variants(("default", DesignVariant("c3", "3x3 control", {"kernel_size": 3}, "classical"))),
     "its filter must be the reference's"),
    (lambda: run_design_study("/nonexistent/never", "tiny", plan={"ghost/single": design_plan("tiny")["ry/single"]}),
     "design plan sweeps ghost name no chosen variant"),
    (lambda: design_section("/nonexistent/design.json"), "cannot read the design study's /nonexistent/design.json"),
])
def test_bad_input_is_one_line(call, message):
    with pytest.raises(QresnetError) as caught:
        call()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_command_line_refuses_an_unknown_study(capsys):
    from qresnet.cli.main import main

    assert main(["reproduce", "--study", "everything"]) == 2
    assert "invalid choice: 'everything'" in capsys.readouterr().err


def test_the_tiny_study_end_to_end_on_the_digits(tmp_path, capsys):
    """The reference and its classical control (two sweeps), through `qresnet reproduce --study design` pieces:
    every run trained, the table, the figure, design.json, and the section for docs/reproduction.md."""
    report = run_design_study(tmp_path / "d", "tiny", variants=("default", "classical"), progress=False)
    document = json.loads((tmp_path / "d" / "design.json").read_text())
    assert document["runs"] == 12 and document["budget"] == "tiny"  # (2 + 4) runs x {quantum, classical}
    assert (tmp_path / "d" / "design.png").stat().st_size > 0 and document["figure"] == "design.png"
    assert {(r["variant"], r["claim"]) for r in document["rows"]} >= {("classical", "Q6-1"), ("default", "frozen-1")}
    assert all(r["verdict"] == "inconclusive" for r in document["rows"])  # one seed: no interval
    text = report.read_text()
    assert "| default | **inconclusive**" in text and "[default/pair](default/pair/report.md)" in text
    assert (tmp_path / "d" / "default" / "pair" / "report.md").is_file()
    section = design_section(tmp_path / "d" / "design.json")
    assert section.startswith("## Design study") and "![design.png](reproduction/design.png)" in section
    assert "--budget tiny" in section and "12 runs" in section
    again = run_design_study(tmp_path / "d", "tiny", variants=("default", "classical"), progress=False)
    assert json.loads((again.parent / "design.json").read_text())["rows"] == document["rows"]  # resumed: reused
