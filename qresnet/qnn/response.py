"""The filter response (docs/design.md section 3): 3^q design points instead of one circuit per patch.

Each input enters one rotation with angle theta = scale * x, so every expectation value is
multilinear in v(theta) = (1, sin theta, cos theta) per input:

    f(x) = sum over a in {0,1,2}^q of T[a] * prod_i v(theta_i)[a_i]

The values at theta_i in {0, pi/2, pi} determine T exactly: they are T contracted with
A = [[1,0,1],[1,1,0],[1,0,-1]] (the rows v(0), v(pi/2), v(pi)) along every axis, so T is the
values contracted with inv(A) along every axis. Both maps are linear, so torch autograd
carries weight gradients from patches back to the design-point values, and the input
gradient of a patch is exact: d v / d theta = (0, cos theta, -sin theta).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch

DESIGN_ANGLES = (0.0, math.pi / 2, math.pi)
_A_INV = torch.tensor([[0.5, 0.0, 0.5], [-0.5, 1.0, -0.5], [0.5, 0.0, -0.5]], dtype=torch.float64)


def design_points(num_inputs: int, scale: float) -> np.ndarray:
    """The 3^q input rows whose angles are all of {0, pi/2, pi}^q, first input slowest."""
    grid = np.indices((3,) * num_inputs).reshape(num_inputs, -1).T
    return np.asarray(DESIGN_ANGLES)[grid] / scale


KRONECKER_INPUTS = 5  # up to this many inputs, inv(A) along every axis is one (3^q, 3^q) matrix (473 KiB at q = 5)


@cache
def _inverse_design(num_inputs: int) -> torch.Tensor:
    """inv(A) (x) ... (x) inv(A), q factors: inv(A) along every axis of T, first input slowest (entries are exact
    powers of two, so the product is exact)."""
    out = torch.ones(1, 1, dtype=torch.float64)
    for _ in range(num_inputs):
        out = torch.kron(out, _A_INV)
    return out


def response_tensor(values: torch.Tensor, num_inputs: int) -> torch.Tensor:
    """T of shape (3,)*q + (K,) from design-point values of shape (3^q, K), or (..., 3,...,3, K) from (..., 3^q, K)
    (a stack of runs): one matrix product for a few inputs (forward and backward), an axis at a time for more."""
    lead = values.shape[:-2]
    shape = (*lead,) + (3,) * num_inputs + (values.shape[-1],)
    if num_inputs <= KRONECKER_INPUTS:
        return (_inverse_design(num_inputs).to(values.dtype) @ values).reshape(shape)
    t = values.reshape(shape)
    a_inv = _A_INV.to(values.dtype)
    for axis in range(len(lead), len(lead) + num_inputs):
        t = torch.movedim(torch.tensordot(a_inv, t, dims=([1], [axis])), 0, axis)
    return t


def _contract(tensor: torch.Tensor, inputs: torch.Tensor, scale: float) -> torch.Tensor:
    """f at inputs (R, M, q) with each run's T ``tensor`` (R, 3^(q-1), 3K) -> (R, M, K): the 3^(q-1) products
    prod_i v(theta_i)[a_i] of each input's first q - 1 angles (first input slowest, as T is laid out) times T as
    one (batched) matrix give the 3 coefficients left for the last angle, contracted with its v. Never forming
    all 3^q products keeps the memory a batch streams through three times smaller, and autograd's backward to
    T is one matrix product too."""
    runs, m, q = inputs.shape
    theta = scale * inputs.reshape(-1, q)
    v = torch.stack([torch.ones_like(theta), torch.sin(theta), torch.cos(theta)], dim=-1)  # (R*M, q, 3)
    monomials = v[:, 0] if q > 1 else torch.ones_like(theta)  # (R*M, 1) when the last input is the only one
    for i in range(1, q - 1):
        monomials = (monomials[:, :, None] * v[:, i, None, :]).reshape(len(monomials), -1)
    partial = torch.bmm(monomials.reshape(runs, m, monomials.shape[-1]), tensor)  # (R, M, 3K): T contracted but for the last input
    k = tensor.shape[-1] // 3
    return (partial.reshape(-1, 3, k) * v[:, -1, :, None]).sum(dim=1).reshape(runs, m, k)


def evaluate_response(tensor: torch.Tensor, inputs: torch.Tensor, scale: float, runs: int | None = None) -> torch.Tensor:
    """f at a batch of inputs (..., q) -> (..., K) (:func:`_contract`). ``runs`` R: ``tensor`` has a leading run
    axis (R, 3, ..., 3, K), the inputs' leading axis holds R equal groups of samples (run-major), and each group
    is evaluated with its own run's T (one batched product for a stack of runs).

    Inputs that are all exactly 0 (a blank patch: most of an MNIST image) are the design point (0, ..., 0),
    whose value is computed once per run; only the other inputs are contracted (a run's are padded to the
    largest run's count, the padding dropped), so a batch costs what its inked patches cost. Inputs that need a
    gradient are all contracted."""
    q, k = inputs.shape[-1], tensor.shape[-1]
    lead = inputs.shape[:-1]
    r = 1 if runs is None else runs
    t = tensor.reshape(r, -1, 3 * k)
    flat = inputs.reshape(r, -1, q)
    inked = flat.any(dim=-1)  # (R, M)
    if inputs.requires_grad or bool(inked.all()):  # a blank input's gradient needs its own row
        return _contract(t, flat, scale).reshape(*lead, k)
    blank_value = _contract(t, flat.new_zeros(r, 1, q), scale)  # (R, 1, K): the design point 0 of each run
    counts = inked.sum(dim=1)
    width = int(counts.max())
    out = blank_value.expand(r, flat.shape[1], k)
    if width == 0:  # every input blank
        return out.reshape(*lead, k)
    # each run's inked inputs first, in order (a stable sort puts True before False when sorted descending)
    order = torch.sort(inked.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :width]  # (R, W)
    valid = torch.arange(width)[None, :] < counts[:, None]  # (R, W): the padding is False
    values = _contract(t, torch.gather(flat, 1, order[:, :, None].expand(-1, -1, q)), scale)  # (R, W, K)
    rows = (torch.arange(r)[:, None].expand(-1, width)[valid], order[valid])
    return out.index_put(rows, values[valid]).reshape(*lead, k)
