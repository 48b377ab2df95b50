"""Shared by the benchmark scripts: the docs/design.md section 10 workload, inputs, noise, timing and the JSON record.

The workload (docs/design.md section 10, shared by every peer): two quanvolution layers, 2x2 windows with
stride 2 (28x28 -> 14x14 -> 7x7). Patch value x_i (row-major in the patch) is encoded as
RY(pi*x_i) on qubit i; then 2 x [RY(w) on every qubit, RZ(w) on every qubit, CNOT 0-1, 1-2, 2-3]
(16 weights per layer, weight k in that gate order); the output per patch is the mean of the
four <Z_i>. Residual O1+O2: layer 2 reads O1 detached (in qresnet layer 2's input is a measured
value, so no gradient flows back through it), h2 = pad(O2, bottom-right zeros) + O1 (14x14);
linear head 196 -> 10 (float64), cross-entropy, Adam lr 0.01, batch 16.
"""

from __future__ import annotations

import functools
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qresnet.provenance import environment

try:
    from qresnet.run.step import train_step as product_step
except ImportError:  # an earlier qresnet (a head_step --baseline checkout)
    product_step = None

N_QUBITS = 4
REPS = 2
N_WEIGHTS = 2 * N_QUBITS * REPS  # 16
CNOT_PAIRS = ((0, 1), (1, 2), (2, 3))


def mnist_batch(batch: int, seed: int = 0, classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``batch`` MNIST training images in [0, 1] if mnist.npz is found, else seeded uniform 28x28 inputs.

    ``classes``: draw only images whose label is below it (the labels 0 .. classes-1 of a
    ``--classes 0,1,...`` run); None draws from all ten.
    """
    here = Path(__file__).resolve().parent
    for folder in (os.environ.get("QRESNET_DATA_DIR"), here.parent.parent / "shared" / "data"):
        if folder and (Path(folder) / "mnist.npz").is_file():
            with np.load(Path(folder) / "mnist.npz") as data:
                labels = data["y_train"]
                pool = np.flatnonzero(labels < classes) if classes is not None else np.arange(len(labels))
                pick = np.random.default_rng(seed).choice(pool, batch, replace=False)
                images = torch.as_tensor(data["x_train"][pick] / 255.0)
                picked = torch.as_tensor(labels[pick].astype(np.int64))
            return images, picked, f"MNIST ({Path(folder) / 'mnist.npz'})"
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 28, 28, dtype=torch.float64, generator=gen),
            torch.randint(0, classes or 10, (batch,), generator=gen), "uniform random 28x28 (mnist.npz not found)")


# --------------------------------------------------------------------------------------------
# the workload model, around any filter
# --------------------------------------------------------------------------------------------

def patches(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B * H/2 * W/2, 4): 2x2 stride-2 patches, values row-major in the patch."""
    b, h, w = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2).permute(0, 1, 3, 2, 4).reshape(-1, 4)


def z_mean_diagonal() -> torch.Tensor:
    """Diagonal of (Z_0 + Z_1 + Z_2 + Z_3) / 4, qubit 0 the most significant bit of the basis index."""
    bits = (np.arange(2 ** N_QUBITS)[:, None] >> (N_QUBITS - 1 - np.arange(N_QUBITS))) & 1
    return torch.as_tensor((1.0 - 2.0 * bits).mean(axis=1))


class WorkloadModel(nn.Module):
    """Two quanvolution layers, residual O1+O2, linear head 196 -> 10 (float64); subclasses give ``filter``.

    Every peer initialises the same way from ``seed`` (weights uniform in [-pi, pi], the head from
    torch's default init), so peers built with one seed compute the same function.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter((torch.rand(N_WEIGHTS, dtype=torch.float64, generator=gen) * 2 - 1) * math.pi)
        self.w2 = nn.Parameter((torch.rand(N_WEIGHTS, dtype=torch.float64, generator=gen) * 2 - 1) * math.pi)
        torch.manual_seed(seed)
        self.head = nn.Linear(14 * 14, 10, dtype=torch.float64)

    def filter(self, p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Patches (N, 4) and one layer's weights (16,) -> the N filter outputs."""
        raise NotImplementedError

    def layer(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, h, wd = x.shape
        return self.filter(patches(x), w).reshape(b, h // 2, wd // 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.layer(x.to(torch.float64), self.w1)  # (B, 14, 14)
        o2 = self.layer(o1.detach(), self.w2)  # (B, 7, 7): layer 2's input is a measured value
        return nn.functional.pad(o2, (0, 7, 0, 7)) + o1  # h2 = pad(O2) + O1, (B, 14, 14)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))

    def quantum_parameters(self) -> list[nn.Parameter]:
        """The filters' weights, one tensor per layer (as ``ResQuNN``'s): the step measures their gradient norms."""
        return [self.w1, self.w2]


# --------------------------------------------------------------------------------------------
# noise: IBM fake_torino calibration -> depolarizing probabilities
# --------------------------------------------------------------------------------------------

@functools.cache
def torino_noise() -> dict:
    """Depolarizing probabilities comparable to ``FakeTorino`` (mean sx and cz errors of its target).

    Conversion. The target's ``error`` is an average gate infidelity r = 1 - F_avg (RB-style).
    The depolarizing channel with probability p (PennyLane's ``DepolarizingChannel(p)``) applies
    X, Y, Z each with probability p/3, i.e. rho -> (1 - 4p/3) rho + (4p/3) I/2 (Qiskit's
    ``depolarizing_error(4p/3, 1)``): a Pauli channel with process fidelity F_pro = 1 - p; with
    F_avg = (d F_pro + 1) / (d + 1):

    * one qubit (d = 2): r = 2p/3, so p_1q = 3 r_sx / 2 (the same depolarizing strength Qiskit
      Aer's ``NoiseModel.from_backend`` derives from the same number);
    * two qubits: the cz error is applied as TWO independent single-qubit depolarizing channels
      (one on each CNOT qubit, after the CNOT), each with probability p_2q; their product
      channel has F_pro = (1 - p_2q)^2, d = 4, so r_cz = (4/5)(1 - (1 - p_2q)^2), i.e.
      p_2q = 1 - sqrt(1 - 5 r_cz / 4): the pair of channels has the calibrated average error.

    The single-qubit channel follows every single-qubit gate, the encoding RY, the trainable RY
    and RZ alike. (On the device RZ is virtual and error-free while an RY costs two sx pulses, so
    one sx-sized error per RY and per RZ gives about the same total.) cz pairs whose calibrated
    error is 1.0 are the device's non-operational couplers, which a transpiler never routes
    through; they are left out of the mean (with them it would be ~0.08, dominated by dead
    pairs). No readout error is modelled (the peer figures are about simulation cost).
    """
    from qiskit_ibm_runtime.fake_provider import FakeTorino

    target = FakeTorino().target
    sx = [p.error for p in target["sx"].values() if p is not None and p.error is not None]
    cz_all = [p.error for p in target["cz"].values() if p is not None and p.error is not None]
    cz = [e for e in cz_all if e < 1.0]
    r1, r2 = float(np.mean(sx)), float(np.mean(cz))
    return {
        "backend": "FakeTorino",
        "sx_error_mean": r1,
        "cz_error_mean": r2,
        "cz_error_mean_including_dead_pairs": float(np.mean(cz_all)),
        "sx_qubits": len(sx),
        "cz_pairs_used": len(cz),
        "cz_pairs_excluded_error_1": len(cz_all) - len(cz),
        "p_1q": 1.5 * r1,
        "p_2q_per_qubit": 1.0 - math.sqrt(1.0 - 1.25 * r2),
        "placement": "DepolarizingChannel(p_1q) after every RY/RZ (encoding included); "
                     "DepolarizingChannel(p_2q_per_qubit) on control and on target after every CNOT",
        "conversion": "p_1q = 3/2 r_sx; p_2q = 1 - sqrt(1 - 5/4 r_cz) (two 1-qubit channels with average error r_cz)",
    }


def describe_noise(noise: dict) -> str:
    return (f"sx error {noise['sx_error_mean']:.3e} -> p_1q {noise['p_1q']:.3e}; cz error {noise['cz_error_mean']:.3e} "
            f"({noise['cz_pairs_excluded_error_1']} dead pairs excluded) -> p_2q {noise['p_2q_per_qubit']:.3e} per CNOT qubit")


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------

def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor) -> None:
    """The product's training step (``qresnet.run.step.train_step``: forward, loss check, backward, gradient norms,
    optimizer step), the unit every training figure counts, for ours and every peer alike."""
    if product_step is None:  # a baseline checkout from before the step module (head_step --baseline): its bare step
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        return
    product_step(model, optimizer, images, labels)


def time_calls(fn: Callable[[], None], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Contender:
    """One figure of an interleaved benchmark: a training step on ``images`` images, timed ``steps`` times a round.

    ``batch`` is the batch the figure stands for; a contender timed on fewer images (``images <
    batch``) is scaled: its images/s is the batch's, since each of its step costs is linear in
    the number of patches.
    """

    name: str
    step: Callable[[], None]
    images: int
    batch: int
    steps: int = 1
    info: dict = field(default_factory=dict)
    times: list[float] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.images / median(self.times)

    def record(self) -> dict:
        seconds = median(self.times)
        return {"images_per_s": self.images_per_s, "seconds_per_step": seconds * self.batch / self.images,
                "steps_timed": len(self.times), "images_timed": self.images, "batch": self.batch,
                "scaled": self.images < self.batch, "step_seconds": self.times, **self.info}


def run_rounds(contenders: Sequence[Contender], rounds: int) -> None:
    """One warm-up step each, then ``rounds`` rounds in which every contender takes its timed steps in turn.

    Interleaving spreads the machine's load changes over all contenders alike, so the medians
    (and their ratios) of one run are comparable even when the absolutes drift.
    """
    for c in contenders:
        c.step()  # warm-up: transpile and compile caches, allocator
    for _ in range(rounds):
        for c in contenders:
            c.times.extend(time_calls(c.step, c.steps))


def write_json(path: str | None, record: dict) -> None:
    record = {**record, "environment": environment()}
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(record, indent=2))
        print(f"wrote {path}")
