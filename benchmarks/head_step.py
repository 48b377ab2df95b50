"""Seconds per training step and peak memory of the quantum-head model ``qresnet compare --preset paper-quantum`` trains.

Model: ``qresnet.run.build.build_model`` from ``TrainConfig(dataset="mnist", head="quantum",
residual="(X+O1)+O2", layers=2, classes=0..k-1, ...)``: two trainable quanvolution layers, the
(X+O1)+O2 skips (a 28x28 final map), the 10-qubit amplitude-encoded quantum head measuring one
qubit per class; cross-entropy, Adam (lr 0.01) on the trainable parameters, one batch of 16 28x28
MNIST images drawn from labels 0..k-1. One step = forward, backward, optimizer step.

Cases: ``--classes`` (default 4, the paper's head, and 10) x ``--backends`` (default ``aer`` and
``aer:fake_torino``). Each case runs in a fresh Python process, so its peak resident memory
(``ru_maxrss``: numpy, torch and Aer allocate natively, which tracemalloc would not see) is its
own; ``rss_before_build_mb`` is that process's peak after its imports, for scale.

Budget (``--max-seconds`` per case, counted from the model build): the first step is timed
(it includes one-off compilation); further steps, up to ``--steps``, run while the next one is
expected to end within the budget, and the figure is their median (else the first step's time,
said so). A case whose first step has not finished when the budget runs out (plus
``IMPORT_GRACE`` seconds for the process's imports) is stopped: the record says so, with the
peak memory it had reached (``VmHWM`` from /proc).

``--baseline DIR``: a checkout of an earlier qresnet (e.g. ``git worktree add /tmp/base 44087ed``,
the main this issue was filed against) runs every case too, right after ours, in its own
process with ``PYTHONPATH=DIR``; the record gets its figures and the ratio baseline / ours.

    python benchmarks/head_step.py --json results/head_step.json
    python benchmarks/head_step.py --classes 4 --baseline /tmp/base --json results/head_step_vs_base.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import median, write_json

IMPORT_GRACE = 30.0  # seconds a case's process may spend importing torch and Qiskit before its budget starts


def rss_mb() -> float:
    """This process's peak resident set so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_of(pid: int) -> float | None:
    """A running process's peak resident set (VmHWM) in MiB, or None where /proc does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------------------------
# one case, in its own process: JSON lines on stdout, one per event
# --------------------------------------------------------------------------------------------

def emit(**event) -> None:
    print(json.dumps(event), flush=True)  # flushed: a stopped case still leaves what it did


def run_case(classes: int, spec: str, steps: int, max_seconds: float, seed: int) -> None:
    import torch

    from _common import mnist_batch, train_step
    from qresnet.backends import resolve_backend
    try:
        from qresnet.run.build import build_model, estimated_cost_notes
        from qresnet.config import TrainConfig
    except ImportError:  # a baseline from before the build/config modules (44087ed): the same objects in train
        from qresnet.run.train import TrainConfig, build_model
        estimated_cost_notes = None

    config = TrainConfig(dataset="mnist", classes=tuple(range(classes)), per_class=200, layers=2,
                         residual="(X+O1)+O2", head="quantum", backend=spec, epochs=30, batch_size=16, lr=0.01,
                         seed=seed)
    torch.set_num_threads(config.torch_threads)
    images, labels, source = mnist_batch(config.batch_size, seed, classes=classes)
    emit(event="start", data=source, torch_threads=torch.get_num_threads(), rss_before_build_mb=rss_mb())
    start = time.perf_counter()
    options = config.backend_options() if callable(config.backend_options) else config.backend_options  # 44087ed: a method
    backend = resolve_backend(config.backend, options)
    model = build_model(config, backend, (28, 28), classes)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    train_size = round(config.per_class * classes * (1 - config.test_fraction))
    emit(event="built", seconds=time.perf_counter() - start, at=time.time(),
         qresnet_estimate=estimated_cost_notes(model, config, train_size) if estimated_cost_notes else None)
    times: list[float] = []
    while len(times) < 1 + steps:
        expected = median(times[1:]) if len(times) > 1 else (times[0] if times else 0.0)
        if times and time.perf_counter() - start + expected > max_seconds:
            emit(event="budget", skipped=1 + steps - len(times), expected_step_s=expected)
            break
        t = time.perf_counter()
        train_step(model, optimizer, images, labels)
        times.append(time.perf_counter() - t)
        emit(event="step", seconds=times[-1])
    emit(event="done", peak_rss_mb=rss_mb())


# --------------------------------------------------------------------------------------------
# the driver: one process per case, its events folded into one record
# --------------------------------------------------------------------------------------------

def case_record(classes: int, spec: str, args: argparse.Namespace, checkout: str | None = None) -> dict:
    """One case in a fresh process: this checkout's qresnet, or ``checkout``'s (the baseline) when given."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", f"{classes}:{spec}", "--steps", str(args.steps),
           "--max-seconds", str(args.max_seconds), "--seed", str(args.seed)]
    env = dict(os.environ)
    root = str(Path(checkout).resolve()) if checkout else str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent, env=env)
    stopped_at, peak_at_stop = None, None
    try:
        out, err = proc.communicate(timeout=args.max_seconds + IMPORT_GRACE)
    except subprocess.TimeoutExpired:
        stopped_at, peak_at_stop = time.time(), peak_rss_of(proc.pid)
        proc.kill()
        out, err = proc.communicate()
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    record: dict = {"classes": classes, "backend": spec, "max_seconds": args.max_seconds}
    steps, built_at = [], None
    for e in events:
        kind = e.pop("event")
        if kind == "step":
            steps.append(e["seconds"])
        elif kind == "built":
            record["build_s"], built_at, record["qresnet_estimate"] = e["seconds"], e["at"], e["qresnet_estimate"]
        elif kind == "budget":
            record["steps_skipped"] = e["skipped"]
            record["message"] = (f"{e['skipped']} further step(s) skipped: the next would end past the "
                                 f"{args.max_seconds:g} s budget (about {e['expected_step_s']:.1f} s each)")
        else:
            record.update(e)
    record["step_seconds"] = steps
    if steps:
        record["first_step_s"] = steps[0]
        record["seconds_per_step"] = median(steps[1:]) if len(steps) > 1 else steps[0]
        record["seconds_per_step_is_first_step"] = len(steps) == 1
    if stopped_at is not None:
        record["status"] = "stopped"
        record["peak_rss_mb"] = peak_at_stop
        if built_at is None:
            what = "it was still building the model"
        elif not steps:
            what = f"its first step had run {stopped_at - built_at:.0f} s without finishing"
        else:
            what = f"step {len(steps) + 1} had not finished"
        record["message"] = (f"stopped at the {args.max_seconds:g} s budget (+{IMPORT_GRACE:g} s for imports): {what}; "
                             f"peak memory is what it had reached")
    elif proc.returncode != 0:
        record["status"] = "failed"
        record["message"] = f"exit code {proc.returncode}: " + " | ".join(err.strip().splitlines()[-3:])
    else:
        record["status"] = "partial" if record.get("steps_skipped") else "ok"
    return record


def describe(r: dict) -> str:
    head = f"{r['classes']:2d} classes, {r['backend']:16s}:"
    memory = f"peak RSS {r['peak_rss_mb']:.0f} MB" if r.get("peak_rss_mb") else "peak RSS unknown"
    if r["status"] == "failed":
        return f"{head} FAILED ({r['message']})"
    if "seconds_per_step" in r:
        how = ("one step, the first (includes compilation)" if r["seconds_per_step_is_first_step"] else
               f"median of {len(r['step_seconds']) - 1} after the first, {r['first_step_s']:.2f} s")
        line = f"{head} {r['seconds_per_step']:8.3f} s/step ({how}); build {r['build_s']:.1f} s;"
    else:
        line = f"{head} no step finished;"
    line += f" {memory} (after imports {r.get('rss_before_build_mb', 0):.0f} MB)"
    line += f"; {r['message']}" if r.get("message") else ""
    for note in r.get("qresnet_estimate") or ():
        line += f"\n    qresnet's own estimate: {note}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", default="4,10", help="comma-separated class counts (labels 0..k-1)")
    parser.add_argument("--backends", default="aer,aer:fake_torino")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first, per case, within the budget")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="budget per case, from the model build on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--baseline", default=None, help="a checkout of an earlier qresnet to run every case against")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # CLASSES:SPEC, run by the driver
    args = parser.parse_args()
    if args.case:
        classes, spec = args.case.split(":", 1)
        run_case(int(classes), spec, args.steps, args.max_seconds, args.seed)
        return

    load_start = os.getloadavg()
    print(f"quantum-head step, (X+O1)+O2, 2 layers, batch 16 MNIST; budget {args.max_seconds:g} s per case; "
          f"load average {load_start[0]:.2f}")
    if args.baseline and not (Path(args.baseline) / "qresnet" / "__init__.py").is_file():
        sys.exit(f"--baseline {args.baseline}: not a qresnet checkout (no qresnet/__init__.py there)")
    cases = []
    for classes in (int(k) for k in args.classes.split(",")):
        for spec in args.backends.split(","):
            cases.append(case_record(classes, spec, args))
            print(describe(cases[-1]), flush=True)
            if args.baseline:
                base = case_record(classes, spec, args, args.baseline)
                cases[-1]["baseline"] = {"checkout": str(Path(args.baseline).resolve()), **base}
                ours, theirs = cases[-1].get("seconds_per_step"), base.get("seconds_per_step")
                if ours and theirs:
                    cases[-1]["baseline_over_ours"] = theirs / ours
                print("  baseline " + describe(base)
                      + (f"\n  ratio baseline / ours: {theirs / ours:.1f}x" if ours and theirs else ""), flush=True)
    load_end = os.getloadavg()
    print(f"load average at end {load_end[0]:.2f} (1 min), {load_end[1]:.2f} (5 min)")
    write_json(args.json, {"benchmark": "head_step", "model": "paper-quantum: (X+O1)+O2, 2 layers, quantum head",
                           "batch": 16, "baseline": args.baseline, "cases": cases, "load_average_start": list(load_start),
                           "load_average_end": list(load_end)})


if __name__ == "__main__":
    main()
