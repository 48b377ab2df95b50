"""Sweeps on Ray: each run one task, workers with no shared filesystem, the driver owning ``--out``.

    qresnet compare --preset quick --seeds 0-2 --executor ray                      # a local Ray instance
    qresnet compare --preset paper --executor ray --ray-address HOST:6379 --data-dir ../shared/data

The driver ships each task what it needs and nothing else: the run's config, the state to resume
from (its checkpoint files, through the object store), and the run's data split (the arrays, put
in the object store once per seed, so MNIST need not exist on the workers). The task trains in a
temporary directory of its own and returns every file of the run directory; the driver writes them
under ``--out``. A task whose worker dies is retried by Ray (:data:`MAX_RETRIES`) and, as every run
resumes from the state it was given and shuffles from (seed, epoch), ends with the numbers of an
uninterrupted run. A run that fails for a reason of its own is reported and does not stop the rest.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qresnet.config import TrainConfig
from qresnet.data import Dataset
from qresnet.errors import ConfigError
from qresnet.run.result import RunResult
from qresnet.run.rundir import RunDir, atomic_write_bytes
from qresnet.run.stack import train_stack
from qresnet.run.train import train

MAX_RETRIES = 3  # a worker that dies (SIGKILL, a lost node) costs a retry; a run's own error costs none
RESUME_FILES = ("config.json", "metrics.csv")  # besides the checkpoints: what a resume reads


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install -e '.[ray]' (ray>=2.40,<3), on the driver and on "
                          "every worker") from None
    return ray


def run_files(run: RunDir) -> dict[str, bytes]:
    """Every file of a run directory, by path relative to it."""
    if not run.path.is_dir():
        return {}
    return {str(p.relative_to(run.path)): p.read_bytes() for p in sorted(run.path.rglob("*"))
            if p.is_file() and not p.name.endswith(".tmp")}


def resume_state(run: RunDir) -> dict[str, bytes]:
    """What a task needs to resume ``run``: its config, metrics and checkpoints (empty for a new run)."""
    if not run.started():
        return {}
    files = run_files(run)
    return {name: data for name, data in files.items() if name in RESUME_FILES or name.startswith("checkpoints/")}


def write_run(run: RunDir, files: dict[str, bytes]) -> None:
    """The task's run directory, as the driver's copy: every file written atomically (in training's order), pruned
    checkpoints removed; the summary names the driver's run directory, not the task's temporary one."""
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    if "summary.json" in files:
        summary = json.loads(files["summary.json"])
        files = {**files, "summary.json": json.dumps({**summary, "run_dir": str(run.path)}, indent=2).encode()}
    # in the order training writes them, so that a driver killed in between leaves a resumable run: config.json, the
    # metrics (a row without its checkpoint is trained again), the checkpoints, the rest, summary.json last
    first = {"config.json": 0, "metrics.csv": 1}
    order = sorted(files, key=lambda n: (first.get(n, 3 if n == "summary.json" else 2 if n.startswith("checkpoints/")
                                                       else 2.5), n))
    for name in order:
        data = files[name]
        path = run.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    for path in run.epoch_checkpoints():
        if str(path.relative_to(run.path)) not in files:
            path.unlink()


def train_task(config: TrainConfig, files: dict[str, bytes], data: Dataset) -> tuple[RunResult, dict[str, bytes], int]:
    """One run on a Ray worker, in a directory of its own: (its result, every file of the run, the worker's pid)."""
    with tempfile.TemporaryDirectory(prefix="qresnet-run-") as tmp:
        run = RunDir(Path(tmp) / "run")
        _unpack(run, files)
        result = train(config, run.path, resume=run.started(), progress=False, data=data)
        return result, run_files(run), os.getpid()


def _unpack(run: RunDir, files: dict[str, bytes]) -> None:
    for name, blob in files.items():
        path = run.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)


def stack_task(configs: list[TrainConfig], files: list[dict[str, bytes]], data: list[Dataset]
               ) -> tuple[list[RunResult | str], list[dict[str, bytes]], int]:
    """One stack on a Ray worker (:func:`train_stack`), each run in a directory of its own: (per run its result or
    why it failed, per run every file of it, the worker's pid)."""
    with tempfile.TemporaryDirectory(prefix="qresnet-stack-") as tmp:
        runs = [RunDir(Path(tmp) / f"run{k}") for k in range(len(configs))]
        for run, blobs in zip(runs, files):
            _unpack(run, blobs)
        results = train_stack(configs, [run.path for run in runs], data)
        return ([r if isinstance(r, RunResult) else str(r) for r in results], [run_files(run) for run in runs],
                os.getpid())


def run_on_ray(
    units: Sequence[tuple[Sequence[tuple[int, TrainConfig, Path, int]], bool]],
    data: dict[int, Dataset],
    record: Callable[[int, RunResult], None],
    fail: Callable[[int, str], None],
    address: str | None = None,
) -> None:
    """Run ``units`` as Ray tasks: a unit (items (plan index, config, run directory, seed), stacked) trains its one
    item alone, or its items as a stack (one task); ``record`` each finished run's result as it comes in, ``fail`` each run that
    raised. Connects to ``address`` (or ``RAY_ADDRESS``), else starts Ray."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        local = address is None and not os.environ.get("RAY_ADDRESS")
        extra = {"_node_ip_address": "127.0.0.1"} if local else {}  # a local instance listens on loopback only
        # "local": a new instance of our own, never a cluster another process started on this machine
        ray.init(address="local" if local else address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, **extra)
    try:
        options = {"num_cpus": 1, "max_retries": MAX_RETRIES, "retry_exceptions": False}
        task, stacked = ray.remote(**options)(train_task), ray.remote(**options)(stack_task)
        data_refs = {seed: ray.put(d) for seed, d in data.items()}  # once per seed, not once per task or retry
        pending = {}
        for unit, stack in units:
            if not stack:
                index, config, directory, seed = unit[0]
                ref = task.remote(config, ray.put(resume_state(RunDir(directory))), data_refs[seed])
            else:  # a list of object refs inside an argument is not resolved by Ray: the arrays go by value
                ref = stacked.remote([item[1] for item in unit], [resume_state(RunDir(item[2])) for item in unit],
                                     [data[item[3]] for item in unit])
            pending[ref] = (unit, stack)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                unit, stack = pending.pop(ref)
                try:
                    results, files, _ = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the run's own error, raised in the task
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    for item in unit:
                        fail(item[0], f"{type(cause).__name__}: {cause}")
                    continue
                except ray.exceptions.RayError as exc:  # the worker died more often than the retries allow
                    for item in unit:
                        fail(item[0], f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                    continue
                if not stack:
                    results, files = [results], [files]
                for (index, _, directory, _), result, blobs in zip(unit, results, files):
                    if blobs:  # a run that failed before its directory was made has none
                        write_run(RunDir(directory), blobs)
                    if isinstance(result, RunResult):
                        record(index, result)
                    else:
                        fail(index, result)
    finally:
        if started_here:
            ray.shutdown()
