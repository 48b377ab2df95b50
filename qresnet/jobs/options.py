"""What a submission runs with: the backend options, carried whole, and the job limits, as one frozen value.

>>> from qresnet.backends import BackendOptions
>>> opts = SubmitOptions(BackendOptions(shots=2000, resilience_level=0))
>>> opts.limits().shots, opts.runtime()["shots"], SubmitOptions.coerce(opts.to_dict()) == opts
(2000, 2000, True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from qresnet.backends.limits import DEFAULT_RUNTIME_SHOTS, MAX_EXECUTIONS_PER_JOB, MAX_TWO_QUBIT_GATES_PER_JOB, JobLimits
from qresnet.backends.options import BackendOptions
from qresnet.errors import JobsError
from qresnet.values import checked_int, known_fields

RUNTIME_FIELDS = ("shots", "resilience_level", "measure_mitigation", "dynamical_decoupling", "twirling", "seed")


@dataclass(frozen=True)
class SubmitOptions:
    """Everything a submission runs with, recorded in the ledger.

    ``backend``: transpilation and Runtime options; ``None`` fields keep the service's default
    (Runtime: 4096 shots, resilience level 1 with measurement mitigation), and ``seed`` seeds
    the simulator of local testing mode only. ``validate_patches`` test-set patches of layer 1
    are also run directly, to measure the filter-response method's error on the device.
    """

    backend: BackendOptions = field(default_factory=BackendOptions)
    validate_patches: int = 32
    max_two_qubit_gates: int = MAX_TWO_QUBIT_GATES_PER_JOB
    max_executions: int = MAX_EXECUTIONS_PER_JOB

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", BackendOptions.coerce(self.backend))
        for name, minimum in (("max_two_qubit_gates", 1), ("max_executions", 1), ("validate_patches", 0)):
            object.__setattr__(self, name, checked_int(getattr(self, name), name, minimum, error=JobsError))

    @classmethod
    def coerce(cls, value: SubmitOptions | dict[str, Any] | None) -> SubmitOptions:
        """The value itself, or one from :meth:`to_dict`'s form (the ledger's)."""
        if isinstance(value, SubmitOptions):
            return value
        return cls(**known_fields(cls, value, "submit options"))

    def with_backend(self, **changes: Any) -> SubmitOptions:
        """A copy whose backend options take ``changes`` (``None`` values left out)."""
        return dataclasses.replace(self, backend=self.backend.replace(**changes))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "backend": self.backend.to_dict()}

    def limits(self) -> JobLimits:
        return JobLimits(self.max_two_qubit_gates, self.max_executions, self.backend.shots or DEFAULT_RUNTIME_SHOTS)

    def runtime(self) -> dict[str, Any]:
        """The options that shape the returned values (part of the manifest hash)."""
        return {name: getattr(self.backend, name) for name in RUNTIME_FIELDS}
