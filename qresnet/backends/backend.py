"""Resolve a spec into a backend: its transpilation target, cached transpiled templates and its estimator."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

from qiskit.primitives import BaseEstimatorV2
from qiskit.providers import BackendV2
from qiskit_aer.noise import NoiseModel

from qresnet.backends.aer import aer_estimator
from qresnet.backends.devices import fake_device, low_connected_qubits
from qresnet.backends.engine import EngineEstimator
from qresnet.backends.limits import DEFAULT_RUNTIME_SHOTS, JobLimits, SplittingEstimator
from qresnet.backends.readout import readout_errors
from qresnet.backends.runtime import IBMCredentials, RuntimeOptions, connect_service, runtime_estimator
from qresnet.backends.spec import BackendSpec
from qresnet.backends.transpile import TranspiledTemplate, transpile_template, trim_to_used_qubits
from qresnet.circuits import CircuitTemplate
from qresnet.errors import BackendSpecError, DeviceTooSmallError, QresnetError

EXECUTION_MODES = ("batch", "session")
ENGINES = ("engine", "aer")


@dataclass(frozen=True)
class BackendOptions:
    """How circuits are transpiled and estimated; every field is recorded with a run's results.

    ``shots=None`` means exact expectation values on Aer backends (readout error folded in
    for noisy ones unless ``readout=False``) and the service default on Runtime backends.
    ``engine`` picks the simulator of ``aer`` backends: the vectorized engine (default) or Aer.
    """

    shots: int | None = None
    engine: str = "engine"
    seed: int | None = None
    optimization_level: int = 2
    seed_transpiler: int = 0
    initial_layout: tuple[int, ...] | None = None
    readout: bool = True
    execution_mode: str = "batch"
    resilience_level: int | None = None
    dynamical_decoupling: bool | None = None
    twirling: bool | None = None
    measure_mitigation: bool | None = None
    account: str | None = None

    def __post_init__(self) -> None:
        if self.shots is not None and (not isinstance(self.shots, int) or self.shots < 1):
            raise QresnetError(f"shots={self.shots!r} must be a positive integer, or None for exact values")
        if self.optimization_level not in (0, 1, 2, 3):
            raise QresnetError(f"optimization_level={self.optimization_level!r} must be 0, 1, 2 or 3")
        if self.engine not in ENGINES:
            raise QresnetError(f"engine={self.engine!r} must be one of {', '.join(ENGINES)}")
        if self.execution_mode not in EXECUTION_MODES:
            raise QresnetError(f"execution_mode={self.execution_mode!r} must be one of {', '.join(EXECUTION_MODES)}")
        if self.resilience_level not in (None, 0, 1, 2):
            raise QresnetError(f"resilience_level={self.resilience_level!r} must be 0, 1 or 2")
        if self.initial_layout is not None:
            object.__setattr__(self, "initial_layout", tuple(int(q) for q in self.initial_layout))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@cache
def noise_model_for(device: str) -> NoiseModel:
    """Aer's noise model of a fake device, built once per process (seconds for large devices)."""
    return NoiseModel.from_backend(fake_device(device))


class Backend:
    """A resolved backend. Templates transpile once and are cached; the estimator is made once.

    >>> backend = resolve_backend("aer")
    >>> from qresnet.circuits import quanv_filter
    >>> backend.transpile(quanv_filter()).cost.two_qubit_gates
    6
    """

    def __init__(self, spec: BackendSpec, options: BackendOptions, device: BackendV2 | None, service: Any = None):
        self.spec = spec
        self.options = options
        self.device = device
        self.service = service
        self._transpiled: dict[int, TranspiledTemplate] = {}  # by template identity: equal names may hold other Parameters
        self._estimator: BaseEstimatorV2 | None = None
        self._runtime: BaseEstimatorV2 | None = None
        self._mode: Any = None

    @property
    def name(self) -> str:
        return str(self.spec)

    @property
    def noise_model(self) -> NoiseModel | None:
        return noise_model_for(self.spec.device) if self.spec.kind == "aer" and self.spec.device else None

    def transpile(self, template: CircuitTemplate) -> TranspiledTemplate:
        """The template's ISA circuit on this backend, transpiled on first use only.

        ``initial_layout`` applies to the templates of its width (a run's 4-qubit filters, not its
        10-qubit head). On ``local:`` the circuit is cut after its highest used qubit, since local
        testing mode simulates every qubit below it; a template placed too high without a layout of
        its own is placed again on the device's lowest-index connected qubits.
        """
        cached = self._transpiled.get(id(template))
        if cached is None or cached.template is not template:
            o = self.options
            layout = o.initial_layout if o.initial_layout is not None and len(o.initial_layout) == template.num_qubits else None

            def run(chosen: tuple[int, ...] | None) -> TranspiledTemplate:
                return transpile_template(template, self.device, self.name, o.optimization_level, o.seed_transpiler, chosen)

            cached = run(layout)
            if self.spec.kind == "local":
                try:
                    cached = trim_to_used_qubits(cached, self.name)
                except DeviceTooSmallError:
                    if layout is not None:
                        raise
                    cached = trim_to_used_qubits(run(low_connected_qubits(self.device, template.num_qubits)), self.name)
            self._transpiled[id(template)] = cached
        return cached

    def estimator(self) -> BaseEstimatorV2:
        """The ``EstimatorV2`` that runs this backend's transpiled circuits."""
        if self._estimator is None:
            o = self.options
            if self.spec.kind == "aer":
                readout = readout_errors(self.device) if self.device is not None and o.readout else None
                aer = aer_estimator(self.noise_model, readout, o.shots, o.seed)
                self._estimator = aer if o.engine == "aer" else EngineEstimator(
                    self.noise_model, readout, o.shots, o.seed, fallback=aer)
            else:
                # jobs over the Runtime validation limits (10,000 two-qubit gates) are split, not rejected
                self._estimator = SplittingEstimator(self.runtime_estimator(),
                                                     JobLimits(shots=o.shots or DEFAULT_RUNTIME_SHOTS))
        return self._estimator

    def runtime_estimator(self) -> BaseEstimatorV2:
        """``local:`` and ``ibm:``: the Runtime ``Estimator`` itself, on this backend's Batch or Session (made once)."""
        if self.spec.kind == "aer":
            raise QresnetError(f"{self.name} is a simulator backend; Runtime estimators exist for local: and ibm: specs")
        if self._runtime is None:
            o = self.options
            runtime_options = RuntimeOptions(o.shots, o.resilience_level, o.dynamical_decoupling, o.twirling, o.seed,
                                             o.measure_mitigation)
            self._runtime = runtime_estimator(self._execution_mode(), runtime_options, local=self.spec.kind == "local")
        return self._runtime

    def _execution_mode(self) -> Any:
        if self.spec.kind == "local":
            return self.device  # local testing mode runs jobs directly on the fake device
        if self._mode is None:
            from qiskit_ibm_runtime import Batch, Session

            self._mode = (Session if self.options.execution_mode == "session" else Batch)(backend=self.device)
        return self._mode

    @property
    def session_id(self) -> str | None:
        """The id of the open ``ibm:`` Batch or Session, if any."""
        return None if self._mode is None or self.spec.kind != "ibm" else getattr(self._mode, "session_id", None)

    def close(self) -> None:
        """Close the Runtime Session or Batch, if one was opened."""
        if self._mode is not None:
            self._mode.close()
            self._mode = None
            self._estimator = self._runtime = None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """What a run records about where it ran."""
        return {
            "spec": self.name,
            "kind": self.spec.kind,
            "device": self.spec.device,
            "device_qubits": None if self.device is None else self.device.num_qubits,
            "noisy": self.spec.noisy,
            "options": self.options.to_dict(),
        }

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


def resolve_backend(
    spec: str | BackendSpec,
    options: BackendOptions | None = None,
    *,
    credentials: IBMCredentials | None = None,
    service: Any = None,
) -> Backend:
    """Parse ``spec`` and bind it to its device (for ``ibm:``, connecting to IBM Quantum)."""
    spec = BackendSpec.coerce(spec)
    options = options or BackendOptions()
    if spec.kind == "aer" and spec.device is None:
        if options.initial_layout is not None:
            raise QresnetError("initial_layout needs a device: use aer:<fake device>")
        return Backend(spec, options, None)
    if spec.kind in ("aer", "local"):
        return Backend(spec, options, fake_device(spec.device))
    service = service or connect_service(credentials, options.account)
    try:
        device = service.backend(spec.device)
    except Exception as exc:  # the service raises QiskitBackendNotFoundError and others
        try:
            names = ", ".join(sorted(b.name for b in service.backends()))
        except Exception:
            names = "(could not list them)"
        raise BackendSpecError(f"IBM Quantum has no device {spec.device!r} for this account ({exc}); available: {names}") from None
    return Backend(spec, options, device, service)
