"""How circuits are transpiled and estimated: one frozen value that runs, sweeps and submissions carry whole.

>>> opts = BackendOptions.coerce({"shots": 2000, "initial_layout": [3, 2, 1, 0]})
>>> opts.initial_layout, BackendOptions.coerce(opts.to_dict()) == opts
((3, 2, 1, 0), True)

This module imports nothing heavy, so that the command line can build its flags from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from qresnet.choices import ENGINES, EXECUTION_MODES, OPTIMIZATION_LEVELS, RESILIENCE_LEVELS
from qresnet.errors import ConfigError, LayoutError
from qresnet.values import checked_int, known_fields


@dataclass(frozen=True)
class BackendOptions:
    """How circuits are transpiled and estimated; every field is recorded with a run's results.

    ``shots=None`` means exact expectation values on Aer backends (readout error folded in
    for noisy ones unless ``readout=False``) and the service default on Runtime backends.
    ``engine`` picks the simulator of ``aer`` backends: the vectorized engine (default) or Aer.
    ``execution_mode=None`` leaves it to the command: training opens a ``Session`` (its steps
    depend on each other), device evaluation a ``Batch``. ``seed`` seeds the simulators
    (Aer, the engine's sampling, local testing mode). ``None`` elsewhere keeps the service default.
    """

    shots: int | None = None
    engine: str = "engine"
    seed: int | None = None
    optimization_level: int = 2
    seed_transpiler: int = 0
    initial_layout: tuple[int, ...] | None = None
    readout: bool = True
    execution_mode: str | None = None
    resilience_level: int | None = None
    dynamical_decoupling: bool | None = None
    twirling: bool | None = None
    measure_mitigation: bool | None = None
    account: str | None = None

    def __post_init__(self) -> None:
        if self.shots is not None:
            object.__setattr__(self, "shots", checked_int(self.shots, "shots", hint=", or None for exact values"))
        if self.seed is not None:
            object.__setattr__(self, "seed", checked_int(self.seed, "seed", 0, hint=", or None for the service default"))
        object.__setattr__(self, "optimization_level", checked_int(
            self.optimization_level, "optimization_level", OPTIMIZATION_LEVELS[0], maximum=OPTIMIZATION_LEVELS[-1]))
        object.__setattr__(self, "seed_transpiler", checked_int(self.seed_transpiler, "seed_transpiler", 0))
        if self.engine not in ENGINES:
            raise ConfigError(f"engine={self.engine!r} must be one of {', '.join(ENGINES)}")
        if self.execution_mode not in (None, *EXECUTION_MODES):
            raise ConfigError(f"execution_mode={self.execution_mode!r} must be one of {', '.join(EXECUTION_MODES)}")
        if self.resilience_level is not None:
            object.__setattr__(self, "resilience_level", checked_int(
                self.resilience_level, "resilience_level", RESILIENCE_LEVELS[0], maximum=RESILIENCE_LEVELS[-1],
                hint=", or None for the service default"))
        if self.initial_layout is not None:
            try:
                layout = tuple(checked_int(q, "initial_layout qubit", 0, error=LayoutError) for q in self.initial_layout)
            except TypeError:
                raise LayoutError(f"initial_layout={self.initial_layout!r} must be qubit indices, e.g. 3,2,1,0") from None
            if not layout:
                raise LayoutError("initial_layout is empty; give one physical qubit per template qubit, e.g. 3,2,1,0")
            repeated = sorted({q for q in layout if layout.count(q) > 1})
            if repeated:
                raise LayoutError(f"initial_layout {','.join(map(str, layout))} uses qubit(s) "
                                  f"{', '.join(map(str, repeated))} more than once")
            object.__setattr__(self, "initial_layout", layout)

    @classmethod
    def coerce(cls, value: BackendOptions | dict[str, Any] | None) -> BackendOptions:
        """The value itself, or one from a dict of its fields (``config.json``, TOML, the ledger)."""
        if isinstance(value, BackendOptions):
            return value
        return cls(**known_fields(cls, value, "backend options"))

    def replace(self, **changes: Any) -> BackendOptions:
        """A copy with ``changes``; ``None`` values are left out (a flag that was not given)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["initial_layout"] = None if self.initial_layout is None else list(self.initial_layout)
        return out
