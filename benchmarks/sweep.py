"""Runs per hour of one sweep: stacked (K trainable runs of one shape per process, with their frozen benchmarks) and
one run per process, in one invocation.

    python benchmarks/sweep.py                                    # a small sweep on the embedded digits, minutes
    python benchmarks/sweep.py --stack 8 --json results/sweep.json
    python benchmarks/sweep.py --preset paper --seeds 0-9 --backends aer,aer:fake_torino --heads linear,quantum \\
        --data-dir ../shared/data --epochs 1,3                    # the paper preset, projected to its 30 epochs

Each mode runs the whole sweep in a fresh child process (``qresnet.study.sweep.run_sweep`` into its own temporary
directory, ``--jobs`` worker processes, the same for both modes): ``--stack 1`` is one run per process as on
main before stacks, ``--stack K`` (default: the sweep's own default, from memory) trains stacks. Reported per
mode and epoch count: wall seconds, runs per hour, and peak resident memory (``resource.getrusage`` of the child
and of its workers, the largest process); and the ratio stacked / one run per process. The modes alternate over
``--rounds`` and the figures are medians. The paper preset's quantum head measures 4 classes (the
``paper-quantum`` preset's MNIST 0-3); the linear head 10.

``--baseline DIR`` adds a third mode: one run per process on another qresnet source tree (a checkout of an earlier
main: ``git worktree add ../before-stacks 166ba86``, the main this work started from), first on the child's path,
with its own ``run_sweep``; the stacked mode's ratio to it says what the work gained, where the ratio to
``--stack 1`` says what stacking alone gains over today's one-run path (which got faster too).

A sweep's seconds are a fixed part (imports, data, models, curves) plus a part per epoch, so a slice of a long
preset says little about the preset. With two or more ``--epochs`` (``1,3``) the benchmark fits
seconds = fixed + per_epoch x epochs per mode (least squares over the measured points) and projects both modes,
and their ratio, to ``--project-epochs`` (default: the preset's own, 30 for ``paper``): a projection from
measured points, printed and written as such, beside the measured figures. Where a mode's fitted seconds per
epoch are not positive (its fixed part varied more between invocations than the epochs cost) it says so and does
not project.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_json


def sweeps(args: argparse.Namespace, epochs: int | None = None) -> list:
    """The sweep(s) the arguments describe at ``epochs`` (None: the preset's own): one per head family (the quantum
    head takes the 4-class preset)."""
    from qresnet.cli.arguments import parse_seeds
    from qresnet.study.sweep import SweepConfig

    heads = args.heads.split(",")
    out = []
    for head in heads:
        preset = args.preset
        if head == "quantum" and preset in ("paper", "quick"):
            preset = f"{preset}-quantum"
        overrides = dict(seeds=parse_seeds(args.seeds), backends=tuple(args.backends.split(",")), heads=(head,),
                         configs=args.configs, epochs=epochs, per_class=args.per_class, data_dir=args.data_dir)
        out.append(SweepConfig.from_preset(preset, **overrides))
    return out


def child(args: argparse.Namespace) -> None:
    """One mode, in this process: the sweep(s), then one JSON line with the wall time and peak memory."""
    from qresnet.study.sweep import run_sweep

    plans = sweeps(args, args.child_epochs)
    runs = sum(len(s.runs()) for s in plans)
    # the baseline tree's run_sweep predates stacks: one run per process, its own way
    stacking = {} if args.mode == BASELINE else {"stack": args.mode}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qresnet-bench-sweep-") as tmp:
        for k, sweep in enumerate(plans):
            run_sweep(sweep, Path(tmp) / str(k), jobs=args.jobs, progress=False, **stacking)
    seconds = time.perf_counter() - began
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"runs": runs, "seconds": seconds, "peak_kib": peak}), flush=True)


BASELINE = -1  # the child mode of --baseline: one run per process on another source tree


def measure(args: argparse.Namespace, stack: int | None, epochs: int) -> dict:
    """One mode's sweep in a fresh child process: ``stack`` K, None for the default, or ``BASELINE`` (the
    ``--baseline`` tree first on the child's path)."""
    argv = [sys.executable, __file__, *sys.argv[1:], "--mode", "0" if stack is None else str(stack),
            "--child-epochs", str(epochs)]
    env = dict(os.environ)
    if stack == BASELINE:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(args.baseline).resolve()), env.get("PYTHONPATH")]))
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        name = {BASELINE: "baseline", 1: "one-run"}.get(stack, "stacked")
        raise SystemExit(f"the {name} sweep failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seeds", default="0-3")
    parser.add_argument("--backends", default="aer")
    parser.add_argument("--heads", default="linear")
    parser.add_argument("--configs", default="O1+O2", help="configurations ('paper': the preset's five)")
    parser.add_argument("--epochs", default="2", help="epochs of each sweep; several (1,3) fit a line and project")
    parser.add_argument("--project-epochs", type=int, default=None,
                        help="project to this many epochs (default: the preset's own) when --epochs has two or more")
    parser.add_argument("--per-class", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes, both modes")
    parser.add_argument("--stack", type=int, default=None, help="K of the stacked mode (default: from memory)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="also one run per process on the qresnet source tree DIR (a checkout of an earlier main, "
                             "e.g. git worktree add ../before-stacks 166ba86): the ratio to the main before this work")
    parser.add_argument("--json", default=None)
    parser.add_argument("--mode", type=int, default=None, help=argparse.SUPPRESS)  # a child: its stack, 0 = default
    parser.add_argument("--child-epochs", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode is not None:
        args.mode = None if args.mode == 0 else args.mode
        child(args)
        return
    if args.baseline is not None and not (Path(args.baseline) / "qresnet" / "study" / "sweep.py").is_file():
        raise SystemExit(f"--baseline {args.baseline}: no qresnet source tree there (qresnet/study/sweep.py missing)")
    from qresnet.backends.engine import kernel
    from qresnet.qnn import response_kernel
    from qresnet.study.sweep import stack_size

    began = time.perf_counter()
    kernel.compile_kernels()  # compiled (or loaded) once here, so that no mode's first worker pays the compilation
    response_kernel.compile_kernels()
    print(f"engine kernels ready in {time.perf_counter() - began:.1f} s", flush=True)
    epochs = sorted({int(e) for e in args.epochs.split(",")})
    plans = sweeps(args)
    runs = sum(len(s.runs()) for s in plans)
    trainable = sum(not r.frozen for s in plans for r in s.runs())
    # the sweep's own default, as run_sweep picks it for each sweep (one per head family)
    k = args.stack if args.stack is not None else max(stack_size(p, list(range(len(p))), args.jobs)
                                                      for p in (s.runs() for s in plans))
    print(f"{runs} runs ({trainable} trainable), --jobs {args.jobs}: one run per process vs stacks of {k} "
          f"trainable runs with their frozen ones; epochs {', '.join(map(str, epochs))}", flush=True)
    modes = {"one-run": 1, "stacked": k, **({"baseline": BASELINE} if args.baseline else {})}
    figures: dict[str, dict[int, list[dict]]] = {mode: {e: [] for e in epochs} for mode in modes}
    for _ in range(args.rounds):
        for e in epochs:
            for mode, stack in modes.items():
                figures[mode][e].append(measure(args, stack, e))
    summary: dict[str, dict] = {}
    for mode, by_epochs in figures.items():
        summary[mode] = {}
        for e, rows in by_epochs.items():
            seconds = statistics.median(r["seconds"] for r in rows)
            summary[mode][e] = {"seconds": seconds, "runs_per_hour": runs * 3600 / seconds,
                                "peak_mib": max(r["peak_kib"] for r in rows) / 1024}
            print(f"{mode:8s} {e:3d} epochs {seconds:8.1f} s  {summary[mode][e]['runs_per_hour']:8.0f} runs/h  "
                  f"peak {summary[mode][e]['peak_mib']:.0f} MiB", flush=True)
    ratios = {e: summary["stacked"][e]["runs_per_hour"] / summary["one-run"][e]["runs_per_hour"] for e in epochs}
    for e, ratio in ratios.items():
        print(f"measured, {e} epochs: stacked / one run per process {ratio:.2f}x runs per hour (K = {k})")
    baseline_ratios = {e: summary["stacked"][e]["runs_per_hour"] / summary["baseline"][e]["runs_per_hour"]
                       for e in epochs} if args.baseline else None
    for e, ratio in (baseline_ratios or {}).items():
        print(f"measured, {e} epochs: stacked / the baseline's one run per process {ratio:.2f}x runs per hour")
    projection = None
    lines = {mode: line(epochs, [summary[mode][e]["seconds"] for e in epochs]) for mode in summary} if len(epochs) > 1 else {}
    if lines and min(per_epoch for _, per_epoch in lines.values()) <= 0:
        print("no projection: a mode's seconds do not grow with the epochs (its fixed part, e.g. a noise model built "
              "per worker, varies more than an epoch costs); measure more epochs apart, or more --rounds")
        lines = {}
    if lines:
        target = args.project_epochs or plans[0].epochs
        seconds = {mode: fixed + per_epoch * target for mode, (fixed, per_epoch) in lines.items()}
        projection = {"epochs": target, "ratio": seconds["one-run"] / seconds["stacked"],
                      "baseline_ratio": seconds["baseline"] / seconds["stacked"] if args.baseline else None,
                      **{mode: {"fixed_seconds": lines[mode][0], "seconds_per_epoch": lines[mode][1],
                                "seconds": seconds[mode], "runs_per_hour": runs * 3600 / seconds[mode]}
                         for mode in lines}}
        for mode in lines:
            print(f"{mode:8s} fitted: {lines[mode][0]:.1f} s + {lines[mode][1]:.1f} s an epoch -> projected "
                  f"{seconds[mode]:.0f} s at {target} epochs ({projection[mode]['runs_per_hour']:.0f} runs/h)")
        print(f"projected to {target} epochs: stacked / one run per process {projection['ratio']:.2f}x runs per hour")
        if args.baseline:
            print(f"projected to {target} epochs: stacked / the baseline's one run per process "
                  f"{projection['baseline_ratio']:.2f}x runs per hour")
    write_json(args.json, {"benchmark": "sweep", "runs": runs, "trainable_runs": trainable, "jobs": args.jobs,
                           "stack": k, "rounds": args.rounds,
                           "arguments": {k2: v for k2, v in vars(args).items() if k2 not in ("json", "mode", "child_epochs")},
                           "measured": {mode: {str(e): v for e, v in by.items()} for mode, by in summary.items()},
                           "ratios": {str(e): r for e, r in ratios.items()},
                           "baseline_ratios": None if baseline_ratios is None else {str(e): r for e, r in baseline_ratios.items()},
                           "projected": projection,
                           "samples": {mode: {str(e): v for e, v in by.items()} for mode, by in figures.items()}})


def line(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through the points."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


if __name__ == "__main__":
    main()
