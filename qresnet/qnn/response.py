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


def evaluate_response(tensor: torch.Tensor, inputs: torch.Tensor, scale: float, runs: int | None = None) -> torch.Tensor:
    """f at a batch of inputs (..., q) -> (..., K). The 3^(q-1) products prod_i v(theta_i)[a_i] of each input's
    first q - 1 angles (first input slowest, as T is laid out) times T as one matrix give, per input, the 3
    coefficients left for the last angle, contracted with its v. Never forming all 3^q products keeps the
    memory a batch streams through three times smaller, and autograd's backward to T is one matrix product
    too. ``runs`` R: ``tensor`` has a leading run axis (R, 3, ..., 3, K), the inputs' leading axis holds R
    equal groups of samples (run-major), and each group is evaluated with its own run's T (one batched
    product for a stack of runs)."""
    q = inputs.shape[-1]
    lead = inputs.shape[:-1]
    theta = scale * inputs.reshape(-1, q)
    v = torch.stack([torch.ones_like(theta), torch.sin(theta), torch.cos(theta)], dim=-1)  # (N, q, 3)
    monomials = v[:, 0] if q > 1 else torch.ones_like(theta)  # (N, 1) when the last input is the only one
    for i in range(1, q - 1):
        monomials = (monomials[:, :, None] * v[:, i, None, :]).reshape(len(monomials), -1)
    k = tensor.shape[-1]
    if runs is None:
        partial = monomials @ tensor.reshape(-1, 3 * k)  # (N, 3K): T contracted with all but the last input
    else:
        partial = torch.bmm(monomials.reshape(runs, -1, monomials.shape[-1]), tensor.reshape(runs, -1, 3 * k))
    return (partial.reshape(-1, 3, k) * v[:, -1, :, None]).sum(dim=1).reshape(*lead, k)
