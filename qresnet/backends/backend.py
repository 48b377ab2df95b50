"""Resolve a spec into a backend: its transpilation target, cached transpiled templates and its estimator."""

from __future__ import annotations

from functools import cache
from typing import Any

from qiskit.primitives import BaseEstimatorV2
from qiskit.providers import BackendV2
from qiskit_aer.noise import NoiseModel

from qresnet.backends.aer import aer_estimator
from qresnet.backends.devices import fake_device, low_connected_qubits
from qresnet.backends.engine import EngineEstimator
from qresnet.backends.limits import DEFAULT_RUNTIME_SHOTS, JobLimits, SplittingEstimator
from qresnet.backends.noise import channel_noise_model, scaled_device_noise_model, scaled_readout_errors
from qresnet.backends.options import BackendOptions
from qresnet.backends.primitives import CountsRows
from qresnet.backends.readout import ReadoutErrors, readout_errors
from qresnet.backends.runtime import DeferredEstimator, IBMCredentials, RuntimeOptions, connect_service, runtime_estimator
from qresnet.backends.spec import BackendSpec
from qresnet.backends.transpile import TranspiledTemplate, transpile_template, trim_to_used_qubits
from qresnet.circuits import CircuitTemplate
from qresnet.errors import BackendSpecError, CapabilityError, DeviceTooSmallError, LayoutError

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
        """The Aer noise model of a simulated backend: the device's (scaled by ``@s``) or the channel's;
        None where the circuits run noiseless (``aer``, a zero scale or strength) or on a device."""
        spec = self.spec
        if spec.kind == "noise":
            model = channel_noise_model(spec.channel, spec.p)
        elif spec.kind == "aer" and spec.device:
            model = noise_model_for(spec.device) if spec.scale is None else scaled_device_noise_model(spec.device, spec.scale)
        else:
            return None
        return None if model.is_ideal() else model

    def readout(self) -> ReadoutErrors | None:
        """Per-qubit readout assignment errors a simulated backend applies (scaled by ``@s``), or None:
        none on ``aer`` and ``noise:``, and none with ``--no-readout``."""
        if not (self.spec.kind == "aer" and self.device is not None and self.options.readout):
            return None
        errors = readout_errors(self.device)
        errors = errors if self.spec.scale is None else scaled_readout_errors(errors, self.spec.scale)
        return errors if any(e0 or e1 for e0, e1 in errors.values()) else None

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
                return transpile_template(template, self.device, self.name, o.optimization_level, o.seed_transpiler, chosen,
                                          1.0 if self.spec.scale is None else self.spec.scale)

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

    @property
    def prepares_encoded_states(self) -> bool:
        """Whether the estimator prepares an ``amplitude_encoding`` exactly, with input gradients
        (``encoding_gradients`` of its :class:`~qresnet.backends.primitives.Differentiator`): the engine on ``aer``
        and ``noise:`` backends."""
        return self.spec.simulated and self.options.engine == "engine"

    def rows_evaluated(self) -> int | None:
        """Parameter sets x observables evaluated so far, where the estimator counts them (the engine), else None."""
        estimator = self.estimator()
        return estimator.rows_evaluated if isinstance(estimator, CountsRows) else None

    def estimator(self) -> BaseEstimatorV2:
        """The ``EstimatorV2`` that runs this backend's transpiled circuits."""
        if self._estimator is None:
            o = self.options
            if self.spec.simulated:
                self._estimator = self.simulator(o.shots, o.seed)
            else:
                # jobs over the Runtime validation limits (10,000 two-qubit gates) are split, not rejected;
                # the Batch or Session opens on the first job, not when a model is built
                self._estimator = SplittingEstimator(DeferredEstimator(self.runtime_estimator),
                                                     JobLimits(shots=o.shots or DEFAULT_RUNTIME_SHOTS))
        return self._estimator

    def simulator(self, shots: int | None, seed: int | None) -> BaseEstimatorV2:
        """A new estimator of this simulated backend (its noise, readout and engine) with these ``shots`` (None:
        exact) and ``seed``: :meth:`estimator` is the one with the options' own; others check it (shot draws)."""
        if not self.spec.simulated:
            raise CapabilityError(f"{self.name} is not simulated here: its estimator runs on the device")
        readout = self.readout()
        aer = aer_estimator(self.noise_model, readout, shots, seed)
        return aer if self.options.engine == "aer" else EngineEstimator(self.noise_model, readout, shots, seed,
                                                                         fallback=aer)

    def runtime_estimator(self) -> BaseEstimatorV2:
        """``local:`` and ``ibm:``: the Runtime ``Estimator`` itself, on this backend's Batch or Session (made once)."""
        if self.spec.simulated:
            raise CapabilityError(f"{self.name} is a simulator backend; Runtime estimators exist for local: and ibm: specs")
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

            self._mode = (Session if self.options.execution_mode == "session" else Batch)(backend=self.device)  # None: Batch
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
            **({"channel": self.spec.channel, "p": self.spec.p} if self.spec.kind == "noise" else {}),
            **({"noise_scale": self.spec.scale} if self.spec.scale is not None else {}),
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
    if spec.simulated and spec.device is None:
        if options.initial_layout is not None:
            raise LayoutError(f"--initial-layout needs a device, and {spec} has none: use aer:<fake device>")
        return Backend(spec, options, None)
    if spec.kind in ("aer", "local"):
        return Backend(spec, options, _check_layout(fake_device(spec.device), options, spec))
    service = service or connect_service(credentials, options.account)
    try:
        device = service.backend(spec.device)
    except Exception as exc:  # the service raises QiskitBackendNotFoundError and others
        try:
            names = ", ".join(sorted(b.name for b in service.backends()))
        except Exception:
            names = "(could not list them)"
        raise BackendSpecError(f"IBM Quantum has no device {spec.device!r} for this account ({exc}); available: {names}") from None
    return Backend(spec, options, _check_layout(device, options, spec), service)


def _check_layout(device: BackendV2, options: BackendOptions, spec: BackendSpec) -> BackendV2:
    layout = options.initial_layout
    if layout is not None and max(layout) >= device.num_qubits:
        raise LayoutError(f"--initial-layout {','.join(map(str, layout))} names qubit {max(layout)}, but {spec} has "
                          f"qubits 0-{device.num_qubits - 1}")
    return device
