"""The reproduction study's claims, decided on constructed results (no training): reproduced, not, inconclusive."""

from __future__ import annotations

import dataclasses

import pytest

from qresnet.residual import ResidualSpec
from qresnet.run.result import EpochMetrics, RunResult
from qresnet.study.audit import AuditRow
from qresnet.study.report import Runs
from qresnet.study.reproduce import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    claim_carried,
    claim_gradient_access,
    claim_o1o2,
    claim_quantum_head,
    claim_single,
    claim_three_layers,
    decide,
    noise_changes,
)

REACH = {"none": [False, True], "X+O1": [False, True], "X+O2": [False, True], "O1+O2": [True, True],
         "(X+O1)+O2": [True, True]}


def run(config: str, frozen: bool, seed: int, acc: float, backend: str, head: str, reach: list[bool]) -> RunResult:
    """One epoch's result: ``acc`` on the test set, a gradient of norm 1 in the layers ``reach`` names, 0 elsewhere."""
    norms = tuple(0.0 if frozen or not r else 1.0 for r in reach)
    epoch = EpochMetrics(1, 1.0, acc, 1.0, acc, 0.1, norms, 1.0)
    return RunResult(backend, head, ResidualSpec.coerce(config, len(reach)), frozen, seed, 1, (epoch,), 300, 100,
                     "engine-exact", f"runs/{config}-{seed}", 0.1)


def rows(accuracies: dict[tuple[str, bool], list[float]], backend: str = "aer", head: str = "linear") -> list[RunResult]:
    """Results as a sweep ends with them: (config, frozen) -> the final accuracy of each seed."""
    return [run(config, frozen, seed, acc, backend, head, REACH[config])
            for (config, frozen), values in accuracies.items() for seed, acc in enumerate(values)]


WIN = ([0.90, 0.88, 0.91, 0.89], [0.80, 0.79, 0.82, 0.80])
TIE = ([0.800, 0.801, 0.799, 0.800], [0.800, 0.800, 0.800, 0.801])
FEW = ([0.95, 0.90], [0.50, 0.52])


@pytest.mark.parametrize("pair, verdict", [(WIN, REPRODUCED), (TIE, NOT_REPRODUCED), (FEW, INCONCLUSIVE)])
def test_claim_one_from_the_paired_interval(pair, verdict):
    runs = Runs(rows({("none", False): pair[0], ("none", True): pair[1]}))
    result, decided = claim_single(runs, "aer")
    assert decided == verdict and "trainable - frozen" in result


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


def test_o1o2_and_the_carried_configurations():
    high, mid, low = [0.90, 0.91, 0.89, 0.90], [0.80, 0.82, 0.81, 0.80], [0.70, 0.72, 0.71, 0.70]
    runs = Runs(rows({("O1+O2", False): high, ("O1+O2", True): mid, ("X+O1", False): low}))
    assert claim_o1o2(runs, "aer")[1] == REPRODUCED
    runs = Runs(rows({("O1+O2", False): mid, ("O1+O2", True): mid, ("X+O1", False): low}))
    assert claim_o1o2(runs, "aer")[1] == NOT_REPRODUCED  # no gain over its own frozen benchmark
    carried = Runs(rows({("X+O2", False): TIE[0], ("X+O2", True): TIE[1],
                         ("(X+O1)+O2", False): TIE[0], ("(X+O1)+O2", True): TIE[1]}))
    assert claim_carried(carried, "aer")[1] == REPRODUCED
    far = Runs(rows({("X+O2", False): WIN[0], ("X+O2", True): WIN[1],
                     ("(X+O1)+O2", False): TIE[0], ("(X+O1)+O2", True): TIE[1]}))
    assert claim_carried(far, "aer")[1] == NOT_REPRODUCED


def test_the_quantum_head_claim_needs_every_part():
    flat = [0.50, 0.51, 0.50, 0.50]
    accs = {("none", False): flat, ("none", True): flat, ("X+O1", False): flat, ("X+O1", True): flat,
            ("X+O2", False): flat, ("X+O2", True): flat, ("O1+O2", False): [0.60, 0.62, 0.61, 0.60],
            ("O1+O2", True): flat, ("(X+O1)+O2", False): [0.70, 0.72, 0.71, 0.70], ("(X+O1)+O2", True): flat}
    assert claim_quantum_head(Runs(rows(accs, head="quantum")), "aer")[1] == REPRODUCED
    worse = {**accs, ("(X+O1)+O2", False): [0.55, 0.56, 0.55, 0.55]}  # below O1+O2: not the best
    assert claim_quantum_head(Runs(rows(worse, head="quantum")), "aer")[1] == NOT_REPRODUCED


def test_three_layers_from_the_audit_and_noise_changes():
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
    one = {r.backend: r.verdict for r in claims if r.number == 1}
    assert one == {"aer": REPRODUCED, "aer:fake_torino": NOT_REPRODUCED}
    assert noise_changes(claims) == ["claim 1: reproduced on aer, not reproduced on aer:fake_torino"]


def _tiny_plan() -> dict:
    from qresnet.study.sweep import SweepConfig

    common = dict(dataset="digits", classes=(0, 1), per_class=6, epochs=2, batch_size=4, seeds=(0, 1), backends=("aer",),
                  lr=0.05)
    return {"single": SweepConfig.from_preset("single", **common),
            "paper": SweepConfig.from_preset("paper", **{**common, "configs": ("none", "O1+O2")})}


def test_a_resumed_reproduction_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    """Interrupted in its second study (after one run), then run again: the claims and every study's results
    are those of an uninterrupted reproduction, timings and reuse marks aside."""
    import json

    import qresnet.study.sweep as sweep_module
    from qresnet.study.reproduce import run_reproduction

    variants = ()
    # each run alone (--stack 1): the interruption is raised from the one-run path (tests/test_stack.py kills a stack)
    whole = run_reproduction(tmp_path / "whole", "tiny", plan=_tiny_plan(), variants=variants, progress=False, stack=1)
    real, calls = sweep_module._run_one, []

    def dies_in_the_second_study(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 5:  # the single study's 4 runs, then one run of the paper study
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "_run_one", dies_in_the_second_study)
    with pytest.raises(KeyboardInterrupt):
        run_reproduction(tmp_path / "parts", "tiny", plan=_tiny_plan(), variants=variants, progress=False, stack=1)
    monkeypatch.setattr(sweep_module, "_run_one", real)
    assert not (tmp_path / "parts" / "claims.json").exists()
    again = run_reproduction(tmp_path / "parts", "tiny", plan=_tiny_plan(), variants=variants, progress=False, stack=1)
    mine, theirs = (json.loads((p.parent / "claims.json").read_text()) for p in (again, whole))
    assert mine["claims"] == theirs["claims"] and mine["claims"][0]["result"].startswith("trainable - frozen +")
    skip = {"wall_time_s", "sweep_wall_time_s", "reused", "parameter_sets_evaluated_this_session", "steps_this_session",
            "metrics"}
    for study in ("single", "paper"):
        a, b = (json.loads((tmp_path / d / study / "results.json").read_text())["results"] for d in ("parts", "whole"))
        assert [{k: v for k, v in r.items() if k not in skip} for r in a] == \
               [{k: v for k, v in r.items() if k not in skip} for r in b]
        assert [[{k: v for k, v in m.items() if k != "seconds"} for m in r["metrics"]] for r in a] == \
               [[{k: v for k, v in m.items() if k != "seconds"} for m in r["metrics"]] for r in b]


def test_variants_run_only_for_claims_that_did_not_reproduce():
    from qresnet.study.sweep import SweepConfig
    from qresnet.study.reproduce import ClaimRow, Variant, variants_needed

    lr = Variant(3, "lr", "a larger learning rate", "paper", {"lr": 0.05})
    scale = Variant(5, "scale", "a larger head scale", "paper-quantum", {"epochs": 2})
    claims = [ClaimRow(3, "c", "t", "aer", "r", NOT_REPRODUCED), ClaimRow(3, "c", "t", "aer:fake_torino", "r", REPRODUCED),
              ClaimRow(5, "c", "t", "aer", "r", INCONCLUSIVE)]
    assert variants_needed(claims, (lr, scale)) == [lr]
    assert variants_needed([ClaimRow(3, "c", "t", "aer", "r", NOT_REPRODUCED, variant="lr")], (lr,)) == []
    sweep = lr.sweep({"paper": SweepConfig.from_preset("paper", seeds=(0, 1, 2))})
    assert sweep.lr == 0.05 and sweep.seeds == (0, 1, 2) and sweep.preset == "paper"
