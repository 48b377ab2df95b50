"""The plain-torch peers: the docs/design.md section 10 workload written in torch alone, without qresnet's engine.

Workload: see ``_common`` (the same model, weights and head initialisation as the PennyLane
peer). Everything is complex128 / float64 and differentiated by torch's autograd. Two ways to
compute the filter, each ideal and noisy:

* ``gates`` (gate by gate): every patch is simulated through every gate, the encoding RY(pi x_i)
  on |0000> included, and autograd runs back through the whole simulation to the weights.
  Ideal: batched statevectors (N, 16). Noisy: batched density matrices, stored as vectors of
  256 in qubit-major order, where each gate together with the channel that follows it is one
  superoperator on its qubit(s) (4x4, or 16x16 for a CNOT).
* ``folded`` (Heisenberg picture): once per layer and step, the weight-dependent part of the
  circuit (everything after the encoding) is folded into the observable: O' = U^dagger O U
  (ideal; U from one Kronecker product per rotation layer and the CNOT chain) or O' =
  E^dagger(O), the adjoint of the noisy channel (noisy; vec(O) carried back through the gates'
  superoperators); then each patch's value is <psi(x)| O' |psi(x)> (ideal) or Tr[O' rho(x)]
  (noisy), psi(x) / rho(x) the encoded product state, and autograd runs back through the fold.
  Per step: two folds of 16x16 matrices, then one 16x16 (ideal) or 256-term (noisy) quadratic
  form per patch.

Noise (noisy variants): a depolarizing channel after every gate, probabilities from IBM
FakeTorino's calibration (``_common.torino_noise``, the same channels as the PennyLane
``default.mixed`` peer): after every single-qubit gate (encoding included) on its qubit, and
after every CNOT on its control and its target. The folded variant puts the encoding's channel
into rho(x), which stays a product state (local noise on a product state keeps it one).

Why it is written this way (the strongest plain-torch peer, not a strawman; 1 torch thread,
3136 patches, this 2-core machine under load): a statevector gate as one (N, 16) x (16, 16)
product took ~115 us vs ~310 us as a broadcast 2x2 matmul on the reshaped state; the noisy
gate-by-gate step as qubit-major superoperators ran ~14 images/s vs ~5 with (N, 16, 16)
conjugations and partial traces; building the fold from whole layers (and caching the constant
CNOT matrices) and contracting Tr[O' rho(x)] one qubit at a time took the folded figures from
~1600 / ~800 to ~4000 / ~2000 images/s (ideal / noisy).

Import from the benchmark scripts (``sys.path`` holding ``benchmarks/``)::

    from torch_peer import VARIANTS, TorchPeer, contender

    cd benchmarks && python torch_peer.py     # the four figures alone, 16 MNIST images
"""

from __future__ import annotations

import functools
import math

import torch

from _common import (CNOT_PAIRS, N_QUBITS, REPS, Contender, WorkloadModel, describe_noise, torino_noise, train_step,
                     z_mean_diagonal)

VARIANTS = ("gates", "folded")
DIM = 2 ** N_QUBITS
COMPLEX = torch.complex128
CNOT = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=COMPLEX)  # control: first qubit
Z_MEAN = z_mean_diagonal().to(torch.float64)  # the observable (Z_0 + Z_1 + Z_2 + Z_3) / 4, qubit 0 most significant
assert all(t == c + 1 for c, t in CNOT_PAIRS), "CNOTs act on neighbouring axes of the state"


# --------------------------------------------------------------------------------------------
# the circuit
# --------------------------------------------------------------------------------------------

def ry(theta: torch.Tensor) -> torch.Tensor:
    """RY(theta) for a tensor of angles (...,) -> (..., 2, 2) complex128, differentiable in theta."""
    c, s = torch.cos(theta / 2), torch.sin(theta / 2)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2).to(COMPLEX)


def rz(theta: torch.Tensor) -> torch.Tensor:
    """RZ(theta) = diag(e^{-i theta/2}, e^{i theta/2}) for a tensor of angles (...,) -> (..., 2, 2)."""
    phase = torch.polar(torch.ones_like(theta), -theta / 2)
    zero = torch.zeros_like(phase)
    return torch.stack([torch.stack([phase, zero], -1), torch.stack([zero, phase.conj()], -1)], -2)


def rotation_layers(w: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per repetition, the RY and the RZ matrices of qubits 0..3, (4, 2, 2) each: weight k in the workload's order."""
    n = N_QUBITS
    return [(ry(w[2 * n * r:2 * n * r + n]), rz(w[2 * n * r + n:2 * n * (r + 1)])) for r in range(REPS)]


def gate_sequence(x: torch.Tensor, w: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """Every gate in time order as (first qubit, matrix): the encoding RY(pi x_i), one (N, 2, 2) over the patches
    x (N, 4); then per repetition RY and RZ on every qubit (2x2) and the CNOTs (4x4 on qubits c, c+1)."""
    encoding = ry(math.pi * x)
    sequence = [(q, encoding[:, q]) for q in range(N_QUBITS)]
    for layers in rotation_layers(w):
        for mats in layers:
            sequence += [(q, mats[q]) for q in range(N_QUBITS)]
        sequence += [(c, CNOT) for c, _ in CNOT_PAIRS]
    return sequence


def embed(m: torch.Tensor, q: int) -> torch.Tensor:
    """A 1- or 2-qubit matrix acting from qubit q on, as the 16x16 matrix of the register."""
    width = 1 if m.shape[-1] == 2 else 2
    left, right = torch.eye(2 ** q, dtype=COMPLEX), torch.eye(2 ** (N_QUBITS - q - width), dtype=COMPLEX)
    return torch.kron(torch.kron(left, m), right)


@functools.cache  # constants: built once, not per step
def embedded_cnot(control: int) -> torch.Tensor:
    return embed(CNOT, control)


@functools.cache
def cnot_chain() -> torch.Tensor:
    """The 16x16 matrix of CNOT 0-1, then 1-2, then 2-3."""
    return functools.reduce(lambda u, pair: embedded_cnot(pair[0]) @ u, CNOT_PAIRS, torch.eye(DIM, dtype=COMPLEX))


def kron4(mats: torch.Tensor) -> torch.Tensor:
    """(4, 2, 2) one-qubit matrices -> their 16x16 tensor product, qubit 0 most significant."""
    return torch.einsum("ab,cd,ef,gh->acegbdfh", *mats).reshape(DIM, DIM)


def on_qubits(a: torch.Tensor, m: torch.Tensor, q: int, d: int) -> torch.Tensor:
    """Apply m (k, k), or one (N, k, k) per row, to the factor of qubits q, q+1, .. of every row of a (N, d^4).

    d is the dimension per qubit: 2 for statevectors, 4 for vectorized density matrices. The row
    is viewed as (d^q, k, rest), so one broadcast matmul acts on every row at once.
    """
    v = a.reshape(a.shape[0], d ** q, m.shape[-1], -1)
    return ((m if m.dim() == 2 else m[:, None]) @ v).reshape(a.shape)


# --------------------------------------------------------------------------------------------
# noise: vectorized density matrices and their superoperators
# --------------------------------------------------------------------------------------------
# A density matrix rho (16x16) is stored as a vector of 256 in qubit-major order
# (i_0 j_0 i_1 j_1 i_2 j_2 i_3 j_3) for rho[i, j]: then a channel on qubit q is a 4x4 matrix on
# the q-th factor (and one on qubits q, q+1 a 16x16), applied like a gate to a statevector.

def superop(m: torch.Tensor) -> torch.Tensor:
    """rho -> M rho M^dagger as a matrix on the qubit-major vector, for a 1- or 2-qubit M (..., k, k)."""
    if m.shape[-1] == 2:
        return torch.einsum("...ik,...jl->...ijkl", m, m.conj()).reshape(*m.shape[:-2], 4, 4)
    m2 = m.reshape(*m.shape[:-2], 2, 2, 2, 2)
    return torch.einsum("...abAB,...cdCD->...acbdACBD", m2, m2.conj()).reshape(*m.shape[:-2], 16, 16)


@functools.cache  # a constant of the noise model: built once, not per step
def depolarizing(p: float) -> torch.Tensor:
    """The one-qubit channel applying X, Y, Z with probability p/3 each, as its 4x4 superoperator.

    (1 - p) rho + p/3 (X rho X + Y rho Y + Z rho Z) = (1 - l) rho + l Tr(rho) I/2 with l = 4p/3
    (sum over P in {I, X, Y, Z} of P rho P = 2 Tr(rho) I); Tr(rho) = vec(I) . vec(rho).
    """
    lam = 4.0 * p / 3.0
    v = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=COMPLEX)  # vec(I) in (i j) order
    return (1 - lam) * torch.eye(4, dtype=COMPLEX) + (lam / 2) * torch.outer(v, v)


def noisy_gate(m: torch.Tensor, noise: dict) -> torch.Tensor:
    """Superoperator of gate m followed by its depolarizing channel(s): p_1q after a one-qubit gate, p_2q on each
    qubit after a CNOT (the placement of ``_common.torino_noise``)."""
    if m.shape[-1] == 2:
        return depolarizing(noise["p_1q"]) @ superop(m)
    d = depolarizing(noise["p_2q_per_qubit"])
    return torch.kron(d, d) @ superop(m)


def to_qubit_major(o: torch.Tensor) -> torch.Tensor:
    """(16, 16) matrix -> its 256 entries in qubit-major order (i_0 j_0 i_1 j_1 ...)."""
    return o.reshape((2,) * (2 * N_QUBITS)).permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(-1)


def from_qubit_major(v: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_qubit_major`."""
    return v.reshape((2,) * (2 * N_QUBITS)).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(DIM, DIM)


# --------------------------------------------------------------------------------------------
# gate by gate: every patch through every gate
# --------------------------------------------------------------------------------------------

def gates_filter(x: torch.Tensor, w: torch.Tensor, noise: dict | None = None) -> torch.Tensor:
    """Gate by gate: mean <Z_i> of every patch x (N, 4), from |0000> through every gate (and its channel).

    Ideal: statevectors (N, 16); each trainable gate is one (N, 16) x (16, 16) product (the fastest
    way measured here; the per-patch encoding gates act on their qubit's factor). Noisy: density
    matrices as qubit-major vectors (N, 256); each gate together with its channel is one
    superoperator on its qubit(s).
    """
    n = len(x)
    sequence = gate_sequence(x, w)
    if noise is None:
        psi = torch.zeros(n, DIM, dtype=COMPLEX)
        psi[:, 0] = 1
        for q, m in sequence:
            if m.dim() == 3:  # the encoding: one matrix per patch
                psi = on_qubits(psi, m, q, 2)
            else:  # the CNOT's register matrix is a constant, built once
                psi = psi @ (embedded_cnot(q) if m is CNOT else embed(m, q)).T
        return (psi.abs() ** 2) @ Z_MEAN
    rho = torch.zeros(n, DIM * DIM, dtype=COMPLEX)
    rho[:, 0] = 1
    for q, m in sequence:
        rho = on_qubits(rho, noisy_gate(m, noise), q, 4)
    diagonal = rho.reshape(n, 4, 4, 4, 4)[:, ::3, ::3, ::3, ::3].reshape(n, DIM)  # (i_q j_q) = (0 0) or (1 1)
    return diagonal.real @ Z_MEAN


# --------------------------------------------------------------------------------------------
# folded: the observable carried back through the weight-dependent part (Heisenberg picture)
# --------------------------------------------------------------------------------------------

def folded_observable(w: torch.Tensor, noise: dict | None = None) -> torch.Tensor:
    """O' (16x16, Hermitian): what the body (everything after the encoding) makes of O = mean Z_i.

    Ideal: O' = U^dagger O U, U built from the layers (each repetition's RZ.RY per qubit as one
    Kronecker product, then the CNOTs). Noisy: O' = E^dagger(O) for the body's channel E. In
    qubit-major vectors Tr[O E(rho)] = vec(O)^dagger S_n .. S_1 vec(rho) for the gates' noisy
    superoperators S_k, so vec(O')^dagger is carried back as a row vector, one gate at a time
    (row S = (S^T row^T)^T; RY, channel, RZ, channel on each qubit fused into one 4x4 first).
    """
    layers = rotation_layers(w)
    if noise is None:
        u = torch.eye(DIM, dtype=COMPLEX)
        for ry_mats, rz_mats in layers:
            u = kron4(rz_mats @ ry_mats) @ u
            u = cnot_chain() @ u
        return u.conj().T @ (Z_MEAN[:, None] * u)
    cnot = noisy_gate(CNOT, noise)
    row = to_qubit_major(torch.diag(Z_MEAN).to(COMPLEX))[None]  # (1, 256); O is real, so vec(O)^dagger = vec(O)^T
    for ry_mats, rz_mats in reversed(layers):
        for c, _ in reversed(CNOT_PAIRS):
            row = on_qubits(row, cnot.T, c, 4)
        rotations = noisy_gate(rz_mats, noise) @ noisy_gate(ry_mats, noise)  # (4, 4, 4)
        for q in range(N_QUBITS):
            row = on_qubits(row, rotations[q].T, q, 4)
    return from_qubit_major(row[0]).conj()


def encoded_qubits(x: torch.Tensor, noise: dict | None = None) -> torch.Tensor:
    """Per patch and qubit, the encoded one-qubit state: amplitudes (N, 4, 2) ideal, vec(rho_q) (N, 4, 4) noisy.

    RY(theta)|0> = (cos theta/2, sin theta/2), real. With noise, the encoding's channel is applied
    to it; local noise keeps the state a product, so rho(x) = rho_0 (x) .. (x) rho_3.
    """
    half = math.pi * x / 2
    amps = torch.stack([torch.cos(half), torch.sin(half)], -1)
    if noise is None:
        return amps
    pure = (amps[..., :, None] * amps[..., None, :]).flatten(-2)  # vec(|psi_q><psi_q|) in (i j) order
    return pure @ depolarizing(noise["p_1q"]).real.T


def product(factors: torch.Tensor) -> torch.Tensor:
    """(N, 4, k) per-qubit factors -> (N, k^4) Kronecker product, qubit 0 most significant."""
    out = factors[:, 0]
    for q in range(1, N_QUBITS):
        out = (out[:, :, None] * factors[:, q, None, :]).flatten(1)
    return out


def product_contract(factors: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """product(factors) @ t for t (k^4,), contracting one qubit at a time from the last: never builds (N, k^4).

    For the noisy fold (k = 4) this is about 20% faster per step than building the 256 products.
    """
    n, _, k = factors.shape
    out = factors[:, -1] @ t.reshape(-1, k).T  # (N, k^3)
    for q in range(N_QUBITS - 2, -1, -1):
        out = (out.reshape(n, -1, k) * factors[:, q, None, :]).sum(-1)
    return out[:, 0]


def folded_filter(x: torch.Tensor, w: torch.Tensor, noise: dict | None = None) -> torch.Tensor:
    """Folded: mean <Z_i> of every patch x (N, 4), <psi(x)| O' |psi(x)> or Tr[O' rho(x)].

    psi(x) and rho(x) are real, so only Re O' contributes (Im O' is antisymmetric).
    """
    o = folded_observable(w, noise).real
    if noise is None:
        psi = product(encoded_qubits(x))  # (N, 16)
        return ((psi @ o) * psi).sum(-1)
    # Tr[O' rho] = sum_ij O'_ij rho_ji = vec(O'^T) . vec(rho): both in qubit-major order, rho(x) a product
    return product_contract(encoded_qubits(x, noise), to_qubit_major(o.T))


FILTERS = {"gates": gates_filter, "folded": folded_filter}


# --------------------------------------------------------------------------------------------
# the model and the figure
# --------------------------------------------------------------------------------------------

class TorchPeer(WorkloadModel):
    """The workload model with a plain-torch filter: ``variant`` in :data:`VARIANTS`, noisy if ``noise``."""

    def __init__(self, variant: str, noise: dict | None = None, seed: int = 0):
        if variant not in FILTERS:
            raise ValueError(f"variant={variant!r} is not one of {VARIANTS}")
        super().__init__(seed)
        self.variant, self.noise = variant, noise

    def filter(self, p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return FILTERS[self.variant](p, w, self.noise)


def contender(variant: str, noisy: bool, images: torch.Tensor, labels: torch.Tensor, seed: int = 0, *,
              steps: int = 3) -> Contender:
    """The torch peer's training step on the whole batch, for :func:`_common.run_rounds` (``steps`` timed a round)."""
    noise = torino_noise() if noisy else None
    model = TorchPeer(variant, noise, seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x = images.to(torch.float64)
    state = "density matrix" if noisy else "statevector"
    how = {"gates": f"batched {state}, every gate", "folded": "Heisenberg fold per step, 16x16 observable"}[variant]
    return Contender(f"torch {variant} {'noisy' if noisy else 'ideal'}", lambda: train_step(model, opt, x, labels),
                     len(x), len(x), steps, info={"peer": "torch", "variant": variant, "method": how, "noise": noise,
                                  "dtype": "complex128", "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    import os

    from _common import mnist_batch, run_rounds

    torch.set_num_threads(1)
    images, labels, source = mnist_batch(16)
    print(f"torch {torch.__version__}, 1 torch thread, {source}; load average {os.getloadavg()}")
    peers = [contender(v, noisy, images, labels, steps=1 if (v, noisy) == ("gates", True) else 5)
             for noisy in (False, True) for v in VARIANTS]
    run_rounds(peers, 3)
    for c in peers:
        print(f"{c.name:20s}: {c.images_per_s:9.1f} images/s ({c.info['method']}; median of {len(c.times)} steps)")
    print(f"noise: {describe_noise(torino_noise())}; load average {os.getloadavg()}")
