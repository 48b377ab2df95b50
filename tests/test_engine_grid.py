"""The grid route of the product-state pullback, numpy's (:mod:`qresnet.backends.engine.grid`) and the compiled one
(:mod:`qresnet.backends.engine.kernel`): rows that are combinations of a few prefix settings per qubit (a filter's
design points) against parameter shift, setting by setting, ideal and noisy; and the rows that must keep the
row-by-row route."""

from dataclasses import dataclass

import numpy as np
import pytest

import qresnet.backends.engine.grid as grid_module
import qresnet.backends.engine.kernel as kernel_module
import qresnet.backends.engine.pullback as pullback_module
from qresnet.backends.engine.grid import prefix_grid
from qresnet.qnn import BatchedParamShiftGradient, Derivatives, QNNCall, design_points
from test_engine_gradient import FILTER, qnn_with
from test_segmented_pullback import NOISY, filter_qnn

WEIGHTS_ONLY = QNNCall(Derivatives.PULLBACK, input_gradients=False)  # what a response-mode layer asks for


class RouteLog(list):
    route: str


@dataclass(frozen=True)
class Taken:
    """The grid a pullback took: each qubit's number of settings (the same in every group here) and the groups."""

    sizes: tuple[int, ...]
    groups: int


@pytest.fixture(params=["numpy", "compiled"])
def routes(request, monkeypatch):
    """The grids the pullbacks took (None where the rows went row by row), call by call, on the numpy route
    (:func:`prefix_grid`; any number of rows may take it, by default a few keep the row route, as fast there) or
    the compiled one (:mod:`qresnet.backends.engine.kernel`)."""
    seen = RouteLog()
    if request.param == "numpy":
        monkeypatch.setattr(grid_module, "GRID_MIN_ROWS", 0)
        monkeypatch.setattr(kernel_module, "_enabled", False)

        def spy(*args):
            grid = prefix_grid(*args)
            seen.append(None if grid is None else Taken(grid.sizes, grid.groups))
            return grid

        monkeypatch.setattr(pullback_module, "prefix_grid", spy)
    else:
        forward = kernel_module.forward

        def spy(*args, **kwargs):
            out, state = forward(*args, **kwargs)
            sizes = None if state.grid is None else state.grid[1]
            seen.append(None if sizes is None else Taken(tuple(sizes.max(axis=0).tolist()), len(sizes)))
            return out, state

        monkeypatch.setattr(kernel_module, "forward", spy)
    seen.route = request.param
    return seen


def design_rows(rng, count: int | None = None) -> np.ndarray:
    """The 81 design points, or ``count`` of them drawn with repeats (a partial grid, some cells twice)."""
    x = design_points(FILTER.num_inputs, FILTER.input_scale)
    return x if count is None else x[rng.integers(0, len(x), count)]


def each_setting_equals_parameter_shift(result, rows, weights, segments, shifted, rng) -> np.ndarray:
    """A segmented pullback's values and each setting's weight gradient (for a random cotangent) against parameter
    shift on that setting's rows alone, to 1e-10; returns the weight gradients (S, W)."""
    g = rng.normal(size=result.values.shape)
    _, d_weights = result.pullback(g)
    for s, w in enumerate(weights):
        mine = segments == s
        np.testing.assert_allclose(result.values[mine], shifted.forward(rows[mine], w), atol=1e-10, rtol=0)
        _, weight_jac = shifted.backward(rows[mine], w)
        np.testing.assert_allclose(d_weights[s], np.einsum("rk,rkw->w", g[mine], weight_jac), atol=1e-10, rtol=0)
    return d_weights


@pytest.mark.parametrize("spec", ["aer", "aer:fake_torino", NOISY])
def test_design_points_take_the_grid_and_equal_parameter_shift(spec, rng, routes):
    qnn = filter_qnn(spec)
    shifted = qnn_with(BatchedParamShiftGradient(qnn.estimator), qnn, True)
    for x in (design_rows(rng), design_rows(rng, 60)):
        w = rng.uniform(-np.pi, np.pi, qnn.num_weights)
        result = qnn.gradient.evaluate(qnn, x, w, WEIGHTS_ONLY)
        g = rng.normal(size=result.values.shape)
        d_inputs, d_weights = result.pullback(g)
        assert d_inputs is None and routes[-1] is not None and routes[-1].sizes == (3, 3, 3, 3)
        np.testing.assert_allclose(result.values, shifted.forward(x, w), atol=1e-10, rtol=0)
        _, weight_jac = shifted.backward(x, w)
        np.testing.assert_allclose(d_weights, np.einsum("rk,rkw->w", g, weight_jac), atol=1e-10, rtol=0)
        assert np.abs(d_weights).max() > 1e-2


@pytest.mark.parametrize("spec", ["aer", NOISY])
def test_a_stack_of_settings_takes_one_grid_and_each_setting_equals_parameter_shift(spec, rng, routes):
    """Three settings in one call (a stack), setting 2 repeating setting 0's weights and rows: one grid per body
    setting, each setting's gradient from its own rows only."""
    qnn = filter_qnn(spec)
    shifted = qnn_with(BatchedParamShiftGradient(qnn.estimator), qnn, True)
    w = rng.uniform(-np.pi, np.pi, (3, qnn.num_weights))
    w[2] = w[0]
    x = design_rows(rng)
    # each setting holds every design point once: rows ordered by setting, then shuffled together
    rows = np.concatenate([x[rng.permutation(len(x))] for _ in range(3)])
    segments = np.repeat(np.arange(3), len(x))
    order = rng.permutation(len(rows))
    rows, segments = rows[order], segments[order]
    result = qnn.gradient.evaluate_segmented(qnn, rows, w, segments, WEIGHTS_ONLY)
    assert routes[-1] is not None and routes[-1].groups == 3
    d_weights = each_setting_equals_parameter_shift(result, rows, w, segments, shifted, rng)
    assert np.abs(d_weights[0] - d_weights[2]).max() > 1e-3  # the same weights and rows, other cotangents


def test_rows_that_are_no_small_grid_keep_the_row_route(rng, routes):
    qnn = filter_qnn("aer")
    w = rng.uniform(-np.pi, np.pi, qnn.num_weights)
    shifted = qnn_with(BatchedParamShiftGradient(qnn.estimator), qnn, True)
    cases = {
        "patches": rng.uniform(0, 1, (40, qnn.num_inputs)),  # 40 settings per qubit: a grid of 40^4 cells
        "input gradients": design_rows(rng),  # per-row input gradients need the rows
    }
    for name, x in cases.items():
        call = QNNCall(Derivatives.PULLBACK, input_gradients=name == "input gradients")
        result = qnn.gradient.evaluate(qnn, x, w, call)
        assert not routes or routes[-1] is None, name
        g = rng.normal(size=result.values.shape)
        _, weight_jac = shifted.backward(x, w)
        np.testing.assert_allclose(result.pullback(g)[1], np.einsum("rk,rkw->w", g, weight_jac), atol=1e-10, rtol=0)
        routes.clear()
    # two settings whose qubit 0 takes 3 values in one and 2 in the other: no common grid for numpy's stacked
    # tables; the compiled grid is per setting
    x = design_rows(rng)
    uneven = np.concatenate([x, x[x[:, 0] != x[0, 0]]])
    segments = np.repeat([0, 1], [len(x), len(uneven) - len(x)])
    weights = np.stack([w, w + 0.1])
    result = qnn.gradient.evaluate_segmented(qnn, uneven, weights, segments, WEIGHTS_ONLY)
    assert (routes[-1] is None) == (routes.route == "numpy") and result.values.shape == (len(uneven), 1)
    each_setting_equals_parameter_shift(result, uneven, weights, segments, shifted, rng)


def test_one_runs_design_points_keep_the_numpy_row_route_and_a_stack_takes_the_grid(rng, monkeypatch):
    monkeypatch.setattr(kernel_module, "_enabled", False)
    seen = []
    monkeypatch.setattr(pullback_module, "prefix_grid", lambda *args: seen.append(prefix_grid(*args)) or seen[-1])
    qnn = filter_qnn("aer")
    x = design_rows(rng)
    qnn.gradient.evaluate(qnn, x, rng.uniform(-np.pi, np.pi, qnn.num_weights), WEIGHTS_ONLY)
    assert seen[-1] is None  # 81 rows: below GRID_MIN_ROWS
    runs = 4
    segments = np.repeat(np.arange(runs), len(x))
    qnn.gradient.evaluate_segmented(qnn, np.tile(x, (runs, 1)), rng.uniform(-np.pi, np.pi, (runs, qnn.num_weights)),
                                    segments, WEIGHTS_ONLY)
    assert seen[-1] is not None and seen[-1].groups == runs
