"""Results that cannot lie: run identity, safe re-runs, sweeps that die with their parent, clean storage failures.

Each test first reproduces a defect found by a hostile but realistic user (issue 12), then checks the fix.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qresnet import cli
from qresnet.config import TrainConfig
from qresnet.errors import RunDirError
from qresnet.study.sweep import SweepConfig, run_dir, run_sweep
from qresnet.run.integrity import resume_point
from qresnet.run.rundir import RunDir
from qresnet.run.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(classes=(0, 1), per_class=8, epochs=2, batch_size=8, lr=0.05, configs="none", seeds=(0,))
SMALL = dict(classes=(0, 1), per_class=8, layers=1, residual="none", epochs=2, batch_size=8, lr=0.05, seed=1)
TRAIN_FLAGS = ["--classes", "0,1", "--per-class", "8", "--layers", "1", "--residual", "none", "--batch-size", "8",
               "--lr", "0.05", "--seed", "1"]


def ctrl_c_back() -> None:
    """A child's SIGINT as Ctrl-C sends it: a child of a non-interactive shell's background job (a suite started
    with `&`) inherits SIGINT ignored, and would never see the interrupt these tests send."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _numbers(result):
    """The sweep's results without timings or paths: what a paper would quote."""
    skip = {"wall_time_s", "run_dir", "reused", "parameter_sets_evaluated_this_session", "steps_this_session"}
    return [{k: v for k, v in r.to_dict().items() if k not in skip}
            | {"metrics": [{k: v for k, v in m.items() if k != "seconds"} for m in r.to_dict()["metrics"]]}
            for r in result.runs]


def _metrics(path: Path):
    return [{k: v for k, v in m.to_row().items() if k != "seconds"} for m in RunDir(path).read_metrics()]


# --- 1. a sweep reuses only runs trained with its own settings; a moved sweep resumes --------------------------

def test_a_sweep_refuses_runs_trained_with_other_settings(tmp_path, capsys):
    out = tmp_path / "C"
    first = SweepConfig.from_preset("quick", backends=("aer",), **TINY)
    run_sweep(first, out, progress=False)
    changed = SweepConfig.from_preset("quick", backends=("aer",), **{**TINY, "lr": 0.5})
    with pytest.raises(RunDirError) as info:
        run_sweep(changed, out, progress=False)
    message = str(info.value)
    assert "2 run(s) trained with other settings" in message
    assert "config.lr: 0.05 -> 0.5" in message and "--overwrite" in message
    # through the command line: one line, a non-zero exit, nothing trained
    argv = ["compare", "--seeds", "0", "--configs", "none", "--backends", "aer", "--classes", "0,1", "--per-class", "8", "--epochs", "2",
            "--batch-size", "8", "--lr", "0.5", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "config.lr: 0.05 -> 0.5" in err and len(err.strip().splitlines()) == 1
    # --overwrite trains them again: the numbers are those of a fresh sweep with the new settings
    again = run_sweep(changed, out, progress=False, overwrite=True)
    fresh = run_sweep(changed, tmp_path / "fresh", progress=False)
    assert _numbers(again) == _numbers(fresh) and not any(r.reused for r in again.runs)


def test_more_epochs_continue_a_sweep_and_fewer_are_refused(tmp_path):
    out = tmp_path / "C"
    short = run_sweep(SweepConfig.from_preset("quick", backends=("aer",), **TINY), out, progress=False)
    longer = run_sweep(SweepConfig.from_preset("quick", backends=("aer",), **{**TINY, "epochs": 3}), out, progress=False)
    assert [r.epochs_completed for r in longer.runs] == [3, 3] and [r.epochs_completed for r in short.runs] == [2, 2]
    fresh = run_sweep(SweepConfig.from_preset("quick", backends=("aer",), **{**TINY, "epochs": 3}), tmp_path / "f",
                      progress=False)
    assert _numbers(longer) == _numbers(fresh)
    with pytest.raises(RunDirError, match="epochs: 3 finished -> 1 asked for"):
        run_sweep(SweepConfig.from_preset("quick", backends=("aer",), **{**TINY, "epochs": 1}), out, progress=False)


def test_a_moved_sweep_resumes_and_reports(tmp_path):
    sweep = SweepConfig.from_preset("quick", backends=("aer",), **TINY)
    first = run_sweep(sweep, tmp_path / "C", progress=False)
    shutil.move(tmp_path / "C", tmp_path / "C2")
    redo = run_dir(tmp_path / "C2", "aer", "none", False)
    (redo / "summary.json").unlink()  # as if it died in its last epoch
    (redo / "checkpoints" / "epoch_002.pt").unlink()
    assert cli.main(["compare", "--seeds", "0", "--configs", "none", "--backends", "aer", "--classes", "0,1", "--per-class", "8",
                     "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--out", str(tmp_path / "C2")]) == 0
    results = json.loads((tmp_path / "C2" / "results.json").read_text())["results"]
    assert [r["run_dir"] for r in results] == ["runs/aer/none-trainable-seed0", "runs/aer/none-frozen-seed0"]
    assert [r["final_test_acc"] for r in results] == [r.final_test_acc for r in first.runs]
    assert [r["reused"] for r in results] == [False, True]


# --- 2. train --out never overwrites a run silently; --resume refuses changed settings -------------------------

def test_train_into_an_existing_run_is_refused(tmp_path, capsys):
    out = str(tmp_path / "R")
    assert cli.main(["train", *TRAIN_FLAGS, "--epochs", "2", "--out", out]) == 0
    before = _metrics(tmp_path / "R")
    assert cli.main(["train", *TRAIN_FLAGS, "--epochs", "1", "--lr", "0.5", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "holds a run already" in err and "--resume" in err and "--overwrite" in err
    assert _metrics(tmp_path / "R") == before  # untouched
    assert cli.main(["train", *TRAIN_FLAGS, "--epochs", "1", "--lr", "0.5", "--out", out, "--overwrite"]) == 0
    recorded = json.loads((tmp_path / "R" / "config.json").read_text())["config"]
    assert recorded["lr"] == 0.5 and len(_metrics(tmp_path / "R")) == 1
    # a directory holding other things is not a run: --overwrite refuses to delete it
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert cli.main(["train", *TRAIN_FLAGS, "--out", str(tmp_path / "other"), "--overwrite"]) == 2
    assert "is not a run directory" in capsys.readouterr().err and (tmp_path / "other" / "notes.txt").is_file()


def test_resume_refuses_changed_settings_and_accepts_more_epochs(tmp_path, capsys):
    out = str(tmp_path / "R")
    assert cli.main(["train", *TRAIN_FLAGS, "--epochs", "2", "--out", out]) == 0
    for flags, field in ((["--lr", "0.5"], "config.lr: 0.05 -> 0.5"), (["--per-class", "12"], "config.per_class: 8 -> 12"),
                         (["--shots", "100"], "config.backend_options.shots: None -> 100")):
        assert cli.main(["train", "--resume", out, *flags]) == 2
        err = capsys.readouterr().err
        assert field in err and "may change only epochs, max_steps, keep_checkpoints, curves, data_dir" in err, err
    assert cli.main(["train", "--resume", out, "--epochs", "3"]) == 0
    whole = tmp_path / "whole"
    train(TrainConfig(**{**SMALL, "epochs": 3}), whole, progress=False)
    assert _metrics(tmp_path / "R") == _metrics(whole)


# --- 3. layouts of the wrong width, out of range or repeated are refused by every command ----------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    train(TrainConfig(**{**SMALL, "epochs": 1}), out, progress=False)
    return out


@pytest.mark.parametrize("layout, message", [
    ("0,1,2", "has 3 qubits, but this run's templates have 4"),
    ("0,1,2,7", "names qubit 7, but"),
    ("0,1,1,2", "uses qubit(s) 1 more than once"),
])
def test_every_command_refuses_a_bad_layout(layout, message, trained, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manila = ["--backend", "aer:fake_manila", "--initial-layout", layout]
    commands = {
        "train": ["train", *TRAIN_FLAGS, "--epochs", "1", *manila, "--out", "T"],
        "grads": ["grads", "--layers", "1", "--configs", "all", *manila],
        "transpile": ["transpile", *manila],
        "compare": ["compare", "--seeds", "0", "--configs", "none", "--backends", "aer:fake_manila", "--classes", "0,1", "--per-class",
                    "8", "--epochs", "1", "--initial-layout", layout, "--out", "C"],
        "jobs submit": ["jobs", "submit", str(trained), "--backend", "local:fake_manila", "--initial-layout", layout,
                        "--dry-run", "--ledger", "l.sqlite"],
    }
    for name, argv in commands.items():
        assert cli.main(argv) == 2, name
        err = capsys.readouterr().err
        expected = "--initial-layout has 3 qubits; quanv" if name == "transpile" and layout == "0,1,2" else message
        assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)
    assert not (tmp_path / "T").exists()


# --- 4. the workers of a sweep die with it -----------------------------------------------------------------------

def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_sigkilled_sweep_leaves_no_worker_behind(tmp_path):
    out = tmp_path / "C"
    argv = [sys.executable, "-m", "qresnet.cli.main", "compare", "--seeds", "0", "--configs", "none;O1+O2", "--backends", "aer",
            "--classes", "0,1", "--per-class", "30", "--epochs", "30", "--jobs", "2", "--out", str(out)]
    sweep = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("runs/aer/*/checkpoints/epoch_*.pt")):  # the workers are training
            assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended or never started training"
            time.sleep(0.2)
        workers = {pid for pid in _children(sweep.pid) if _alive(pid)}
        assert len(workers) >= 2  # two workers (and the executor's resource tracker)
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)]
        checkpoints = sorted(out.glob("runs/aer/*/checkpoints/*"))
        time.sleep(1.0)
        assert sorted(out.glob("runs/aer/*/checkpoints/*")) == checkpoints  # nobody writes any more
    finally:
        if sweep.poll() is None:
            sweep.kill()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_an_interrupted_sweep_stops_without_running_its_queue_and_resumes(tmp_path):
    """SIGINT to `compare --jobs 2` (Ctrl-C, or kill -INT to the sweep alone): it stops after the runs in
    progress, says how many are finished, and the same command finishes the rest."""
    out = tmp_path / "C"
    argv = [sys.executable, "-m", "qresnet.cli.main", "compare", "--seeds", "0-7", "--configs", "none;O1+O2", "--backends",
            "aer", "--classes", "0,1", "--per-class", "10", "--epochs", "3", "--jobs", "2", "--stack", "2", "--out",
            str(out)]  # stacks of 2 trainable runs and their 2 frozen ones: 8 stacks, 2 in progress and at most 3
    # handed to the workers (the pool's call queue), a queue to drop (the default would make 2 stacks of 16)
    sweep = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             preexec_fn=ctrl_c_back)
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("runs/aer/*/summary.json")):  # a first run has finished
            assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended or never finished a run"
            time.sleep(0.1)
        sweep.send_signal(signal.SIGINT)
        _, err = sweep.communicate(timeout=60)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 130 and "runs are finished in" in err and "run the same command again" in err
    finished = len(list(out.glob("runs/aer/*/summary.json")))
    assert 1 <= finished < 32, (finished, err[-300:])  # the queue was not run
    assert subprocess.run(argv, cwd=tmp_path, capture_output=True).returncode == 0
    assert len(list(out.glob("runs/aer/*/summary.json"))) == 32


# --- 5. storage: a damaged newest checkpoint, a full disk -------------------------------------------------------

def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    out = tmp_path / "R"
    train(TrainConfig(**{**SMALL, "epochs": 2}), out, progress=False)
    newest = out / "checkpoints" / "epoch_002.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    assert cli.main(["train", "--resume", str(out), "--epochs", "3"]) == 0
    err = capsys.readouterr().err
    assert f"skipped {newest}: it cannot be read" in err
    whole = tmp_path / "whole"
    train(TrainConfig(**{**SMALL, "epochs": 3}), whole, progress=False)
    assert _metrics(out) == _metrics(whole)  # epoch 2 was trained again from epoch 1
    # jobs submit falls back too, and says which checkpoint it sends
    newest = out / "checkpoints" / "epoch_003.pt"
    newest.write_bytes(b"")
    assert cli.main(["jobs", "submit", str(out), "--backend", "local:fake_manila", "--dry-run",
                     "--ledger", str(tmp_path / "l.sqlite")]) == 0
    printed = capsys.readouterr().out
    assert f"skipped {newest}" in printed and f"submit {out / 'checkpoints' / 'epoch_002.pt'} to local:fake_manila" in printed


def _full_disk(monkeypatch):
    """Every write of a run file fails as on a full disk (where mounting a tiny tmpfs is not allowed)."""
    import errno

    import qresnet.run.rundir as rundir

    real_open = open

    class Full:
        def __init__(self, path, mode):
            self.handle = real_open(path, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(rundir, "open", lambda path, mode="r", *a, **k: Full(path, mode) if "w" in mode
                        else real_open(path, mode, *a, **k), raising=False)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs where the machine allows mounting one (root), else None."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_gives_one_clean_message_and_no_tmp_file(tmp_path, tiny_disk, monkeypatch, capsys):
    where = tiny_disk if tiny_disk is not None else tmp_path / "disk"
    if tiny_disk is None:
        _full_disk(monkeypatch)
    out = where / "R"
    code = cli.main(["train", *TRAIN_FLAGS, "--epochs", "2", "--out", str(out)])
    err = capsys.readouterr().err
    errors = [line.split("\r")[-1] for line in err.splitlines() if "error:" in line]  # the progress bar shares stderr
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("error: cannot write ") and "the disk is full" in errors[0] and "bytes needed" in errors[0]
    assert not list(out.rglob("*.tmp"))


def test_checkpoints_keep_the_state_and_the_last_few(tmp_path):
    out = tmp_path / "R"
    train(TrainConfig(**{**SMALL, "epochs": 6, "keep_checkpoints": 2}), out, progress=False)
    metrics = RunDir(out).read_metrics()
    best = max(metrics, key=lambda m: m.test_acc).epoch
    kept = {int(p.stem.split("_")[1]) for p in RunDir(out).epoch_checkpoints()}
    assert kept == {5, 6, best}
    state = torch.load(out / "checkpoints" / "epoch_006.pt", weights_only=False)
    assert "metrics" not in state and {"model", "optimizer", "epoch", "elapsed"} <= set(state)
    # the kept checkpoints still resume exactly
    train(TrainConfig(**{**SMALL, "epochs": 7, "keep_checkpoints": 2}), out, resume=True, progress=False)
    whole = tmp_path / "whole"
    train(TrainConfig(**{**SMALL, "epochs": 7}), whole, progress=False)
    assert _metrics(out) == _metrics(whole)


# --- 6. the lesser ones -----------------------------------------------------------------------------------------

def test_lesser_bad_inputs_give_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text('classes = "0,1"\n')
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "mnist.npz").write_text("not an archive")
    cases = [
        (["train", "--classes", "0,1,"], "--classes '0,1,' must be comma-separated labels"),
        (["train", "--config", "run.toml"], "classes='0,1' must be a list of labels"),
        (["train", "--residual", ""], "the residual spec is empty"),
        (["train", "--backend", "ibm:"], "for example ibm:ibm_torino"),
        (["train", "--dataset", "mnist", "--data-dir", "mnist"], "is not an .npz archive"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "pickle" not in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "runs").exists()  # a run that could not start leaves no directory


def test_a_long_quantum_head_run_says_so_before_it_starts(tmp_path, capsys):
    from qresnet.backends import resolve_backend
    from qresnet.run.build import build_model, estimated_cost_notes

    config = TrainConfig(head="quantum", layers=1, residual="none", epochs=30, backend="aer:fake_torino")
    model = build_model(config, resolve_backend("aer:fake_torino"), (8, 8), 10)
    notes = estimated_cost_notes(model, config, 1437)
    assert len(notes) == 1 and "10 qubits" in notes[0] and "per training step" in notes[0] and " h for 2700 steps" in notes[0]
    ideal = TrainConfig(head="quantum", layers=1, residual="none", epochs=30)  # the statevector route: fast
    assert estimated_cost_notes(build_model(ideal, resolve_backend("aer"), (8, 8), 10), ideal, 1437) == []
    paper = TrainConfig(head="quantum", layers=1, residual="none", classes=(0, 1, 2, 3))
    assert estimated_cost_notes(build_model(paper, resolve_backend("aer"), (8, 8), 4), paper, 640) == []


def test_ctrl_c_names_the_epochs_that_are_saved(tmp_path):
    out = tmp_path / "R"
    argv = [sys.executable, "-m", "qresnet.cli.main", "train", *TRAIN_FLAGS, "--per-class", "60", "--epochs", "50",
            "--out", str(out)]
    run = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=ctrl_c_back)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "epoch_002.pt").is_file():
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    saved = resume_point(RunDir(out)).epoch - 1  # what a resume finds on disk, whenever the signal landed
    assert run.returncode == 130, err
    assert f"interrupted during epoch {saved + 1}: epochs 1-{saved} are saved in {out}" in err, err
    assert saved >= 2  # the message names the saved epochs as a range


def test_an_interrupt_between_a_row_and_its_checkpoint_names_only_the_saved_epochs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "R"
    save = RunDir.save_checkpoint

    def interrupted_at_epoch_2(self, state, path, **kwargs):
        if path == self.epoch_checkpoint(2):  # metrics.csv already holds epoch 2's row
            raise KeyboardInterrupt
        return save(self, state, path, **kwargs)

    monkeypatch.setattr(RunDir, "save_checkpoint", interrupted_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**{**SMALL, "epochs": 3}), out, progress=False)
    assert len(RunDir(out).read_metrics()) == 2
    assert resume_point(RunDir(out)).epoch == 2  # a resume trains epoch 2 again
    assert f"interrupted during epoch 2: epoch 1 is saved in {out}" in capsys.readouterr().err


@pytest.mark.parametrize("after", ["epoch_001.pt", "epoch_003.pt"])
def test_kill_9_during_training_resumes_bit_identical(after, tmp_path):
    out = tmp_path / "R"
    flags = [*TRAIN_FLAGS, "--per-class", "40", "--epochs", "6"]
    run = subprocess.Popen([sys.executable, "-m", "qresnet.cli.main", "train", *flags, "--out", str(out)], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / after).is_file():
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    run.kill()
    run.wait()
    assert cli.main(["train", "--resume", str(out)]) == 0
    assert cli.main(["train", *flags, "--out", str(tmp_path / "whole")]) == 0
    assert _metrics(out) == _metrics(tmp_path / "whole")
    assert not RunDir(out).tmp_files
