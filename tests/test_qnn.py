import numpy as np
import pytest
import torch
from qiskit_machine_learning.gradients import ParamShiftEstimatorGradient

from qresnet.backends import resolve_backend
from qresnet.circuits import quanv_filter
from qresnet.qnn import BatchedParamShiftGradient, design_points, evaluate_response, response_tensor

FILTER = quanv_filter()


@pytest.fixture(scope="module", params=["aer", "aer:fake_manila"])
def backend(request):
    return resolve_backend(request.param)


def _expectations(estimator, circuit, observable, rows):
    return np.asarray(estimator.run([(circuit, observable, rows)]).result()[0].data.evs)


def test_batched_gradient_equals_stock_and_finite_differences(backend, rng):
    tt = backend.transpile(FILTER)
    circuit, obs, est = tt.circuit, tt.observables[0], backend.estimator()
    rows = rng.uniform(0, 1, (3, circuit.num_parameters))
    batched = BatchedParamShiftGradient(est)
    ours = np.array(batched.run([circuit] * 3, [obs] * 3, rows).result().gradients)
    assert batched.pubs_sent == 1  # every row and shift of the call in one PUB
    stock = np.array(ParamShiftEstimatorGradient(est).run([circuit] * 3, [obs] * 3, rows).result().gradients)
    np.testing.assert_allclose(ours, stock, atol=1e-12)
    h = 1e-5
    fd = np.empty_like(ours)
    for j in range(circuit.num_parameters):
        step = np.zeros(circuit.num_parameters)
        step[j] = h
        fd[:, j] = (_expectations(est, circuit, obs, rows + step) - _expectations(est, circuit, obs, rows - step)) / (2 * h)
    np.testing.assert_allclose(ours, fd, atol=1e-8)
    # a subset of parameters (weights only), as EstimatorQNN asks when input_gradients=False
    weights = [p for p in circuit.parameters if p.name.startswith("w")]
    subset = np.array(batched.run([circuit] * 3, [obs] * 3, rows, parameters=[weights] * 3).result().gradients)
    columns = [list(circuit.parameters).index(p) for p in weights]
    np.testing.assert_allclose(subset, fd[:, columns], atol=1e-8)


def _outer(v: np.ndarray) -> np.ndarray:
    """(N, 3, ..., 3): prod_i v[n, i, a_i] for every index (a_1, ..., a_q), by np.multiply.outer row by row."""
    out = []
    for row in v:
        prod = row[0]
        for factor in row[1:]:
            prod = np.multiply.outer(prod, factor)
        out.append(prod)
    return np.array(out)


@pytest.mark.parametrize("q", [3, 6])  # one Kronecker matrix (q <= 5), or an axis at a time
def test_response_tensor_recovers_a_multilinear_function(q, rng):
    """Independent of any circuit: a random T, its values at the design points, the solve gives T back."""
    k = 2
    tensor = torch.as_tensor(rng.normal(size=(3,) * q + (k,)))
    points = torch.as_tensor(design_points(q, np.pi))
    assert points.shape == (3**q, q) and set(np.unique(points.numpy())) == {0.0, 0.5, 1.0}
    values = evaluate_response(tensor, points, np.pi)
    theta = np.pi * points.numpy()
    v = np.stack([np.ones_like(theta), np.sin(theta), np.cos(theta)], -1)
    direct = _outer(v).reshape(len(v), -1) @ tensor.numpy().reshape(-1, k)
    np.testing.assert_allclose(values.numpy(), direct, atol=1e-12)
    np.testing.assert_allclose(response_tensor(values, q).numpy(), tensor.numpy(), atol=1e-12)


@pytest.mark.parametrize("q", [1, 2, 3, 4, 6])
def test_response_input_and_tensor_gradients_equal_finite_differences(q, rng):
    """The hand-written backward (each input's d f / d theta from T contracted with the other inputs' factors, on
    either side) against torch's central finite differences, for a stack of two runs with two outputs each."""
    k, runs, per_run = 2, 2, 3
    tensors = torch.as_tensor(rng.normal(size=(runs,) + (3,) * q + (k,))).requires_grad_(True)
    x = torch.as_tensor(rng.uniform(0, 1, size=(runs * per_run, q))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t, inputs: evaluate_response(t, inputs, 2.5, runs), (tensors, x))
    # inputs without a gradient take the compiled loops: T's gradient alone, blank patches among the inputs
    fixed = x.detach().clone()
    fixed[::2] = 0.0
    assert torch.autograd.gradcheck(lambda t: evaluate_response(t, fixed, 2.5, runs), (tensors,))


@pytest.mark.parametrize("q", [1, 4, 6])
@pytest.mark.parametrize("blank", ["none", "some", "all"])
def test_a_stack_of_responses_with_blank_patches_equals_the_direct_sum(blank, q, rng):
    """Three runs' responses on one run-major batch (``runs=3``), patches exactly 0 among them (a blank patch takes
    the design point 0's value), against the direct sum over {0,1,2}^q in numpy: values and the gradient of each
    run's T (the direct sum is linear in T: its gradient is the sum of the monomials weighted by the cotangent).
    The inputs need no gradient: the compiled loops run (qresnet.qnn.response_kernel)."""
    k, runs, per_run = 2, 3, 5
    tensors = torch.as_tensor(rng.normal(size=(runs,) + (3,) * q + (k,)), dtype=torch.float64).requires_grad_(True)
    x = rng.uniform(0, 1, size=(runs * per_run, q))
    if blank == "some":
        x[[0, 3, 6, 7, 8, 9, 12]] = 0.0  # run 1 has blank patches only but one
    elif blank == "all":
        x[:] = 0.0
    values = evaluate_response(tensors, torch.as_tensor(x), np.pi, runs)
    g = rng.normal(size=values.shape)
    values.backward(torch.as_tensor(g))
    theta = np.pi * x
    monomials = _outer(np.stack([np.ones_like(theta), np.sin(theta), np.cos(theta)], -1)).reshape(len(x), -1)
    for r in range(runs):
        rows = slice(r * per_run, (r + 1) * per_run)
        t = tensors.detach().numpy()[r].reshape(-1, k)
        np.testing.assert_allclose(values.detach().numpy()[rows], monomials[rows] @ t, atol=1e-12)
        np.testing.assert_allclose(tensors.grad.numpy()[r].reshape(-1, k), monomials[rows].T @ g[rows], atol=1e-12)
        # a run's values do not depend on the runs stacked with it: bit for bit its values alone
        assert torch.equal(values[rows], evaluate_response(tensors[r], torch.as_tensor(x[rows]), np.pi))
