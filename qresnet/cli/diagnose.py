"""``qresnet diagnose frozen``: why the single-layer frozen benchmark depends on its seed (issue 24)."""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

from qresnet.cli.arguments import parse_seeds, print_table
from qresnet.values import checked_int

COLUMNS = ["seed", "frozen_acc", "ink_deviation", "near_background", "map_std", "map_min", "map_max", "dead_features",
           "intensity_r2"]


def cmd_diagnose_frozen(args: argparse.Namespace) -> None:
    from qresnet.study.diagnose import (diagnose_seeds, plot_diagnosis, rank_correlations, single_frozen_config,
                                        threshold_split)

    epochs = checked_int(args.epochs, "--epochs")
    seeds = parse_seeds(args.seeds)
    make_config = partial(single_frozen_config, data_dir=args.data_dir, epochs=epochs, dataset=args.dataset,
                          per_class=args.per_class)
    rows = diagnose_seeds(seeds, make_config, progress=args.format == "table")
    correlations = rank_correlations(rows) if len(rows) >= 3 else {}
    split = threshold_split(rows, args.statistic) if len(rows) >= 4 else None
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "spearman": correlations, "split": split}, indent=1))
    if args.figure:
        plot_diagnosis(rows, args.figure, args.statistic, parse_seeds(args.mark) or ())
    if args.format == "json":
        print(json.dumps({"rows": rows, "spearman": correlations, "split": split}, indent=1))
        return
    print_table([{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items() if k in COLUMNS}
                 for row in rows], COLUMNS)
    if correlations:
        print("Spearman rank correlation with the frozen accuracy: "
              + ", ".join(f"{k} {v:+.2f}" for k, v in sorted(correlations.items(), key=lambda kv: -abs(kv[1]))
                          if v == v))  # NaN (a constant statistic) left out
    if split:
        print(f"{args.statistic} <= {split['cut']:.3f}: {split['low_n']} seeds, mean accuracy {split['low_mean']:.3f}; "
              f"above: {split['high_n']} seeds, {split['high_mean']:.3f}")


def add_diagnose_parser(subparsers: argparse._SubParsersAction) -> None:
    from qresnet.choices import FORMATS

    p = subparsers.add_parser("diagnose", help="diagnostics of a study's results")
    sub = p.add_subparsers(dest="diagnose_command", required=True)
    p = sub.add_parser("frozen", help="per seed: the single-layer frozen filter's response statistics over the "
                                      "training images, and the frozen run's accuracy (replayed, seconds per seed)")
    p.add_argument("--seeds", default="0-4", help="e.g. 0-19 or 0,3,7 (default 0-4, the reproduction's)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None, help="MNIST directory (default: $QRESNET_DATA_DIR)")
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--epochs", type=int, default=15, help="the frozen run's epochs (the reproduction ran 15)")
    p.add_argument("--statistic", default="ink_deviation", help="the statistic the figure and the split use")
    p.add_argument("--figure", default=None, help="write accuracy against the statistic to this PNG")
    p.add_argument("--mark", default=None, help="seeds drawn filled in the figure, e.g. 0-4")
    p.add_argument("--json", default=None, help="also write the rows and correlations to this file")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(run=cmd_diagnose_frozen)
