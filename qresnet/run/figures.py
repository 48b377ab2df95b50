"""The figure of one run (loss, accuracy and each quantum layer's gradient norm per epoch), and saving any figure safely."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qresnet.run.result import EpochMetrics
from qresnet.run.rundir import atomic_write_bytes


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Render ``fig`` as PNG in memory, then write it atomically (a full disk is one clear error); close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_curves(metrics: Sequence[EpochMetrics], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [m.epoch for m in metrics]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [m.train_loss for m in metrics], "o-", label="train")
    axes[0].plot(epochs, [m.test_loss for m in metrics], "s-", label="test")
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].plot(epochs, [m.train_acc for m in metrics], "o-", label="train")
    axes[1].plot(epochs, [m.test_acc for m in metrics], "s-", label="test")
    axes[1].set(title="accuracy", xlabel="epoch", ylim=(0, 1))
    for k in range(len(metrics[0].grad_norm_layers)):
        axes[2].plot(epochs, [m.grad_norm_layers[k] for m in metrics], "o-", label=f"layer {k + 1}")
    axes[2].set(title="quantum weight gradient norm (batch mean)", xlabel="epoch")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
        ax.grid(alpha=0.3)
    # fixed margins: tight_layout measures every label's extent, a third of the figure's cost, per run of a sweep
    fig.subplots_adjust(left=0.045, right=0.99, bottom=0.14, top=0.91, wspace=0.18)
    save_figure(fig, path)
