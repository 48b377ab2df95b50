"""Training images per second on the design section 5 workload: ours (default engine) vs PennyLane, same run.

Workload: two quanvolution layers (4 qubits, RY(pi x) encoding, 2 x (RY, RZ on every qubit,
CNOT chain), 16 weights each, mean <Z>), residual O1+O2, linear head 196 -> 10, cross-entropy,
Adam 0.01, batch 16 of 28x28 images. One figure counts a whole step: forward, backward,
optimizer step. Ours: response mode on ``aer`` and ``aer:fake_torino`` (exact values, the
device's noise model and readout). Peer (when PennyLane is installed, ``pip install
.[peers]``): the same model on ``default.qubit`` with broadcasting and backprop, and on
``default.mixed`` with depolarizing noise (benchmarks/pennylane_peer.py).

Torch runs with ``--torch-threads`` intra-op threads (default 1) for both: on this 2-core
machine the tensors of one step are small and a second thread costs more than it gives.

    python benchmarks/train_step.py --json results/train_step.json
"""

from __future__ import annotations

import argparse

import torch

from _common import median, mnist_batch, time_calls, train_step, write_json
from qresnet.backends import resolve_backend
from qresnet.nn import ResQuNN
from qresnet.build import quanv_layers


def ours(spec: str, images, labels, steps: int, seed: int) -> float:
    """Images per second (median step) on ``spec``, with the gradient ``quanv_layers`` picks there (the
    engine's exact gradient on ``aer`` backends)."""
    model = ResQuNN(quanv_layers(resolve_backend(spec), 2, seed=seed), "O1+O2", (28, 28), 10, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    train_step(model, opt, images, labels)  # warm-up: compile the circuits once
    return len(labels) / median(time_calls(lambda: train_step(model, opt, images, labels), steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of ours (median)")
    parser.add_argument("--peer-steps", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="ours only, even with PennyLane installed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    images, labels, source = mnist_batch(args.batch, args.seed)
    print(f"workload: 2 layers, O1+O2, linear 196->10, Adam 0.01, batch {args.batch}, {source}, "
          f"torch threads {args.torch_threads}")

    record: dict = {"benchmark": "train_step", "batch": args.batch, "data": source, "torch_threads": args.torch_threads}
    record["ideal_images_per_s"] = ours("aer", images, labels, args.steps, args.seed)
    print(f"ours  aer              : {record['ideal_images_per_s']:10.1f} images/s")
    record["noisy_images_per_s"] = ours("aer:fake_torino", images, labels, args.steps, args.seed)
    print(f"ours  aer:fake_torino  : {record['noisy_images_per_s']:10.1f} images/s "
          f"({record['noisy_images_per_s'] / record['ideal_images_per_s']:.2f} of ideal)")
    try:
        from pennylane_peer import peer_images_per_second, pennylane_available
    except ImportError:
        pennylane_available = lambda: False  # noqa: E731
    if args.peers and pennylane_available():
        for key, noisy in (("ideal", False), ("noisy", True)):
            peer = peer_images_per_second(noisy, images, labels, steps=args.peer_steps, seed=args.seed)
            record[f"peer_{key}_images_per_s"] = peer["images_per_s"]
            record[f"peer_{key}"] = peer
            ratio = record[f"{key}_images_per_s"] / peer["images_per_s"]
            record[f"ratio_{key}"] = ratio
            print(f"peer  {peer['device']:17s}: {peer['images_per_s']:10.2f} images/s"
                  f"{' (scaled from ' + str(peer['images_timed']) + ' images)' if peer.get('scaled') else ''}; "
                  f"ours / peer = {ratio:,.1f}x")
    elif args.peers:
        print("PennyLane is not installed (pip install .[peers]): no peer figures")
    write_json(args.json, record)


if __name__ == "__main__":
    main()
