"""Runs per hour of one sweep: stacked (K runs of one shape per process) and one run per process, in one invocation.

    python benchmarks/sweep.py                                    # a small sweep on the embedded digits, minutes
    python benchmarks/sweep.py --stack 8 --json results/sweep.json
    python benchmarks/sweep.py --preset paper --seeds 0-9 --backends aer,aer:fake_torino --heads linear,quantum \\
        --data-dir ../shared/data --epochs 1                      # the paper preset (--epochs 1: a slice of it)

Each mode runs the whole sweep in a fresh child process (``qresnet.study.sweep.run_sweep`` into its own temporary
directory, ``--jobs`` worker processes, the same for both modes): ``--stack 1`` is one run per process as on
main before stacks, ``--stack K`` (default: the sweep's own default, from memory) trains stacks. Reported per
mode: wall seconds, runs per hour, and peak resident memory (``resource.getrusage`` of the child and of its
workers, the largest process); and the ratio stacked / one run per process. The modes alternate over
``--rounds`` and the figures are medians. The paper preset's quantum head measures 4 classes (the
``paper-quantum`` preset's MNIST 0-3); the linear head 10.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_json


def sweeps(args: argparse.Namespace) -> list:
    """The sweep(s) the arguments describe: one per head family (the quantum head takes the 4-class preset)."""
    from qresnet.cli.arguments import parse_seeds
    from qresnet.study.sweep import SweepConfig

    heads = args.heads.split(",")
    out = []
    for head in heads:
        preset = args.preset
        if head == "quantum" and preset in ("paper", "quick"):
            preset = f"{preset}-quantum"
        overrides = dict(seeds=parse_seeds(args.seeds), backends=tuple(args.backends.split(",")), heads=(head,),
                         configs=args.configs, epochs=args.epochs, per_class=args.per_class, data_dir=args.data_dir)
        out.append(SweepConfig.from_preset(preset, **overrides))
    return out


def child(args: argparse.Namespace) -> None:
    """One mode, in this process: the sweep(s), then one JSON line with the wall time and peak memory."""
    from qresnet.study.sweep import run_sweep

    plans = sweeps(args)
    runs = sum(len(s.runs()) for s in plans)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qresnet-bench-sweep-") as tmp:
        for k, sweep in enumerate(plans):
            run_sweep(sweep, Path(tmp) / str(k), jobs=args.jobs, progress=False, stack=args.mode)
    seconds = time.perf_counter() - began
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"runs": runs, "seconds": seconds, "peak_kib": peak}), flush=True)


def measure(args: argparse.Namespace, stack: int | None) -> dict:
    argv = [sys.executable, __file__, *sys.argv[1:], "--mode", "0" if stack is None else str(stack)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {'stacked' if stack != 1 else 'one-run'} sweep failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seeds", default="0-3")
    parser.add_argument("--backends", default="aer")
    parser.add_argument("--heads", default="linear")
    parser.add_argument("--configs", default="O1+O2", help="configurations ('paper': the preset's five)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes, both modes")
    parser.add_argument("--stack", type=int, default=None, help="K of the stacked mode (default: from memory)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--mode", type=int, default=None, help=argparse.SUPPRESS)  # a child: its stack, 0 = default
    args = parser.parse_args()
    if args.mode is not None:
        args.mode = None if args.mode == 0 else args.mode
        child(args)
        return
    from qresnet.run.stack import default_stack_size

    runs = sum(len(s.runs()) for s in sweeps(args))
    k = args.stack if args.stack is not None else default_stack_size(runs, args.jobs)
    print(f"{runs} runs, --jobs {args.jobs}: one run per process vs stacks of {k}", flush=True)
    figures: dict[str, list[dict]] = {"one-run": [], "stacked": []}
    for _ in range(args.rounds):
        figures["one-run"].append(measure(args, 1))
        figures["stacked"].append(measure(args, k))
    summary = {}
    for mode, rows in figures.items():
        seconds = statistics.median(r["seconds"] for r in rows)
        summary[mode] = {"seconds": seconds, "runs_per_hour": runs * 3600 / seconds,
                         "peak_mib": max(r["peak_kib"] for r in rows) / 1024}
        print(f"{mode:8s} {seconds:8.1f} s  {summary[mode]['runs_per_hour']:8.0f} runs/h  "
              f"peak {summary[mode]['peak_mib']:.0f} MiB", flush=True)
    ratio = summary["stacked"]["runs_per_hour"] / summary["one-run"]["runs_per_hour"]
    print(f"stacked / one run per process: {ratio:.2f}x runs per hour (K = {k})")
    write_json(args.json, {"benchmark": "sweep", "runs": runs, "jobs": args.jobs, "stack": k, "rounds": args.rounds,
                           "arguments": {k2: v for k2, v in vars(args).items() if k2 not in ("json", "mode")},
                           "modes": summary, "ratio": ratio, "samples": figures})


if __name__ == "__main__":
    main()
