"""A trained model measured: loss and accuracy over a set, the quantum head's transpiled encoding under noise, and
what sampling (shots) does to the filter response."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from qresnet.backends import Backend
from qresnet.run.cost import HEAD_QUBITS
from qresnet.circuits import quantum_head
from qresnet.data import Dataset
from qresnet.errors import ConfigError
from qresnet.nn import QuantumHead, QuanvLayer, ResQuNN
from qresnet.qnn import design_points, evaluate_response, response_tensor, sample_patches


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


SHOT_PATCHES, SHOT_DRAWS = 32, 32


def shot_validation(model: ResQuNN, backend: Backend, data: Dataset, seed: int, patches: int = SHOT_PATCHES,
                    draws: int = SHOT_DRAWS) -> dict[str, Any] | None:
    """What shots do to layer 1 in response mode, measured on ``patches`` distinct test-set patches (seeded) with
    the trained weights: ``draws`` independent shot draws (seeds ``seed`` x 1000 + d) of (a) the response tensor T
    from its 3^q sampled design points, contracted at the patches (what the model computes), and (b) each patch's
    circuit sampled directly; each against the exact value of the same circuit and noise. T's error reaches every
    patch, so (a)'s errors are correlated across patches and (b)'s are not (docs/design.md section 3): reported as
    the mean absolute and mean signed correlation, over the draws, between two patches' errors ((b)'s absolute one
    is the floor that a finite number of draws gives independent errors), beside each method's RMS error and the
    RMS of its error averaged over the patches. None without shots, off the simulators, or for a layer that is not
    a response-mode quanvolution."""
    layer = model.layers[0]
    shots = backend.options.shots
    if shots is None or not backend.spec.simulated or not isinstance(layer, QuanvLayer) or layer.mode != "response":
        return None
    template = layer.template
    picked = torch.as_tensor(sample_patches(layer.patches(data.x_test).reshape(-1, template.num_inputs).numpy(),
                                            patches, seed))
    design = torch.as_tensor(design_points(template.num_inputs, template.input_scale))
    isa = backend.transpile(template)
    weights = layer.weight.detach().numpy()

    def on(estimator: Any) -> QuanvLayer:  # the trained layer's circuits, on another estimator of the backend
        return QuanvLayer(template, estimator, circuit=isa.circuit, observables=isa.observables, mode="per-patch",
                          initial_weights=weights, filters=layer.filters)

    began = time.perf_counter()
    with torch.no_grad():
        exact = on(backend.simulator(None, seed)).filter_outputs(picked)
        via_response, one_by_one = [], []
        for d in range(draws):
            sampled = on(backend.simulator(shots, seed * 1000 + d))
            tensor = response_tensor(sampled.filter_outputs(design), template.num_inputs)
            via_response.append(evaluate_response(tensor, picked, template.input_scale) - exact)
            one_by_one.append(sampled.filter_outputs(picked) - exact)
    seconds = time.perf_counter() - began

    def summary(errors: list[torch.Tensor]) -> dict[str, float]:
        e = torch.stack(errors).reshape(draws, -1).numpy()  # (draws, patches x outputs)
        corr = np.corrcoef(e, rowvar=False)
        pairs = corr[~np.eye(len(corr), dtype=bool)]
        return {"rms_error": float(np.sqrt(np.mean(e**2))),
                "mean_error_correlation": float(np.nanmean(pairs)),
                "mean_abs_error_correlation": float(np.nanmean(np.abs(pairs))),
                "rms_of_the_patch_mean_error": float(np.sqrt(np.mean(e.mean(axis=1) ** 2)))}

    return {"shots": shots, "patches": len(picked), "draws": draws, "layer": 1, "seconds": seconds,
            "response": summary(via_response), "direct": summary(one_by_one)}


def describe_shot_validation(check: dict[str, Any]) -> str:
    """One paragraph of :func:`shot_validation`'s figures, for a run's output and a comparison report."""
    r, d = check["response"], check["direct"]
    return (f"With {check['shots']} shots, layer 1's filter response T is estimated from its sampled design points "
            "and every patch's value inherits T's error, so the errors of different patches are correlated, unlike "
            f"sampling each patch directly. Measured on {check['patches']} test patches over {check['draws']} shot "
            f"draws: mean |correlation| between two patches' errors {r['mean_abs_error_correlation']:.2f} through "
            f"the response against {d['mean_abs_error_correlation']:.2f} direct (the floor of {check['draws']} "
            f"draws; signed means {r['mean_error_correlation']:+.2f} and {d['mean_error_correlation']:+.2f}); RMS "
            f"error per patch {r['rms_error']:.4f} against {d['rms_error']:.4f}; of the error averaged over the "
            f"patches {r['rms_of_the_patch_mean_error']:.4f} against {d['rms_of_the_patch_mean_error']:.4f}.")
