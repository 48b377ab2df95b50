"""Parameter sets per second on one 2673-set PUB of the transpiled filter: the engine vs Aer EstimatorV2.

The PUB is the one a response-mode training step evaluates per layer: the 81 design points
of the filter (docs/design.md section 3) at 33 weight settings (the current weights and their +-pi/2
shift in each of the 16 weights), on the template transpiled for the backend. Both
estimators run the same PUB in the same process; the values are compared too. With
``--random`` the 2673 rows are independent random parameter sets instead (no shared
structure: the engine's worst case).

The gradient section (on by default; ``--no-gradient`` skips it) times the derivatives of the step: the 81
design points by the 16 weights (1296 derivatives, what a response-mode layer's backward asks
for), by the engine's exact gradient (``EngineGradient``), by parameter shift on the engine and
by parameter shift on Aer (``BatchedParamShiftGradient``, 81 x 33 rows in one PUB), in the same
run, with their agreement; and reverse mode (``value_and_pullback``, then the pullback of one
cotangent: the 16 weight derivatives of a loss, what the training step now asks for), checked
against the cotangent times the exact Jacobian.

    python benchmarks/engine.py --json results/engine.json
"""

from __future__ import annotations

import argparse

import numpy as np

from _common import median, time_calls, write_json
from qresnet.backends import BackendOptions, resolve_backend
from qresnet.circuits import quanv_filter
from qresnet.qnn import BatchedParamShiftGradient, EngineGradient, design_points


def step_pub_values(template, circuit, seed: int) -> np.ndarray:
    """81 design points x 33 weight settings, columns in the transpiled circuit's parameter order."""
    x = design_points(template.num_inputs, template.input_scale)
    w = np.random.default_rng(seed).uniform(-np.pi, np.pi, template.num_weights)
    eye = np.eye(template.num_weights)
    settings = [w] + [w + s * np.pi / 2 * eye[j] for j in range(template.num_weights) for s in (1, -1)]
    rows = np.array([np.concatenate([xi, wi]) for wi in settings for xi in x])
    names = list(template.input_params + template.weight_params)
    return rows[:, [names.index(p) for p in circuit.parameters]]


def gradient_record(template, tt, engine, aer, seed: int, repeats: int) -> dict:
    """Derivatives per second of the step's 81 design points by the 16 weights: exact (engine), parameter
    shift on the engine, parameter shift on Aer (timed once), and the largest differences between them."""
    rows = step_pub_values(template, tt.circuit, seed)[:81]  # the design points at the current weights
    weights = [p for p in tt.circuit.parameters if p in set(template.weight_params)]
    n = len(rows)
    args = ([tt.circuit] * n, [tt.observables[0]] * n, rows)

    def run(gradient) -> np.ndarray:
        return np.array(gradient.run(*args, parameters=[weights] * n).result().gradients)

    exact, shift_engine, shift_aer = EngineGradient(engine), BatchedParamShiftGradient(engine), BatchedParamShiftGradient(aer)
    values = {"exact": run(exact), "shift_engine": run(shift_engine)}  # warm-up: compile once
    # the ability itself, as a training step calls it (one call per layer: values and derivatives)
    direct = lambda: engine.value_and_gradients(tt.circuit, [tt.observables[0]], rows, weights)  # noqa: E731
    g = np.random.default_rng(seed).normal(size=(n, 1))

    def reverse() -> np.ndarray:
        _, pullback = engine.value_and_pullback(tt.circuit, [tt.observables[0]], rows, (), weights)
        return pullback(g)[1]

    vjp = np.einsum("rk,rkw->w", g, direct()[1])
    seconds = {"pullback": median(time_calls(reverse, repeats)),
               "exact_direct": median(time_calls(direct, repeats)),
               "exact": median(time_calls(lambda: run(exact), repeats)),
               "shift_engine": median(time_calls(lambda: run(shift_engine), repeats)),
               "shift_aer": time_calls(lambda: values.__setitem__("shift_aer", run(shift_aer)), 1)[0]}
    count = n * len(weights)
    record = {"derivatives": count, **{f"{k}_s": v for k, v in seconds.items()},
              **{f"{k}_derivatives_per_s": count / v for k, v in seconds.items()},
              "exact_vs_shift_engine": seconds["shift_engine"] / seconds["exact"],
              "exact_direct_vs_shift_engine": seconds["shift_engine"] / seconds["exact_direct"],
              "exact_vs_shift_aer": seconds["shift_aer"] / seconds["exact"],
              "jacobian_over_pullback_seconds": seconds["exact_direct"] / seconds["pullback"],
              "max_abs_diff_pullback_vs_jacobian": float(np.abs(reverse() - vjp).max()),
              "max_abs_diff_exact_shift_engine": float(np.abs(values["exact"] - values["shift_engine"]).max()),
              "max_abs_diff_exact_shift_aer": float(np.abs(values["exact"] - values["shift_aer"]).max())}
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="aer,aer:fake_torino")
    parser.add_argument("--repeats", type=int, default=5, help="timed engine runs (median); Aer runs once")
    parser.add_argument("--random", action="store_true", help="independent random rows instead of the step PUB")
    parser.add_argument("--no-gradient", dest="gradient", action="store_false", help="skip the gradient section")
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
        if args.gradient:
            g = gradient_record(template, tt, engine, aer, args.seed, args.repeats)
            record["results"][spec]["gradient"] = g
            print(f"{spec:18s} {g['derivatives']} derivatives: exact (value_and_gradients) {g['exact_direct_s'] * 1e3:6.2f} ms "
                  f"({g['exact_direct_derivatives_per_s']:11,.0f}/s, {g['exact_direct_vs_shift_engine']:4.1f}x shift on engine); "
                  f"EngineGradient {g['exact_s'] * 1e3:7.2f} ms "
                  f"({g['exact_derivatives_per_s']:11,.0f}/s), shift on engine {g['shift_engine_s'] * 1e3:7.2f} ms "
                  f"({g['shift_engine_derivatives_per_s']:9,.0f}/s), shift on Aer {g['shift_aer_s'] * 1e3:8.1f} ms "
                  f"({g['shift_aer_derivatives_per_s']:8,.0f}/s); exact/shift-engine {g['exact_vs_shift_engine']:5.1f}x, "
                  f"exact/shift-Aer {g['exact_vs_shift_aer']:6.0f}x; max |exact - shift| engine "
                  f"{g['max_abs_diff_exact_shift_engine']:.1e}, Aer {g['max_abs_diff_exact_shift_aer']:.1e}")
            print(f"{spec:18s} reverse mode (values + one pullback, 16 weight derivatives of a loss) "
                  f"{g['pullback_s'] * 1e3:6.2f} ms; Jacobian / pullback time {g['jacobian_over_pullback_seconds']:4.1f}x; "
                  f"max |pullback - g . Jacobian| {g['max_abs_diff_pullback_vs_jacobian']:.1e}")
    write_json(args.json, record)


if __name__ == "__main__":
    main()
