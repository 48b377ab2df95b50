"""Never stuck, never forged (issue 22): a kill at any instant resumes, two processes on one output take turns,
an edited run is noticed, a diverging run says so.

Each test kills or edits at the named moment, then checks against an uninterrupted run or an untouched one.
The kills are exact: the killed process runs the real command with a hook that SIGKILLs it at that moment.
"""

from __future__ import annotations

import dataclasses

import json
import os
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
from qresnet.errors import CredentialsError, LockedError, RunDirError
from qresnet.run.lock import LOCK_NAME, OutputLock, filesystem_type
from qresnet.run.rundir import RunDir
from qresnet.run.train import train
from qresnet.study.sweep import SweepConfig, run_sweep

SMALL = dict(classes=(0, 1), per_class=8, layers=1, residual="none", epochs=2, batch_size=8, lr=0.05, seed=1)
TRAIN_FLAGS = ["--classes", "0,1", "--per-class", "8", "--layers", "1", "--residual", "none", "--batch-size", "8",
               "--lr", "0.05", "--seed", "1", "--epochs", "2"]
COMPARE_FLAGS = ["--configs", "none", "--backends", "aer", "--seeds", "0", "--classes", "0,1", "--per-class", "8",
                 "--layers", "1", "--epochs", "2", "--batch-size", "8", "--lr", "0.05"]
TINY = dict(classes=(0, 1), per_class=8, layers=1, configs="none", epochs=2, batch_size=8, lr=0.05, seeds=(0,),
            backends=("aer",))
TIMING = {"seconds", "wall_time_s", "sweep_wall_time_s", "reused", "parameter_sets_evaluated_this_session",
          "steps_this_session", "run_dir"}

# hooks run in the killed process before the command: each SIGKILLs it at one moment
KILL_IN_FIRST_EPOCH = """
import os, signal, torch
_step, _calls = torch.optim.Adam.step, []
def _dies(self, *a, **k):
    _calls.append(1)
    if len(_calls) == 2:  # the second optimizer step of the first run: inside its first epoch
        os.kill(os.getpid(), signal.SIGKILL)
    return _step(self, *a, **k)
torch.optim.Adam.step = _dies
"""
KILL_WRITING_INITIAL = """
import os, signal
_replace = os.replace
def _dies(src, dst, *a, **k):
    if str(dst).endswith("initial.pt"):  # half of the first checkpoint is on disk, not yet renamed
        with open(src, "rb+") as f:
            f.truncate(os.path.getsize(src) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *a, **k)
os.replace = _dies
"""
TINY_REPRODUCTION = """
import qresnet.study.reproduce as r
from qresnet.study.sweep import SweepConfig
r.studies = lambda budget="tiny", data_dir=None, seeds=None: {"single": SweepConfig.from_preset(
    "single", dataset="digits", classes=(0, 1), per_class=6, epochs=2, batch_size=4, seeds=(0,), backends=("aer",),
    lr=0.05)}
r.VARIANTS = ()
r.audits = lambda budget, backends=(): {}  # the gradient audit is not what this test is about
"""
HOLD_AFTER_STUDIES = TINY_REPRODUCTION + """
import os, time
def _held(budget, backends=()):  # the studies are done: hold the lock until the test says go
    while not os.path.exists("go"):
        time.sleep(0.05)
    return {}
r.audits = _held
"""


def _command(hook: str, argv: list[str]) -> list[str]:
    script = hook + "\nimport sys\nfrom qresnet.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    return [sys.executable, "-c", script, *argv]


def _metrics(path: Path) -> list[dict]:
    return [{k: v for k, v in m.to_row().items() if k != "seconds"} for m in RunDir(path).read_metrics()]


def _results(out: Path) -> list[dict]:
    rows = json.loads((out / "results.json").read_text())["results"]
    return [{k: ([{f: x for f, x in m.items() if f != "seconds"} for m in v] if k == "metrics" else v)
             for k, v in r.items() if k not in TIMING} for r in rows]


# --- 1. a kill at any instant resumes ---------------------------------------------------------------------------

def test_a_sweep_killed_in_its_first_epoch_finishes_with_the_same_command(tmp_path):
    # each run alone (--stack 1): compared bit for bit with `train --resume` below (tests/test_stack.py kills a stack)
    argv = ["compare", *COMPARE_FLAGS, "--stack", "1", "--out", str(tmp_path / "D")]
    killed = subprocess.run(_command(KILL_IN_FIRST_EPOCH, argv), cwd=tmp_path, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    run = RunDir(tmp_path / "D" / "runs" / "aer" / "none-trainable-seed0")
    assert run.config_path.is_file() and not run.epoch_checkpoints()  # the moment of the issue
    assert (tmp_path / "D" / LOCK_NAME).is_file()  # left by the dead sweep: taken over below
    shutil.copytree(tmp_path / "D", tmp_path / "copy")  # for --overwrite and --resume below
    assert cli.main(argv) == 0
    whole = run_sweep(SweepConfig.from_preset("quick", **TINY), tmp_path / "whole", progress=False, stack=1)  # uninterrupted
    expected = [{k: ([{f: x for f, x in m.items() if f != "seconds"} for m in v] if k == "metrics" else v)
                 for k, v in r.to_dict().items() if k not in TIMING} for r in whole.runs]
    assert [{k: v for k, v in r.items() if k in expected[0]} for r in _results(tmp_path / "D")] == expected
    assert [_metrics(tmp_path / "D" / r.run_dir) for r in whole.runs] == [_metrics(tmp_path / "whole" / r.run_dir)
                                                                       for r in whole.runs]
    assert not list((tmp_path / "D").rglob(LOCK_NAME)) and not list((tmp_path / "D").rglob("*.tmp"))
    # the other ways out of the same moment: the stuck run alone with --resume, the sweep with --overwrite
    alone = tmp_path / "alone"
    shutil.copytree(tmp_path / "copy" / run.path.relative_to(tmp_path / "D"), alone)
    assert cli.main(["train", "--resume", str(alone)]) == 0
    assert _metrics(alone) == _metrics(tmp_path / "whole" / run.path.relative_to(tmp_path / "D"))
    overwritten = run_sweep(SweepConfig.from_preset("quick", **TINY), tmp_path / "copy", progress=False, overwrite=True,
                            stack=1)
    assert [_metrics(tmp_path / "copy" / r.run_dir) for r in overwritten.runs] == \
           [_metrics(tmp_path / "whole" / r.run_dir) for r in whole.runs]


def test_a_run_killed_writing_its_first_checkpoint_resumes_or_is_replaced(tmp_path, capsys):
    out = tmp_path / "R"
    killed = subprocess.run(_command(KILL_WRITING_INITIAL, ["train", *TRAIN_FLAGS, "--out", str(out)]), cwd=tmp_path,
                            capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    stuck = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert stuck == [LOCK_NAME, "checkpoints/initial.pt.tmp", "config.json"]
    assert cli.main(["train", *TRAIN_FLAGS, "--out", str(tmp_path / "whole")]) == 0
    for how in (["--resume"], ["--overwrite", "--out"]):
        copy = tmp_path / how[0].strip("-")
        shutil.copytree(out, copy)
        flags = ["--resume", str(copy)] if how == ["--resume"] else [*TRAIN_FLAGS, "--overwrite", "--out", str(copy)]
        assert cli.main(["train", *flags]) == 0, capsys.readouterr().err
        assert _metrics(copy) == _metrics(tmp_path / "whole")
        initial = [torch.load(p / "checkpoints" / "initial.pt", weights_only=False)["model"] for p in (copy, tmp_path / "whole")]
        assert all(torch.equal(initial[0][k], initial[1][k]) for k in initial[1])  # the pair's shared start, rebuilt
        assert not RunDir(copy).tmp_files
    assert "starting it again from the initial weights its seed builds" in capsys.readouterr().err
    # what an older version left (no config.json yet, only the half-written checkpoint): as good as empty
    debris = tmp_path / "debris"
    (debris / "checkpoints").mkdir(parents=True)
    (debris / "checkpoints" / "initial.pt.tmp").write_bytes(b"half")
    assert cli.main(["train", *TRAIN_FLAGS, "--out", str(debris)]) == 0
    assert _metrics(debris) == _metrics(tmp_path / "whole")


# --- 2. two processes on one output take turns -----------------------------------------------------------------

def test_two_reproductions_on_one_out_take_turns(tmp_path, capsys):
    """Three reproductions on one --out: the first holds it; the second, started meanwhile, refuses at once in
    one line naming the holder; the third waits with --wait, then finds every run done. The runs equal a sweep
    of the same study that nobody shared."""
    out = tmp_path / "S"
    argv = ["reproduce", "--budget", "tiny", "--out", str(out)]
    first = subprocess.Popen(_command(HOLD_AFTER_STUDIES, argv), cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    waiter = None
    try:
        deadline = time.monotonic() + 120
        while not (out / "single" / "results.json").is_file():  # the first holds the lock, its study done
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()[-500:]
            time.sleep(0.05)
        waiter = subprocess.Popen(_command(TINY_REPRODUCTION, [*argv, "--wait"]), cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        second = cli.main(argv)  # in this process: studies as the hook sets them, but it never gets that far
        refusal = capsys.readouterr().err
        waiting = waiter.stderr.readline()  # the waiter's first words
        (tmp_path / "go").touch()
        _, first_err = first.communicate(timeout=120)
        _, waiter_err = waiter.communicate(timeout=120)
    finally:
        for process in (first, waiter):
            if process is not None and process.poll() is None:
                process.kill()
    assert second == 2 and len(refusal.strip().splitlines()) == 1, refusal
    assert f"error: {out} is in use by process {first.pid} (" in refusal and "started 20" in refusal
    assert "--wait" in refusal
    assert waiting.startswith(f"waiting for process {first.pid} ("), waiting
    assert first.returncode == 0 and waiter.returncode == 0, (first_err[-500:], waiter_err[-500:])
    assert json.loads((out / "claims.json").read_text())["claims"]
    alone = SweepConfig.from_preset("single", dataset="digits", classes=(0, 1), per_class=6, epochs=2, batch_size=4,
                                    seeds=(0,), backends=("aer",), lr=0.05)
    run_sweep(alone, tmp_path / "alone", progress=False)
    runs = sorted(p.parent.relative_to(out / "single") for p in (out / "single" / "runs").rglob("config.json"))
    assert len(runs) == 2
    assert [_metrics(out / "single" / r) for r in runs] == [_metrics(tmp_path / "alone" / r) for r in runs]
    reused = json.loads((out / "single" / "results.json").read_text())["results"]
    assert all(r["reused"] for r in reused)  # the waiter trained nothing again
    assert not list(out.rglob(LOCK_NAME))


def test_a_lock_names_its_holder_is_taken_over_from_the_dead_and_can_be_waited_for(tmp_path, capsys):
    out = tmp_path / "O"
    holder = [sys.executable, "-c", "import sys, time\nfrom qresnet.run.lock import OutputLock\n"
              "with OutputLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(float(sys.argv[2]))\n"]
    alive = subprocess.Popen([*holder, str(out), "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert alive.stdout.readline() == "held\n"
        with pytest.raises(LockedError) as info:
            with OutputLock(out):
                pass
        assert f"{out} is in use by process {alive.pid} (" in str(info.value) and "started 20" in str(info.value)
        alive.kill()  # kill -9: the kernel drops its lock; the file it wrote stays behind
        alive.wait()
    finally:
        alive.kill()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == alive.pid
    with OutputLock(out):  # taken over
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
        with OutputLock(out):  # this process again (a study inside a reproduction): reentrant
            pass
        assert (out / LOCK_NAME).is_file()
    assert not (out / LOCK_NAME).exists()
    brief = subprocess.Popen([*holder, str(out), "1.5"], stdout=subprocess.PIPE, text=True)
    assert brief.stdout.readline() == "held\n"
    began = time.monotonic()
    with OutputLock(out, wait=True):
        assert time.monotonic() - began > 1.0  # the holder kept it 1.5 s after saying so
    brief.wait()
    assert f"waiting for process {brief.pid}" in capsys.readouterr().err
    # a block that fails leaves no directory the lock made
    with pytest.raises(ValueError):
        with OutputLock(tmp_path / "new" / "deeper"):
            raise ValueError
    assert not (tmp_path / "new").exists()


def test_a_lock_on_a_network_filesystem_says_what_it_cannot_do(tmp_path, monkeypatch, capsys):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\nserver:/export /mnt/shared nfs4 rw,relatime 0 0\n")
    assert filesystem_type(Path("/mnt/shared/sweeps/out"), str(mounts)) == "nfs4"
    assert filesystem_type(Path("/mnt/sharedother"), str(mounts)) == "ext4"
    import qresnet.run.lock as lock

    monkeypatch.setattr(lock, "filesystem_type", lambda path: "nfs4")
    with OutputLock(tmp_path / "out"):
        pass
    err = capsys.readouterr().err
    assert "network filesystem (nfs4)" in err and "not processes on other machines" in err


# --- 3. an edited run is refused or reported, naming the field --------------------------------------------------

@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished two-run sweep (trainable and frozen), never touched: each test edits its own copy. Each run alone
    (stack=1): a test resumes one with `train --resume` and compares it bit for bit with `train`."""
    out = tmp_path_factory.mktemp("sweep") / "C"
    run_sweep(SweepConfig.from_preset("quick", **TINY), out, progress=False, stack=1)
    return out


def _edit_config(run: Path, lr: float, blocks: tuple[str, ...]) -> None:
    record = json.loads((run / "config.json").read_text())
    for block in blocks:
        (record["config"] if block == "config" else record["identity"]["config"])["lr"] = lr
    (run / "config.json").write_text(json.dumps(record, indent=2))


def test_an_edited_config_is_refused_naming_the_field(sweep, tmp_path, capsys):
    trainable = Path("runs") / "aer" / "none-trainable-seed0"
    # the lr edited in the config block only: the identity derived from it disagrees with the stored one
    one = tmp_path / "one"
    shutil.copytree(sweep, one)
    _edit_config(one / trainable, 0.5, ("config",))
    with pytest.raises(RunDirError) as info:
        run_sweep(SweepConfig.from_preset("quick", **TINY), one, progress=False)
    assert "config.lr is 0.05 in its identity block, 0.5 in its config" in str(info.value)
    # both blocks forged, and a sweep asking for the forged lr: the checkpoints say what it was trained with
    both = tmp_path / "both"
    shutil.copytree(sweep, both)
    _edit_config(both / trainable, 0.5, ("config", "identity"))
    with pytest.raises(RunDirError) as info:
        run_sweep(SweepConfig.from_preset("quick", **{**TINY, "lr": 0.5}), both, progress=False)
    assert "config.lr is 0.05 in checkpoints/initial.pt, 0.5 in config.json" in str(info.value)
    # and a resume of it, which would train with the old lr and record the new one
    assert cli.main(["train", "--resume", str(both / trainable), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "config.lr is 0.05 in checkpoints/initial.pt, 0.5 in config.json" in err and len(err.strip().splitlines()) == 1
    assert not (both / trainable / "checkpoints" / "epoch_003.pt").exists()


def test_edited_metrics_are_reported_and_never_carried_forward(sweep, tmp_path, capsys):
    trainable = Path("runs") / "aer" / "none-trainable-seed0"
    out = tmp_path / "M"
    shutil.copytree(sweep, out)
    run = RunDir(out / trainable)
    rows = run.read_metrics()
    true_acc = rows[0].test_acc
    rows[0] = dataclasses.replace(rows[0], test_acc=0.987)
    run.write_metrics(rows)
    with pytest.raises(RunDirError) as info:  # a sweep does not reuse it, nor its summary, nor its report rows
        run_sweep(SweepConfig.from_preset("quick", **TINY), out, progress=False)
    assert f"metrics.csv epoch 1 test_acc is 0.987, training recorded {true_acc} (checkpoints/epoch_002.pt)" in \
        str(info.value)
    summary = json.loads(run.summary_path.read_text())
    summary["final_test_acc"] = 0.999
    run.summary_path.write_text(json.dumps(summary))
    with pytest.raises(RunDirError, match="summary.json final_test_acc is 0.999, training recorded"):
        run_sweep(SweepConfig.from_preset("quick", **TINY), out, progress=False)
    # a resume reports it, continues from what training recorded, and rewrites metrics.csv from that record
    assert cli.main(["train", "--resume", str(run.path), "--epochs", "3"]) == 0
    captured = capsys.readouterr()
    assert "resume: metrics.csv epoch 1 test_acc is 0.987" in captured.err and "the recorded value is used" in captured.err
    config = SweepConfig.from_preset("quick", **{**TINY, "epochs": 3}).runs()[0].config
    whole = train(config, tmp_path / "whole", progress=False)
    assert _metrics(run.path) == _metrics(tmp_path / "whole")
    assert json.loads(run.summary_path.read_text())["best_test_acc"] == whole.best_test_acc != 0.987


# --- 4. a diverging run says so --------------------------------------------------------------------------------

def test_a_huge_learning_rate_warns_once(tmp_path, capsys):
    assert cli.main(["train", *TRAIN_FLAGS, "--lr", "1e6", "--out", str(tmp_path / "R")]) == 0
    err = capsys.readouterr().err
    warnings = [line.split("\r")[-1] for line in err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "the run is diverging; lower --lr (now 1e+06)" in warnings[0], err
    assert "more than 10x its start" in warnings[0]
    # a rate that overflows the weights: stopped at the step that did it, nothing of it saved
    from qresnet.errors import TrainingError

    with pytest.raises(TrainingError, match=r"became non-finite at epoch \d+, step \d+: training stopped before saving"):
        train(TrainConfig(**{**SMALL, "lr": 1e300}), tmp_path / "O", progress=False)
    state, _ = RunDir(tmp_path / "O").latest_state()
    saved = RunDir(tmp_path / "O").read_metrics()
    assert (state["epoch"] if state else 0) == len(saved)
    assert all(torch.isfinite(torch.tensor(list(m.values()), dtype=torch.float64)).all() for m in saved)
    assert state is None or all(bool(torch.isfinite(v).all()) for v in state["model"].values())


def test_a_nan_in_the_data_ends_in_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import qresnet.run.train as training

    real = training.load_dataset

    def poisoned(config):
        data = real(config)
        data.x_test[3, 2, 2] = float("nan")
        return data

    monkeypatch.setattr(training, "load_dataset", poisoned)
    out = tmp_path / "runs" / "R"
    assert cli.main(["train", *TRAIN_FLAGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the test images hold 1 non-finite value(s) (NaN or inf), the first in image 3")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_a_loss_that_becomes_nan_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import torch.nn.functional as F

    from qresnet.data import load_dataset
    from qresnet.errors import TrainingError

    config = TrainConfig(**SMALL)
    steps = -(-len(load_dataset(config.data_config()).y_train) // config.batch_size)
    real, calls = F.cross_entropy, []

    def nan_in_epoch_two(logits, *args, **kwargs):
        loss = real(logits, *args, **kwargs)
        if logits.requires_grad:  # a training step, not an evaluation
            calls.append(1)
            if len(calls) == steps + 2:  # epoch 2, step 2
                return loss * float("nan")
        return loss

    monkeypatch.setattr(F, "cross_entropy", nan_in_epoch_two)
    with pytest.raises(TrainingError) as info:
        train(config, tmp_path / "R", progress=False)
    assert str(info.value).startswith("the loss became nan at epoch 2, step 2: training stopped")
    state, _ = RunDir(tmp_path / "R").latest_state()
    assert state["epoch"] == 1 and all(bool(torch.isfinite(v).all()) for v in state["model"].values())
    assert len(RunDir(tmp_path / "R").read_metrics()) == 1


# --- 5. the lesser leaks ----------------------------------------------------------------------------------------

def test_a_client_error_on_bad_credentials_is_named_in_the_users_terms():
    from qresnet.backends import IBMCredentials, Secret, connect_service

    class Confused:  # qiskit-ibm-runtime on an instance that starts like a CRN and is not one
        def __init__(self, **kwargs):
            raise AttributeError("'NoneType' object has no attribute 'group'")

    for instance, expected in (("crn:v1", "QISKIT_IBM_INSTANCE 'crn:v1' is not a whole CRN"),
                               (None, "the client could not use this token and instance")):
        with pytest.raises(CredentialsError) as info:
            connect_service(IBMCredentials(Secret("tok-0123456789"), instance), service_factory=Confused)
        message = str(info.value)
        assert expected in message and "AttributeError" not in message and "NoneType" not in message, message


def test_a_refused_jobs_command_creates_no_ledger(tmp_path, capsys):
    ledger = tmp_path / "new" / "jobs.sqlite"
    assert cli.main(["jobs", "submit", str(tmp_path / "nothing"), "--backend", "local:fake_manila",
                     "--ledger", str(ledger)]) == 2
    assert "has no config.json" in capsys.readouterr().err
    assert cli.main(["jobs", "list", "--ledger", str(ledger)]) == 0
    assert not (tmp_path / "new").exists()
