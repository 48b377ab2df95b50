"""The typed run result and the sweep's configuration survive their files unchanged; files of earlier versions read
back, or are refused with one line naming the missing field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qresnet.config import TrainConfig
from qresnet.errors import QresnetError, ResultError
from qresnet.residual import ResidualSpec
from qresnet.run.result import EpochMetrics, RunResult, read_results
from qresnet.run.rundir import RunDir
from qresnet.run.train import train
from qresnet.study.report import write_comparison_report
from qresnet.study.sweep import PRESETS, SweepConfig, SweepResult

# a results.json row as the version before the typed result wrote it (the first row of a quick sweep, two epochs):
# the sweep's wall time in every row, no "layers", the summary figures beside the history
LEGACY_ROW = {
    "backend": "aer", "config": "none", "frozen": False, "run_dir": "runs/aer/none-trainable-seed0",
    "epochs_completed": 2, "epochs": 2, "final_test_acc": 0.16, "best_test_acc": 0.2,
    "final_train_loss": 2.2299531244845587, "wall_time_s": 0.373, "parameter_sets_evaluated_this_session": 6480,
    "residual": "none", "seed": 0, "train_images": 300, "test_images": 100, "head": "linear", "head_notes": [],
    "gradient": "engine-exact", "steps_this_session": 38, "stopped_at_max_steps": False, "reused": False,
    "predicted_reach": [False, True], "sweep_wall_time_s": 56.24,
    "metrics": [
        {"epoch": 1, "train_loss": 2.2658528828975775, "train_acc": 0.15666666666666668, "test_loss": 2.2632315797710865,
         "test_acc": 0.2, "seconds": 0.202, "grad_norm_layer1": 0.0, "grad_norm_layer2": 0.0404741336295372,
         "grad_norm_head": 0.29423871560247045},
        {"epoch": 2, "train_loss": 2.2299531244845587, "train_acc": 0.21, "test_loss": 2.227742251468061,
         "test_acc": 0.16, "seconds": 0.171, "grad_norm_layer1": 0.0, "grad_norm_layer2": 0.06074164095887834,
         "grad_norm_head": 0.29217584442610356},
    ],
    "grad_norms_last_epoch": [0.0, 0.06074164095887834], "measured_reach": [False, True],
}


def _result(config: str, frozen: bool, seed: int, accs: list[float], **extra) -> RunResult:
    spec = ResidualSpec.coerce(config, 2)
    metrics = tuple(EpochMetrics(e, 2.0 / e, acc - 0.05, 2.1 / e, acc, 0.1 + 0.2, tuple(0.0 if frozen or not r else 0.1 * e
                                                                                      for r in spec.reaches), 0.3 / 7)
                    for e, acc in enumerate(accs, start=1))
    return RunResult("aer:fake_manila", "linear", spec, frozen, seed, len(accs), metrics, 32, 8, "engine-exact",
                     f"runs/{config}-{frozen}-{seed}", 1.0 / 3, **extra)


def test_a_sweep_result_survives_results_json_unchanged(tmp_path):
    sweep = SweepConfig.from_preset("quick", backends=("aer:fake_manila",), configs="none;O1+O2", classes=(0, 1),
                                    per_class=20, seeds=(0, 1, 2), epochs=2)
    runs = [_result(c, f, s, [0.5 + 0.01 * s, 0.625 + 0.125 * (not f)], reused=bool(s % 2),
                    head_notes=("a note",), head_encoding_noise={"samples": 4, "max_abs_score_difference": 1e-3})
            for c in ("none", "O1+O2") for f in (False, True) for s in (0, 1, 2)]
    result = SweepResult(sweep, runs, 12.5)
    write_comparison_report(result, tmp_path)
    assert SweepResult.read(tmp_path / "results.json") == result
    assert read_results(tmp_path / "results.json") == runs
    assert SweepConfig.from_dict(json.loads((tmp_path / "results.json").read_text())["sweep"]) == sweep


def test_a_run_reads_back_from_its_directory_as_train_returned_it(tmp_path):
    config = TrainConfig(classes=(0, 1), per_class=8, layers=1, residual="none", epochs=2, batch_size=8, lr=0.05, seed=1)
    result = train(config, tmp_path / "R", progress=False)
    assert RunDir(tmp_path / "R").read_result() == result
    assert result.epochs_completed == 2 and result.measured_reach == (True,)  # one layer: it is the last, it learns


def test_an_earlier_results_row_reads_back():
    result = RunResult.from_dict(LEGACY_ROW)
    assert (str(result.backend), result.residual.notation, result.layers, result.frozen, result.seed) == ("aer", "none", 2,
                                                                                                       False, 0)
    assert result.final_test_acc == 0.16 and result.best_test_acc == 0.2 and result.measured_reach == (False, True)
    assert result.metrics[1].grad_norm_layers == (0.0, 0.06074164095887834)
    # written again, it is this version's row: the same fields, "layers" and "filter" added, the sweep's wall
    # time moved out
    again = result.to_dict()
    assert {k: v for k, v in LEGACY_ROW.items() if k != "sweep_wall_time_s"} == {k: v for k, v in again.items()
                                                                               if k not in ("layers", "filter")}


def test_an_earlier_results_json_reads_with_the_sweeps_wall_time(tmp_path):
    sweep = SweepConfig.from_preset("quick", configs="none", seeds=(0,), epochs=2)
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"sweep": sweep.to_dict(), "results": [LEGACY_ROW]}))
    read = SweepResult.read(path)
    assert read.sweep == sweep and read.wall_time_s == 56.24 and read.runs[0].config == "none"


@pytest.mark.parametrize("change, field", [
    (lambda row: row.pop("metrics"), "'metrics'"),
    (lambda row: row.pop("seed"), "'seed'"),
    (lambda row: row["metrics"][0].pop("test_acc"), "'test_acc'"),
    (lambda row: row.update(final_test_acc=0.9), "final_test_acc is 0.9, but its metrics give 0.16"),
    (lambda row: row.update(colour="red"), "'colour'"),
    (lambda row: row.update(frozen="no"), "frozen='no' must be true or false"),
    (lambda row: row.update(test_images=-1), "test_images=-1"),
])
def test_an_incomplete_results_row_is_refused_in_one_line(tmp_path, change, field):
    row = json.loads(json.dumps(LEGACY_ROW))
    change(row)
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"sweep": SweepConfig.from_preset("quick").to_dict(), "results": [row]}))
    with pytest.raises(ResultError) as info:
        read_results(path)
    message = str(info.value)
    assert field in message and str(path) in message and "\n" not in message


def test_an_earlier_summary_reads_with_its_metrics_and_a_stale_one_is_refused(tmp_path):
    run = RunDir(tmp_path / "R")
    run.path.mkdir()
    row = json.loads(json.dumps(LEGACY_ROW))
    metrics = [EpochMetrics.from_row(m) for m in row.pop("metrics")]
    run.write_metrics(metrics)
    summary = {k: v for k, v in row.items() if k not in ("sweep_wall_time_s", "predicted_reach", "grad_norms_last_epoch",
                                                         "measured_reach", "config", "reused")}
    run.summary_path.write_text(json.dumps(summary))  # as the train of the earlier version wrote it
    assert run.read_result() == RunResult.from_dict(LEGACY_ROW)
    run.write_metrics(metrics[:1])  # a later session's interrupted metrics: the summary no longer describes them
    with pytest.raises(ResultError, match="epochs_completed is 2, but its metrics give 1"):
        run.read_result()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_sweep_config_survives_sweep_json(preset, tmp_path):
    sweep = SweepConfig.from_preset(preset, backend_options={"shots": 100, "initial_layout": (0, 1, 2, 3)})
    (tmp_path / "sweep.json").write_text(json.dumps(sweep.to_dict()))
    assert SweepConfig.from_dict(json.loads((tmp_path / "sweep.json").read_text())) == sweep


def test_a_sweep_json_without_a_field_is_refused_in_one_line():
    values = SweepConfig.from_preset("quick").to_dict()
    del values["lr"]
    with pytest.raises(QresnetError, match="has no field 'lr'"):
        SweepConfig.from_dict(values, "sweep.json")


@pytest.mark.parametrize("module", ["qresnet.run.result", "qresnet.run.rundir", "qresnet.run.cost", "qresnet.study.report"])
def test_results_and_reports_import_without_torch(module):
    code = f"import {module}, sys; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
