"""Seconds per stacked engine call (forward + backward) of a stack's layers, by the way its gradient is taken.

Filters: one quanvolution layer's 2x2 filter (``qresnet.run.build.quanv_layers``) at its 81 design points
for S runs' weights, ``qresnet.qnn.stacked_qnn`` forward then backward of a random cotangent, by the
segmented pullback and by forward-mode Jacobians, and S separate one-run calls (pullback), S in ``--settings``
(default 1, 4, 8, 16).

Heads: the paper-quantum head (``quantum_head_layer``: 10 qubits, 4 classes, ``--features`` of the final map,
default 49 and 784, the 7x7 and 28x28 maps of MNIST 0-3), batch 16 per run: S runs' heads in one call
(``qresnet.nn.stacked_head_logits``) against S separate calls of each head, forward then backward, S in
``--head-settings`` (default 8, 16). The two (or the filter's two) are timed interleaved, ``--rounds``
rounds, and the figure is the median.

    python benchmarks/stacked.py --json results/stacked.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import median, write_json
from qresnet.backends import resolve_backend
from qresnet.nn import stacked_head_logits
from qresnet.qnn import Derivatives, stacked_qnn
from qresnet.run.build import quantum_head_layer, quanv_layers


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def filter_case(spec: str, settings: int, rounds: int) -> dict:
    layer = quanv_layers(resolve_backend(spec), 1)[0]
    rng = np.random.default_rng(0)
    weights = [torch.tensor(rng.uniform(-np.pi, np.pi, layer.qnn.num_weights), requires_grad=True)
               for _ in range(settings)]
    g = torch.tensor(rng.normal(size=(settings, len(layer.design_inputs), len(layer.qnn.observables))))

    def step(derivatives: Derivatives) -> None:
        (stacked_qnn(layer.qnn, layer.design_inputs, weights, derivatives) * g).sum().backward()

    def separate() -> None:
        sum((stacked_qnn(layer.qnn, layer.design_inputs, [w]) * g[s]).sum() for s, w in enumerate(weights)).backward()

    times: dict[str, list[float]] = {"pullback": [], "jacobians": [], "separate": []}
    for d in (Derivatives.PULLBACK, Derivatives.JACOBIANS):  # warm the engine's caches
        step(d)
    for _ in range(rounds):
        times["pullback"].append(timed(lambda: step(Derivatives.PULLBACK)))
        times["jacobians"].append(timed(lambda: step(Derivatives.JACOBIANS)))
        times["separate"].append(timed(separate))
    return {"backend": spec, "settings": settings, "rows": settings * len(layer.design_inputs),
            **{f"{k}_ms": 1e3 * median(v) for k, v in times.items()}}


def head_case(spec: str, settings: int, features: int, rounds: int, batch: int = 16) -> dict:
    backend = resolve_backend(spec)
    heads = [quantum_head_layer(backend, features, 4, seed=s) for s in range(settings)]
    rng = np.random.default_rng(0)
    batches = [torch.tensor(rng.uniform(0, 1, (batch, features)), requires_grad=True) for _ in range(settings)]
    g = [torch.tensor(rng.normal(size=(batch, 4))) for _ in range(settings)]

    def stacked() -> None:
        sum((l * gg).sum() for l, gg in zip(stacked_head_logits(heads, batches), g)).backward()

    def separate() -> None:
        sum((h(b) * gg).sum() for h, b, gg in zip(heads, batches, g)).backward()

    stacked(), separate()
    times: dict[str, list[float]] = {"stacked": [], "separate": []}
    for _ in range(rounds):
        times["stacked"].append(timed(stacked))
        times["separate"].append(timed(separate))
    out = {"backend": spec, "settings": settings, "features": features, "batch": batch,
           **{f"{k}_ms": 1e3 * median(v) for k, v in times.items()}}
    out["speedup"] = out["separate_ms"] / out["stacked_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["aer", "aer:fake_torino"])
    parser.add_argument("--settings", nargs="+", type=int, default=[1, 4, 8, 16])
    parser.add_argument("--head-settings", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--features", nargs="+", type=int, default=[49, 784])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--skip", choices=("filters", "heads"), default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    record: dict = {"filters": [], "heads": []}
    for spec in args.backends:
        for s in args.settings if args.skip != "filters" else []:
            record["filters"].append(row := filter_case(spec, s, args.rounds))
            print("filter", row, flush=True)
        for f in args.features if args.skip != "heads" else []:
            for s in args.head_settings:
                record["heads"].append(row := head_case(spec, s, f, args.rounds))
                print("head", row, flush=True)
    write_json(args.json, record)


if __name__ == "__main__":
    main()
