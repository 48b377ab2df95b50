"""The PennyLane peer figure: the docs/design.md section 10 training workload written the fast PennyLane way.

Workload: see ``_common`` (shared by all peers). The figure is training images per second of a
full step (forward, backward, optimizer step), median over timed steps after one warm-up step.

Variants:

* ideal: ``default.qubit``, torch interface, ``diff_method="backprop"``; all patches of the batch
  are one broadcast dimension, so each layer is ONE QNode call per step.
* noisy: ``default.mixed`` with a ``DepolarizingChannel`` after every gate, probabilities from
  IBM's FakeTorino calibration (see :func:`torino_noise`); broadcasting + backprop as well, but
  the broadcast is cut into chunks of ``noisy_chunk`` patches (one QNode call each): on this
  machine a 3136-patch broadcast density-matrix call is several times slower (and far more
  erratic) than the same patches in chunks of a few hundred. By default it is timed on the
  first 4 images of the batch (``scaled`` in the result): a step's cost is linear in patches.

    cd benchmarks && ../.venv/bin/python pennylane_peer.py

Import from the benchmark scripts (``sys.path`` holding ``benchmarks/``)::

    from pennylane_peer import pennylane_available, peer_images_per_second
"""

from __future__ import annotations

import math

import numpy as np
import torch

from _common import (CNOT_PAIRS, N_QUBITS, N_WEIGHTS, REPS, Contender, WorkloadModel, describe_noise, run_rounds,
                     torino_noise, train_step, z_mean_diagonal)

try:
    import pennylane as qml
except ImportError:  # the peer figure is optional: callers check pennylane_available()
    qml = None

MEASUREMENTS = ("zi", "ham", "probs")
# How the filter output is read (all give the same numbers, see check_against_reference):
#   zi:    qml.expval(Z_i) for each i, mean taken in torch;
#   ham:   qml.expval(Hamiltonian(sum_i Z_i / 4));
#   probs: qml.probs(wires=0..3) contracted in torch with the diagonal of sum_i Z_i / 4.
# Full training steps on this machine (2 cores, PennyLane 0.45.1, torch 2.13 CPU, 16 images):
# ideal, 1 torch thread, medians of 7 steps in 3 interleaved rounds: zi ~375-430, ham ~390-440,
# probs ~420-510 images/s; noisy (4 images, chunk 196): probs 4.3-6.6, zi 3.3-5.8, ham 2.8-4.9.
# probs was the fastest (or tied) every round, so it is the default for both variants.
DEFAULT_MEASUREMENT = {False: "probs", True: "probs"}
# Patches per default.mixed QNode call (one image's layer-1 patches). Chunks of 98..784 patches
# were within ~20% of each other; one broadcast of all 3136 layer-1 patches of a 16-image batch
# took 4-30 s for forward+backward (vs ~2-3 s chunked), so the noisy variant chunks.
DEFAULT_NOISY_CHUNK = 196


def pennylane_available() -> bool:
    return qml is not None


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------

def make_filter(noise: dict | None = None, measurement: str = "ham"):
    """The quanvolution filter as a function ``(patches (N, 4), weights (16,)) -> (N,)`` of one QNode.

    ``noise`` None: default.qubit; else default.mixed with the channels of :func:`torino_noise`.
    """
    if measurement not in MEASUREMENTS:
        raise ValueError(f"measurement={measurement!r} is not one of {MEASUREMENTS}")
    dev = qml.device("default.mixed" if noise else "default.qubit", wires=N_QUBITS)
    p1 = noise["p_1q"] if noise else 0.0
    p2 = noise["p_2q_per_qubit"] if noise else 0.0
    hamiltonian = qml.Hamiltonian([1.0 / N_QUBITS] * N_QUBITS, [qml.PauliZ(q) for q in range(N_QUBITS)])

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(x, w):
        for q in range(N_QUBITS):
            qml.RY(math.pi * x[..., q], wires=q)  # broadcast over the patches
            if noise:
                qml.DepolarizingChannel(p1, wires=q)
        k = 0
        for _ in range(REPS):
            for gate in (qml.RY, qml.RZ):
                for q in range(N_QUBITS):
                    gate(w[k], wires=q)
                    k += 1
                    if noise:
                        qml.DepolarizingChannel(p1, wires=q)
            for c, t in CNOT_PAIRS:
                qml.CNOT(wires=[c, t])
                if noise:
                    qml.DepolarizingChannel(p2, wires=c)
                    qml.DepolarizingChannel(p2, wires=t)
        if measurement == "zi":
            return [qml.expval(qml.PauliZ(q)) for q in range(N_QUBITS)]
        if measurement == "ham":
            return qml.expval(hamiltonian)
        return qml.probs(wires=range(N_QUBITS))

    zdiag = z_mean_diagonal()  # PennyLane's wire 0 is the most significant bit too

    def apply(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = circuit(x, w)
        if measurement == "zi":
            return torch.stack(list(out), dim=-1).mean(dim=-1)
        if measurement == "probs":
            return out @ zdiag.to(out.dtype)
        return out

    apply.circuit = circuit
    return apply


class PeerModel(WorkloadModel):
    """The workload model with PennyLane filters: default.qubit, or default.mixed with ``noise``."""

    def __init__(self, noise: dict | None = None, seed: int = 0, measurement: str | None = None,
                 chunk: int | None = None):
        super().__init__(seed)
        self.measurement = measurement or DEFAULT_MEASUREMENT[bool(noise)]
        self.chunk = chunk
        self.qnode_filter = make_filter(noise, self.measurement)

    def filter(self, p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.chunk is None or len(p) <= self.chunk:
            return self.qnode_filter(p, w)
        return torch.cat([self.qnode_filter(p[s:s + self.chunk], w) for s in range(0, len(p), self.chunk)])


# --------------------------------------------------------------------------------------------
# the figure
# --------------------------------------------------------------------------------------------

def contender(noisy: bool, images: torch.Tensor, labels: torch.Tensor, seed: int = 0, *, steps: int = 3,
              noisy_images: int | None = 4, measurement: str | None = None,
              noisy_chunk: int | None = DEFAULT_NOISY_CHUNK) -> Contender:
    """The PennyLane peer's training step, for :func:`_common.run_rounds` (``steps`` timed steps a round).

    The noisy variant may be timed on the first ``noisy_images`` images only: every cost of its
    step is proportional to the number of patches, so images/s on fewer images is the figure
    for the batch (``scaled`` in the record).
    """
    if qml is None:
        raise RuntimeError("PennyLane is not installed (pip install pennylane)")
    batch = len(images)
    noise = torino_noise() if noisy else None
    n = min(batch, noisy_images) if noisy and noisy_images else batch
    model = PeerModel(noise, seed, measurement, noisy_chunk if noisy else None)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = images[:n].to(torch.float64), labels[:n]
    device = "default.mixed" if noisy else "default.qubit"
    return Contender(f"pennylane {device}", lambda: train_step(model, opt, x, y), n, batch, steps, info={
        "device": device, "noise": noise, "pennylane": qml.__version__, "measurement": model.measurement,
        "chunk": model.chunk, "diff_method": "backprop", "broadcast": True, "torch_threads": torch.get_num_threads()})


def peer_images_per_second(noisy: bool, images: torch.Tensor, labels: torch.Tensor, steps: int = 3,
                           seed: int = 0, *, noisy_images: int | None = 4, noisy_steps: int | None = None,
                           measurement: str | None = None, noisy_chunk: int | None = DEFAULT_NOISY_CHUNK,
                           threads: int | None = None) -> dict:
    """Training images per second of the PennyLane peer alone (median of timed steps after one warm-up).

    Returns :meth:`Contender.record`: {"images_per_s", "seconds_per_step" (scaled to the batch),
    "images_timed", "scaled", "device", "noise", "pennylane", ...}. The noisy variant runs
    ``noisy_steps`` steps if given. ``threads`` sets torch's thread count for the measurement
    only (None: leave it as the caller has it).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        timed_steps = max(1, min(steps, noisy_steps) if noisy and noisy_steps else steps)
        peer = contender(noisy, images, labels, seed, steps=timed_steps, noisy_images=noisy_images,
                         measurement=measurement, noisy_chunk=noisy_chunk)
        run_rounds([peer], 1)
        return peer.record()
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# correctness: an independent numpy computation of the same circuit
# --------------------------------------------------------------------------------------------

def _np_ry(t: float) -> np.ndarray:
    c, s = math.cos(t / 2), math.sin(t / 2)
    return np.array([[c, -s], [s, c]], dtype=complex)


def _np_rz(t: float) -> np.ndarray:
    return np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)])


def _np_apply1(rho_or_psi: np.ndarray, u: np.ndarray, q: int, density: bool) -> np.ndarray:
    """Apply a one-qubit matrix to axis q (state, shape (2,)*4) or axes q and q+4 (density, (2,)*8)."""
    out = np.moveaxis(np.tensordot(u, rho_or_psi, axes=([1], [q])), 0, q)
    if density:
        out = np.moveaxis(np.tensordot(u.conj(), out, axes=([1], [q + N_QUBITS])), 0, q + N_QUBITS)
    return out


def _np_cnot(a: np.ndarray, c: int, t: int, density: bool) -> np.ndarray:
    def flip(x: np.ndarray, c: int, t: int) -> np.ndarray:
        x = x.copy()
        idx = [slice(None)] * x.ndim
        idx[c] = 1
        sub = x[tuple(idx)]  # the control-1 half; axis t shifts down by one if t > c
        x[tuple(idx)] = np.flip(sub, axis=t - (t > c))
        return x
    a = flip(a, c, t)
    return flip(a, c + N_QUBITS, t + N_QUBITS) if density else a


def _np_depolarize(rho: np.ndarray, p: float, q: int) -> np.ndarray:
    paulis = (np.array([[0, 1], [1, 0]], complex), np.array([[0, -1j], [1j, 0]]), np.diag([1.0 + 0j, -1.0]))
    return (1 - p) * rho + sum(p / 3 * _np_apply1(rho, s, q, True) for s in paulis)


def reference_filter(x: np.ndarray, w: np.ndarray, noise: dict | None = None) -> float:
    """Mean <Z_i> of the filter circuit by plain numpy: state vector, or density matrix with ``noise``."""
    density = noise is not None
    p1 = noise["p_1q"] if density else 0.0
    p2 = noise["p_2q_per_qubit"] if density else 0.0
    shape = (2,) * (2 * N_QUBITS if density else N_QUBITS)
    a = np.zeros(shape, dtype=complex)
    a[(0,) * len(shape)] = 1.0

    def one(a, u, q):
        a = _np_apply1(a, u, q, density)
        return _np_depolarize(a, p1, q) if density else a

    for q in range(N_QUBITS):
        a = one(a, _np_ry(math.pi * x[q]), q)
    k = 0
    for _ in range(REPS):
        for make in (_np_ry, _np_rz):
            for q in range(N_QUBITS):
                a = one(a, make(w[k]), q)
                k += 1
        for c, t in CNOT_PAIRS:
            a = _np_cnot(a, c, t, density)
            if density:
                a = _np_depolarize(_np_depolarize(a, p2, c), p2, t)
    if density:
        probs = np.real(np.einsum("abcdabcd->abcd", a))
    else:
        probs = np.abs(a) ** 2
    z = [float(np.sum(probs.take(0, axis=q)) - np.sum(probs.take(1, axis=q))) for q in range(N_QUBITS)]
    return float(np.mean(z))


def check_against_reference(n_patches: int = 5, seed: int = 1, verbose: bool = False) -> float:
    """Max |PennyLane - numpy| over random patches and weights, ideal and noisy, every measurement.

    The noisy differences are ~1e-8, not ~1e-16: PennyLane 0.45's ``RZ.compute_eigvals`` builds
    its prefactors as a default-dtype torch tensor, so with a 0-dim float64 angle the eigenvalues
    come out complex64, and default.mixed applies RZ (a diagonal gate) from them in single
    precision. default.qubit uses RZ's complex128 matrix, so the ideal path is exact.

    Also checks the layer's patch order: one 4x4 image through ``PeerModel.layer`` against the
    reference filter on image[2r:2r+2, 2c:2c+2] flattened row-major.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n_patches, N_QUBITS))
    w = rng.uniform(-math.pi, math.pi, N_WEIGHTS)
    worst = 0.0
    for noise in (None, torino_noise()):
        ref = np.array([reference_filter(p, w, noise) for p in x])
        for measurement in MEASUREMENTS:
            got = make_filter(noise, measurement)(torch.as_tensor(x), torch.as_tensor(w)).detach().numpy()
            diff = float(np.max(np.abs(got - ref)))
            worst = max(worst, diff)
            if verbose:
                print(f"  {'noisy' if noise else 'ideal'} {measurement:5s}: max |pennylane - numpy| = {diff:.2e}")
    model = PeerModel(None, seed)
    image = rng.uniform(0, 1, (4, 4))
    with torch.no_grad():
        got = model.layer(torch.as_tensor(image)[None], model.w1)[0].numpy()
    ref = np.array([[reference_filter(image[2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(-1), model.w1.detach().numpy())
                     for c in range(2)] for r in range(2)])
    diff = float(np.max(np.abs(got - ref)))
    if verbose:
        print(f"  layer patch order (4x4 image): max diff = {diff:.2e}")
    return max(worst, diff)


if __name__ == "__main__":
    import os

    if not pennylane_available():
        raise SystemExit("PennyLane is not installed")
    print(f"PennyLane {qml.__version__}, torch {torch.__version__}, {torch.get_num_threads()} torch threads")
    print(f"load average at start: {os.getloadavg()}")
    print("reference check (PennyLane filter vs independent numpy):")
    print(f"  max abs difference {check_against_reference(verbose=True):.2e}")
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(16, 28, 28, dtype=torch.float64, generator=gen)
    labels = torch.randint(0, 10, (16,), generator=gen)
    runs = [(False, {"steps": 7}), (False, {"steps": 7, "threads": 1}), (True, {"steps": 3})]
    for noisy, kwargs in runs:
        r = peer_images_per_second(noisy, images, labels, **kwargs)
        how = f"{r['images_timed']} images" + (f", scaled to {r['batch']}" if r["scaled"] else "")
        print(f"{'noisy' if noisy else 'ideal'} ({r['device']}, {r['measurement']}, chunk {r['chunk']}, "
              f"{r['torch_threads']} thread(s)): {r['images_per_s']:.2f} images/s, {r['seconds_per_step']:.3f} s/step "
              f"(median of {r['steps_timed']} step(s) on {how}; steps {', '.join(f'{t:.3f}' for t in r['step_seconds'])} s)")
        if r["noise"]:
            print(f"  noise: {describe_noise(r['noise'])}")
    print(f"load average at end: {os.getloadavg()}")
