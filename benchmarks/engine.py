"""Parameter sets per second on one 2673-set PUB of the transpiled filter: the engine vs Aer EstimatorV2.

The PUB is the one a response-mode training step evaluates per layer: the 81 design points
of the filter (design section 3) at 33 weight settings (the current weights and their +-pi/2
shift in each of the 16 weights), on the template transpiled for the backend. Both
estimators run the same PUB in the same process; the values are compared too. With
``--random`` the 2673 rows are independent random parameter sets instead (no shared
structure: the engine's worst case).

    python benchmarks/engine.py --json results/engine.json
"""

from __future__ import annotations

import argparse

import numpy as np

from _common import median, time_calls, write_json
from qresnet.backends import BackendOptions, resolve_backend
from qresnet.circuits import quanv_filter
from qresnet.qnn import design_points


def step_pub_values(template, circuit, seed: int) -> np.ndarray:
    """81 design points x 33 weight settings, columns in the transpiled circuit's parameter order."""
    x = design_points(template.num_inputs, template.input_scale)
    w = np.random.default_rng(seed).uniform(-np.pi, np.pi, template.num_weights)
    eye = np.eye(template.num_weights)
    settings = [w] + [w + s * np.pi / 2 * eye[j] for j in range(template.num_weights) for s in (1, -1)]
    rows = np.array([np.concatenate([xi, wi]) for wi in settings for xi in x])
    names = list(template.input_params + template.weight_params)
    return rows[:, [names.index(p) for p in circuit.parameters]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="aer,aer:fake_torino")
    parser.add_argument("--repeats", type=int, default=5, help="timed engine runs (median); Aer runs once")
    parser.add_argument("--random", action="store_true", help="independent random rows instead of the step PUB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    template = quanv_filter()
    record = {"benchmark": "engine", "pub": "random" if args.random else "step", "results": {}}
    for spec in args.backends.split(","):
        engine_backend = resolve_backend(spec)
        aer_backend = resolve_backend(spec, BackendOptions(engine="aer"))
        tt = engine_backend.transpile(template)
        values = (np.random.default_rng(args.seed).uniform(-np.pi, np.pi, (2673, tt.circuit.num_parameters))
                  if args.random else step_pub_values(template, tt.circuit, args.seed))
        pub = (tt.circuit, tt.observables[0], values)
        engine, aer = engine_backend.estimator(), aer_backend.estimator()
        engine.run([pub]).result()  # compile once, as a training run does
        engine_s = median(time_calls(lambda: engine.run([pub]).result(), args.repeats))
        aer_s = time_calls(lambda: aer.run([pub]).result(), 1)[0]
        diff = float(np.abs(engine.run([pub]).result()[0].data.evs - aer.run([pub]).result()[0].data.evs).max())
        n = len(values)
        print(f"{spec:18s} {n} sets: engine {engine_s * 1e3:8.2f} ms ({n / engine_s:12,.0f} sets/s), "
              f"Aer {aer_s * 1e3:9.1f} ms ({n / aer_s:10,.0f} sets/s); engine/Aer {aer_s / engine_s:7.0f}x; "
              f"max |engine - Aer| {diff:.1e}")
        record["results"][spec] = {"sets": n, "engine_s": engine_s, "aer_s": aer_s, "engine_sets_per_s": n / engine_s,
                                   "aer_sets_per_s": n / aer_s, "ratio": aer_s / engine_s, "max_abs_diff": diff}
    write_json(args.json, record)


if __name__ == "__main__":
    main()
