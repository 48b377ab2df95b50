"""The engine's row contractions in chunks of bounded memory: equal to the unchunked result and to Kronecker products.

A 9-qubit image is 2 MiB a row per observable, so a 3x3 filter's 19,683 design points cannot be contracted at
once; :func:`~qresnet.backends.engine.simulate.row_chunks` bounds each chunk's arrays. Here a bound of a few
kilobytes forces one to a few rows a chunk on small registers.
"""

import numpy as np
import pytest

from qresnet.backends import resolve_backend
from qresnet.backends.engine import simulate
from qresnet.backends.engine.pullback import cotangent_states
from qresnet.backends.engine.simulate import contract, environments, row_chunks
from qresnet.circuits import quanv_filter

TINY = 4096  # bytes: a few rows a chunk at n = 3


def product_states(bloch: list[np.ndarray]) -> np.ndarray:
    """(R, 4^n): kron(b_{n-1}, ..., b_0) per row (qubit 0 the least significant digit), by np.kron."""
    out = []
    for r in range(len(bloch[0])):
        state = np.ones(1)
        for b in reversed(bloch):
            state = np.kron(state, b[r])
        out.append(state)
    return np.array(out)


def random_problem(rng, settings: int, n: int = 3, rows: int = 80, k: int = 2):
    o = rng.normal(size=(settings, k, 4**n))
    group = rng.integers(0, settings, rows)
    group[:settings] = np.arange(settings)  # every setting has a row
    bloch = [rng.normal(size=(rows, 4)) for _ in range(n)]
    return o, group, bloch


@pytest.mark.parametrize("settings", [1, 3, simulate.PER_GROUP_LOOP + 2])
def test_chunked_contractions_equal_unchunked_and_kronecker_products(settings, rng):
    o, group, bloch = random_problem(rng, settings)
    states = product_states(bloch)
    reference = np.einsum("rkj,rj->kr", o[group], states)
    whole = contract(o, group, bloch)
    chunked = contract(o, group, bloch, max_bytes=TINY)
    np.testing.assert_allclose(whole, reference, atol=1e-12, rtol=0)
    np.testing.assert_allclose(chunked, whole, atol=1e-13, rtol=0)
    values, env = environments(o, group, bloch)
    values_c, env_c = environments(o, group, bloch, max_bytes=TINY)
    np.testing.assert_allclose(values, reference, atol=1e-12, rtol=0)
    np.testing.assert_allclose(values_c, values, atol=1e-13, rtol=0)
    np.testing.assert_allclose(env_c, env, atol=1e-13, rtol=0)
    for q in range(len(bloch)):  # the environment of qubit q: its Bloch vector replaced by each unit vector
        for x in range(4):
            unit = [np.tile(np.eye(4)[x], (len(group), 1)) if p == q else b for p, b in enumerate(bloch)]
            np.testing.assert_allclose(env[:, :, q, x].T, np.einsum("rkj,rj->kr", o[group], product_states(unit)),
                                       atol=1e-12, rtol=0)


@pytest.mark.parametrize("settings", [1, 3])
def test_chunked_cotangent_states_equal_kronecker_products(settings, rng):
    _, group, bloch = random_problem(rng, settings)
    g = rng.normal(size=(len(group), 2))
    states = product_states(bloch)
    reference = np.stack([g[group == s].T @ states[group == s] for s in range(settings)])
    np.testing.assert_allclose(cotangent_states(g, group, bloch, settings), reference, atol=1e-12, rtol=0)
    np.testing.assert_allclose(cotangent_states(g, group, bloch, settings, max_bytes=TINY), reference, atol=1e-12,
                               rtol=0)


def test_row_chunks_keep_to_the_bound_and_cover_every_row_once():
    rows = np.arange(1000)
    chunks = row_chunks(rows, 4**3, max_bytes=TINY)
    assert len(chunks) > 1 and all(len(c) * 4**3 * 8 <= TINY for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), rows)
    assert len(row_chunks(rows, 4**9, max_bytes=1)) == 1000  # at least one row a chunk, whatever the bound


@pytest.mark.parametrize("spec", ["aer", "aer:fake_manila"])
def test_a_filter_pullback_in_chunks_equals_the_whole(spec, rng, monkeypatch):
    """value_and_pullback of a 4-qubit filter with every contraction forced into chunks of a few rows."""
    backend = resolve_backend(spec)
    template = quanv_filter()
    transpiled = backend.transpile(template)
    circuit, observables = transpiled.circuit, transpiled.observables
    inputs = [p for p in circuit.parameters if p in set(template.input_params)]
    weights = [p for p in circuit.parameters if p in set(template.weight_params)]
    rows = rng.uniform(-np.pi, np.pi, (30, circuit.num_parameters))
    g = rng.normal(size=(30, len(observables)))

    def pulled() -> tuple:
        differentiator = backend.estimator().differentiator
        values, pullback = differentiator.value_and_pullback(circuit, observables, rows, inputs, weights)
        return (values, *pullback(g))

    whole = pulled()
    monkeypatch.setattr(simulate, "CHUNK_BYTES", 2 * 4**4 * 8)  # one row a chunk
    for a, b in zip(pulled(), whole):
        np.testing.assert_allclose(a, b, atol=1e-13, rtol=0)
