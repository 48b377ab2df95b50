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
from typing import Any

import numpy as np
import torch

DESIGN_ANGLES = (0.0, math.pi / 2, math.pi)
_A_INV = torch.tensor([[0.5, 0.0, 0.5], [-0.5, 1.0, -0.5], [0.5, 0.0, -0.5]], dtype=torch.float64)


def design_points(num_inputs: int, scale: float) -> np.ndarray:
    """The 3^q input rows whose angles are all of {0, pi/2, pi}^q, first input slowest."""
    grid = np.indices((3,) * num_inputs).reshape(num_inputs, -1).T
    return np.asarray(DESIGN_ANGLES)[grid] / scale


def sample_patches(patches: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` distinct patches (rows), seeded, leaving out design points (the layer parts run those already).

    >>> sample_patches(np.array([[0, 0.5], [0.2, 1], [0.2, 1], [0.3, 0]]), 5, seed=0).tolist()
    [[0.2, 1.0], [0.3, 0.0]]
    """
    unique = np.unique(np.asarray(patches, dtype=float).reshape(-1, patches.shape[-1]), axis=0)
    informative = unique[~np.all(np.isin(unique, (0.0, 0.5, 1.0)), axis=1)]
    pick = np.random.default_rng(seed).choice(len(informative), size=min(count, len(informative)), replace=False)
    return informative[np.sort(pick)]


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


def _products(v: torch.Tensor, start: int, stop: int) -> list[torch.Tensor]:
    """The products over inputs start..i of v[:, input, a_input] for every (a_start, ..., a_i), first input slowest,
    for each i in start..stop-1, from v of shape (R, q, 3, M): shapes (R, 3^(i + 1 - start), M); [ones (R, 1, M)]
    for no inputs."""
    if start == stop:
        return [v.new_ones(v.shape[0], 1, v.shape[-1])]
    out = [v[:, start]]
    for i in range(start + 1, stop):
        out.append((out[-1][:, :, None, :] * v[:, i, None, :, :]).reshape(v.shape[0], -1, v.shape[-1]))
    return out


class _Response(torch.autograd.Function):
    """f at inputs (R, M, q) that need a gradient, each run's T ``tensor`` (R, 3^(q-1), 3K) -> (R, M, K), with a
    hand-written backward (inputs that need none take the compiled loops, :class:`_CompiledResponse`).

    Forward: the 3^(q-1) products prod_i v(theta_i)[a_i] of each input's first q - 1 angles (first input slowest,
    as T is laid out) times T as one (batched) matrix give the 3 coefficients left for the last angle, contracted
    with its v. Never forming all 3^q products keeps the memory a batch streams through three times smaller.

    Backward: T's gradient is one matrix product (the products times the cotangent). An input's: f is linear in
    each v_j, f = sum_c v_j[c] D_j[c], with D_j the contraction of T with every other input's v, and
    d v_j / d theta_j = (0, cos, -sin); only D_j contracted with the cotangent is needed (:func:`_pulled`).

    Every array keeps the inputs on its last axis (R, ..., M): the products, sums and broadcasts then run along
    long contiguous rows (torch's elementwise kernels are slow on a short last axis, the (M, 9, 1) x (M, 1, 3) of
    a row-major outer product). Both make a second layer's step (its inputs need gradients) several times
    cheaper than autograd through the forward."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, inputs: torch.Tensor, scale: float) -> torch.Tensor:
        runs, m, q = inputs.shape
        theta = scale * inputs.transpose(1, 2)  # (R, q, M)
        v = torch.stack([torch.ones_like(theta), torch.sin(theta), torch.cos(theta)], dim=2)  # (R, q, 3, M)
        prefixes = _products(v, 0, q - 1)  # prefixes[j - 1]: the products of inputs 0..j-1
        k = tensor.shape[-1] // 3
        coefficients = torch.bmm(tensor.transpose(1, 2), prefixes[-1]).reshape(runs, 3, k, m)  # D of the last input
        ctx.save_for_backward(tensor, v, coefficients, *prefixes)
        ctx.scale = scale
        return (coefficients * v[:, -1, :, None, :]).sum(dim=1).transpose(1, 2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        tensor, v, coefficients, *prefixes = ctx.saved_tensors
        runs, m, k = grad.shape
        q = v.shape[1]
        g = grad.transpose(1, 2)  # (R, K, M)
        grad_tensor = grad_inputs = None
        if ctx.needs_input_grad[0]:
            weighted = (v[:, -1, :, None, :] * g[:, None, :, :]).reshape(runs, 3 * k, m)
            grad_tensor = torch.bmm(prefixes[-1], weighted.transpose(1, 2))
        if ctx.needs_input_grad[1]:
            last = (coefficients * g[:, None, :, :]).sum(dim=2)
            pulled = [_pulled(tensor, v, g, j, prefixes[j - 1] if j else None) for j in range(q - 1)]
            d = torch.stack([*pulled, last], dim=1)  # (R, q, 3, M): d f / d v_j contracted with the cotangent
            grad_inputs = ctx.scale * (d[:, :, 1] * v[:, :, 2] - d[:, :, 2] * v[:, :, 1]).transpose(1, 2)
        return grad_tensor, grad_inputs, None


def _pulled(tensor: torch.Tensor, v: torch.Tensor, g: torch.Tensor, j: int, prefix: torch.Tensor | None
            ) -> torch.Tensor:
    """sum_k g_k D_j[c, k], shape (R, 3, M), for an input j < q - 1 (``prefix``: the products of the inputs before
    it, None for j = 0): T contracted with the longer side (the inputs before j, or after) by one matrix product,
    then with the shorter side times the cotangent ``g`` (R, K, M) elementwise."""
    runs, q, _, m = v.shape
    before, after = 3**j, 3 ** (q - 1 - j)
    k = g.shape[1]
    full = tensor.reshape(runs, before, 3, after, k)
    suffix = _products(v, j + 1, q)[-1]  # (R, after, M)
    if before >= after:
        u = torch.bmm(full.reshape(runs, before, -1).transpose(1, 2), prefix)  # (R, 3 * after * K, M)
        rest = (suffix[:, :, None, :] * g[:, None, :, :]).reshape(runs, 1, after * k, m)
        return (u.reshape(runs, 3, after * k, m) * rest).sum(dim=2)
    moved = full.permute(0, 2, 1, 4, 3).reshape(runs, -1, after)  # (R, 3 * before * K, after)
    u = torch.bmm(moved, suffix).reshape(runs, 3, before * k, m)
    rest = g if prefix is None else prefix[:, :, None, :] * g[:, None, :, :]
    return (u * rest.reshape(runs, 1, before * k, m)).sum(dim=2)


def _contract(tensor: torch.Tensor, inputs: torch.Tensor, scale: float) -> torch.Tensor:
    """f at inputs (R, M, q) with each run's T ``tensor`` (R, 3^(q-1), 3K) -> (R, M, K) (:class:`_Response`)."""
    return _Response.apply(tensor, inputs, scale)


class _CompiledResponse(torch.autograd.Function):
    """f at inputs (R, M, q) that need no gradient, each run's T ``tensor`` (R, 3^q, K) -> (R, M, K), and T's
    gradient, in the compiled loops of :mod:`qresnet.qnn.response_kernel` (blank patches skipped there)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, inputs: torch.Tensor, scale: float) -> torch.Tensor:
        from qresnet.qnn import response_kernel  # numba loads with the first evaluation, not with the package

        t = np.ascontiguousarray(tensor.detach().numpy(), dtype=float)
        x = np.ascontiguousarray(inputs.numpy(), dtype=float)
        out, trig = np.empty(x.shape[:2] + t.shape[2:]), np.empty(x.shape + (2,))
        response_kernel.values(t, x, float(scale), out, trig)
        ctx.x, ctx.trig, ctx.shape = x, trig, t.shape
        return torch.from_numpy(out).to(tensor.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        from qresnet.qnn import response_kernel

        if not ctx.needs_input_grad[0]:
            return None, None, None
        out = np.empty(ctx.shape)
        response_kernel.tensor_gradient(ctx.x, ctx.trig, np.ascontiguousarray(grad.numpy(), dtype=float), out)
        return torch.from_numpy(out).to(grad.dtype), None, None


def evaluate_response(tensor: torch.Tensor, inputs: torch.Tensor, scale: float, runs: int | None = None) -> torch.Tensor:
    """f at a batch of inputs (..., q) -> (..., K). ``runs`` R: ``tensor`` has a leading run axis
    (R, 3, ..., 3, K), the inputs' leading axis holds R equal groups of samples (run-major), and each group
    is evaluated with its own run's T.

    Inputs that need no gradient (a layer's, behind the measurement boundary) take the compiled loops
    (:class:`_CompiledResponse`), where a blank patch (all inputs exactly 0: most of an MNIST image) costs nothing
    but a copy of the design point 0's value; inputs that need one take :class:`_Response`."""
    q, k = inputs.shape[-1], tensor.shape[-1]
    lead = inputs.shape[:-1]
    r = 1 if runs is None else runs
    if inputs.requires_grad:
        return _contract(tensor.reshape(r, -1, 3 * k), inputs.reshape(r, -1, q), scale).reshape(*lead, k)
    return _CompiledResponse.apply(tensor.reshape(r, -1, k), inputs.reshape(r, -1, q), scale).reshape(*lead, k)
