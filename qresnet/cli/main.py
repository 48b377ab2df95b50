"""The ``qresnet`` command: argument parsing and printing only."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from qresnet.choices import (BUDGETS, CONFIG_SETS, DATASETS, DEFAULT_HEAD_REPS, DEFAULT_HEAD_SCALE, ENTANGLEMENTS,
                             EXECUTORS, FORMATS, HEAD_ENCODING_NOISE, HEADS, MODES, PRESET_NAMES, READOUTS,
                             REPRODUCTION_STUDIES, RUN_MODES, TEMPLATES)
from qresnet.cli.arguments import (add_backend_arguments, add_filter_arguments, backend_options, filter_values,
                                  parse_ints, parse_seed_caps, parse_seeds, print_table)
from qresnet.cli.diagnose import add_diagnose_parser
from qresnet.cli.evaluate import add_evaluate_parser
from qresnet.cli.jobs import add_jobs_parser
from qresnet.errors import LayoutError, QresnetError, RunDirError, SweepError
from qresnet.values import checked_int

DATASET_HELP = f"{' | '.join(DATASETS)} | npz:PATH (x_train, y_train, x_test, y_test) | idx:DIR (the four IDX files)"
WAIT_HELP = "if another process is using the output directory, wait for it to finish (default: refuse at once)"
STACK_HELP = ("train up to K trainable runs of one shape (their seeds) together in one process, with their share of "
              "the shape's frozen runs (whose maps are computed once: they train their heads only); a --jobs process "
              "or a Ray task trains one stack; default: from memory, at most 16; 1: each run alone")


def _locked(directory: str | Path | None, wait: bool) -> contextlib.AbstractContextManager:
    """The output directory's lock for the whole command (the library functions take it again, reentrantly)."""
    from qresnet.run.lock import OutputLock

    return contextlib.nullcontext() if directory is None else OutputLock(directory, wait=wait)


def cmd_backends(args: argparse.Namespace) -> None:
    from qresnet.backends import KINDS, describe_fake_devices

    devices = describe_fake_devices()
    if args.format == "json":
        print(json.dumps({"specs": KINDS, "fake_devices": devices}, indent=2))
        return
    print("Backend specs:")
    for kind, text in KINDS.items():
        print(f"  {kind:<6} {text}")
    print(f"\nFake devices for aer:<device> and local:<device> ({len(devices)}):")
    print_table(devices, ["name", "num_qubits", "two_qubit_gates"])


def _template(args: argparse.Namespace):
    from qresnet.circuits import quantum_head, quanv_filter

    if args.template == "quanv":
        return quanv_filter(args.kernel_size, args.reps, args.entanglement, args.readout)
    return quantum_head(args.head_qubits, args.head_measured, args.reps, args.entanglement)


def cmd_transpile(args: argparse.Namespace) -> None:
    from qresnet.backends import resolve_backend

    template = _template(args)
    options = backend_options(args)
    if options.initial_layout is not None and len(options.initial_layout) != template.num_qubits:
        raise LayoutError(f"--initial-layout has {len(options.initial_layout)} qubits; {template.name} has "
                          f"{template.num_qubits}")
    backend = resolve_backend(args.backend or "aer", options)
    cost = backend.transpile(template).cost.to_dict()
    if args.format == "json":
        print(json.dumps(cost, indent=2))
        return
    width = max(map(len, cost))
    for key, value in cost.items():
        if key == "estimated_fidelity":
            value = f"{value:.4g}"
        print(f"{key:<{width}}  {value}")


def cmd_grads(args: argparse.Namespace) -> int:
    from qresnet.study.audit import gradient_audit
    from qresnet.backends import resolve_backend
    from qresnet.data import load_digits_images

    for flag, value, minimum in (("--layers", args.layers, 1), ("--batch-size", args.batch_size, 1),
                                 ("--seed", args.seed, 0)):
        checked_int(value, flag, minimum)
    images, labels = load_digits_images(args.batch_size, seed=args.seed)
    backend = resolve_backend(args.backend or "aer", backend_options(args, seed=args.seed))
    rows = gradient_audit(backend, images, labels, args.layers, args.configs, args.input_gradients,
                          args.mode, args.seed, progress=args.format == "table")
    if args.format == "json":
        print(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        yes_no = lambda flags: " ".join("yes" if f else "no " for f in flags)  # noqa: E731
        table = [{"config": r.config, "grad_norm": " ".join(f"{g:9.3e}" for g in r.grad_norm),
                  "reaches": yes_no(r.reaches), "predicted": yes_no(r.predicted),
                  "agrees": "ok" if r.agrees else "DIFFERS"} for r in rows]
        print(f"Gradient audit: {args.layers} layers, {len(rows)} configurations, backend {backend.name}, "
              f"batch of {len(labels)} digits, input_gradients={args.input_gradients}")
        print_table(table, ["config", "grad_norm", "reaches", "predicted", "agrees"])
        agree = sum(r.agrees for r in rows)
        print(f"measured gradient access agrees with the rule in {agree}/{len(rows)} configurations")
    return 0 if all(r.agrees for r in rows) else 1


def _stack(args: argparse.Namespace) -> int | None:
    return None if args.stack is None else checked_int(args.stack, "--stack", 1)


def cmd_reproduce(args: argparse.Namespace) -> None:
    from qresnet.study.design_study import run_design_study
    from qresnet.study.reproduce import power_rule, run_reproduction
    from qresnet.study.robustness import run_robustness

    runners = {"claims": run_reproduction, "robustness": run_robustness, "design": run_design_study}  # --study
    checked_int(args.jobs, "--jobs")
    if args.pilot_seeds is not None:
        checked_int(args.pilot_seeds, "--pilot-seeds", 2)
    cap, study_caps = parse_seed_caps(args.max_seeds)
    power = {k: v for k, v in (("pilot", args.pilot_seeds), ("cap", cap), ("study_caps", study_caps)) if v is not None}
    options = {"power": power_rule(args.budget, power)} if args.study == "claims" else {}  # refused before --out
    name = "reproduction" if args.study == "claims" else args.study
    out = Path(args.out) if args.out else Path("reports") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with _locked(out, args.wait):
        report = runners[args.study](out, args.budget, args.data_dir, args.jobs, args.executor, args.ray_address,
                                     stack=_stack(args), **options)
    print(report.read_text().split("## Studies")[0].split("## Accuracy against noise level")[0])
    print(f"report: {report}")


def cmd_data_fetch(args: argparse.Namespace) -> None:
    from qresnet.data import MNIST_FILES
    from qresnet.download import DEFAULT_MNIST_URL, fetch_mnist

    directory = fetch_mnist(args.data_dir, args.url or DEFAULT_MNIST_URL)
    print(f"MNIST is in {directory}:")
    for name in MNIST_FILES:
        print(f"  {directory / name}")


def cmd_train(args: argparse.Namespace) -> None:
    from qresnet.backends import BackendOptions
    from qresnet.config import TrainConfig
    from qresnet.run.rundir import RunDir
    from qresnet.run.train import train

    values: dict = {}
    if args.resume:
        if not RunDir(args.resume).config_path.is_file():
            raise RunDirError(f"--resume {args.resume}: no config.json there; is it a run directory?")
        values = RunDir(args.resume).read_config()["config"]
    elif args.config:
        values = TrainConfig.from_toml(args.config).to_dict()
    values["backend_options"] = backend_options(args, BackendOptions.coerce(values.get("backend_options")))
    flags = {
        "dataset": args.dataset, "data_dir": args.data_dir, "per_class": args.per_class, "test_fraction": args.test_fraction,
        "layers": args.layers, "residual": args.residual, "head": args.head, "mode": args.mode, "backend": args.backend,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "seed": args.seed, "torch_threads": args.torch_threads, "head_scale": args.head_scale,
        "head_reps": args.head_reps, "max_steps": args.max_steps,
        "keep_checkpoints": args.keep_checkpoints,
        "head_encoding_noise": args.head_encoding_noise, "head_noise_samples": args.head_noise_samples,
        "classes": parse_ints(args.classes, "--classes", "labels"),
        "frozen": True if args.frozen else None, "input_gradients": True if args.input_gradients else None,
        "filter": args.filter, "image_size": args.image_size,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    values["quanv"] = filter_values(args, values.get("quanv"))
    config = TrainConfig.from_dict(values)
    with _locked(args.resume or args.out, args.wait):
        result = train(config, args.resume or args.out, resume=bool(args.resume), overwrite=args.overwrite)
    if result.final_test_acc is None:
        print(f"run directory {result.run_dir}: no epoch finished yet ({result.steps_this_session} steps this "
              f"session); continue with `qresnet train --resume {result.run_dir}`")
        return
    print(f"run directory {result.run_dir}: final test accuracy {result.final_test_acc:.3f}, "
          f"best {result.best_test_acc:.3f}, {result.epochs_completed} epochs, {result.wall_time_s:.1f} s")
    if result.shot_validation is not None:
        from qresnet.run.evaluate import describe_shot_validation

        print(describe_shot_validation(result.shot_validation))


def cmd_compare(args: argparse.Namespace) -> int:
    from qresnet.backends import BackendSpec
    from qresnet.study.drift import sweep_drift
    from qresnet.study.report import write_comparison_report
    from qresnet.study.sweep import SweepConfig, run_sweep

    checked_int(args.jobs, "--jobs")
    sweep = SweepConfig.from_preset(
        args.preset, dataset=args.dataset, data_dir=args.data_dir, per_class=args.per_class, layers=args.layers,
        configs=args.configs, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seeds=parse_seeds(args.seeds),
        test_fraction=args.test_fraction,
        classes=parse_ints(args.classes, "--classes", "labels"),
        backends=tuple(args.backends.split(",")) if args.backends else None,
        heads=tuple(args.head.split(",")) if args.head else None, backend_options=backend_options(args),
        filters=tuple(f.strip() for f in args.filters.split(",")) if args.filters else None,
        quanv=filter_values(args) or None, image_size=args.image_size, run_curves=args.run_curves or None,
    )
    if args.drift is not None:
        BackendSpec.coerce(args.drift)  # a bad spec is refused before the sweep, not after it
    out = Path(args.out) if args.out else Path("reports") / f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    runs = sweep.runs()
    print(f"compare: {len(runs)} runs ({len(sweep.configs)} configurations x trainable/frozen x "
          f"{', '.join(map(str, sweep.backends))} x {', '.join(sweep.heads)} head x {', '.join(sweep.filters)} filter "
          f"x {len(sweep.seeds)} seeds), "
          f"{sweep.dataset}, {sweep.epochs} epochs -> {out}")
    with _locked(out, args.wait):
        try:
            result = run_sweep(sweep, out, jobs=args.jobs, overwrite=args.overwrite, executor=args.executor,
                               ray_address=args.ray_address, stack=_stack(args))
        except SweepError as exc:
            for line in exc.failures:
                print(f"failed: {line}", file=sys.stderr)
            if exc.result.runs:
                report = write_comparison_report(exc.result, out)
                print(f"report of the {len(exc.result.runs)} finished runs: {report}", file=sys.stderr)
            print(f"error: {len(exc.failures)} run(s) failed; fix their cause and run the same command again: "
                  "finished runs are reused", file=sys.stderr)
            return 1
        drift = [] if args.drift is None else sweep_drift(result, out, args.drift, sweep.backend_options)
        report = write_comparison_report(result, out, drift)
    print(report.read_text().split("## The numbers behind each verdict")[0])
    print(f"report: {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qresnet", description="Residual quanvolutional neural networks on Qiskit.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("backends", help="list backend specs and fake devices")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(run=cmd_backends)

    p = sub.add_parser("transpile", help="transpile a template for a backend and report its cost")
    p.add_argument("--template", choices=TEMPLATES, default="quanv")
    p.add_argument("--kernel-size", type=int, default=2, help="quanv: patch size k (k*k qubits)")
    p.add_argument("--reps", type=int, default=2, help="ansatz repetitions")
    p.add_argument("--entanglement", choices=ENTANGLEMENTS, default="chain")
    p.add_argument("--readout", choices=READOUTS, default="mean", help="quanv: output readout")
    p.add_argument("--head-qubits", type=int, default=10, help="head: amplitude-encoding qubits")
    p.add_argument("--head-measured", type=int, default=4, help="head: measured qubits (classes)")
    p.add_argument("--format", choices=FORMATS, default="table")
    add_backend_arguments(p)
    p.set_defaults(run=cmd_transpile)

    p = sub.add_parser("grads", help="gradient audit: which layers get a gradient in each residual configuration")
    p.add_argument("--layers", type=int, default=2, help="number of quanvolution layers")
    p.add_argument("--configs", choices=CONFIG_SETS, default="paper")
    p.add_argument("--input-gradients", action="store_true", help="let the gradient cross the measurement boundary")
    p.add_argument("--mode", choices=MODES, default="response")
    p.add_argument("--batch-size", type=int, default=4, help="digits in the audited batch")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch, the weights and the simulator (default 0)")
    add_backend_arguments(p)
    p.set_defaults(run=cmd_grads)

    p = sub.add_parser("train", help="train one ResQuNN; writes a run directory (metrics, checkpoints, curves)")
    p.add_argument("--config", default=None, help="a TOML file of TrainConfig values; flags override it")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--out", default=None, help="run directory (default: a new one under runs/); an existing run is "
                   "refused unless --resume or --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (its checkpoints and metrics)")
    p.add_argument("--wait", action="store_true", help=WAIT_HELP)
    p.add_argument("--keep-checkpoints", type=int, default=None,
                   help="epoch checkpoints kept besides the best one (default 3; metrics.csv keeps every epoch)")
    p.add_argument("--dataset", default=None, help=DATASET_HELP)
    p.add_argument("--image-size", type=int, default=None, help="resize every image to N x N pixels")
    p.add_argument("--data-dir", default=None, help="MNIST directory (default: $QRESNET_DATA_DIR)")
    p.add_argument("--classes", default=None, help="class subset, e.g. 0,1,2,3")
    p.add_argument("--per-class", type=int, default=None)
    p.add_argument("--test-fraction", type=float, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--residual", default=None, help='residual configuration, e.g. "O1+O2" or "(X+O1)+O2"')
    p.add_argument("--head", default=None, choices=HEADS)
    p.add_argument("--head-scale", type=float, default=None, help=f"quantum head: logits = scale * <Z> (default {DEFAULT_HEAD_SCALE:g})")
    p.add_argument("--head-reps", type=int, default=None, help=f"quantum head: ansatz repetitions (default {DEFAULT_HEAD_REPS})")
    p.add_argument("--head-encoding-noise", default=None, choices=HEAD_ENCODING_NOISE,
                   help="quantum head on aer:<device>: 'transpiled' also runs the whole transpiled encoding under "
                        "noise for --head-noise-samples test samples (Aer density matrix; slow) and reports the difference")
    p.add_argument("--head-noise-samples", type=int, default=None)
    p.add_argument("--mode", default=None, choices=RUN_MODES,
                   help="response (design points), per-patch, or auto: the one with fewer rows (default: response for "
                        "today's 2x2 filter, auto for any other)")
    p.add_argument("--input-gradients", action="store_true", help="let gradients cross the measurement boundary")
    p.add_argument("--frozen", action="store_true", help="quantum weights fixed; only the head trains")
    add_filter_arguments(p)
    add_backend_arguments(p)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None,
                   help="optimizer steps in this session (a device budget); --resume continues from the last step")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--torch-threads", type=int, default=None)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("compare", help="sweep residual configurations x trainable/frozen x backends; write a report")
    p.add_argument("--preset", choices=PRESET_NAMES, default="quick")
    p.add_argument("--head", default=None, help="linear | quantum | linear,quantum (default: the preset's)")
    p.add_argument("--configs", default=None, help="paper | all | configurations separated by ';'")
    p.add_argument("--backends", default=None, help="comma-separated specs (default: aer,aer:fake_torino)")
    p.add_argument("--drift", default=None, metavar="SPEC", help="also evaluate every run's last checkpoint on this "
                   "backend (e.g. aer:fake_quito) and report the accuracy change, paired by seed")
    p.add_argument("--filters", default=None, help="quantum | classical | quantum,classical: also run the classical "
                   "control of the same size, and answer Q6 (default: quantum)")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--dataset", default=None, help=DATASET_HELP)
    p.add_argument("--image-size", type=int, default=None, help="resize every image to N x N pixels")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--classes", default=None)
    p.add_argument("--per-class", type=int, default=None)
    p.add_argument("--test-fraction", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seeds", default=None, help="seeds as a range or a list, e.g. 0-4 or 0,3,7 (default: the preset's)")
    add_filter_arguments(p, kind=False)
    add_backend_arguments(p, backend=None)
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (--executor processes)")
    p.add_argument("--executor", choices=EXECUTORS, default="processes",
                   help="local processes (default), or one Ray task per run (pip install -e '.[ray]')")
    p.add_argument("--ray-address", default=None,
                   help="a running Ray cluster, e.g. HOST:6379 (default: $RAY_ADDRESS, else a local Ray instance)")
    p.add_argument("--stack", type=int, default=None, help=STACK_HELP)
    p.add_argument("--run-curves", action="store_true", help="also draw every run's curves.png (the report's "
                   "curves.png shows them all; a finished sweep run again with this draws the missing ones)")
    p.add_argument("--out", default=None, help="report directory; an existing one resumes its sweep (runs trained "
                   "with other settings are refused)")
    p.add_argument("--overwrite", action="store_true", help="train again the runs in --out whose settings differ")
    p.add_argument("--wait", action="store_true", help=WAIT_HELP)
    p.set_defaults(run=cmd_compare)

    p = sub.add_parser("reproduce", help="the paper's claims, each decided with intervals on aer and aer:fake_torino")
    p.add_argument("--study", choices=REPRODUCTION_STUDIES, default="claims",
                   help="claims: each of the paper's claims decided on aer and aer:fake_torino, seeds planned by "
                        "power (power.json); robustness: its verdicts re-decided over noise levels (five channels, "
                        "scaled device noise), the lowest level at which one changes; design: the two central "
                        "claims under other filters and against the classical control")
    p.add_argument("--budget", choices=BUDGETS, default="full",
                   help="full: claims: the paper's settings (30 epochs), MNIST, a 5-seed pilot then the seeds the "
                        "power plan asks for (at most 40), and all 64 three-layer configurations; robustness and "
                        "design: a reduced MNIST budget (stated in their modules), about 30 min with --jobs 2; "
                        "tiny: the pipeline on digits (minutes)")
    p.add_argument("--pilot-seeds", type=int, default=None,
                   help="claims: seeds of the pilot that plans the rest (default: 5; tiny: 2)")
    p.add_argument("--max-seeds", default=None, metavar="N[,STUDY=N...]",
                   help="the most seeds the power plan may ask a study for (default: 40; tiny: 3); STUDY=N sets one "
                        "study's own cap, e.g. 40,paper-quantum=10 (a capped claim states what it asks for)")
    p.add_argument("--data-dir", default=None, help="MNIST directory (default: $QRESNET_DATA_DIR)")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (--executor processes)")
    p.add_argument("--executor", choices=EXECUTORS, default="processes")
    p.add_argument("--ray-address", default=None)
    p.add_argument("--stack", type=int, default=None, help=STACK_HELP)
    p.add_argument("--out", default=None, help="study directory; an existing one resumes its studies")
    p.add_argument("--wait", action="store_true", help=WAIT_HELP)
    p.set_defaults(run=cmd_reproduce)

    p = sub.add_parser("data", help="datasets: download MNIST")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("fetch", help="download the MNIST IDX files, verify their SHA-256 and cache them")
    p.add_argument("dataset", choices=("mnist",))
    p.add_argument("--data-dir", default=None,
                   help="where to store them (default: $QRESNET_DATA_DIR, else ~/.cache/qresnet/mnist)")
    p.add_argument("--url", default=None, help="base URL of a mirror of the gzipped IDX files")
    p.set_defaults(run=cmd_data_fetch)
    add_diagnose_parser(sub)
    add_evaluate_parser(sub)
    add_jobs_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed its one-line error (or the help); keep its exit code
        return int(exc.code or 0)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"qiskit_ibm_runtime\..*")
    try:
        status = args.run(args)
    except QresnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
