"""The reproduction driver: a resumed reproduction equals an uninterrupted one, the pilot plans the seeds, the
variants run only for claims that did not reproduce (the claims themselves: tests/test_claims.py)."""

from __future__ import annotations

import numpy as np
import pytest

from qresnet.study.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED


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
    assert mine["claims"] == theirs["claims"] and mine["claims"][0]["result"].startswith("none - frozen ")
    # the pilot's 2 seeds estimate a spread, and 3 seeds are the fewest that decide: the plan asks for 3, and the
    # main study reuses the pilot's runs as its first seeds (trained once) and trains seed 2 only
    power = json.loads((whole.parent / "power.json").read_text())
    assert power["studies"]["single"] == {"pilot_seeds": 2, "seeds": 3, "runs": 6}
    text = whole.read_text()  # the claims table first, each claim, then the paper's figures and the power plan
    assert text.index("| 1. One trainable") < text.index("### Claim 1") < text.index("## The paper's figures beside ours") \
        < text.index("## Seeds planned by power")
    assert "| 11 | O1+O2 - frozen | aer | held-out test (the paper's validation) |" in text
    for figure in ("reproduction_claims.png", "reproduction_paper.png"):  # the paper's figures drawn beside ours
        assert f"![{figure}]({figure})" in text and (whole.parent / figure).stat().st_size > 0
    single = json.loads((whole.parent / "single" / "results.json").read_text())["results"]
    assert sorted((r["seed"], r["reused"]) for r in single) == [(0, True), (0, True), (1, True), (1, True),
                                                                 (2, False), (2, False)]
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
    from qresnet.study.claims import ClaimRow
    from qresnet.study.reproduce import Variant, variants_needed

    lr = Variant(3, "lr", "a larger learning rate", "paper", {"lr": 0.05})
    scale = Variant(5, "scale", "a larger head scale", "paper-quantum", {"epochs": 2})
    claims = [ClaimRow(3, "c", "t", "aer", "r", NOT_REPRODUCED), ClaimRow(3, "c", "t", "aer:fake_torino", "r", REPRODUCED),
              ClaimRow(5, "c", "t", "aer", "r", INCONCLUSIVE)]
    assert variants_needed(claims, (lr, scale)) == [lr]
    assert variants_needed([ClaimRow(3, "c", "t", "aer", "r", NOT_REPRODUCED, variant="lr")], (lr,)) == []
    sweep = lr.sweep({"paper": SweepConfig.from_preset("paper", seeds=(0, 1, 2))})
    assert sweep.lr == 0.05 and sweep.seeds == (0, 1, 2) and sweep.preset == "paper"


def test_claim_8_counts_the_intervals_that_exclude_0_from_their_numbers_not_their_rounded_text():
    from qresnet.study import evidence as ev
    from qresnet.study.reproduce import _excludes_zero

    b = np.linspace(0.80, 0.90, 8)
    below = ev.paired(b - 0.0004 + np.linspace(-1e-4, 1e-4, 8), b)  # high < 0, but it prints as -0.000
    assert below.high < 0 and "-0.000]" in below.describe() and _excludes_zero(below)
    assert not _excludes_zero(ev.paired(b + np.linspace(-0.01, 0.01, 8), b))
    assert _excludes_zero(ev.paired(b + 0.01 + np.linspace(-1e-3, 1e-3, 8), b))
