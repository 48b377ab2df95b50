"""``qresnet evaluate``: a trained run under another backend than it was trained on (calibration drift, issue 25)."""

from __future__ import annotations

import argparse
import json

from qresnet.cli.arguments import BACKEND_HELP, add_backend_arguments, backend_options
from qresnet.errors import RunDirError


def cmd_evaluate(args: argparse.Namespace) -> None:
    from qresnet.backends import BackendOptions, BackendSpec
    from qresnet.run.drift import evaluate_drift, evaluation_path
    from qresnet.run.rundir import RunDir

    run = RunDir(args.run_dir)
    if not run.config_path.is_file():
        raise RunDirError(f"{args.run_dir} has no config.json: pass a run directory written by `qresnet train`")
    base = BackendOptions.coerce(run.read_config()["config"].get("backend_options"))
    result = evaluate_drift(run.path, args.backend, backend_options(args, base), args.checkpoint)
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
        return
    print(result.describe())
    print(f"written: {evaluation_path(run, BackendSpec.coerce(result.evaluated_on))}")


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    from qresnet.choices import FORMATS
    from qresnet.run.drift import CHECKPOINTS

    p = subparsers.add_parser("evaluate", help="evaluate a trained run under another backend (noise drift); writes "
                                               "RUN/evaluations/<backend>.json")
    p.add_argument("run_dir", metavar="RUN", help="a run directory written by `qresnet train`")
    p.add_argument("--checkpoint", choices=CHECKPOINTS, default="last",
                   help="the run's last readable epoch checkpoint (default) or its best epoch's")
    p.add_argument("--format", choices=FORMATS, default="table")
    add_backend_arguments(p, backend=f"the backend to evaluate on: {BACKEND_HELP}", required=True)
    p.set_defaults(run=cmd_evaluate)
