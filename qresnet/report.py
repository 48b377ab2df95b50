"""The comparison report: tables per backend, noisy minus ideal, CSV/JSON, and figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from qresnet.provenance import environment

RESULT_FIELDS = ("backend", "config", "frozen", "final_test_acc", "best_test_acc", "final_train_loss",
                 "epochs_completed", "wall_time_s", "grad_norms_last_epoch", "predicted_reach", "measured_reach",
                 "run_dir", "reused")


def _metrics(run_dir: str) -> list[dict[str, float]]:
    with open(Path(run_dir) / "metrics.csv") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def enrich(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add each run's per-epoch metrics, last-epoch gradient norms and the layers that measured a gradient."""
    for row in rows:
        row["metrics"] = _metrics(row["run_dir"])
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


def write_report(rows: list[dict[str, Any]], out: str | Path, sweep: dict[str, Any]) -> Path:
    """results.csv, results.json, report.md and the figures into ``out``; returns report.md's path."""
    out = Path(out)
    rows = enrich(rows)
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.json").write_text(json.dumps({"sweep": sweep, "results": rows, "environment": environment()},
                                                 indent=2, default=str))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    acc = {(r["backend"], r["config"], r["frozen"]): r["final_test_acc"] for r in rows}
    by = {(r["backend"], r["config"], r["frozen"]): r for r in rows}
    wall = max((r.get("sweep_wall_time_s", 0.0) for r in rows), default=0.0)
    lines = [
        f"# ResQuNN comparison: preset `{sweep['preset']}`",
        "",
        f"Data: {sweep['dataset']}, classes {sweep['classes'] or 'all'}, {sweep['per_class']} per class; "
        f"{sweep['layers']} quanvolution layers, linear head; {sweep['epochs']} epochs, batch {sweep['batch_size']}, "
        f"Adam lr {sweep['lr']}, seed {sweep['seed']}. Sweep wall time {wall:.0f} s. Accuracies are final test accuracies "
        f"(best over epochs in results.csv). *Frozen* trains only the head (the paper's frozen-quantum benchmark): a "
        f"configuration whose trainable accuracy does not beat it is not learning in its quantum layers.",
        "",
    ]
    for backend in backends:
        lines += [f"## {backend}", "",
                  "| configuration | trainable | frozen | trainable - frozen | layers with gradient (rule) | (measured) |",
                  "|---|---|---|---|---|---|"]
        for c in configs:
            t, f = acc.get((backend, c, False)), acc.get((backend, c, True))
            row = by.get((backend, c, False)) or by.get((backend, c, True))
            diff = f"{t - f:+.3f}" if t is not None and f is not None else "-"
            measured = by[(backend, c, False)]["measured_reach"] if (backend, c, False) in by else None
            lines.append(f"| `{c}` | {_fmt(t)} | {_fmt(f)} | {diff} | {_layers(row['predicted_reach'])} | {_layers(measured)} |")
        lines.append("")
    if len(backends) > 1:
        ideal, noisy = backends[0], backends[1:]
        for other in noisy:
            lines += [f"## {other} minus {ideal}", "", "| configuration | trainable | frozen |", "|---|---|---|"]
            for c in configs:
                cells = []
                for frozen in (False, True):
                    a, b = acc.get((other, c, frozen)), acc.get((ideal, c, frozen))
                    cells.append(f"{a - b:+.3f}" if a is not None and b is not None else "-")
                lines.append(f"| `{c}` | {cells[0]} | {cells[1]} |")
            lines.append("")
    lines += ["## Figures", "", "![accuracy](accuracy.png)", "", "![gradient norms](grad_norms.png)", "",
              "![training curves](curves.png)", ""]
    if len(backends) > 1:
        lines += ["![ideal vs noisy](ideal_vs_noisy.png)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    _figures(rows, backends, configs, out)
    return report


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _figures(rows: list[dict[str, Any]], backends: list[str], configs: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by = {(r["backend"], r["config"], r["frozen"]): r for r in rows}
    x = np.arange(len(configs))
    fig, axes = plt.subplots(1, len(backends), figsize=(5.5 * len(backends), 3.8), squeeze=False)
    for ax, backend in zip(axes[0], backends):
        for offset, frozen, label in ((-0.2, False, "trainable"), (0.2, True, "frozen")):
            values = [by[(backend, c, frozen)]["final_test_acc"] if (backend, c, frozen) in by else np.nan for c in configs]
            ax.bar(x + offset, values, 0.4, label=label)
        ax.set(title=f"test accuracy, {backend}", xticks=x, ylim=(0, 1))
        ax.set_xticklabels(configs, rotation=30, ha="right")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(len(backends), len(configs), figsize=(3.2 * len(configs), 2.8 * len(backends)), squeeze=False)
    for i, backend in enumerate(backends):
        for j, c in enumerate(configs):
            ax = axes[i][j]
            row = by.get((backend, c, False))
            if row:
                for k in range(len(row["grad_norms_last_epoch"])):
                    ax.plot([m["epoch"] for m in row["metrics"]], [m[f"grad_norm_layer{k + 1}"] for m in row["metrics"]],
                            "o-", ms=3, label=f"layer {k + 1}")
                ax.legend(fontsize=7)
            ax.set_title(f"{c}\n{backend}", fontsize=8)
            ax.set_xlabel("epoch", fontsize=8)
    fig.suptitle("quantum weight gradient norm over training (trainable runs)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "grad_norms.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(backends), figsize=(5.5 * len(backends), 3.8), squeeze=False)
    for ax, backend in zip(axes[0], backends):
        for j, c in enumerate(configs):
            color = f"C{j}"
            for frozen, style in ((False, "-"), (True, "--")):
                row = by.get((backend, c, frozen))
                if row:
                    ax.plot([m["epoch"] for m in row["metrics"]], [m["test_acc"] for m in row["metrics"]], style,
                            color=color, label=f"{c}{' (frozen)' if frozen else ''}")
        ax.set(title=f"test accuracy per epoch, {backend} (dashed: frozen)", xlabel="epoch", ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)

    if len(backends) > 1:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        width = 0.8 / len(backends)
        for i, backend in enumerate(backends):
            values = [by[(backend, c, False)]["final_test_acc"] if (backend, c, False) in by else np.nan for c in configs]
            ax.bar(x + (i - (len(backends) - 1) / 2) * width, values, width, label=backend)
        ax.set(title="trainable test accuracy: ideal vs noisy", xticks=x, ylim=(0, 1))
        ax.set_xticklabels(configs, rotation=30, ha="right")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "ideal_vs_noisy.png", dpi=110)
        plt.close(fig)
