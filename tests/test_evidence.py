"""Every comparison is evidence: seeds as an axis, intervals and paired tests, the six audit verdicts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from qresnet import cli
from qresnet.study import evidence as ev
from qresnet.study.report import write_comparison_report
from qresnet.cli.arguments import parse_seeds
from qresnet.errors import ConfigError
from qresnet.study.sweep import SweepConfig, run_sweep
from qresnet.run.rundir import RunDir
from reference import equal_to_rounding

TINY = dict(classes=(0, 1), per_class=8, epochs=2, batch_size=8, lr=0.05, configs="none;O1+O2", seeds=(0, 1, 2))


# --- seeds as a sweep axis ----------------------------------------------------------------------------------------

def test_seeds_expand_the_plan():
    sweep = SweepConfig.from_preset("quick", backends=("aer", "aer:fake_manila"), **{**TINY, "seeds": (0, 3, 7)})
    plan = sweep.runs()
    assert len(plan) == 2 * 2 * 2 * 3  # configurations x trainable/frozen x backends x seeds
    keys = {(str(p.backend), p.residual.notation, p.frozen, p.seed) for p in plan}
    assert len(keys) == len(plan) and {p.seed for p in plan} == {0, 3, 7}
    assert all(p.config.seed == p.seed for p in plan)
    assert len({p.directory(Path("S")) for p in plan}) == len(plan)
    assert SweepConfig.from_preset("quick").seeds == (0, 1, 2) and SweepConfig.from_preset("paper").seeds == (0, 1, 2)
    assert parse_seeds("0-4") == (0, 1, 2, 3, 4) and parse_seeds("0,3,7") == (0, 3, 7) and parse_seeds("2-3,9") == (2, 3, 9)
    for bad in ("4-2", "a", "1,1", "0-"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)
    with pytest.raises(ConfigError, match="seeds="):
        SweepConfig.from_preset("quick", seeds=())


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("evidence") / "S"
    sweep = SweepConfig.from_preset("quick", backends=("aer",), **TINY)
    result = run_sweep(sweep, out, progress=False)
    write_comparison_report(result, out)
    return out, sweep, result


def test_a_trainable_run_and_its_frozen_pair_share_split_and_initial_weights(sweep_dir):
    out, sweep, _ = sweep_dir
    for seed in sweep.seeds:
        trainable = RunDir(out / "runs" / "aer" / f"O1_O2-trainable-seed{seed}")
        frozen = RunDir(out / "runs" / "aer" / f"O1_O2-frozen-seed{seed}")
        a = torch.load(trainable.initial_checkpoint, weights_only=False)["model"]
        b = torch.load(frozen.initial_checkpoint, weights_only=False)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        # the frozen run's quantum weights never moved from the trainable run's starting point
        last = torch.load(frozen.epoch_checkpoints()[-1], weights_only=False)["model"]
        for k in (0, 1):
            assert torch.equal(last[f"layers.{k}.connector.weight"], a[f"layers.{k}.connector.weight"])
        assert trainable.read_identity()["data_sha256"] == frozen.read_identity()["data_sha256"]
    other = RunDir(out / "runs" / "aer" / "O1_O2-trainable-seed1")
    assert other.read_identity()["data_sha256"] != RunDir(out / "runs" / "aer" / "O1_O2-trainable-seed0").read_identity()["data_sha256"]


# --- statistics against scipy.stats computed here -----------------------------------------------------------------

def test_intervals_and_paired_tests_equal_scipy():
    trainable = [0.81, 0.78, 0.86, 0.80, 0.83]
    frozen = [0.74, 0.75, 0.79, 0.72, 0.80]
    x = np.array(trainable)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    interval = ev.mean_interval(trainable)
    assert interval.mean == pytest.approx(x.mean(), abs=1e-15)
    assert (interval.low, interval.high) == pytest.approx((x.mean() - half, x.mean() + half), abs=1e-12)
    d = x - np.array(frozen)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    p = 2 * stats.t.sf(abs(t), len(d) - 1)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    diff = ev.paired(trainable, frozen)
    assert diff.mean == pytest.approx(d.mean(), abs=1e-15) and diff.p_value == pytest.approx(p, rel=1e-10)
    assert (diff.low, diff.high) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-12)
    assert (diff.wins, diff.losses, diff.ties) == (5, 0, 0)
    one = ev.mean_interval([0.5])
    assert (one.low, one.high) == (None, None) and "no interval" in one.describe()
    same = ev.paired([0.7, 0.7, 0.7], [0.7, 0.7, 0.7])
    assert (same.mean, same.low, same.high, same.p_value, same.ties) == (0.0, 0.0, 0.0, None, 3)
    assert ev.binomial_error(0.9, 100) == pytest.approx(math.sqrt(0.9 * 0.1 / 100))


# --- verdicts on constructed results -------------------------------------------------------------------------------

def test_verdicts_on_constructed_results():
    win = ev.paired([0.90, 0.88, 0.91, 0.89], [0.80, 0.79, 0.82, 0.80])
    tie = ev.paired([0.800, 0.801, 0.799, 0.800, 0.802], [0.800, 0.800, 0.800, 0.801, 0.800])
    few = ev.paired([0.95, 0.90], [0.50, 0.52])
    wide = ev.paired([0.9, 0.5, 0.8], [0.6, 0.7, 0.5])
    assert ev.beats(win) == ev.YES and ev.beats(tie) == ev.NO and ev.beats(few) == ev.INCONCLUSIVE
    assert ev.beats(wide) == ev.INCONCLUSIVE and ev.beats(None) == ev.NOT_TESTED
    assert ev.beats(ev.paired([0.6] * 3, [0.6] * 3)) == ev.NO  # identical in every seed: a clear tie
    # Q1: the layer before the last, in every seed
    assert ev.earlier_layers_learn([[True, True]] * 3) == ev.YES
    assert ev.earlier_layers_learn([[False, True]] * 3) == ev.NO
    assert ev.earlier_layers_learn([[True, True], [False, True], [True, True]]) == ev.INCONCLUSIVE
    assert ev.earlier_layers_learn([[True]] * 3) == ev.YES  # one layer is the last
    # Q4 by the reach rule
    assert ev.placement_justified([True, True], sees_input=False) == ev.YES
    assert ev.placement_justified([False, True], sees_input=True) == ev.NO
    assert ev.placement_justified([True, True], sees_input=True) == ev.INCONCLUSIVE
    assert ev.costs_reported({"qubits": [4], "boundaries": 1, "circuits_per_step": 5, "seconds_per_epoch": 1.0,
                              "device_train_epoch_qpu_seconds": 3.0, "device_test_eval_qpu_seconds": 1.0}) == ev.YES
    assert ev.costs_reported({"qubits": [4]}) == ev.NO


def test_the_report_opens_with_the_checklist(sweep_dir):
    out, sweep, rows = sweep_dir
    text = (out / "report.md").read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Checklist: which part of the model is learning?"
    assert ev.RULES in text and "3 seeds (0, 1, 2)" in text
    data = json.loads((out / "results.json").read_text())
    item = data["evidence"]["aer"]["O1+O2"]
    assert set(item["verdicts"]) == {"Q1 earlier layers get gradients", "Q2 survives a quantum head", "Q3 beats frozen",
                                     "Q4 placement justified", "Q5 costs reported", "Q6 beats a classical layer of its size"}
    # the numbers behind the verdicts are those of the runs, recomputed here
    acc = {(r.config, r.frozen, r.seed): r.final_test_acc for r in rows.runs}
    t = [acc[("O1+O2", False, s)] for s in (0, 1, 2)]
    f = [acc[("O1+O2", True, s)] for s in (0, 1, 2)]
    assert item["trainable"]["mean"] == pytest.approx(np.mean(t), abs=1e-15)
    assert item["trainable_minus_frozen"]["mean"] == pytest.approx(np.mean(t) - np.mean(f), abs=1e-12)
    assert item["verdicts"]["Q1 earlier layers get gradients"] == "yes"  # O1+O2 reaches both layers
    assert data["evidence"]["aer"]["none"]["verdicts"]["Q1 earlier layers get gradients"] == "no"
    assert data["evidence"]["aer"]["none"]["verdicts"]["Q4 placement justified"] == "no"
    assert item["verdicts"]["Q2 survives a quantum head"] == "not tested"
    assert "--head linear,quantum" in item["numbers"]["quantum_head_command"]
    costs = item["numbers"]["costs"]
    assert costs["boundaries"] == 1 and costs["qubits"] == [4] and costs["circuits_per_step"] == 2 * 81 * 33
    assert item["verdicts"]["Q5 costs reported"] == "yes" and "reference" in costs["device"]
    for name in ("accuracy.png", "differences.png", "grad_norms.png", "curves.png"):
        assert (out / name).stat().st_size > 0


def test_a_resumed_multi_seed_sweep_equals_an_uninterrupted_one(sweep_dir, tmp_path):
    out, sweep, rows = sweep_dir
    parts = tmp_path / "P"
    run_sweep(SweepConfig.from_preset("quick", backends=("aer",), **{**TINY, "seeds": (1,)}), parts, progress=False)
    # as if it died in its last epoch
    redo = RunDir(parts / "runs" / "aer" / "none-trainable-seed1")
    redo.summary_path.unlink()
    redo.epoch_checkpoint(2).unlink()
    again = run_sweep(sweep, parts, progress=False)
    skip = {"wall_time_s", "reused", "parameter_sets_evaluated_this_session", "steps_this_session", "metrics"}

    def strip(result):  # timings aside, each epoch's metrics included
        return [({k: v for k, v in r.to_dict().items() if k not in skip},
                 [{k: v for k, v in m.to_row().items() if k != "seconds"} for m in r.metrics]) for r in result.runs]

    assert equal_to_rounding(strip(again), strip(rows))  # the resumed run trains in another stack
    accuracies = [[(m.train_acc, m.test_acc) for m in r.metrics] for r in again.runs]
    assert accuracies == [[(m.train_acc, m.test_acc) for m in r.metrics] for r in rows.runs]  # predictions exactly
    assert cli.main(["compare", "--seeds", "0-2", "--configs", "none;O1+O2", "--backends", "aer", "--classes", "0,1",
                     "--per-class", "8", "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--out", str(parts)]) == 0
    # the evidence is the same but for timings (seconds per epoch)
    mine = json.loads((parts / "results.json").read_text())["evidence"]["aer"]
    theirs = json.loads((out / "results.json").read_text())["evidence"]["aer"]
    assert {c: v["verdicts"] for c, v in mine.items()} == {c: v["verdicts"] for c, v in theirs.items()}
    assert {c: v["trainable_minus_frozen"] for c, v in mine.items()} == {c: v["trainable_minus_frozen"] for c, v in theirs.items()}


def test_accuracy_intervals_stay_within_zero_and_one():
    x = np.array([0.99, 0.95, 1.0])
    half = stats.t.ppf(0.975, 2) * x.std(ddof=1) / math.sqrt(3)
    assert x.mean() + half > 1  # the plain t-interval passes 1
    interval = ev.mean_interval(x, bounds=(0.0, 1.0))
    assert interval.high == 1.0 and interval.low == pytest.approx(x.mean() - half, abs=1e-12)
