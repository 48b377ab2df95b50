"""What a submission runs with: transpilation, Runtime options and job limits, as one frozen value.

>>> opts = SubmitOptions.coerce({"shots": 2000, "resilience_level": 0})
>>> opts.limits().shots, opts.runtime()["shots"], SubmitOptions.from_dict(opts.to_dict()) == opts
(2000, 2000, True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from qresnet.backends import BackendOptions
from qresnet.backends.limits import DEFAULT_RUNTIME_SHOTS, MAX_EXECUTIONS_PER_JOB, MAX_TWO_QUBIT_GATES_PER_JOB, JobLimits
from qresnet.jobs.errors import JobsError

RUNTIME_FIELDS = ("shots", "resilience_level", "measure_mitigation", "dynamical_decoupling", "twirling", "seed")


@dataclass(frozen=True)
class SubmitOptions:
    """Everything a submission runs with, recorded in the ledger.

    ``None`` keeps the service's default (Runtime: 4096 shots, resilience level 1 with
    measurement mitigation). ``seed`` seeds the simulator of local testing mode only.
    ``validate_patches`` test-set patches of layer 1 are also run directly, to measure the
    filter-response method's error on the device.
    """

    shots: int | None = None
    resilience_level: int | None = None
    measure_mitigation: bool | None = None
    dynamical_decoupling: bool | None = None
    twirling: bool | None = None
    seed: int | None = None
    execution_mode: str = "batch"
    optimization_level: int = 2
    seed_transpiler: int = 0
    initial_layout: tuple[int, ...] | None = None
    account: str | None = None
    validate_patches: int = 32
    max_two_qubit_gates: int = MAX_TWO_QUBIT_GATES_PER_JOB
    max_executions: int = MAX_EXECUTIONS_PER_JOB

    def __post_init__(self) -> None:
        for name in ("max_two_qubit_gates", "max_executions"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise JobsError(f"{name}={value!r} must be a positive integer")
        if not isinstance(self.validate_patches, int) or self.validate_patches < 0:
            raise JobsError(f"validate_patches={self.validate_patches!r} must be 0 or a positive integer")
        if self.initial_layout is not None:
            object.__setattr__(self, "initial_layout", tuple(int(q) for q in self.initial_layout))
        self.backend_options()  # validates shots, levels and the execution mode in one place

    @classmethod
    def coerce(cls, value: SubmitOptions | dict[str, Any] | None) -> SubmitOptions:
        if isinstance(value, SubmitOptions):
            return value
        return cls.from_dict(value or {})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SubmitOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise JobsError(f"unknown submit options {unknown}; valid: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["initial_layout"] = None if self.initial_layout is None else list(self.initial_layout)
        return out

    def backend_options(self) -> BackendOptions:
        return BackendOptions(
            shots=self.shots, seed=self.seed, optimization_level=self.optimization_level,
            seed_transpiler=self.seed_transpiler, initial_layout=self.initial_layout,
            execution_mode=self.execution_mode, resilience_level=self.resilience_level,
            dynamical_decoupling=self.dynamical_decoupling, twirling=self.twirling,
            measure_mitigation=self.measure_mitigation, account=self.account,
        )

    def limits(self) -> JobLimits:
        return JobLimits(self.max_two_qubit_gates, self.max_executions, self.shots or DEFAULT_RUNTIME_SHOTS)

    def runtime(self) -> dict[str, Any]:
        """The options that shape the returned values (part of the manifest hash)."""
        return {name: getattr(self, name) for name in RUNTIME_FIELDS}
