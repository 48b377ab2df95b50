"""Why the frozen single-layer benchmark depends on its seed (issue 24): what a seed's random filter does to the
images, measured before any training, and the frozen run's accuracy replayed on fixed features.

    stats = filter_stats(model.layers[0], data.x_train, seed=0)   # one seed's frozen filter, no training
    accuracy = replay_frozen(config, model, data)                   # the frozen run's test accuracy, in about 1 s

A frozen run trains only its linear head on the map ``f(patch)`` of a fixed filter, so everything a seed decides
is fixed before the first step: the filter's weights, the head's initial weights, the split. The statistics
(:class:`FilterStats`) describe the map ``f`` over the data's 2x2 patches: its range, how far the patches that hold
ink land from the blank background's value (a linear head sees a stroke only through that difference), dead and
saturated features, and the response tensor's terms (docs/design.md section 3).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qresnet.backends import resolve_backend
from qresnet.config import TrainConfig
from qresnet.data import Dataset, load_dataset
from qresnet.errors import ConfigError
from qresnet.nn import QuanvLayer, ResQuNN
from qresnet.qnn import evaluate_response
from qresnet.run.build import build_model
from qresnet.run.step import train_step
from qresnet.run.train import epoch_order

TOLERANCE = 0.05  # |f - background| below this is "looks like background"; a feature with std below it is dead
SATURATED = 0.9  # |f| above this is near the ends of <Z>'s range [-1, 1]
BINARY_ANGLE = 0.1 * math.pi  # an encoding angle within this of 0 or pi reads as a binary pixel


@dataclass(frozen=True)
class FilterStats:
    """A frozen filter's response over a set of images' patches (:func:`filter_stats`).

    ``background`` is f at the blank patch; ``ink_deviation`` the median of |f(p) - background| over the patches
    with any ink, ``near_background`` the share of those within :data:`TOLERANCE` of it; ``dead_features`` the
    share of map positions whose std over the images is below :data:`TOLERANCE`; ``saturated`` the share of map
    values beyond :data:`SATURATED` in magnitude. ``order_energy[k]`` is the share of the response tensor's squared
    norm in the terms of order k (k inputs enter); ``sin_energy`` the share in terms with a sin factor, which vanish
    on binary pixels (angle 0 or pi). ``intensity_r2`` is the share of f's variance over ink patches that a linear
    function of the four pixel intensities explains. ``binary_angles`` is the share of encoding angles pi*x within
    :data:`BINARY_ANGLE` of 0 or pi.
    """

    seed: int
    map_min: float
    map_max: float
    map_std: float
    background: float
    ink_deviation: float
    near_background: float
    dead_features: float
    saturated: float
    order_energy: tuple[float, ...]
    sin_energy: float
    intensity_r2: float
    binary_angles: float

    @classmethod
    def coerce(cls, value: FilterStats | dict[str, Any]) -> FilterStats:
        if isinstance(value, FilterStats):
            return value
        return cls(**{**value, "order_energy": tuple(value["order_energy"])})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["order_energy"] = list(self.order_energy)
        return out


def term_energies(tensor: torch.Tensor) -> tuple[tuple[float, ...], float]:
    """Shares of a one-output response tensor's squared norm by order (how many inputs a term reads: index 1 is sin,
    2 is cos, 0 is the constant 1) and in the terms with a sin factor."""
    t = tensor.detach().reshape((3,) * (tensor.dim() - 1)).numpy()
    q = t.ndim
    index = np.indices(t.shape).reshape(q, -1)
    energy = t.reshape(-1) ** 2
    total = energy.sum()
    if total == 0:
        raise ConfigError("the response tensor is zero; its terms have no shares")
    order = (index > 0).sum(axis=0)
    shares = tuple(float(energy[order == k].sum() / total) for k in range(q + 1))
    return shares, float(energy[(index == 1).any(axis=0)].sum() / total)


def _patch_values(layer: QuanvLayer, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each image's patches (B, P, q) and the filter's value at each (B, P)."""
    with torch.no_grad():
        patches = layer.patches(images.to(torch.float64))
        values = layer(images)
    return patches.reshape(len(images), -1, patches.shape[-1]).numpy(), values.reshape(len(images), -1).numpy()


def filter_stats(layer: QuanvLayer, images: torch.Tensor, seed: int = 0) -> FilterStats:
    """:class:`FilterStats` of a one-output response-mode layer over ``images`` (B, H, W) in [0, 1]."""
    if layer.mode != "response" or layer.num_channels != 1:
        raise ConfigError(f"filter_stats reads a one-output response-mode layer; this one is {layer.mode} with "
                          f"{layer.num_channels} outputs")
    patches, values = _patch_values(layer, images)
    tensor = layer.response().detach()
    blank = torch.zeros(1, patches.shape[-1], dtype=torch.float64)
    background = float(evaluate_response(tensor, blank, layer.template.input_scale)[0, 0])
    flat, f = patches.reshape(-1, patches.shape[-1]), values.reshape(-1)
    ink = flat.max(axis=1) > 0
    if not ink.any():
        raise ConfigError("the images hold no ink (every pixel is 0); the filter's response to ink is undefined")
    deviation = np.abs(f[ink] - background)
    design = np.c_[np.ones(int(ink.sum())), flat[ink]]
    fit, *_ = np.linalg.lstsq(design, f[ink], rcond=None)
    variance = f[ink].var()
    r2 = float(1 - ((f[ink] - design @ fit) ** 2).mean() / variance) if variance > 0 else 0.0
    angles = layer.template.input_scale * flat
    orders, sin_share = term_energies(tensor)
    return FilterStats(
        seed=seed, map_min=float(f.min()), map_max=float(f.max()), map_std=float(f.std()), background=background,
        ink_deviation=float(np.median(deviation)), near_background=float((deviation < TOLERANCE).mean()),
        dead_features=float((values.std(axis=0) < TOLERANCE).mean()), saturated=float((np.abs(f) > SATURATED).mean()),
        order_energy=orders, sin_energy=sin_share, intensity_r2=r2,
        binary_angles=float(((angles < BINARY_ANGLE) | (angles > math.pi - BINARY_ANGLE)).mean()),
    )


class _FixedFeatures(nn.Module):
    """A frozen model's head on precomputed features: what :func:`train_step` trains in a frozen run."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def quantum_parameters(self) -> list[nn.Parameter]:
        return []


def replay_frozen(config: TrainConfig, model: ResQuNN, data: Dataset, epochs: int | None = None,
                  standardize: bool = False) -> float:
    """The test accuracy after ``epochs`` (default ``config.epochs``) of ``config``'s frozen run of ``model``, replayed
    on features computed once: the same head and initial weights, Adam at ``config.lr``, batches in the run's order
    (:func:`qresnet.run.train.epoch_order`). ``standardize`` first z-scores each feature with the training images'
    mean and std (a constant feature is only centred): the experiment that asks whether the map's scale, not its
    content, limits the head. ``model`` is not changed."""
    if not config.frozen or config.head != "linear":
        raise ConfigError("replay_frozen replays a frozen run with the linear head; this config is "
                          f"{'frozen' if config.frozen else 'trainable'} with the {config.head} head")
    with torch.no_grad():
        train = model.features(data.x_train).flatten(1)
        test = model.features(data.x_test).flatten(1)
    if standardize:
        mean, std = train.mean(0), train.std(0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        train, test = (train - mean) / std, (test - mean) / std
    fixed = _FixedFeatures(copy.deepcopy(model.head))
    optimizer = torch.optim.Adam(fixed.parameters(), lr=config.lr)
    n = len(data.y_train)
    for epoch in range(1, (config.epochs if epochs is None else epochs) + 1):
        order = epoch_order(config.seed, epoch, n)
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            train_step(fixed, optimizer, train[idx], data.y_train[idx])
    with torch.no_grad():
        return float((fixed(test).argmax(1) == data.y_test).double().mean())


def seed_model(config: TrainConfig, filter_seed: int | None = None) -> tuple[ResQuNN, Dataset]:
    """``config``'s initial model and data split; with ``filter_seed``, its quanvolution weights are those that seed
    gives (the head and the split stay ``config.seed``'s), so a filter can be tried on another seed's split."""
    data = load_dataset(config.data_config())
    backend = resolve_backend(config.backend, config.backend_options)
    model = build_model(config, backend, data.image_shape, data.num_classes)
    if filter_seed is not None and filter_seed != config.seed:
        donor = build_model(dataclasses.replace(config, seed=filter_seed), backend, data.image_shape, data.num_classes)
        with torch.no_grad():
            for layer, source in zip(model.layers, donor.layers):
                layer.weight.copy_(source.weight)
    return model, data


def single_frozen_config(seed: int, data_dir: str | None = None, epochs: int = 15, **overrides: Any) -> TrainConfig:
    """The reproduction's single-layer frozen benchmark: MNIST 10 x 200, one layer, no residual, linear head, Adam
    0.01, batch 16, ``epochs`` (the reproduction ran 15)."""
    values = {"dataset": "mnist", "data_dir": data_dir, "per_class": 200, "layers": 1, "residual": "none",
              "frozen": True, "epochs": epochs, "lr": 0.01, "batch_size": 16, "seed": seed, **overrides}
    return TrainConfig(**values)


def diagnose_seeds(seeds: Sequence[int], make_config: Callable[[int], TrainConfig] = single_frozen_config,
                   accuracy: bool = True, progress: bool = False) -> list[dict[str, Any]]:
    """One row per seed: the frozen filter's :class:`FilterStats` over the training images and, if ``accuracy``,
    the replayed frozen run's test accuracy (``frozen_acc``)."""
    rows = []
    for seed in seeds:
        config = make_config(seed)
        model, data = seed_model(config)
        row = filter_stats(model.layers[0], data.x_train, seed).to_dict()
        if accuracy:
            row["frozen_acc"] = replay_frozen(config, model, data)
        rows.append(row)
        if progress:
            print(f"seed {seed}: ink deviation {row['ink_deviation']:.3f}"
                  + (f", frozen accuracy {row['frozen_acc']:.4f}" if accuracy else ""), flush=True)
    return rows


def rank_correlations(rows: Sequence[dict[str, Any]], target: str = "frozen_acc") -> dict[str, float]:
    """Spearman's rank correlation of every scalar statistic with ``target`` over the rows (seeds); NaN for a
    statistic that is the same in every row."""
    from scipy.stats import spearmanr

    if len(rows) < 3:
        raise ConfigError(f"{len(rows)} seeds give no correlation; use 3 or more")
    y = [row[target] for row in rows]
    names = [k for k, v in rows[0].items() if k not in (target, "seed") and isinstance(v, (int, float))]
    out = {}
    for name in names:
        x = [row[name] for row in rows]
        out[name] = math.nan if len(set(x)) == 1 else float(spearmanr(x, y)[0])  # a constant has no rank order
    return out


def threshold_split(rows: Sequence[dict[str, Any]], statistic: str, target: str = "frozen_acc") -> dict[str, Any]:
    """The cut on ``statistic`` that best separates the seeds by ``target`` (largest gap between the two groups'
    mean ``target``, at least 2 seeds a side), with the groups' means and sizes."""
    ordered = sorted(rows, key=lambda row: row[statistic])
    best: dict[str, Any] | None = None
    for k in range(2, len(ordered) - 1):
        low, high = ordered[:k], ordered[k:]
        gap = np.mean([r[target] for r in high]) - np.mean([r[target] for r in low])
        if best is None or abs(gap) > abs(best["gap"]):
            best = {"cut": (ordered[k - 1][statistic] + ordered[k][statistic]) / 2, "gap": float(gap),
                    "low_mean": float(np.mean([r[target] for r in low])), "low_n": k,
                    "high_mean": float(np.mean([r[target] for r in high])), "high_n": len(ordered) - k}
    if best is None:
        raise ConfigError(f"{len(rows)} seeds cannot be split with 2 a side; use 4 or more")
    return best


def corner_values(layer: QuanvLayer) -> np.ndarray:
    """f at the 2^q binary patches (every pixel 0 or 1), first pixel slowest: what a layer does to clean ink."""
    corners = torch.tensor(list(itertools.product((0.0, 1.0), repeat=layer.template.num_inputs)), dtype=torch.float64)
    with torch.no_grad():
        return evaluate_response(layer.response(), corners, layer.template.input_scale)[:, 0].numpy()


def plot_diagnosis(rows: Sequence[dict[str, Any]], path: str | Path, statistic: str = "ink_deviation",
                   marked: Sequence[int] = (), second: str = "map_std") -> Path:
    """Frozen accuracy against ``statistic`` and against ``second``, one point per seed; ``marked`` seeds (the
    reproduction's) drawn filled and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    correlations = rank_correlations(rows)
    for ax, name in zip(axes, (statistic, second)):
        for row in rows:
            filled = row["seed"] in marked
            ax.scatter(row[name], row["frozen_acc"], s=36, color="C0", facecolors="C0" if filled else "none")
            if filled:
                ax.annotate(str(row["seed"]), (row[name], row["frozen_acc"]), textcoords="offset points",
                            xytext=(4, 3), fontsize=8)
        ax.set_xlabel(f"{name.replace('_', ' ')} (Spearman {correlations[name]:+.2f})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("frozen test accuracy")
    fig.suptitle(f"single-layer frozen benchmark, {len(rows)} seeds (filled: the reproduction's seeds)", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
