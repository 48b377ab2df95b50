"""The comparison report's figures: accuracy with intervals, paired differences, gradient norms, curves, the
settings side by side, and accuracy against noise level (``robustness.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qresnet.backends import BackendSpec
from qresnet.run.figures import save_figure
from qresnet.study import evidence as ev

if TYPE_CHECKING:  # annotations only: the report imports this module
    from qresnet.study.report import Runs, Setting


def comparison_figures(runs: Runs, assessed: dict[str, Any], labels: dict[str, Setting], out: Path) -> None:
    """accuracy.png, differences.png, grad_norms.png, curves.png and, for several settings, ideal_vs_noisy.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    configs = runs.configs
    x = np.arange(len(configs))
    fig, axes = plt.subplots(1, len(labels), figsize=(5.5 * len(labels), 3.9), squeeze=False)
    for ax, (label, per_config) in zip(axes[0], assessed.items()):
        for offset, key in ((-0.2, "trainable"), (0.2, "frozen")):
            means, errors = [], [[], []]
            for c in configs:
                value = per_config.get(c, {}).get(key)
                mean = value["mean"] if value else np.nan
                low = value["low"] if value and value["low"] is not None else mean
                high = value["high"] if value and value["high"] is not None else mean
                means.append(mean)
                errors[0].append(mean - low)
                errors[1].append(high - mean)
            ax.bar(x + offset, means, 0.4, yerr=errors, capsize=3, label=key)
        ax.set(title=f"test accuracy (95% interval), {label}", xticks=x, ylim=(0, 1))
        ax.set_xticklabels(configs, rotation=30, ha="right")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "accuracy.png")

    entries = [(label, c, item["trainable_minus_frozen"]) for label, per_config in assessed.items()
               for c, item in per_config.items() if item["trainable_minus_frozen"]]
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * max(len(entries), 4) + 1.2))
    for i, (label, c, d) in enumerate(entries):
        y = len(entries) - 1 - i
        if d["low"] is not None:
            ax.plot([d["low"], d["high"]], [y, y], "-", color="C0", lw=2)
        ax.plot(d["mean"], y, "o", color="C3" if d["low"] is not None and d["low"] > 0 else "C0")
    ax.axvline(0, color="k", lw=0.8)
    ax.axvline(ev.MARGIN, color="k", lw=0.6, ls=":")
    ax.set_yticks(range(len(entries)))
    ax.set_yticklabels([f"{c} | {label}" for label, c, _ in reversed(entries)], fontsize=7)
    ax.set(title="trainable - frozen: mean and 95% paired interval (red: above 0)", xlabel="accuracy difference")
    fig.tight_layout()
    save_figure(fig, out / "differences.png")

    settings = list(labels.values())
    fig, axes = plt.subplots(len(settings), len(configs), figsize=(3.2 * len(configs), 2.8 * len(settings)), squeeze=False)
    for i, (label, per_config) in enumerate(assessed.items()):
        for j, c in enumerate(configs):
            ax = axes[i][j]
            norms = per_config.get(c, {}).get("numbers", {}).get("grad_norm_per_epoch_mean_over_seeds") or []
            for k, series in enumerate(norms):
                ax.plot(range(1, len(series) + 1), series, "o-", ms=3, label=f"layer {k + 1}")
            if norms:
                ax.legend(fontsize=7)
            ax.set_title(f"{c}\n{label}", fontsize=8)
            ax.set_xlabel("epoch", fontsize=8)
    fig.suptitle("quantum weight gradient norm over training (trainable runs, mean over seeds)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out / "grad_norms.png", dpi=100)

    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 3.8), squeeze=False)
    for ax, (label, setting) in zip(axes[0], labels.items()):
        for j, c in enumerate(configs):
            for frozen, style in ((False, "-"), (True, "--")):
                group = runs.get(setting, c, frozen)
                if group:
                    epochs = min(len(r.metrics) for r in group)
                    mean = [sum(r.metrics[e].test_acc for r in group) / len(group) for e in range(epochs)]
                    ax.plot(range(1, epochs + 1), mean, style, color=f"C{j}", label=f"{c}{' (frozen)' if frozen else ''}")
        ax.set(title=f"test accuracy per epoch, mean over seeds, {label} (dashed: frozen)", xlabel="epoch", ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "curves.png")

    if len(settings) > 1:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        width = 0.8 / len(settings)
        for i, (label, per_config) in enumerate(assessed.items()):
            values = [per_config.get(c, {}).get("trainable") for c in configs]
            means = [v["mean"] if v else np.nan for v in values]
            errors = [[v["mean"] - v["low"] if v and v["low"] is not None else 0 for v in values],
                      [v["high"] - v["mean"] if v and v["high"] is not None else 0 for v in values]]
            ax.bar(x + (i - (len(settings) - 1) / 2) * width, means, width, yerr=errors, capsize=2, label=label)
        ax.set(title="trainable test accuracy by setting (95% interval)", xticks=x, ylim=(0, 1))
        ax.set_xticklabels(configs, rotation=30, ha="right")
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, out / "ideal_vs_noisy.png")


def noise_level(backend: str) -> tuple[str, float] | None:
    """A backend's noise family and level: ``noise:<channel>:<p>`` -> (channel, p), ``aer:<device>@<s>`` -> (device,
    s), ``aer:<device>`` -> (device, 1); None for the ideal ``aer`` (level 0 of every family) and the others."""
    spec = BackendSpec.coerce(backend)
    if spec.kind == "noise":
        return f"noise:{spec.channel}", float(spec.p)
    if spec.kind == "aer" and spec.device is not None:
        return f"aer:{spec.device}", 1.0 if spec.scale is None else float(spec.scale)
    return None


def noise_families(runs: Runs) -> dict[tuple[str, str, str], dict[float, Setting]]:
    """Per (family, head, filter): the sweep's settings by noise level, the ideal ``aer`` at 0; only families with a
    noisy level, and two levels at least (a line needs two points)."""
    families: dict[tuple[str, str, str], dict[float, Setting]] = {}
    ideal = {(s.head, s.filter): s for s in runs.settings if s.backend == "aer"}
    for s in runs.settings:
        level = noise_level(s.backend)
        if level is not None:
            family = families.setdefault((level[0], s.head, s.filter), {})
            family[level[1]] = s
            if (s.head, s.filter) in ideal:
                family.setdefault(0.0, ideal[(s.head, s.filter)])
    return {key: dict(sorted(levels.items())) for key, levels in families.items() if len(levels) > 1}


def robustness_figure(runs: Runs, out: Path) -> bool:
    """``robustness.png``: test accuracy (mean, 95% interval bars) against noise level, per configuration, trainable
    (solid) and frozen (dashed), one panel per noise family; False (no figure) when no family has two levels."""
    families = noise_families(runs)
    if not families:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(families), figsize=(5.5 * len(families), 3.9), squeeze=False)
    for ax, ((family, head, kind), levels) in zip(axes[0], families.items()):
        extra = "" if kind == "quantum" else ", classical control"
        noise_panel(ax, runs, family, levels, f"{family}, {head} head{extra}")
    fig.suptitle("accuracy against noise level (mean and 95% interval over seeds; dashed: frozen)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out / "robustness.png")
    return True


def noise_panel(ax: Any, runs: Runs, family: str, levels: dict[float, Setting], title: str,
                legend: bool = True) -> None:
    """One panel of ``robustness.png``: test accuracy (mean, 95% interval bars) against the levels of one noise family,
    per configuration, trainable (solid) and frozen (dashed); device scales on a symmetric-log axis (0, 1, 3, 10, 30),
    ticked at the levels."""
    for j, config in enumerate(runs.configs):
        for frozen, style in ((False, "-"), (True, "--")):
            points = [(level, runs.accuracy(s, config, frozen)) for level, s in levels.items()]
            points = [(level, a) for level, a in points if a is not None]
            if not points:
                continue
            x = [level for level, _ in points]
            mean = [a.mean for _, a in points]
            low = [a.mean - (a.low if a.low is not None else a.mean) for _, a in points]
            high = [(a.high if a.high is not None else a.mean) - a.mean for _, a in points]
            ax.errorbar(x, mean, yerr=[low, high], fmt=style + "o", ms=3, capsize=3, color=f"C{j}",
                        label=f"{config}{' (frozen)' if frozen else ''}")
    channel = family.startswith("noise:")
    if not channel and max(levels, default=0) > 3:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(list(levels), [f"{level:g}" for level in levels])
    ax.set(title=title, xlabel=f"noise level ({'p' if channel else 'scale s'}; 0: aer)", ylabel="test accuracy",
           ylim=(0, 1))
    if legend:
        ax.legend(fontsize=7)

