"""Training images per second on the docs/design.md section 10 workload: ours vs every peer, interleaved in one run.

Workload: two quanvolution layers (4 qubits, RY(pi x) encoding, 2 x (RY, RZ on every qubit,
CNOT chain), 16 weights each, mean <Z>), residual O1+O2, linear head 196 -> 10, cross-entropy,
Adam 0.01, batch 16 of 28x28 images. One figure counts a whole step: forward, backward,
optimizer step.

* ours: response mode on ``aer`` and ``aer:fake_torino`` (exact values, the device's noise model
  and readout), and on a channel backend (``--channel``, default ``noise:depolarizing:0.1``: the
  channel after every gate), whose step is reported as a multiple of the ``aer`` step (target <= 1.5x);
* plain torch (benchmarks/torch_peer.py, always): gate by gate (batched statevector / density
  matrix through every gate) and folded (the body folded per step into a 16x16 observable,
  Heisenberg picture), each ideal and with depolarizing noise from FakeTorino's calibration;
* PennyLane (benchmarks/pennylane_peer.py, when installed: ``pip install .[peers]``):
  ``default.qubit`` with broadcasting and backprop, ``default.mixed`` with the same noise.

* our floor: the same model with each layer's response tensor fixed (``QuanvLayer.fix_response``),
  so no circuit is evaluated and no quantum gradient computed: what the torch side of our step
  (patches, response contraction, residuals, head, loss, Adam) costs alone. It bounds what any
  engine speed-up can give.

* ``--kernel3``: the 3x3 filter's figure (issue 26): the same model with 3x3 windows at stride 3 on 9 qubits
  (28x28 -> 10x10 -> 4x4, linear head 100 -> 10), on ``aer`` and ``aer:fake_torino``, in the mode the run
  would take (``--mode auto``: response mode's 2 x 3^9 design points or per-patch mode's patch rows, whichever
  is fewer); the mode, why, and the rows a step evaluates are printed before it is timed. Its contenders
  take ``--kernel3-steps`` timed steps a round (slower than the 2x2 ones) and are left out of every ratio.

Ideal peers are compared with ``aer``, noisy ones with ``aer:fake_torino``: ratio = ours / peer.
Every contender takes one warm-up step, then ``--rounds`` rounds in which each takes its timed
steps in turn; figures are medians over all its timed steps. Interleaving spreads the machine's
load over all contenders alike, so the ratios of one run hold even when the absolutes drift.
Torch runs with ``--torch-threads`` intra-op threads (default 1) for all: on this 2-core machine
the tensors of one step are small and a second thread costs more than it gives.

    python benchmarks/train_step.py --json results/train_step.json
"""

from __future__ import annotations

import argparse
import os

import torch

import torch_peer
from _common import Contender, describe_noise, mnist_batch, run_rounds, torino_noise, train_step, write_json
from qresnet.backends import resolve_backend
from qresnet.config import TrainConfig
from qresnet.run.build import build_model, filter_notes, quanv_layers
from qresnet.nn import ResQuNN

OURS = {False: "aer", True: "aer:fake_torino"}  # noisy -> our backend the peer is compared with


def ours(spec: str, images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int) -> Contender:
    """Our training step on ``spec``, with the gradient ``quanv_layers`` picks there (the engine's exact gradient
    on ``aer`` backends without shots)."""
    model = ResQuNN(quanv_layers(resolve_backend(spec), 2, seed=seed), "O1+O2", (28, 28), 10, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    return Contender(f"qresnet {spec}", lambda: train_step(model, opt, images, labels), len(labels), len(labels), steps,
                     info={"backend": spec, "mode": "response"})


def kernel3(spec: str, images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int) -> Contender:
    """The 3x3 filter at stride 3 on ``spec``, built as a ``--kernel-size 3 --mode auto`` run builds it; its
    filter and cost (the mode chosen and the rows of a step) are printed first."""
    config = TrainConfig(layers=2, residual="O1+O2", quanv={"kernel_size": 3}, mode="auto", backend=spec,
                         batch_size=len(labels), lr=0.01, seed=seed)
    backend = resolve_backend(spec)
    shape = tuple(images.shape[-2:])
    for line in filter_notes(config, backend, shape):
        print(f"  3x3 on {spec}: {line}")
    model = build_model(config, backend, shape, 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    return Contender(f"qresnet 3x3 {spec}", lambda: train_step(model, opt, images, labels), len(labels), len(labels),
                     steps, info={"backend": spec, "mode": model.layers[0].mode, "kernel_size": 3, "stride": 3})


def floor(images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int) -> Contender:
    """Our model with every layer's response fixed at its initial value: the step's torch work alone."""
    model = ResQuNN(quanv_layers(resolve_backend("aer"), 2, seed=seed), "O1+O2", (28, 28), 10, seed=seed)
    for layer in model.layers:
        layer.fix_response(layer.response().detach())
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    return Contender("qresnet floor (no circuits)", lambda: train_step(model, opt, images, labels), len(labels),
                     len(labels), steps, info={"backend": "none: fixed response tensors", "mode": "response"})


def peers(args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[Contender, bool]]:
    """Every peer, keyed by its JSON name, with whether it is noisy."""
    out = {}
    for noisy in (False, True):
        for variant in torch_peer.VARIANTS:
            slow = variant == "gates" and noisy  # ~1 s per step: one step a round keeps the run short
            steps = args.slow_peer_steps if slow else args.peer_steps
            out[f"torch_{variant}_{'noisy' if noisy else 'ideal'}"] = (
                torch_peer.contender(variant, noisy, images, labels, args.seed, steps=steps), noisy)
    if args.no_pennylane:
        return out
    try:
        import pennylane_peer
    except ImportError:
        pennylane_peer = None
    if pennylane_peer is None or not pennylane_peer.pennylane_available():
        print("PennyLane is not installed (pip install .[peers]): no PennyLane figures")
        return out
    for noisy in (False, True):
        steps = args.slow_peer_steps if noisy else args.peer_steps
        out[f"pennylane_{'noisy' if noisy else 'ideal'}"] = (pennylane_peer.contender(
            noisy, images, labels, args.seed, steps=steps, noisy_images=args.pennylane_noisy_images), noisy)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (every contender in each)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps of ours per round")
    parser.add_argument("--peer-steps", type=int, default=4, help="timed steps per round of the fast peers")
    parser.add_argument("--slow-peer-steps", type=int, default=1,
                        help="timed steps per round of the slow peers (torch gates noisy, PennyLane default.mixed)")
    parser.add_argument("--pennylane-noisy-images", type=int, default=4,
                        help="images default.mixed is timed on (scaled to the batch: its cost is linear in patches)")
    parser.add_argument("--no-pennylane", action="store_true", help="skip the PennyLane peers even if installed")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="ours only, even with PennyLane installed")
    parser.add_argument("--channel", default="noise:depolarizing:0.1",
                        help="a noise:<channel>:<p> backend timed beside aer ('' to skip)")
    parser.add_argument("--kernel3", action="store_true",
                        help="also time the 3x3 filter at stride 3 on aer and aer:fake_torino (module docstring)")
    parser.add_argument("--kernel3-steps", type=int, default=1, help="timed steps per round of each 3x3 contender")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    images, labels, source = mnist_batch(args.batch, args.seed)
    load_start = os.getloadavg()
    print(f"workload: 2 layers, O1+O2, linear 196->10, Adam 0.01, batch {args.batch}, {source}, "
          f"torch threads {args.torch_threads}; load average {load_start[0]:.2f}")
    print(f"peer noise: {describe_noise(torino_noise())}")

    mine = {noisy: ours(spec, images, labels, args.steps, args.seed) for noisy, spec in OURS.items()}
    channel = ours(args.channel, images, labels, args.steps, args.seed) if args.channel else None
    bound = floor(images, labels, args.steps, args.seed)
    wide = ([kernel3(spec, images, labels, args.kernel3_steps, args.seed) for spec in OURS.values()]
            if args.kernel3 else [])
    others = peers(args, images, labels) if args.peers else {}
    run_rounds([*mine.values(), *([channel] if channel else []), bound, *wide, *(c for c, _ in others.values())],
               args.rounds)
    load_end = os.getloadavg()

    record: dict = {"benchmark": "train_step", "batch": args.batch, "data": source, "torch_threads": args.torch_threads,
                    "rounds": args.rounds, "load_average_start": list(load_start), "load_average_end": list(load_end),
                    "ours": {c.info["backend"]: c.record() for c in mine.values()}, "peers": {}, "ratios": {}}
    record["ideal_images_per_s"] = mine[False].images_per_s
    record["noisy_images_per_s"] = mine[True].images_per_s
    width = max(26, *(len(c.name) + 1 for c in [*mine.values(), *([channel] if channel else []), *wide]))
    print(f"\n{'contender':{width}s} {'images/s':>10s}  {'timed':>14s}  ours / peer")
    for c in mine.values():
        print(f"{c.name:{width}s} {c.images_per_s:10.1f}  {len(c.times):3d} steps x {c.images:2d}")
    if channel is not None:
        slower = mine[False].images_per_s / channel.images_per_s  # seconds per step, channel over ideal
        record["channel"] = {**channel.record(), "images_per_s": channel.images_per_s,
                             "step_over_aer_step": slower}
        print(f"{channel.name:{width}s} {channel.images_per_s:10.1f}  {len(channel.times):3d} steps x {channel.images:2d}  "
              f"(a step takes {slower:.2f}x the aer step; target <= 1.5x)")
    record["floor"] = {**bound.record(), "images_per_s": bound.images_per_s}
    print(f"{bound.name:{width}s} {bound.images_per_s:10.1f}  {len(bound.times):3d} steps x {bound.images:2d}  "
          f"(the torch side of our step; ours reach {mine[False].images_per_s / bound.images_per_s:.0%} of it on aer)")
    for c in wide:
        record.setdefault("kernel3", {})[c.info["backend"]] = {**c.record(), "images_per_s": c.images_per_s}
        print(f"{c.name:{width}s} {c.images_per_s:10.1f}  {len(c.times):3d} steps x {c.images:2d}  "
              f"(3x3 filter, stride 3, {c.info['mode']} mode)")
    for key, (c, noisy) in others.items():
        ratio = mine[noisy].images_per_s / c.images_per_s
        record["peers"][key] = {**c.record(), "versus": OURS[noisy], "ratio_ours_over_peer": ratio}
        record["ratios"][key] = ratio
        scaled = f" (scaled to {c.batch})" if c.images < c.batch else ""
        print(f"{c.name:{width}s} {c.images_per_s:10.1f}  {len(c.times):3d} steps x {c.images:2d}  "
              f"{ratio:8.2f}x vs {OURS[noisy]}{scaled}")
        if key.startswith("pennylane"):  # the keys this script wrote before the torch peers existed
            kind = "noisy" if noisy else "ideal"
            record[f"peer_{kind}_images_per_s"], record[f"peer_{kind}"], record[f"ratio_{kind}"] = (
                c.images_per_s, record["peers"][key], ratio)
    print(f"load average at end {load_end[0]:.2f} (1 min), {load_end[1]:.2f} (5 min)")
    write_json(args.json, record)


if __name__ == "__main__":
    main()
