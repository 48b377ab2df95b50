"""The comparison report: tables per backend, noisy minus ideal, CSV/JSON, and figures."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from qresnet.provenance import environment
from qresnet.figures import save_figure
from qresnet.rundir import RunDir, atomic_write_json, atomic_write_text

RESULT_FIELDS = ("backend", "head", "config", "frozen", "final_test_acc", "best_test_acc", "final_train_loss",
                 "epochs_completed", "wall_time_s", "grad_norms_last_epoch", "predicted_reach", "measured_reach",
                 "run_dir", "reused")


def enrich(rows: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """Add each run's per-epoch metrics, last-epoch gradient norms and the layers that measured a gradient.
    ``run_dir`` of a row is relative to the sweep directory ``out``."""
    for row in rows:
        row["metrics"] = RunDir(out / row["run_dir"]).read_metrics()
        last = row["metrics"][-1]
        norms = [last[k] for k in sorted(last) if k.startswith("grad_norm_layer")]
        row["grad_norms_last_epoch"] = norms
        seen = [any(m[f"grad_norm_layer{k + 1}"] > 0 for m in row["metrics"]) for k in range(len(norms))]
        row["measured_reach"] = None if row["frozen"] else seen
    return rows


def _layers(flags: list[bool] | None) -> str:
    if flags is None:
        return "-"
    chosen = [str(k + 1) for k, f in enumerate(flags) if f]
    return ", ".join(chosen) if chosen else "none"


def write_comparison_report(rows: list[dict[str, Any]], out: str | Path, sweep: dict[str, Any]) -> Path:
    """results.csv, results.json, report.md and the figures into ``out``; returns report.md's path."""
    out = Path(out)
    rows = enrich(rows, out)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=RESULT_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", table.getvalue())
    atomic_write_json(out / "results.json", {"sweep": sweep, "results": rows, "environment": environment()}, default=str)
    heads = list(dict.fromkeys(r.get("head", "linear") for r in rows))
    for r in rows:  # one table per backend and head; the head named only when the sweep has several
        r["setting"] = r["backend"] if len(heads) == 1 else f"{r['backend']}, {r.get('head', 'linear')} head"
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    acc = {(r["setting"], r["config"], r["frozen"]): r["final_test_acc"] for r in rows}
    by = {(r["setting"], r["config"], r["frozen"]): r for r in rows}
    wall = max((r.get("sweep_wall_time_s", 0.0) for r in rows), default=0.0)
    notes = sorted({note for r in rows for note in r.get("head_notes") or []})
    lines = [
        f"# ResQuNN comparison: preset `{sweep['preset']}`",
        "",
        f"Data: {sweep['dataset']}, classes {sweep['classes'] or 'all'}, {sweep['per_class']} per class; "
        f"{sweep['layers']} quanvolution layers, {' and '.join(heads)} head; {sweep['epochs']} epochs, batch "
        f"{sweep['batch_size']}, Adam lr {sweep['lr']}, seed {sweep['seed']}. Sweep wall time {wall:.0f} s. Accuracies are "
        f"final test accuracies (best over epochs in results.csv). *Frozen* trains only the head (the paper's "
        f"frozen-quantum benchmark): a configuration whose trainable accuracy does not beat it is not learning in its "
        f"quantum layers. Gradient norms: mean per batch of each quanvolution layer's weight gradient, last epoch of the "
        f"trainable run (over training: grad_norms.png).",
        "",
        *[f"- {note}" for note in notes],
        "",
    ]
    for setting in settings:
        lines += [f"## {setting}", "",
                  "| configuration | trainable | frozen | trainable - frozen | gradient norm per layer | "
                  "layers with gradient (rule) | (measured) |",
                  "|---|---|---|---|---|---|---|"]
        for c in configs:
            t, f = acc.get((setting, c, False)), acc.get((setting, c, True))
            row = by.get((setting, c, False)) or by.get((setting, c, True))
            diff = f"{t - f:+.3f}" if t is not None and f is not None else "-"
            trained = by.get((setting, c, False))
            measured = trained["measured_reach"] if trained else None
            norms = " / ".join(f"{v:.2e}" for v in trained["grad_norms_last_epoch"]) if trained else "-"
            lines.append(f"| `{c}` | {_fmt(t)} | {_fmt(f)} | {diff} | {norms} | {_layers(row['predicted_reach'])} | "
                         f"{_layers(measured)} |")
        lines.append("")
    for head in heads:
        group = [g for g in settings if len(heads) == 1 or g.endswith(f", {head} head")]
        ideal, noisy = group[0], group[1:]
        for other in noisy:
            lines += [f"## {other} minus {ideal}", "", "| configuration | trainable | frozen |", "|---|---|---|"]
            for c in configs:
                cells = []
                for frozen in (False, True):
                    a, b = acc.get((other, c, frozen)), acc.get((ideal, c, frozen))
                    cells.append(f"{a - b:+.3f}" if a is not None and b is not None else "-")
                lines.append(f"| `{c}` | {cells[0]} | {cells[1]} |")
            lines.append("")
    if "quantum" in heads and "linear" in heads:
        for backend in dict.fromkeys(r["backend"] for r in rows):
            q, lin = f"{backend}, quantum head", f"{backend}, linear head"
            lines += [f"## Quantum head beside the linear head, {backend}", "",
                      "| configuration | quantum trainable | quantum frozen | linear trainable | linear frozen |",
                      "|---|---|---|---|---|"]
            for c in configs:
                lines.append(f"| `{c}` | {_fmt(acc.get((q, c, False)))} | {_fmt(acc.get((q, c, True)))} | "
                             f"{_fmt(acc.get((lin, c, False)))} | {_fmt(acc.get((lin, c, True)))} |")
            lines.append("")
    lines += ["## Figures", "", "![accuracy](accuracy.png)", "", "![gradient norms](grad_norms.png)", "",
              "![training curves](curves.png)", ""]
    if len(settings) > 1:
        lines += ["![ideal vs noisy](ideal_vs_noisy.png)", ""]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    _figures(rows, settings, configs, out)
    return report


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _figures(rows: list[dict[str, Any]], settings: list[str], configs: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by = {(r["setting"], r["config"], r["frozen"]): r for r in rows}
    x = np.arange(len(configs))
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 3.8), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for offset, frozen, label in ((-0.2, False, "trainable"), (0.2, True, "frozen")):
            values = [by[(setting, c, frozen)]["final_test_acc"] if (setting, c, frozen) in by else np.nan for c in configs]
            ax.bar(x + offset, values, 0.4, label=label)
        ax.set(title=f"test accuracy, {setting}", xticks=x, ylim=(0, 1))
        ax.set_xticklabels(configs, rotation=30, ha="right")
        ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "accuracy.png", dpi=110)

    fig, axes = plt.subplots(len(settings), len(configs), figsize=(3.2 * len(configs), 2.8 * len(settings)), squeeze=False)
    for i, setting in enumerate(settings):
        for j, c in enumerate(configs):
            ax = axes[i][j]
            row = by.get((setting, c, False))
            if row:
                for k in range(len(row["grad_norms_last_epoch"])):
                    ax.plot([m["epoch"] for m in row["metrics"]], [m[f"grad_norm_layer{k + 1}"] for m in row["metrics"]],
                            "o-", ms=3, label=f"layer {k + 1}")
                ax.legend(fontsize=7)
            ax.set_title(f"{c}\n{setting}", fontsize=8)
            ax.set_xlabel("epoch", fontsize=8)
    fig.suptitle("quantum weight gradient norm over training (trainable runs)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out / "grad_norms.png", dpi=100)

    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 3.8), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for j, c in enumerate(configs):
            color = f"C{j}"
            for frozen, style in ((False, "-"), (True, "--")):
                row = by.get((setting, c, frozen))
                if row:
                    ax.plot([m["epoch"] for m in row["metrics"]], [m["test_acc"] for m in row["metrics"]], style,
                            color=color, label=f"{c}{' (frozen)' if frozen else ''}")
        ax.set(title=f"test accuracy per epoch, {setting} (dashed: frozen)", xlabel="epoch", ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "curves.png", dpi=110)

    if len(settings) > 1:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        width = 0.8 / len(settings)
        for i, setting in enumerate(settings):
            values = [by[(setting, c, False)]["final_test_acc"] if (setting, c, False) in by else np.nan for c in configs]
            ax.bar(x + (i - (len(settings) - 1) / 2) * width, values, width, label=setting)
        ax.set(title="trainable test accuracy by setting and head", xticks=x, ylim=(0, 1))
        ax.set_xticklabels(configs, rotation=30, ha="right")
        ax.legend()
        fig.tight_layout()
        save_figure(fig, out / "ideal_vs_noisy.png", dpi=110)
