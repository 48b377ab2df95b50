"""What the command-line front ends share: plain tables, and the backend flags with the value they make.

Every command that runs circuits (``train``, ``compare``, ``grads``, ``transpile``, ``jobs submit``)
takes the same backend flags from :func:`add_backend_arguments`; :func:`backend_options` turns the
parsed flags into one :class:`~qresnet.backends.options.BackendOptions`, over a base value (a
resumed run's, a TOML file's), so a flag that was not given changes nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from qresnet.backends.options import BackendOptions
from qresnet.choices import (ANSATZES, ENGINES, ENTANGLEMENTS, EXECUTION_MODES, FILTER_ENCODINGS, FILTER_KINDS,
                             OPTIMIZATION_LEVELS, READOUTS, RESILIENCE_LEVELS)
from qresnet.errors import ConfigError, LayoutError
from qresnet.values import checked_int

BACKEND_HELP = ("aer | aer:<fake device>[@<scale>] | noise:<channel>:<p> | local:<fake device> | ibm:<device> "
                "(default: aer; `qresnet backends` lists them)")


def print_table(rows: list[dict], columns: Sequence[str]) -> None:
    """Left-aligned columns; lists and tuples print comma-joined.

    >>> print_table([{"a": 1, "b": (2, 3)}], ["a", "b"])
    a  b   
    1  2, 3
    """
    cells = [[", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in (r[c] for c in columns)]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def parse_ints(text: str | None, flag: str, what: str, error: type[Exception] = ConfigError) -> tuple[int, ...] | None:
    """``"3,2,1,0"`` -> (3, 2, 1, 0); None stays None; anything else is ``error`` naming ``flag``.

    >>> parse_ints("3, 2,1,0", "--initial-layout", "qubit indices")
    (3, 2, 1, 0)
    """
    if text is None:
        return None
    try:
        return tuple(int(q) for q in text.split(","))
    except ValueError:
        raise error(f"{flag} {text!r} must be comma-separated {what}, e.g. 3,2,1,0") from None


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """``--seeds 0-4`` (a range, both ends in) or ``0,3,7`` (a list), or a mix: ``0-2,7``.

    >>> parse_seeds("0-2,7"), parse_seeds("5")
    ((0, 1, 2, 7), (5,))
    """
    if text is None:
        return None
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, dash, high = part.strip().partition("-")
            first, last = int(low), int(high) if dash else int(low)
            if last < first:
                raise ValueError
            seeds.extend(range(first, last + 1))
    except ValueError:
        raise ConfigError(f"--seeds {text!r} must be a range or a list of seeds, e.g. 0-4 or 0,3,7") from None
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"--seeds {text!r} names a seed twice")
    return tuple(seeds)


def parse_seed_caps(text: str | None) -> tuple[int | None, dict[str, int] | None]:
    """``--max-seeds 40`` (every planned study's cap), ``paper-quantum=10`` (one study's), or both:
    ``40,paper-quantum=10``. Returns (the cap or None, {study: cap} or None); the counts are checked where the
    rule is made.

    >>> parse_seed_caps("40,paper-quantum=10"), parse_seed_caps("12")
    ((40, {'paper-quantum': 10}), (12, None))
    """
    if text is None:
        return None, None
    cap, studies = None, {}
    try:
        for part in text.split(","):
            study, equals, count = part.strip().rpartition("=")
            if equals and study.strip() and study.strip() not in studies:
                studies[study.strip()] = int(count)
            elif not equals and cap is None:
                cap = int(count)
            else:
                raise ValueError
    except ValueError:
        raise ConfigError(f"--max-seeds {text!r} must be a count, STUDY=count pairs, or both, each once: e.g. 40 or "
                          "40,paper-quantum=10") from None
    if cap is not None:
        checked_int(cap, "--max-seeds")
    for study, count in studies.items():
        checked_int(count, f"--max-seeds {study}")
    return cap, studies or None


def add_backend_arguments(parser: argparse.ArgumentParser, *, backend: str | None = BACKEND_HELP,
                          required: bool = False) -> None:
    """The backend flags; ``backend=None`` leaves out ``--backend`` (``compare`` takes ``--backends``)."""
    group = parser.add_argument_group("backend")
    if backend is not None:
        group.add_argument("--backend", default=None, required=required, help=backend)
    group.add_argument("--engine", choices=ENGINES, default=None,
                       help="simulator of aer backends: the vectorized engine (default) or Aer itself")
    group.add_argument("--shots", type=int, default=None,
                       help="shots per observable; default: exact values on Aer, the service's default on Runtime")
    group.add_argument("--optimization-level", type=int, default=None, choices=OPTIMIZATION_LEVELS,
                       help="preset pass manager level (default 2)")
    group.add_argument("--seed-transpiler", type=int, default=None, help="transpiler seed (default 0)")
    group.add_argument("--initial-layout", default=None,
                       help="physical qubits for the filter's qubits, e.g. 3,2,1,0 (needs a device)")
    group.add_argument("--no-readout", dest="readout", action="store_const", const=False, default=None,
                       help="leave readout error out of exact noisy values")
    group.add_argument("--execution-mode", default=None, choices=EXECUTION_MODES,
                       help="ibm: Runtime execution mode (default: session for training, batch for jobs)")
    group.add_argument("--resilience-level", type=int, default=None, choices=RESILIENCE_LEVELS)
    group.add_argument("--measure-mitigation", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--dynamical-decoupling", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--twirling", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--account", default=None, help="ibm: a saved QiskitRuntimeService account name")


def backend_options(args: argparse.Namespace, base: BackendOptions | None = None, **extra: object) -> BackendOptions:
    """``base`` (default: the defaults) with every backend flag that was given, and ``extra`` (e.g. the seed)."""
    given = {
        "engine": args.engine, "shots": args.shots, "optimization_level": args.optimization_level,
        "seed_transpiler": args.seed_transpiler, "initial_layout": parse_ints(args.initial_layout, "--initial-layout", "qubit indices", LayoutError),
        "readout": args.readout, "execution_mode": args.execution_mode, "resilience_level": args.resilience_level,
        "measure_mitigation": args.measure_mitigation, "dynamical_decoupling": args.dynamical_decoupling,
        "twirling": args.twirling, "account": args.account, **extra,
    }
    return (base or BackendOptions()).replace(**given)


# the filter flags and the FilterSpec field each sets
FILTER_FLAGS = {"kernel_size": "kernel_size", "stride": "stride", "filter_reps": "reps", "entanglement": "entanglement",
                "ansatz": "ansatz", "ansatz_seed": "ansatz_seed", "encoding": "encoding", "readout": "readout",
                "filters_per_layer": "filters_per_layer", "filter_circuit": "circuit_path",
                "filter_observables": "observables"}


def add_filter_arguments(parser: argparse.ArgumentParser, kind: bool = True) -> None:
    """The flags of the filter every quanvolution layer runs (``TrainConfig.quanv``) and, with ``kind``, ``--filter``
    (the circuit or its classical control; ``compare`` takes ``--filters`` instead)."""
    group = parser.add_argument_group("filter")
    if kind:
        group.add_argument("--filter", default=None, choices=FILTER_KINDS,
                           help="quantum (default) or classical: the control, a tanh layer of the same windows, "
                                "stride, channels and trainable parameter count")
    group.add_argument("--kernel-size", type=int, default=None, help="K: K x K windows, K*K qubits (default 2)")
    group.add_argument("--stride", type=int, default=None, help="window step (default K)")
    group.add_argument("--filter-reps", type=int, default=None, help="ansatz repetitions (default 2)")
    group.add_argument("--entanglement", default=None, choices=ENTANGLEMENTS, help="ry_rz ansatz: CNOT pattern")
    group.add_argument("--ansatz", default=None, choices=ANSATZES, help="the filter's trainable circuit (default ry_rz)")
    group.add_argument("--ansatz-seed", type=int, default=None, help="random ansatz: its seed (default 0)")
    group.add_argument("--encoding", default=None, choices=FILTER_ENCODINGS,
                       help="how a pixel x enters: RY(pi x) (ry_pi, default), RY(x), RX(pi x)")
    group.add_argument("--readout", default=None, choices=READOUTS,
                       help="mean of the Z's (one channel) or per-qubit (K*K channels)")
    group.add_argument("--filters-per-layer", type=int, default=None, help="N independent filters, N x outputs channels")
    group.add_argument("--filter-circuit", default=None, metavar="FILE.qpy",
                       help="your own filter: a QPY circuit whose inputs are the parameters x[i]; others are weights")
    group.add_argument("--filter-observables", default=None, metavar="PAULIS",
                       help='--filter-circuit: its observables, e.g. "ZIII,IZII" (default: the mean of the Z\'s)')


def filter_values(args: argparse.Namespace, base: dict | None = None) -> dict:
    """``base`` (a config's ``quanv`` dict, or None) with every filter flag that was given; a new kernel size
    without ``--stride`` takes stride K."""
    values = dict(base or {})
    values.update({field: getattr(args, flag) for flag, field in FILTER_FLAGS.items() if getattr(args, flag) is not None})
    if args.kernel_size is not None and args.stride is None:
        values["stride"] = None
    return values
