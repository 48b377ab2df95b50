import csv
import dataclasses
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from qresnet import cli
from qresnet.errors import QresnetError
from qresnet.study.sweep import SweepConfig, SweepResult, run_dir, run_sweep, slug
from qresnet.study.execute import _worker_init
from qresnet.study.report import write_comparison_report

TINY = dict(classes=(0, 1), per_class=10, epochs=2, batch_size=8, lr=0.05, configs="none;O1+O2", seeds=(0,))


def test_tiny_comparison_writes_every_report_file(tmp_path):
    sweep = SweepConfig.from_preset("quick", backends=("aer", "aer:fake_manila"), **TINY)
    result = run_sweep(sweep, tmp_path, progress=False)
    assert len(result.runs) == 2 * 2 * 2
    report = write_comparison_report(result, tmp_path)
    for name in ("report.md", "results.csv", "results.json", "accuracy.png", "grad_norms.png", "curves.png",
                 "ideal_vs_noisy.png"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    text = report.read_text()
    assert "## aer" in text and "## aer:fake_manila minus aer" in text and "`O1+O2`" in text
    with open(tmp_path / "results.csv") as handle:
        results = list(csv.DictReader(handle))
    assert len(results) == 8
    data = json.loads((tmp_path / "results.json").read_text())
    by = {(r["backend"], r["config"], r["frozen"]): r for r in data["results"]}
    # which layers learn: measured in the trainable runs, as the rule predicts
    assert by[("aer", "none", False)]["measured_reach"] == [False, True]
    assert by[("aer", "O1+O2", False)]["measured_reach"] == [True, True]
    assert by[("aer", "O1+O2", True)]["measured_reach"] is None  # frozen runs train no quantum weight
    # the files are the sweep's serialisation: its configuration and every run's result read back equal
    assert SweepConfig.from_dict(json.loads((tmp_path / "sweep.json").read_text())) == sweep
    assert SweepResult.read(tmp_path / "results.json") == result


def test_an_interrupted_sweep_reuses_finished_runs(tmp_path):
    sweep = SweepConfig.from_preset("quick", backends=("aer",), **TINY)
    first = run_sweep(sweep, tmp_path, progress=False)
    redo = run_dir(tmp_path, "aer", "O1+O2", True)
    # as if the sweep died during this run's last epoch: no summary, no last checkpoint
    (redo / "summary.json").unlink()
    (redo / "checkpoints" / "epoch_002.pt").unlink()
    second = run_sweep(sweep, tmp_path, progress=False)
    assert (redo / "checkpoints" / "epoch_002.pt").is_file()  # epoch 2 was trained again, from epoch 1
    reused = {(r.config, r.frozen): r.reused for r in second.runs}
    assert reused.pop(("O1+O2", True)) is False and all(reused.values())
    assert [r.final_test_acc for r in first.runs] == [r.final_test_acc for r in second.runs]
    # the runs' own figures, asked for once the sweep is finished: drawn from their metrics, nothing trained again
    assert not any(Path(tmp_path, r.run_dir, "curves.png").exists() for r in second.runs)
    third = run_sweep(dataclasses.replace(sweep, run_curves=True), tmp_path, progress=False)
    assert all(r.reused for r in third.runs)
    assert all(Path(tmp_path, r.run_dir, "curves.png").stat().st_size > 0 for r in third.runs)


def test_parallel_jobs_give_the_serial_results(tmp_path):
    sweep = SweepConfig.from_preset("quick", backends=("aer",), **{**TINY, "configs": "O1+O2"})
    serial = run_sweep(sweep, tmp_path / "serial", progress=False)
    parallel = run_sweep(sweep, tmp_path / "parallel", jobs=2, progress=False)
    assert [r.final_test_acc for r in serial.runs] == [r.final_test_acc for r in parallel.runs]


def _blas_threads() -> list[int]:
    """The threads of every BLAS library loaded here, scipy's (loaded after a worker starts) included."""
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_a_sweep_worker_runs_one_blas_thread():
    """--jobs N workers share N cores: each runs one BLAS thread, in the libraries loaded before it started and
    in those loaded after."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),)) as pool:
        threads = pool.submit(_blas_threads).result()
    assert len(threads) >= 1 and all(t == 1 for t in threads), threads


def test_presets_and_bad_values():
    paper = SweepConfig.from_preset("paper")
    assert tuple(c.notation for c in paper.configs) == ("none", "X+O1", "O1+O2", "X+O2", "(X+O1)+O2")
    assert (paper.dataset, paper.per_class, paper.epochs, paper.batch_size, paper.lr) == ("mnist", 200, 30, 16, 0.01)
    assert [c.notation for c in SweepConfig.from_preset("single").configs] == ["none"] and SweepConfig.from_preset("single").layers == 1
    assert len(SweepConfig.from_preset("quick", configs="all").configs) == 8
    assert slug("(X+O1)+O2") == "pX_O1q_O2"
    with pytest.raises(QresnetError, match="unknown preset"):
        SweepConfig.from_preset("huge")


def test_cli_compare_quick_subset(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["compare", "--seeds", "0", "--configs", "O1+O2", "--backends", "aer", "--classes", "0,1", "--per-class", "8",
                     "--epochs", "1", "--out", str(out)]) == 0
    assert (out / "report.md").is_file()
    assert "trainable - frozen" in capsys.readouterr().out
