"""Layers of the design space (issue 26): windows and strides, channels, filter banks, per-channel residual
sums, and the classical control. References are written here from the documented definitions."""

import math

import numpy as np
import pytest
import torch

from qresnet.backends import resolve_backend
from qresnet.circuits import quanv_filter
from qresnet.errors import QresnetError
from qresnet.nn import ClassicalFilterLayer, QuanvLayer, ResidualSpec, ResQuNN, combine, extract_patches, map_size


def reference_patches(x: np.ndarray, k: int, s: int, padding: str) -> np.ndarray:
    """(C, H, W) -> (C, H', W', k*k) by explicit loops over window corners."""
    c, h, w = x.shape
    last_h = h - k if padding == "valid" else math.ceil((h - k) / s) * s
    last_w = w - k if padding == "valid" else math.ceil((w - k) / s) * s
    padded = np.zeros((c, max(h, last_h + k), max(w, last_w + k)))
    padded[:, :h, :w] = x
    rows, cols = range(0, last_h + 1, s), range(0, last_w + 1, s)
    return np.array([[[padded[ch, i:i + k, j:j + k].reshape(-1) for j in cols] for i in rows] for ch in range(c)])


@pytest.mark.parametrize("k, s", [(2, 2), (2, 1), (3, 3), (3, 2), (3, 1)])
@pytest.mark.parametrize("padding", ["cover", "valid"])
@pytest.mark.parametrize("size", [(7, 7), (8, 6), (28, 28)])
def test_patches_are_the_windows_of_the_definition(rng, k, s, padding, size):
    x = rng.uniform(0, 1, (2, 3, *size))
    out = extract_patches(torch.as_tensor(x), k, s, padding).numpy()
    for b in range(2):
        np.testing.assert_array_equal(out[b], reference_patches(x[b], k, s, padding))
    sides = [(n - k) // s + 1 if padding == "valid" else math.ceil((n - k) / s) + 1 for n in size]
    assert out.shape == (2, 3, *sides, k * k) and [map_size(n, k, s, padding) for n in size] == sides


def test_default_windows_are_todays_stride_k_blocks_zero_padded(rng):
    """Today's layer: a map zero-padded to multiples of k at the bottom and right, cut in k x k blocks: 7 -> 4."""
    x = rng.uniform(0, 1, (3, 7, 7))
    padded = np.zeros((3, 8, 8))
    padded[:, :7, :7] = x
    blocks = padded.reshape(3, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(3, 4, 4, 4)
    np.testing.assert_array_equal(extract_patches(torch.as_tensor(x)[:, None], 2, 2).numpy()[:, 0], blocks)
    assert ResidualSpec.coerce("none", 3).node_shapes((28, 28)) == [(28, 28), (14, 14), (7, 7), (4, 4)]
    assert ResidualSpec.coerce("none", 2).node_shapes((28, 28), 3, 3, "valid") == [(28, 28), (9, 9), (3, 3)]


@pytest.fixture(scope="module")
def estimator():
    return resolve_backend("aer").estimator()


def test_several_input_channels_are_filtered_alike_and_averaged(rng, estimator):
    layer = QuanvLayer(quanv_filter(), estimator, seed=2)
    x = torch.as_tensor(rng.uniform(0, 1, (2, 3, 6, 6)))
    with torch.no_grad():
        each = [layer(x[:, c]) for c in range(3)]
        torch.testing.assert_close(layer(x), sum(each) / 3, atol=1e-12, rtol=0)
        torch.testing.assert_close(layer(x[:, :1]), each[0], atol=0, rtol=0)  # (B, 1, H, W) is one channel


def test_a_filter_bank_is_independent_filters_in_filter_major_channels(rng, estimator):
    template = quanv_filter(readout="per-qubit")
    bank = QuanvLayer(template, estimator, seed=9, filters=3)
    assert bank.weight.shape == (3, 16) and bank.num_channels == 12
    x = torch.as_tensor(rng.uniform(0, 1, (2, 4, 4)))
    out = bank(x)
    assert out.shape == (2, 12, 2, 2)
    for n in range(3):
        alone = QuanvLayer(template, estimator, initial_weights=bank.weight[n].detach().numpy())
        torch.testing.assert_close(out[:, 4 * n:4 * n + 4], alone(x), atol=1e-12, rtol=0)
    first = QuanvLayer(template, estimator, seed=9)
    torch.testing.assert_close(bank.weight[0].detach(), first.weight.detach())  # filter 0 starts as one filter would
    out[:, 5].sum().backward()  # channel 5 is filter 1's: only its weights get a gradient
    assert bank.weight.grad[1].abs().sum() > 0 and bank.weight.grad[[0, 2]].abs().sum() == 0
    assert [name for name, _ in bank.named_parameters()] == ["bank"]  # no second, unused copy of filter 0


def test_residual_sums_are_per_channel_and_broadcast_one_channel(rng):
    spec = ResidualSpec.coerce("X+O1")
    x = torch.as_tensor(rng.uniform(size=(2, 5, 5)))
    o1 = torch.as_tensor(rng.uniform(size=(2, 4, 3, 3)))
    h1 = combine(spec, 1, o1, [x])
    assert h1.shape == (2, 4, 5, 5)
    for c in range(4):
        expected = x.clone()
        expected[:, :3, :3] += o1[:, c]
        torch.testing.assert_close(h1[:, c], expected, atol=0, rtol=0)
    assert spec.node_channels([4]) == [1, 4]
    with pytest.raises(QresnetError, match="sums maps of 4, 9 channels") as excinfo:
        ResidualSpec.coerce("O1+O2").node_channels([4, 9])
    assert "\n" not in str(excinfo.value)


def test_a_per_qubit_model_trains_end_to_end(rng, estimator):
    layers = [QuanvLayer(quanv_filter(readout="per-qubit"), estimator, seed=s) for s in (1, 2)]
    model = ResQuNN(layers, "(X+O1)+O2", (8, 8), num_classes=3, seed=0)
    assert model.feature_channels == 4 and model.feature_shape == (8, 8) and model.head.in_features == 256
    logits = model(torch.as_tensor(rng.uniform(size=(2, 8, 8))))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    assert all(layer.weight.grad.abs().sum() > 0 for layer in layers)
    with pytest.raises(QresnetError, match="sums maps of 4, 16 channels"):
        ResQuNN([layers[0], QuanvLayer(quanv_filter(readout="per-qubit"), estimator, filters=4)], "O1+O2", (8, 8), 3)


def reference_classical(weights: np.ndarray, patch: np.ndarray, outputs: int) -> np.ndarray:
    """The documented layout by hand: per hidden unit (K output weights, bias, q input weights), then K output
    biases; slots past len(weights) are 0."""
    q = len(patch)
    unit = outputs + 1 + q
    hidden = math.ceil(len(weights) / unit)
    slots = np.zeros(hidden * unit + outputs)
    slots[:len(weights)] = weights
    z = np.zeros(outputs)
    for j in range(hidden):
        part = slots[j * unit:(j + 1) * unit]
        z += part[:outputs] * np.tanh(part[outputs] + part[outputs + 1:] @ patch)
    return np.tanh(z + slots[hidden * unit:])


@pytest.mark.parametrize("kwargs, filters", [({}, 1), ({"readout": "per-qubit"}, 2), ({"ansatz": "random", "reps": 1}, 1),
                                             ({"kernel_size": 3, "ansatz": "strongly_entangling"}, 2)])
def test_the_classical_control_matches_the_quantum_layers_size(rng, kwargs, filters):
    template = quanv_filter(**kwargs)
    k = template.settings["kernel_size"]
    control = ClassicalFilterLayer.like(template, filters=filters, seed=0)
    trainable = sum(p.numel() for p in control.parameters() if p.requires_grad)
    assert trainable == filters * template.num_weights
    assert control.num_channels == filters * template.num_outputs and control.kernel_size == control.stride == k
    x = torch.as_tensor(rng.uniform(0, 1, (2, 7, 7)))
    out = control(x)
    assert out.shape == ((2,) if control.num_channels == 1 else (2, control.num_channels)) + control.output_shape(7, 7)
    patch = x[1, :k, k:2 * k].reshape(-1).numpy()  # window (0, 1)
    weights = control.weight.detach().numpy().reshape(filters, -1)
    expected = np.concatenate([reference_classical(w, patch, template.num_outputs) for w in weights])
    got = out[1, ..., 0, 1] if control.num_channels > 1 else out[1, 0, 1]
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=1e-12)
    assert out.abs().max() < 1


def test_the_classical_control_stands_in_for_the_quantum_layer(rng):
    template = quanv_filter()
    layers = [ClassicalFilterLayer.like(template, seed=s) for s in (1, 2)]
    model = ResQuNN(layers, "X+O1", (8, 8), num_classes=3, seed=0)
    x = torch.as_tensor(rng.uniform(size=(4, 8, 8)))
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    # the same boundary as the quantum layers: under X+O1 only the last layer learns
    assert layers[0].weight.grad is None or layers[0].weight.grad.abs().sum() == 0
    assert layers[1].weight.grad.abs().sum() > 0
    model.freeze_quantum()
    assert not any(layer.weight.requires_grad for layer in layers) and model.head.weight.requires_grad


def test_bad_layers_are_refused_in_one_line(estimator):
    for build, match in [
        (lambda: QuanvLayer(quanv_filter(), estimator, stride=0), "stride=0"),
        (lambda: QuanvLayer(quanv_filter(), estimator, filters=0), "filters=0"),
        (lambda: QuanvLayer(quanv_filter(), estimator, padding="same"), "padding='same'"),
        (lambda: ClassicalFilterLayer(2, 1, 0), "parameters=0"),
        (lambda: ClassicalFilterLayer.like(quanv_filter(3))(torch.rand(1, 8, 2)), "kernel 3x3 is larger than the 2-pixel"),
        (lambda: ResQuNN([ClassicalFilterLayer(2, 1, 4), ClassicalFilterLayer(2, 1, 4, stride=1)], "none", (8, 8), 2),
         "same \\(kernel size, stride, padding\\)"),
    ]:
        with pytest.raises(QresnetError, match=match) as excinfo:
            build()
        assert "\n" not in str(excinfo.value)
