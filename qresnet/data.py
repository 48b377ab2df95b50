"""Datasets. The embedded default is scikit-learn's 8x8 digits, so every command works offline."""

from __future__ import annotations

import numpy as np
import torch


def load_digits_images(num_samples: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as (N, 8, 8) float64 images in [0, 1] and int64 labels; a seeded sample if asked."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target
    if num_samples is not None:
        pick = np.random.default_rng(seed).choice(len(images), size=num_samples, replace=False)
        images, labels = images[pick], labels[pick]
    return torch.as_tensor(images, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.int64)
