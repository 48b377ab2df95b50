"""Shared by the benchmark scripts: the design section 5 workload, inputs, timing and the JSON record."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from qresnet.provenance import environment


def mnist_batch(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``batch`` MNIST training images in [0, 1] if mnist.npz is found, else seeded uniform 28x28 inputs."""
    here = Path(__file__).resolve().parent
    for folder in (os.environ.get("QRESNET_DATA_DIR"), here.parent.parent / "shared" / "data"):
        if folder and (Path(folder) / "mnist.npz").is_file():
            with np.load(Path(folder) / "mnist.npz") as data:
                pick = np.random.default_rng(seed).choice(len(data["y_train"]), batch, replace=False)
                images = torch.as_tensor(data["x_train"][pick] / 255.0)
                labels = torch.as_tensor(data["y_train"][pick].astype(np.int64))
            return images, labels, f"MNIST ({Path(folder) / 'mnist.npz'})"
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 28, 28, dtype=torch.float64, generator=gen),
            torch.randint(0, 10, (batch,), generator=gen), "uniform random 28x28 (mnist.npz not found)")


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Forward, backward, optimizer step: the unit every training figure counts."""
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()


def time_calls(fn: Callable[[], None], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_json(path: str | None, record: dict) -> None:
    record = {**record, "environment": environment()}
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(record, indent=2))
        print(f"wrote {path}")
