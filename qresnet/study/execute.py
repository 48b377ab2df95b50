"""Where a sweep's runs train: in this process, in ``--jobs`` worker processes, or as Ray tasks; alone or stacked.

:func:`execute` takes the sweep's units of work (:class:`Work`: one run alone, today's path, or a stack of runs of
one shape, :mod:`qresnet.run.stack`) and reports each run's result or failure as it comes in. Workers die with
the sweep, however it dies.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from qresnet.data import Dataset
from qresnet.errors import QresnetError
from qresnet.run.result import RunResult

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class Work:
    """One unit of a sweep: plan indices, trained alone (one index, today's path) or as one stack."""

    indices: tuple[int, ...]
    stacked: bool


def _worker_init(parent: int) -> None:
    """A sweep worker dies with the sweep, however the sweep dies (SIGKILL included), and runs one BLAS thread:
    ``--jobs N`` workers share N cores, and BLAS threads spinning for a core another worker holds slowed a
    stack's epoch by a fifth (the libraries loaded later read the variable, those loaded already are told)."""
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"
    threadpool_limits(1)
    if sys.platform.startswith("linux"):  # the kernel kills the worker when its parent dies
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="watch-parent").start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:  # elsewhere than Linux: poll; re-parented means the parent is gone
        time.sleep(0.5)
    os._exit(1)


def execute(works: Sequence[Work], plan: Sequence[Any], out: Path, data: dict[int, Dataset], jobs: int, executor: str,
            ray_address: str | None, record: Callable[[int, RunResult], None], fail: Callable[[int, str], None],
            run_one: Callable[..., RunResult], run_stack: Callable[..., list], finished: Callable[[], int]) -> None:
    """Train every unit of ``works`` (``plan`` entries are the sweep's :class:`PlannedRun`); ``record`` or ``fail``
    each run. ``run_one(config, directory[, data])`` trains a run alone, ``run_stack(configs, directories[, data])``
    a stack (per run a result or a failure line); ``finished()`` counts the finished runs (for an interruption)."""

    def submit(run: Any, work: Work, with_data: bool) -> Any:
        members = [plan[i] for i in work.indices]
        dirs = [str(p.directory(out)) for p in members]
        if not work.stacked:
            return run(run_one, members[0].config, dirs[0], *([data[members[0].seed]] if with_data else []))
        return run(run_stack, [p.config for p in members], dirs, *([[data[p.seed] for p in members]] if with_data else []))

    def deliver(work: Work, outcome: Any) -> None:
        for i, result in zip(work.indices, outcome if work.stacked else [outcome]):
            if isinstance(result, RunResult):
                record(i, result)
            else:
                fail(i, result)

    def failed(work: Work, exc: QresnetError) -> None:
        for i in work.indices:
            fail(i, str(exc))

    if executor == "ray":
        from qresnet.study.ray_sweep import run_on_ray

        run_on_ray([([(i, plan[i].config, plan[i].directory(out), plan[i].seed) for i in w.indices], w.stacked)
                    for w in works], data, record, fail, ray_address)
    elif jobs <= 1:
        for work in works:
            try:
                deliver(work, submit(lambda f, *a: f(*a), work, with_data=True))
            except QresnetError as exc:
                failed(work, exc)
    else:
        context = multiprocessing.get_context("spawn")  # torch and the simulators do not survive fork well
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_init,
                                   initargs=(os.getpid(),))
        futures: dict = {}
        try:
            futures = {submit(pool.submit, work, with_data=False): work for work in works}
            for future in as_completed(futures):
                try:
                    deliver(futures[future], future.result())
                except QresnetError as exc:
                    failed(futures[future], exc)
        except KeyboardInterrupt:
            # stop now: the queued runs are dropped (leaving the pool would wait for every one of them);
            # finished runs and the finished epochs of running ones are kept, and the same sweep resumes.
            # Each future is cancelled here: the pool's own cancel_futures is lost if the executor is
            # collected before its manager thread wakes
            for future in futures:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            print(f"\ninterrupted: {finished()} of {len(plan)} runs are finished in {out}; "
                  "run the same command again to resume", file=sys.stderr)
            raise
        pool.shutdown()
