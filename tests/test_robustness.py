"""The robustness study: the verdict-change claim decided on constructed results, the study end to end on the
embedded digits, and its options refused with one line."""

from __future__ import annotations

import json

import pytest

from qresnet.errors import ConfigError, QresnetError
from qresnet.residual import ResidualSpec
from qresnet.run.result import EpochMetrics, RunResult
from qresnet.study import evidence as ev
from qresnet.study.report import Runs
from qresnet.study.robustness import (
    CHANGED, LOST, HeadPlan, RobustnessBudget, decide, first_drops, run_robustness, verdicts,
)

REACH = {"none": [False, True], "X+O1": [False, True], "X+O2": [False, True], "O1+O2": [True, True],
         "(X+O1)+O2": [True, True]}
# trainable, frozen accuracies per seed: a clear gain (yes), a tie (no: a gain of 2 points ruled out), a spread that
# decides nothing (inconclusive)
WIN = ([0.90, 0.88, 0.91, 0.89], [0.80, 0.79, 0.82, 0.80])
TIE = ([0.800, 0.801, 0.799, 0.800], [0.800, 0.800, 0.800, 0.801])
WIDE = ([0.90, 0.60, 0.95, 0.70], [0.80, 0.80, 0.80, 0.80])


def run(backend: str, config: str, frozen: bool, seed: int, acc: float, head: str = "linear") -> RunResult:
    epoch = EpochMetrics(1, 1.0, acc, 1.0, acc, 0.1, tuple(0.0 if frozen else 1.0 for _ in REACH[config]), 1.0)
    return RunResult(backend, head, ResidualSpec.coerce(config, 2), frozen, seed, 1, (epoch,), 300, 100,
                     "engine-exact", f"runs/{backend}-{config}-{frozen}-{seed}", 0.1)


def rows(backend: str, pairs: dict[str, tuple[list[float], list[float]]], head: str = "linear") -> list[RunResult]:
    return [run(backend, config, frozen, seed, acc, head)
            for config, pair in pairs.items() for frozen, values in zip((False, True), pair)
            for seed, acc in enumerate(values)]


def family(levels: dict[str, tuple]) -> Runs:
    """``none`` trainable vs frozen at each backend: backend -> (trainable, frozen) accuracies per seed."""
    return Runs([r for backend, pair in levels.items() for r in rows(backend, {"none": pair})])


def test_no_verdict_changes_up_to_the_largest_level():
    (claim,) = decide(family({"aer": WIN, "noise:depolarizing:0.1": WIN, "noise:depolarizing:1": WIN}))
    assert (claim.family, claim.levels, claim.first_change, claim.first_lost) == ("noise:depolarizing", (0.1, 1.0),
                                                                                 None, None)
    assert claim.describe() == "none up to p = 1"


def test_the_lowest_level_at_which_a_decided_verdict_changes():
    (claim,) = decide(family({"aer": WIN, "noise:bit_flip:0.1": WIN, "noise:bit_flip:0.4": TIE,
                              "noise:bit_flip:1": TIE}))
    assert claim.first_change == 0.4 and claim.first_lost is None
    first = claim.differences[0]
    assert (first.name, first.reference, first.verdict, first.kind) == ("none beats frozen (linear head)", ev.YES,
                                                                       ev.NO, CHANGED)
    assert claim.describe().startswith("p = 0.4: none beats frozen (linear head): yes on aer (+0.")
    assert [c.level for c in claim.differences] == [0.4, 1.0]
    assert claim.first_reversal == 0.4 and claim.describe_reversal() == claim.describe()  # yes on aer, no at 0.4


def test_a_verdict_that_only_loses_its_decision_is_not_a_change():
    (claim,) = decide(family({"aer": WIN, "noise:phase_flip:0.2": WIN, "noise:phase_flip:0.6": WIDE}))
    assert claim.first_change is None and claim.first_lost == 0.6
    assert [(c.kind, c.reference, c.verdict) for c in claim.differences] == [(LOST, ev.YES, ev.INCONCLUSIVE)]
    assert claim.describe() == "none up to p = 0.6 (a verdict first loses its decision at p = 0.6)"


def test_a_verdict_decided_only_under_noise_is_a_change():
    (claim,) = decide(family({"aer": WIDE, "noise:amplitude_damping:1": TIE}))
    assert claim.first_change == 1.0
    assert [(c.reference, c.verdict, c.kind) for c in claim.differences] == [(ev.INCONCLUSIVE, ev.NO, CHANGED)]
    # a change, but no reversal: aer decided nothing to reverse
    assert claim.first_reversal is None and claim.describe_reversal() == "none up to p = 1"


def test_verdicts_are_compared_over_the_seeds_both_levels_have():
    """On aer's 4 seeds the gain is inconclusive (one seed gains 0.3); on the 3 seeds the level has, aer ties, as the
    level does: no change. Compared over aer's 4 seeds it would be counted as one."""
    aer = ([0.800, 0.801, 0.799, 0.95], [0.800, 0.800, 0.800, 0.65])
    level = ([0.800, 0.801, 0.799], [0.800, 0.800, 0.800])
    runs = family({"aer": aer, "noise:depolarizing:0.5": level})
    assert [d.verdict for d in verdicts(runs, "aer")] == [ev.INCONCLUSIVE]
    (claim,) = decide(runs)
    assert claim.first_change is None and claim.differences == ()


def test_the_paper_verdicts_of_both_heads_and_the_device_family():
    linear = {"O1+O2": WIN, "X+O1": ([0.80, 0.79, 0.82, 0.80], [0.70, 0.70, 0.70, 0.70])}
    quantum = {c: WIN for c in REACH}
    runs = Runs(rows("aer", linear) + rows("aer", quantum, "quantum") + rows("aer:fake_torino@10", linear)
                + rows("aer:fake_torino@10", quantum, "quantum") + rows("noise:depolarizing:1", linear))
    names = {d.name: d.verdict for d in verdicts(runs, "aer")}
    assert names["O1+O2 beats X+O1 (linear head)"] == ev.YES  # +0.10, +0.09, +0.09, +0.09
    assert names["(X+O1)+O2 beats none (quantum head)"] == ev.NO  # the same accuracies: a tie
    assert len(names) == 2 + 1 + 5 + 4
    claims = decide(runs)
    assert [(c.family, c.unit) for c in claims] == [("noise:depolarizing", "p"), ("aer:fake_torino", "s")]
    assert claims[1].describe() == "none up to s = 10"


def test_accuracy_first_drops_where_the_paired_interval_lies_below_zero():
    base = [0.90, 0.88, 0.91, 0.89]
    runs = Runs(rows("aer", {"none": (base, base)}) + rows("noise:depolarizing:0.2", {"none": (base, base)})
                + rows("noise:depolarizing:0.6", {"none": ([a - 0.2 for a in base], base)}))
    drops = {(d.config, d.frozen): d for d in first_drops(runs)}
    assert drops[("none", False)].level == 0.6 and drops[("none", False)].difference.startswith("-0.200")
    assert drops[("none", True)].level is None and drops[("none", True)].decidable


def test_with_fewer_seeds_than_the_rule_needs_no_drop_is_decidable_and_the_comparison_says_so():
    from dataclasses import asdict

    from qresnet.study.robustness_report import noisy_hqnns_paragraph

    base, lower = [0.90, 0.88], [0.50, 0.48]
    runs = Runs(rows("aer", {"none": (base, base)}) + rows("noise:depolarizing:1", {"none": (lower, base)}))
    drops = first_drops(runs)
    assert [(d.level, d.seeds, d.decidable) for d in drops] == [(None, 2, False), (None, 2, False)]
    text = noisy_hqnns_paragraph([asdict(d) for d in drops])
    assert "depolarizing: linear head undecidable (fewer than 3 seeds)" in text
    assert "depolarizing: undecidable here" in text
    decided = [asdict(d) for d in first_drops(Runs(rows("aer", {"none": WIN}) + rows(
        "noise:amplitude_damping:0.6", {"none": ([a - 0.3 for a in WIN[0]], WIN[1])})))]
    assert "amplitude_damping: first drop at p = 0.6, in line with their 0.5" in noisy_hqnns_paragraph(decided)


def _head(levels=(0.5,), scales=(), head="linear"):
    return HeadPlan(head, None, 8, 0.05, levels, scales)


@pytest.mark.parametrize("change, message", [
    (lambda: dict(heads=(_head((0.0,)),)), "channel level p 0.0 is out of range; allowed: 0 < p <= 1"),
    (lambda: dict(heads=(_head((1.5,)),)), "channel level p 1.5 is out of range"),
    (lambda: dict(heads=(_head(scales=(-1,)),)), "device scale s -1 is out of range; allowed: a finite s > 0"),
    (lambda: dict(heads=(_head((0.5, 0.5)),)), "channel level ps [0.5, 0.5] repeat a level"),
    (lambda: dict(heads=(_head(head="transformer"),)), "head='transformer' must be one of linear, quantum"),
    (lambda: dict(heads=(_head(), _head())), "heads=['linear', 'linear'] must be distinct heads"),
    (lambda: dict(channels=("dephasing",)), "channels=['dephasing'] must be distinct channels of depolarizing"),
    (lambda: dict(seeds=(0, 0)), "seeds=(0, 0) must be distinct"),
    (lambda: dict(configs=("X+O7",)), "X+O7"),
])
def test_bad_study_options_are_one_line_naming_the_value(change, message):
    settings = dict(name="t", dataset="digits", epochs=1, seeds=(0,))
    with pytest.raises(QresnetError) as error:
        RobustnessBudget(**{**settings, "heads": (_head(),), **change()})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_unknown_budget_names_the_allowed_ones():
    with pytest.raises(ConfigError, match="budget='huge' must be one of full, tiny"):
        RobustnessBudget.coerce("huge")


def test_the_command_line_refuses_an_unknown_study(capsys):
    from qresnet.cli.main import main

    assert main(["reproduce", "--study", "design-of-everything"]) == 2
    assert "invalid choice: 'design-of-everything'" in capsys.readouterr().err


def test_the_full_budget_is_the_stated_one():
    full = RobustnessBudget.coerce("full")
    sweeps = full.sweeps("/data")
    assert {h: len(s.runs()) for h, s in sweeps.items()} == {"linear": 30 * 5 * 2 * 10, "quantum": 19 * 5 * 2 * 10}
    assert "aer:fake_torino@0" not in [str(b) for b in sweeps["linear"].backends]
    assert 20 * 60 <= full.estimate_seconds(jobs=2) <= 40 * 60


def test_the_study_end_to_end_on_digits(tmp_path):
    """O1+O2, linear head, aer and depolarizing at p = 1, 3 seeds. At p = 1 every filter output is 0
    whatever the weights, so a trainable run and its frozen pair end equal: trainable does not beat frozen (no, with a
    difference of exactly 0), and the claim reports 1 exactly for the configurations whose aer verdict is not no."""
    budget = RobustnessBudget("test", "digits", epochs=1, seeds=(0, 1, 2), channels=("depolarizing",),
                              configs=("O1+O2",), batch_size=4,
                              heads=(HeadPlan("linear", (0, 1), 6, 0.05, (1.0,), ()),))
    report = run_robustness(tmp_path / "r", budget, progress=False)
    document = json.loads((tmp_path / "r" / "robustness.json").read_text())
    assert (tmp_path / "r" / "robustness.png").stat().st_size > 0 and document["runs"] == 12
    results = json.loads((tmp_path / "r" / "linear" / "results.json").read_text())["results"]
    noisy = {(r["config"], r["frozen"], r["seed"]): r["final_test_acc"] for r in results if r["backend"] != "aer"}
    assert all(noisy[(c, False, s)] == noisy[(c, True, s)] for c, _, s in noisy)
    runs = Runs([RunResult.from_dict(r) for r in results])
    at_one = {d.name: d for d in verdicts(runs, "noise:depolarizing:1")}
    assert at_one["O1+O2 beats frozen (linear head)"].verdict == ev.NO
    assert at_one["O1+O2 beats frozen (linear head)"].difference.mean == 0
    aer = {d.name: d.verdict for d in verdicts(runs, "aer")}
    changed = [n for n in at_one if n.endswith("frozen (linear head)") and aer[n] != ev.NO]
    (claim,) = document["claims"]
    assert claim["first_change"] == (1.0 if changed else None)
    text = report.read_text()
    assert "| depolarizing | p = 1 |" in text and "Noisy HQNNs" in text and "## Accuracy against noise level" in text
    again = run_robustness(tmp_path / "r", budget, progress=False)  # resumed: every run reused, the same claims
    assert json.loads((again.parent / "robustness.json").read_text())["claims"] == document["claims"]


def test_failed_runs_are_reported_and_the_study_still_decides_over_the_rest(tmp_path, monkeypatch):
    """A sweep whose runs partly fail: the report is written over the runs that finished, names each failure, and
    the study ends with the sweep error (a non-zero exit)."""
    import qresnet.study.robustness as robustness
    from qresnet.errors import SweepError
    from qresnet.study.sweep import SweepResult

    finished = rows("aer", {"none": WIN}) + rows("noise:depolarizing:1", {"none": TIE})

    def partly_failing(sweep, out, **kwargs):
        raise SweepError(SweepResult(sweep, tuple(finished)), ["noise:depolarizing:1 none seed 4: diverged"])

    monkeypatch.setattr(robustness, "run_sweep", partly_failing)
    monkeypatch.setattr(robustness, "write_comparison_report", lambda result, out: None)
    budget = RobustnessBudget("t", "digits", epochs=1, seeds=(0, 1, 2, 3), configs=("none",),
                              channels=("depolarizing",), heads=(_head((1.0,)),))
    with pytest.raises(SweepError, match="seed 4: diverged"):
        run_robustness(tmp_path / "r", budget, progress=False)
    text = (tmp_path / "r" / "robustness.md").read_text()
    assert "**1 run(s) failed**" in text and "- noise:depolarizing:1 none seed 4: diverged" in text
    assert "| depolarizing | p = 1 | p = 1: none beats frozen (linear head): yes on aer" in text
