"""One training step of the docs/design.md section 10 workload: response mode vs per-patch mode, same run.

Workload: two quanvolution layers (4 qubits, 16 weights each), residual O1+O2, linear head
196 -> 10, cross-entropy, Adam 0.01, batch 16 of 28x28 images. Per-patch mode with
qiskit-machine-learning's stock ParamShiftEstimatorGradient costs minutes per batch, so it
is measured on ``--per-patch-images`` images and scaled linearly to the batch (every cost
of per-patch mode is proportional to the number of patches); the output says so.

    python benchmarks/step_modes.py --json results/step_modes.json
"""

from __future__ import annotations

import argparse

import torch

from _common import median, mnist_batch, time_calls, train_step, write_json
from qresnet.backends import BackendOptions, resolve_backend
from qresnet.nn import ResQuNN
from qresnet.run.build import quanv_layers


def build(backend, mode: str, gradient: str, seed: int) -> tuple[ResQuNN, torch.optim.Optimizer]:
    model = ResQuNN(quanv_layers(backend, 2, mode=mode, gradient=gradient, seed=seed), "O1+O2", (28, 28), 10, seed=seed)
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="aer")
    parser.add_argument("--engine", default="aer", choices=("aer", "engine"),
                        help="simulator under both modes (default: Aer itself, the method's cost without the engine)")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--per-patch-images", type=int, default=1, help="images per-patch mode is timed on")
    parser.add_argument("--repeats", type=int, default=5, help="timed response-mode steps (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    backend = resolve_backend(args.backend, BackendOptions(engine=args.engine))
    images, labels, source = mnist_batch(args.batch, args.seed)
    print(f"workload: 2 layers, O1+O2, linear 196->10, Adam 0.01, batch {args.batch}, {source}, "
          f"backend {backend.name}, engine {args.engine}")

    model, opt = build(backend, "response", "batched", args.seed)
    train_step(model, opt, images, labels)  # warm-up: transpile cache, estimator start
    response_s = median(time_calls(lambda: train_step(model, opt, images, labels), args.repeats))
    print(f"response mode, batched gradient: {response_s:8.3f} s/step ({args.batch / response_s:8.1f} images/s)")

    n = args.per_patch_images
    scale = args.batch / n
    results = {}
    for gradient in ("batched", "stock"):
        model, opt = build(backend, "per-patch", gradient, args.seed)
        seconds = time_calls(lambda: train_step(model, opt, images[:n], labels[:n]), 1)[0]
        results[gradient] = seconds * scale
        print(f"per-patch mode, {gradient:7s} gradient: {seconds:8.3f} s on {n} image(s) -> "
              f"{results[gradient]:8.1f} s/step scaled to {args.batch}")
    ratio = results["stock"] / response_s
    print(f"response mode is {ratio:,.0f}x faster than per-patch mode with the stock gradient "
          f"({results['batched'] / response_s:,.0f}x faster than per-patch with the batched gradient)")
    write_json(args.json, {
        "benchmark": "step_modes", "backend": backend.name, "engine": args.engine,
        "torch_threads": args.torch_threads, "batch": args.batch, "data": source,
        "response_s_per_step": response_s, "response_images_per_s": args.batch / response_s,
        "per_patch_stock_s_per_step": results["stock"], "per_patch_batched_s_per_step": results["batched"],
        "per_patch_measured_images": n, "per_patch_scaled": n != args.batch,
        "ratio_stock_per_patch_over_response": ratio,
    })


if __name__ == "__main__":
    main()
