"""Seeds planned by power, on constructed pilots: more seeds for a wide spread, fewer for a narrow one, never more
than the cap, and the formula against scipy's t quantiles computed here."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from qresnet.errors import ConfigError
from qresnet.residual import ResidualSpec
from qresnet.run.result import EpochMetrics, RunResult
from qresnet.study import evidence as ev
from qresnet.study.claims import decisive_distance
from qresnet.study.power import MAX_SEEDS, PowerRule, extend_seeds, plan_claims, study_seeds
from qresnet.study.report import Runs


def expected_half_width(s: float, n: int) -> float:
    return stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)


@pytest.mark.parametrize("s, w", [(0.108, 0.0535), (0.0097, 0.0065), (0.05, 0.01), (0.02, 0.05)])
def test_the_planned_n_is_the_smallest_whose_expected_half_width_reaches_w(s, w):
    rule = PowerRule(pilot=5, cap=200)
    n, capped = rule.seeds(s, w)
    assert not capped and expected_half_width(s, n) <= w
    assert n == 5 or expected_half_width(s, n - 1) > w  # one seed fewer would not reach w


def test_a_wide_spread_asks_for_more_seeds_a_narrow_one_for_fewer_and_never_more_than_the_cap():
    rule = PowerRule()
    assert rule.pilot == 5 and rule.cap == MAX_SEEDS == 40
    wide, _ = rule.seeds(0.10, 0.05)
    narrow, _ = rule.seeds(0.03, 0.05)
    assert narrow < wide <= 40 and narrow == 5  # the pilot's seeds are the least: they are already run
    n, capped = rule.seeds(1.0, 0.01)
    assert (n, capped) == (40, True) and expected_half_width(1.0, 40) > 0.01
    assert rule.seeds(0.0, 0.01) == (5, False)  # no spread: the pilot decides
    assert rule.seeds(0.05, 0.0) == (40, True)  # a mean on the boundary: no n decides it
    assert PowerRule(pilot=2, cap=3).seeds(0.0, 0.01) == (3, False)  # never fewer than 3, the fewest that decide


def test_the_decisive_distance_is_the_room_left_to_each_rules_boundary():
    m = ev.MARGIN
    assert decisive_distance("beats", 0.107) == pytest.approx(0.107)  # to 0, for "above 0"
    assert decisive_distance("beats", 0.007) == pytest.approx(m - 0.007)  # to +MARGIN, for "below +MARGIN"
    assert decisive_distance("close", 0.006) == pytest.approx(m - 0.006)
    assert decisive_distance("close", -0.05) == pytest.approx(0.05 - m)
    assert decisive_distance("little", 0.215) == pytest.approx(0.215 - m)


def _runs(study_diffs: dict[tuple[str, bool], list[float]], base: float = 0.6) -> Runs:
    """Runs of the paper study on aer whose trainable minus frozen differences are the given lists."""
    out = []
    for (config, frozen), diffs in study_diffs.items():
        for seed, d in enumerate(diffs):
            for is_frozen, acc in ((True, base), (False, base + d)):
                epoch = EpochMetrics(1, 1.0, acc, 1.0, acc, 0.1, (0.0, 1.0), 1.0)
                out.append(RunResult("aer", "linear", ResidualSpec.coerce(config, 2), is_frozen, seed, 1, (epoch,), 300,
                                     100, "engine-exact", f"runs/{config}-{is_frozen}-{seed}", 0.1))
    return Runs(out)


def test_the_plan_per_claim_from_a_pilot_and_per_study_from_its_claims():
    rule = PowerRule(pilot=5, cap=40)
    wide = [0.30, 0.00, 0.25, -0.05, 0.10]  # O1+O2 - frozen: mean +0.12, s about 0.15
    narrow = [0.10, 0.11, 0.09, 0.10, 0.12]  # X+O2 - frozen: far outside +-MARGIN, little spread
    pilot = {"paper": _runs({("O1+O2", False): wide, ("X+O2", False): narrow, ("(X+O1)+O2", False): narrow})}
    plans = {p.claim: p for p in plan_claims(pilot, rule, ("aer",))}
    s = stats.tstd(wide)
    w = sum(wide) / 5 / (1 + stats.norm.ppf(0.80) / stats.norm.ppf(0.975))  # beats: the mean's distance to 0
    n = next(k for k in range(5, 41) if expected_half_width(s, k) <= w)
    assert plans[11].n == n and not plans[11].capped and n > 5
    assert plans[11].driver.s == pytest.approx(s) and plans[11].driver.w == pytest.approx(w)
    assert plans[4].n == 5  # both parts decided by the pilot's seeds already
    assert plans[1].n == 0 and plans[1].driver is None and "no estimate" in plans[1].why  # no single study
    counts = study_seeds(list(plans.values()), {"single": 5, "paper": 5, "paper-quantum": 5})
    assert counts == {"single": 5, "paper": n, "paper-quantum": 5}
    record = plans[11].to_dict()
    assert (record["pilot_n"], record["planned_n"], record["capped"]) == (5, n, False)


def test_at_the_cap_the_plan_states_the_smallest_half_width_it_reaches():
    rule = PowerRule(pilot=5, cap=8)
    spread = [0.30, -0.20, 0.25, -0.15, 0.05]
    plans = {p.claim: p for p in plan_claims({"paper": _runs({("O1+O2", False): spread})}, rule, ("aer",))}
    assert plans[11].n == 8 and plans[11].capped
    assert plans[11].cap_half_width == pytest.approx(expected_half_width(stats.tstd(spread), 8))
    assert "capped at 8" in plans[11].why
    # and what it would have asked for without the cap: the smallest n whose expected half-width reaches w
    part = next(p for p in plans[11].parts if p.s is not None)
    asks = next(n for n in range(5, 100000) if expected_half_width(part.s, n) <= part.w)
    assert plans[11].asks == part.asks == asks > 8 and f"it asks for {asks}" in plans[11].why
    assert PowerRule(pilot=5, cap=asks).seeds(part.s, part.w) == (asks, False)  # the same n once the cap allows it
    assert PowerRule().uncapped(0.05, 0.0) is None  # a mean on the boundary: no n decides it


def test_a_study_with_its_own_cap_is_planned_to_it_and_the_others_to_the_cap():
    spread = [0.30, -0.20, 0.25, -0.15, 0.05]  # wide: the uncapped plan asks for far more than 8 seeds
    pilot = {"paper": _runs({("O1+O2", False): spread})}
    alone = {p.claim: p for p in plan_claims(pilot, PowerRule(pilot=5, cap=40), ("aer",))}
    own = {p.claim: p for p in plan_claims(pilot, PowerRule(pilot=5, cap=40, study_caps={"paper": 8}), ("aer",))}
    other = {p.claim: p for p in plan_claims(pilot, PowerRule(pilot=5, cap=40, study_caps={"single": 6}), ("aer",))}
    assert alone[11].n == other[11].n == 40 and alone[11].capped
    assert own[11].n == 8 and own[11].capped and "capped at 8" in own[11].why
    assert own[11].asks == alone[11].asks > 40  # the ask does not depend on the cap
    assert study_seeds(list(own.values()), {"paper": 5})["paper"] == 8


def test_at_the_cap_the_part_that_asks_for_most_seeds_drives_the_claim():
    # claim 11's parts on two backends, both capped at 8: on aer a mean near the boundary with a small spread asks
    # for far more seeds than a wide spread far from it on aer:fake_torino; the one that asks more drives the
    # plan (not the wider one), and its spread sets the cap's half-width
    near, wide = [0.06, -0.04, 0.05, -0.03, 0.01], [0.45, -0.10, 0.30, -0.05, 0.15]
    runs = _runs({("O1+O2", False): near}).rows + [
        dataclasses.replace(r, backend="aer:fake_torino") for r in _runs({("O1+O2", False): wide}).rows]
    plan = {p.claim: p for p in plan_claims({"paper": Runs(runs)}, PowerRule(pilot=5, cap=8))}[11]
    part = {p.backend: p for p in plan.parts if p.s is not None}
    assert plan.capped and part["aer"].asks > part["aer:fake_torino"].asks > 8 and part["aer"].s < part["aer:fake_torino"].s
    assert plan.driver.backend == "aer" and plan.asks == part["aer"].asks and "on aer:" in plan.why
    assert plan.cap_half_width == pytest.approx(expected_half_width(stats.tstd(near), 8))


def test_the_main_study_extends_the_pilots_seeds_and_the_rule_is_checked():
    assert extend_seeds((0, 1, 2, 3, 4), 8) == (0, 1, 2, 3, 4, 5, 6, 7)
    assert extend_seeds((0, 3), 4) == (0, 3, 4, 5) and extend_seeds((0, 1), 2) == (0, 1)
    assert PowerRule.coerce(None) == PowerRule() and PowerRule.coerce({"pilot": 3, "cap": 9}).cap == 9
    with pytest.raises(ConfigError, match="seed cap=4"):
        PowerRule(pilot=5, cap=4)
    with pytest.raises(ConfigError, match="pilot seeds=1"):
        PowerRule(pilot=1)
    with pytest.raises(ConfigError, match="factor=0"):
        PowerRule(factor=0)
    with pytest.raises(ConfigError, match="power rule"):
        PowerRule.coerce("many")


def test_the_planned_seeds_decide_about_80_percent_of_studies_when_the_pilot_is_right():
    """The default factor, 1 + z(0.80) / z(0.975): a study of the planned n, drawn with the pilot's mean and spread,
    has its interval above 0 (beats: reproduced) in about 80% of draws."""
    from qresnet.study.power import FACTOR

    assert FACTOR == pytest.approx(1 + stats.norm.ppf(0.80) / stats.norm.ppf(0.975))
    mean, s = 0.10, 0.11
    n, capped = PowerRule().seeds(s, decisive_distance("beats", mean) / FACTOR)
    assert not capped and 5 < n < 40
    draws = np.random.default_rng(3).normal(mean, s, (4000, n))
    low = draws.mean(axis=1) - stats.t.ppf(0.975, n - 1) * draws.std(axis=1, ddof=1) / math.sqrt(n)
    assert 0.75 <= (low > 0).mean() <= 0.90
