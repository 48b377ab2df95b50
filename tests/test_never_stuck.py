"""Never stuck, never forged (issue 22): a kill at any instant resumes, two processes on one output take turns,
an edited run is noticed, a diverging run says so.

Each test kills or edits at the named moment, then checks against an uninterrupted run or an untouched one.
The kills are exact: the killed process runs the real command with a hook that SIGKILLs it at that moment.
"""

from __future__ import annotations

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
r.studies = lambda budget="tiny", data_dir=None: {"single": SweepConfig.from_preset(
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
    return [{k: v for k, v in m.items() if k != "seconds"} for m in RunDir(path).read_metrics()]


def _results(out: Path) -> list[dict]:
    rows = json.loads((out / "results.json").read_text())["results"]
    return [{k: ([{f: x for f, x in m.items() if f != "seconds"} for m in v] if k == "metrics" else v)
             for k, v in r.items() if k not in TIMING} for r in rows]


# --- 1. a kill at any instant resumes ---------------------------------------------------------------------------

def test_a_sweep_killed_in_its_first_epoch_finishes_with_the_same_command(tmp_path):
    argv = ["compare", *COMPARE_FLAGS, "--out", str(tmp_path / "D")]
    killed = subprocess.run(_command(KILL_IN_FIRST_EPOCH, argv), cwd=tmp_path, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    run = RunDir(tmp_path / "D" / "runs" / "aer" / "none-trainable-seed0")
    assert run.config_path.is_file() and not run.epoch_checkpoints()  # the moment of the issue
    assert (tmp_path / "D" / LOCK_NAME).is_file()  # left by the dead sweep: taken over below
    assert cli.main(argv) == 0
    assert cli.main(["compare", *COMPARE_FLAGS, "--out", str(tmp_path / "whole")]) == 0
    assert _results(tmp_path / "D") == _results(tmp_path / "whole")
    assert not list((tmp_path / "D").rglob(LOCK_NAME)) and not list((tmp_path / "D").rglob("*.tmp"))


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
