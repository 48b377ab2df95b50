"""A trained model measured: loss and accuracy over a set, and the quantum head's transpiled encoding under noise."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from qresnet.backends import Backend
from qresnet.run.cost import HEAD_QUBITS
from qresnet.circuits import quantum_head
from qresnet.data import Dataset
from qresnet.errors import ConfigError
from qresnet.nn import QuantumHead, ResQuNN


def loss_and_accuracy(model: ResQuNN, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on (x, y), in batches, without gradients."""
    return stacked_loss_and_accuracy(lambda inputs: [model(inputs[0])], [x], [y], batch_size)[0]


def stacked_loss_and_accuracy(logits_of: Callable[[list[torch.Tensor]], list[torch.Tensor]], xs: Sequence[torch.Tensor],
                              ys: Sequence[torch.Tensor], batch_size: int) -> list[tuple[float, float]]:
    """:func:`loss_and_accuracy` of R models at once, each on its own set (equal sizes): ``logits_of`` maps R
    batches to R logits (one stacked forward, :func:`qresnet.run.stack.stacked_logits`)."""
    n = len(ys[0])
    loss, correct = [0.0] * len(ys), [0] * len(ys)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            for r, (logits, y) in enumerate(zip(logits_of([x[part] for x in xs]), ys)):
                loss[r] += float(torch.nn.functional.cross_entropy(logits, y[part], reduction="sum"))
                correct[r] += int((logits.argmax(1) == y[part]).sum())
    return [(total / n, right / n) for total, right in zip(loss, correct)]


def encoding_noise_check(model: ResQuNN, backend: Backend, data: Dataset, samples: int, seed: int) -> dict[str, Any]:
    """The head on ``samples`` test images with its whole transpiled encoding under the device noise (Aer,
    density matrix), beside the default exact state preparation: score differences, predictions, cost."""
    if not backend.spec.noisy or not backend.spec.simulated:
        raise ConfigError(f"head_encoding_noise='transpiled' needs a noisy aer:<device> or noise: backend, "
                          f"not {backend.name}")
    from qresnet.backends.aer import aer_estimator

    head = model.head
    transpiled = backend.transpile(quantum_head(HEAD_QUBITS, head.num_outputs, head.template.settings["reps"]))
    aer = aer_estimator(backend.noise_model, backend.readout(), None, seed)
    noisy_head = QuantumHead(transpiled.template, aer, circuit=transpiled.circuit, observables=transpiled.observables,
                             scale=head.scale, initial_weights=head.weight.detach().numpy())
    x, y = data.x_test[:samples], data.y_test[:samples]
    with torch.no_grad():
        features = model.features(x).flatten(1)
        exact = head.scores(features)
        began = time.perf_counter()
        full = noisy_head.scores(features)
        seconds = time.perf_counter() - began
    diff = (full - exact).abs()
    return {
        "samples": len(y),
        "two_qubit_gates_per_circuit": transpiled.cost.two_qubit_gates,
        "depth": transpiled.cost.depth,
        "estimated_fidelity": transpiled.cost.estimated_fidelity,
        "seconds": seconds,
        "max_abs_score_difference": float(diff.max()),
        "mean_abs_score_difference": float(diff.mean()),
        "accuracy_exact_preparation": float((exact.argmax(1) == y).double().mean()),
        "accuracy_transpiled_encoding": float((full.argmax(1) == y).double().mean()),
        "same_prediction": float((exact.argmax(1) == full.argmax(1)).double().mean()),
    }
