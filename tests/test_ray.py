"""Sweeps on Ray: the same results as local processes, workers that die, a driver that dies, no shared filesystem.

The tests start their own Ray cluster on 127.0.0.1 with 2 CPUs (`ray start --head`), inside a
mount namespace where the sweeps' output directory is hidden under an empty tmpfs: a task that
wrote under ``--out`` would write into that tmpfs, which the driver never sees. ``ray stop``
ends it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# Read by Ray when it is imported: every address stays on loopback (Ray would otherwise replace 127.0.0.1 by the
# machine's interface address), and this module's cluster authenticates its clients with its own token.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0"}
os.environ.update(RAY_ENV)
os.environ.pop("RAY_ADDRESS", None)
ray = pytest.importorskip("ray", reason="Ray is the optional extra [ray]: pip install -e '.[ray]'")

from qresnet import cli  # noqa: E402
from qresnet.study.sweep import SweepConfig, run_sweep  # noqa: E402
import torch  # noqa: E402
from reference import equal_to_rounding  # noqa: E402

RAY = Path(sys.executable).parent / "ray"
TINY = dict(classes=(0, 1), per_class=8, epochs=3, batch_size=8, lr=0.05, configs="none;O1+O2", seeds=(0, 1))
SKIP = {"wall_time_s", "sweep_wall_time_s", "reused", "parameter_sets_evaluated_this_session", "steps_this_session",
        "seconds"}


def _numbers(path: Path) -> list[dict]:
    """results.json's rows and each run's metrics, timings aside."""
    rows = json.loads((path / "results.json").read_text())["results"]
    out = []
    for r in rows:
        row = {k: v for k, v in r.items() if k not in SKIP}
        row["metrics"] = [{k: v for k, v in m.items() if k != "seconds"} for m in r["metrics"]]
        out.append(row)
    return out


def _equals_serial(out: Path, serial: list[dict]) -> bool:
    """A resumed run may finish in a smaller stack: losses and norms equal to rounding, accuracies exactly."""
    mine = _numbers(out)
    accuracies = [[(m["train_acc"], m["test_acc"]) for m in r["metrics"]] for r in mine]
    return (equal_to_rounding(mine, serial)
            and accuracies == [[(m["train_acc"], m["test_acc"]) for m in r["metrics"]] for r in serial])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(address, hidden directory or None): a 2-CPU Ray head on 127.0.0.1; sweeps under ``hidden`` are invisible to it."""
    hidden = tmp_path_factory.mktemp("driver-only")
    port = _free_port()
    start = (f"{RAY} start --head --port {port} --node-ip-address 127.0.0.1 --num-cpus 2 --include-dashboard false "
             "--disable-usage-stats")
    env = dict(os.environ)
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           f"mount -t tmpfs tmpfs {hidden} && exec {start}"], env=env, capture_output=True, text=True)
    if done.returncode != 0:  # no mount namespace here: the cluster sees the same files as the driver
        hidden = None
        done = subprocess.run(start.split(), env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    try:
        yield f"127.0.0.1:{port}", hidden
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "S"
    assert cli.main(_argv(out)) == 0
    return _numbers(out)


def _argv(out: Path, *extra: str) -> list[str]:
    return ["compare", "--configs", "none;O1+O2", "--backends", "aer", "--classes", "0,1", "--per-class", "8",
            "--epochs", "3", "--batch-size", "8", "--lr", "0.05", "--seeds", "0,1", "--out", str(out), *extra]


def _task_pids() -> list[int]:
    """Ray worker processes that are running a training task (Ray titles them ``ray::train_task``, or
    ``ray::stack_task`` for a stack)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith((b"ray::train_task", b"ray::stack_task")):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_ray_sweep_equals_the_serial_one_and_writes_from_the_driver(cluster, serial, tmp_path):
    address, hidden = cluster
    out = (hidden or tmp_path) / "ray"
    assert cli.main(_argv(out, "--executor", "ray", "--ray-address", address, "--run-curves")) == 0
    assert _numbers(out) == serial
    for run in (out / "runs" / "aer").iterdir():
        names = {p.name for p in run.iterdir()} | {p.name for p in (run / "checkpoints").iterdir()}
        assert {"config.json", "metrics.csv", "summary.json", "curves.png", "initial.pt", "epoch_003.pt"} <= names
        assert json.loads((run / "summary.json").read_text())["run_dir"] == str(run)
    if hidden is None:
        pytest.skip("no mount namespace on this machine: could not hide --out from the workers")
    # inside the cluster's namespace --out is an empty tmpfs: had a task written there, it would be in it
    raylet = next(pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                  if Path(f"/proc/{pid}/cmdline").exists() and b"raylet" in Path(f"/proc/{pid}/cmdline").read_bytes())
    seen = subprocess.run(["nsenter", "-t", str(raylet), "-m", "find", str(hidden)], capture_output=True, text=True)
    assert seen.returncode == 0 and seen.stdout.split() == [str(hidden)], seen.stdout


def test_a_killed_worker_is_retried_and_the_sweep_still_equals_the_serial_one(cluster, serial, tmp_path):
    address, _ = cluster
    out = tmp_path / "ray"
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            pids = _task_pids()
            if pids:
                time.sleep(0.5)  # inside its run
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one)
    killer.start()
    assert cli.main(_argv(out, "--executor", "ray", "--ray-address", address)) == 0
    killer.join()
    assert killed, "no task was running to be killed"
    assert _equals_serial(out, serial)


def test_a_killed_driver_restarted_finishes_with_the_same_results(cluster, serial, tmp_path):
    address, _ = cluster
    out = tmp_path / "ray"
    # one run per task (--stack 1): eight tasks on the 2-CPU cluster, so most are still to run when the first ones'
    # files are written, and die with the driver (a stack of four writes its runs together as it ends, and two
    # stacks ending together left nothing in flight; a killed stack resuming is tests/test_stack.py's)
    argv = [sys.executable, "-m", "qresnet.cli.main",
            *_argv(out, "--executor", "ray", "--ray-address", address, "--stack", "1")]
    driver = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob("runs/aer/*/summary.json")):  # one run finished, the others in flight
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    driver.kill()
    driver.wait()
    finished = len(list(out.glob("runs/aer/*/summary.json")))
    assert 1 <= finished < 8
    assert cli.main(_argv(out, "--executor", "ray", "--ray-address", address)) == 0
    rows = json.loads((out / "results.json").read_text())["results"]
    assert sum(r["reused"] for r in rows) >= finished
    assert _equals_serial(out, serial)


def test_a_run_that_fails_is_reported_and_the_others_finish(cluster, tmp_path, monkeypatch):
    address, _ = cluster
    sweep = SweepConfig.from_preset("quick", backends=("aer",), **{**TINY, "seeds": (0,)})
    out = tmp_path / "ray"
    run_sweep(sweep, out, progress=False, executor="ray", ray_address=address)
    broken = out / "runs" / "aer" / "none-frozen-seed0"
    # a resume from weights that do not fit the model: that run's own error (one with nothing to resume from
    # starts again from its initial state since issue 22)
    shutil.rmtree(broken / "checkpoints")
    (broken / "summary.json").unlink()
    (broken / "checkpoints").mkdir()
    torch.save({"model": {"bogus": torch.zeros(1)}, "optimizer": {}, "epoch": 1, "batch": 1, "elapsed": 0.0,
                "partial": None}, broken / "checkpoints" / "step.pt")
    from qresnet.errors import SweepError

    with pytest.raises(SweepError) as info:
        run_sweep(sweep, out, progress=False, executor="ray", ray_address=address)
    assert len(info.value.result.runs) == 3 and len(info.value.failures) == 1
    assert "none frozen seed 0" in info.value.failures[0] and "bogus" in info.value.failures[0]


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from qresnet.study.ray_sweep import import_ray
    from qresnet.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pip install -e '\.\[ray\]'"):
        import_ray()
