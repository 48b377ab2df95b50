"""The paper's claims decided on constructed results (no training), and the paper's figures set beside ours."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from qresnet.errors import ConfigError
from qresnet.residual import ResidualSpec
from qresnet.run.result import EpochMetrics, RunResult
from qresnet.study.audit import AuditRow
from qresnet.study.claims import (
    CLAIMS,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Part,
    claim_gradient_access,
    claim_parts,
    claim_three_layers,
    decide,
    noise_changes,
)
from qresnet.study.paper import PaperFigure, paper_rows, relative_gain
from qresnet.study.report import Runs

REACH = {"none": [False, True], "X+O1": [False, True], "X+O2": [False, True], "O1+O2": [True, True],
         "(X+O1)+O2": [True, True]}


def run(config: str, frozen: bool, seed: int, acc: float, backend: str, head: str, reach: list[bool],
        train_acc: float | None = None) -> RunResult:
    """One epoch's result: ``acc`` on the test set (``train_acc``, else ``acc``, on the training set), a gradient of
    norm 1 in the layers ``reach`` names, 0 elsewhere."""
    norms = tuple(0.0 if frozen or not r else 1.0 for r in reach)
    epoch = EpochMetrics(1, 1.0, acc if train_acc is None else train_acc, 1.0, acc, 0.1, norms, 1.0)
    return RunResult(backend, head, ResidualSpec.coerce(config, len(reach)), frozen, seed, 1, (epoch,), 300, 100,
                     "engine-exact", f"runs/{config}-{seed}", 0.1)


def rows(accuracies: dict[tuple[str, bool], list[float]], backend: str = "aer", head: str = "linear",
         train: dict[tuple[str, bool], list[float]] | None = None) -> list[RunResult]:
    """Results as a sweep ends with them: (config, frozen) -> the final test accuracy of each seed (and ``train``:
    the final training accuracy)."""
    train = train or {}
    return [run(config, frozen, seed, acc, backend, head, REACH[config],
                train[(config, frozen)][seed] if (config, frozen) in train else None)
            for (config, frozen), values in accuracies.items() for seed, acc in enumerate(values)]


WIN = ([0.90, 0.88, 0.91, 0.89], [0.80, 0.79, 0.82, 0.80])
TIE = ([0.800, 0.801, 0.799, 0.800], [0.800, 0.800, 0.800, 0.801])
FEW = ([0.95, 0.90], [0.50, 0.52])
# the first reproduction's `none` (linear head): trainable over frozen by about +0.2 in every seed
TRAINS = ([0.62, 0.66, 0.60, 0.64, 0.63], [0.40, 0.45, 0.42, 0.41, 0.44])


def _claim(number: int, studies: dict[str, Runs]) -> str:
    return claim_parts(number, studies, "aer")[1]


@pytest.mark.parametrize("pair, verdict", [(WIN, REPRODUCED), (TIE, NOT_REPRODUCED), (FEW, INCONCLUSIVE)])
def test_claim_one_from_the_paired_interval(pair, verdict):
    runs = Runs(rows({("none", False): pair[0], ("none", True): pair[1]}))
    result, decided = claim_parts(1, {"single": runs}, "aer")
    assert decided == verdict and result.startswith("none - frozen ")


@pytest.mark.parametrize("pair, verdict", [(TIE, REPRODUCED), (TRAINS, NOT_REPRODUCED), (FEW, INCONCLUSIVE),
                                           (([0.80, 0.83, 0.79, 0.84], [0.80, 0.80, 0.80, 0.80]), INCONCLUSIVE)])
def test_claim_nine_none_trains_little_or_not_at_all(pair, verdict):
    """`little`: reproduced when a gain of 2 points is ruled out, not when the interval lies above 2 points."""
    assert _claim(9, {"paper": Runs(rows({("none", False): pair[0], ("none", True): pair[1]}))}) == verdict


def test_claims_three_ten_and_eleven_each_decide_one_comparison():
    high, mid, low = [0.90, 0.91, 0.89, 0.90], [0.80, 0.82, 0.81, 0.80], [0.70, 0.72, 0.71, 0.70]
    paper = {"paper": Runs(rows({("O1+O2", False): high, ("O1+O2", True): mid, ("X+O1", False): low,
                                 ("none", False): low}))}
    assert [_claim(n, paper) for n in (3, 10, 11)] == [REPRODUCED, NOT_REPRODUCED, REPRODUCED]
    paper = {"paper": Runs(rows({("O1+O2", False): mid, ("O1+O2", True): mid, ("X+O1", False): low,
                                 ("none", False): [0.60, 0.61, 0.62, 0.60]}))}
    assert [_claim(n, paper) for n in (3, 10, 11)] == [REPRODUCED, REPRODUCED, NOT_REPRODUCED]
    assert _claim(11, {}) == INCONCLUSIVE  # no runs: no verdict


def test_the_carried_configurations_sit_close():
    carried = Runs(rows({("X+O2", False): TIE[0], ("X+O2", True): TIE[1],
                         ("(X+O1)+O2", False): TIE[0], ("(X+O1)+O2", True): TIE[1]}))
    assert _claim(4, {"paper": carried}) == REPRODUCED
    far = Runs(rows({("X+O2", False): WIN[0], ("X+O2", True): WIN[1],
                     ("(X+O1)+O2", False): TIE[0], ("(X+O1)+O2", True): TIE[1]}))
    assert _claim(4, {"paper": far}) == NOT_REPRODUCED


def test_the_quantum_head_claim_needs_every_part():
    flat = [0.50, 0.51, 0.50, 0.50]
    accs = {("none", False): flat, ("none", True): flat, ("X+O1", False): flat, ("X+O1", True): flat,
            ("X+O2", False): flat, ("X+O2", True): flat, ("O1+O2", False): [0.60, 0.62, 0.61, 0.60],
            ("O1+O2", True): flat, ("(X+O1)+O2", False): [0.70, 0.72, 0.71, 0.70], ("(X+O1)+O2", True): flat}
    assert _claim(5, {"paper-quantum": Runs(rows(accs, head="quantum"))}) == REPRODUCED
    worse = {**accs, ("(X+O1)+O2", False): [0.55, 0.56, 0.55, 0.55]}  # below O1+O2: not the best
    assert _claim(5, {"paper-quantum": Runs(rows(worse, head="quantum"))}) == NOT_REPRODUCED
    trains = {**accs, ("none", False): [0.60, 0.62, 0.61, 0.60]}  # none trains: not "little"
    assert _claim(5, {"paper-quantum": Runs(rows(trains, head="quantum"))}) == NOT_REPRODUCED
    assert _claim(5, {"paper-quantum": Runs(rows(accs))}) == INCONCLUSIVE  # linear-head runs only: not tested


def test_parts_name_their_comparison_and_refuse_an_unknown_rule():
    assert Part("paper", "linear", ("O1+O2", False), ("O1+O2", True), "beats").label == "O1+O2 - frozen"
    assert Part("paper", "linear", ("O1+O2", False), ("X+O1", False), "beats").label == "O1+O2 - X+O1"
    with pytest.raises(ConfigError, match="rule='wins'"):
        Part("paper", "linear", ("O1+O2", False), ("X+O1", False), "wins")


def test_gradient_access_against_the_rule_and_the_audit():
    good = Runs(rows({(c, False): [0.5, 0.5, 0.5] for c in REACH}))
    audit = [AuditRow(c, [], [1.0, 1.0], flags, flags) for c, flags in REACH.items()]
    assert claim_gradient_access(good, audit, "aer")[1] == REPRODUCED
    broken = list(good.rows)
    assert broken[0].config == "none" and broken[0].measured_reach == (False, True)
    # `none`: a gradient reached layer 1 in one seed
    broken[0] = dataclasses.replace(broken[0], metrics=(dataclasses.replace(broken[0].metrics[0],
                                                                            grad_norm_layers=(1.0, 1.0)),))
    result, verdict = claim_gradient_access(Runs(broken), audit, "aer")
    assert verdict == NOT_REPRODUCED and "differs for none" in result


def test_three_layers_from_the_audit_every_claim_decided_and_noise_changes():
    def row(config, flags):
        return AuditRow(config, [], [1.0] * 3, flags, flags)

    paper = [row("none", [False, False, True]), row("(O1+O2)+O3", [True, True, True]),
             row("((X+O1)+O2)+O3", [True, True, True])]
    assert claim_three_layers(paper)[1] == REPRODUCED
    assert claim_three_layers(paper[:2])[1] == NOT_REPRODUCED
    assert claim_three_layers([])[1] == INCONCLUSIVE
    single = Runs(rows({("none", False): WIN[0], ("none", True): WIN[1]}) +
                  rows({("none", False): TIE[0], ("none", True): TIE[1]}, backend="aer:fake_torino"))
    empty = Runs([])
    claims = decide({"single": single, "paper": empty, "paper-quantum": empty}, {"aer": paper, "aer:fake_torino": paper})
    assert sorted({r.number for r in claims}) == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11]
    assert [n for n, _, _ in CLAIMS] == [1, 2, 9, 10, 3, 11, 4, 5, 6, 7]  # the paper's order
    one = {r.backend: r.verdict for r in claims if r.number == 1}
    assert one == {"aer": REPRODUCED, "aer:fake_torino": NOT_REPRODUCED}
    assert noise_changes(claims) == ["claim 1: reproduced on aer, not reproduced on aer:fake_torino"]


# --- the paper's figures beside ours ------------------------------------------------------------------------------

def _delta_method(a, b, confidence=0.95):
    """The relative gain's interval, written out from the covariance matrix (an independent route to the same
    first-order variance: Var(A/B) ~ (Var A - 2R Cov(A, B) + R^2 Var B) / B^2 for the means A, B)."""
    a, b = np.asarray(a), np.asarray(b)
    n, ratio = len(a), a.mean() / b.mean()
    cov = np.cov(np.vstack([a, b]), ddof=1) / n
    se = math.sqrt(cov[0, 0] - 2 * ratio * cov[0, 1] + ratio ** 2 * cov[1, 1]) / b.mean()
    t = stats.t.ppf(0.5 + confidence / 2, n - 1)
    return ratio - 1, ratio - 1 - t * se, ratio - 1 + t * se


def test_the_relative_gain_interval_is_the_delta_method():
    a, b = [0.81, 0.77, 0.85, 0.79, 0.83], [0.60, 0.58, 0.66, 0.55, 0.62]
    gain = relative_gain(a, b)
    assert (gain.mean, gain.low, gain.high) == pytest.approx(_delta_method(a, b), rel=1e-12)
    exact = relative_gain([0.68, 0.816, 0.544], [0.5, 0.6, 0.4])  # a = 1.36 b in every seed: no spread
    assert exact.mean == pytest.approx(0.36) and exact.high - exact.low == pytest.approx(0, abs=1e-12)
    assert exact.contains(0.36) and not exact.contains(0.40)
    assert relative_gain([0.7], [0.5]).low is None and relative_gain([0.5, 0.6], [0.0, 0.0]) is None


def test_the_relative_gain_interval_covers_the_true_gain_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    hits, trials = 0, 1000
    for _ in range(trials):
        base = rng.normal(0.6, 0.08, 12)
        b = base + rng.normal(0, 0.01, 12)
        a = 1.3 * base + rng.normal(0, 0.01, 12)  # true relative gain of the means: 0.30
        hits += relative_gain(a, b).contains(0.30)
    assert 0.92 <= hits / trials <= 0.975


def test_paper_rows_compare_each_split_and_flag_the_paper_inside_our_interval():
    # O1+O2 over its frozen benchmark: training +50% (the paper's 66% outside), test +64% (the paper's 64% inside)
    frozen_test, frozen_train = [0.50, 0.55, 0.45, 0.52], [0.60, 0.62, 0.58, 0.61]
    test = [round(x * 1.64 + e, 4) for x, e in zip(frozen_test, (0.004, -0.003, 0.002, -0.004))]
    train = [round(x * 1.50 + e, 4) for x, e in zip(frozen_train, (0.002, -0.001, 0.001, -0.002))]
    runs = Runs(rows({("O1+O2", False): test, ("O1+O2", True): frozen_test},
                     train={("O1+O2", False): train, ("O1+O2", True): frozen_train}))
    figure = PaperFigure(11, Part("paper", "linear", ("O1+O2", False), ("O1+O2", True), "beats"), 0.66, 0.64)
    found = {r.split: r for r in paper_rows({"paper": runs}, ("aer",), (figure,))}
    assert set(found) == {"train", "test"}
    assert found["test"].inside is True and found["train"].inside is False
    assert found["train"].relative.mean == pytest.approx(np.mean(train) / np.mean(frozen_train) - 1)
    assert found["train"].gap == pytest.approx(found["train"].relative.mean - 0.66)
    assert found["test"].absolute.mean == pytest.approx(np.mean(test) - np.mean(frozen_test))
    assert "**no**" in found["train"].line() and "| yes |" in found["test"].line()
    assert paper_rows({}, ("aer",), (figure,)) == []  # no runs: no row
