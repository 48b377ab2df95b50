"""Qiskit Runtime: credentials, the service, and the Runtime estimator (local testing mode and IBM Quantum).

The token lives only in a :class:`Secret`, whose repr and str are masked and which refuses
to be pickled; errors from the service are scrubbed of it before they reach the user.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qiskit.primitives import BaseEstimatorV2

from qresnet.errors import CredentialsError

TOKEN_VAR = "QISKIT_IBM_TOKEN"
INSTANCE_VAR = "QISKIT_IBM_INSTANCE"
CHANNEL_VAR = "QISKIT_IBM_CHANNEL"
DEFAULT_CHANNEL = "ibm_quantum_platform"
MISSING_CREDENTIALS = (
    f"ibm: backends need IBM Quantum credentials. Set {TOKEN_VAR} and {INSTANCE_VAR} "
    f"(and optionally {CHANNEL_VAR}, default {DEFAULT_CHANNEL}) in the environment or in a .env file "
    "in the working directory (copy .env.example), or save an account with "
    "QiskitRuntimeService.save_account(...) and pass its name with --account."
)


class Secret:
    """A string that never shows itself: masked repr and str, no pickling."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a Secret (an IBM Quantum token) is never serialised")


@dataclass(frozen=True)
class IBMCredentials:
    """Token, instance and channel for ``QiskitRuntimeService``."""

    token: Secret
    instance: str | None = None
    channel: str = DEFAULT_CHANNEL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env") -> IBMCredentials:
        """Read the environment, falling back to ``dotenv_path``; the environment wins."""
        values: dict[str, str | None] = {}
        if dotenv_path is not None and Path(dotenv_path).is_file():
            from dotenv import dotenv_values

            values.update(dotenv_values(dotenv_path))
        values.update(os.environ if env is None else env)
        token = (values.get(TOKEN_VAR) or "").strip()
        if not token:
            raise CredentialsError(MISSING_CREDENTIALS)
        return cls(Secret(token), (values.get(INSTANCE_VAR) or "").strip() or None,
                   (values.get(CHANNEL_VAR) or "").strip() or DEFAULT_CHANNEL)


def connect_service(
    credentials: IBMCredentials | None = None,
    account: str | None = None,
    service_factory: Callable[..., Any] | None = None,
) -> Any:
    """A ``QiskitRuntimeService`` from a saved account name, or from credentials (default: the environment)."""
    if service_factory is None:
        from qiskit_ibm_runtime import QiskitRuntimeService as service_factory
    if account is not None:
        secret, kwargs = Secret(""), {"name": account}
    else:
        credentials = credentials or IBMCredentials.from_env()
        secret = credentials.token
        kwargs = {"channel": credentials.channel, "token": secret.reveal(), "instance": credentials.instance}
    try:
        return service_factory(**kwargs)
    except Exception as exc:  # the service raises many types; all mean "could not connect"
        reason = secret.scrub(_failure_reason(exc, credentials))
    # raised outside the except block so that no traceback chains to an exception holding the token
    raise CredentialsError(
        f"could not connect to IBM Quantum ({reason}). Check {TOKEN_VAR}, {INSTANCE_VAR} and {CHANNEL_VAR}"
        + (f", or the saved account {account!r}" if account else "") + "; see .env.example."
    )


# raised from inside qiskit-ibm-runtime on input it did not expect (a malformed CRN: "'NoneType' object has no
# attribute 'group'"); their text is about the client's code, not the user's credentials
CLIENT_BUGS = (AttributeError, TypeError, KeyError, IndexError, NameError, AssertionError)


def _failure_reason(exc: Exception, credentials: IBMCredentials | None) -> str:
    """What went wrong, in the user's terms: the service's own message, or, for an error inside the client
    (a Python exception such as AttributeError, which says nothing the user can act on), what to check."""
    if not isinstance(exc, CLIENT_BUGS):
        return str(exc) or type(exc).__name__
    instance = credentials.instance if credentials is not None else None
    if instance is not None and instance.startswith("crn:") and len(instance.split(":")) < 10:
        return (f"{INSTANCE_VAR} {instance!r} is not a whole CRN (crn:v1:bluemix:public:quantum-computing:<region>:"
                "a/<account>:<instance>::); copy it from the instance's page, or give the instance's name")
    return ("the client could not use this token and instance; check that the token is the whole API key, without "
            "quotes or spaces")


@dataclass(frozen=True)
class RuntimeOptions:
    """Runtime estimator options passed through; ``None`` keeps the service's default."""

    shots: int | None = None
    resilience_level: int | None = None
    dynamical_decoupling: bool | None = None
    twirling: bool | None = None
    seed: int | None = None  # local testing mode only
    measure_mitigation: bool | None = None


def runtime_estimator(mode: Any, options: RuntimeOptions, local: bool) -> BaseEstimatorV2:
    """The client-side Runtime ``Estimator`` on a backend (job or local mode), ``Session`` or ``Batch``."""
    from qiskit_ibm_runtime.executor_estimator import Estimator

    estimator = Estimator(mode=mode)
    opts = estimator.options
    if options.shots is not None:
        opts.default_shots = options.shots
    if options.resilience_level is not None:
        opts.resilience_level = options.resilience_level
    if options.dynamical_decoupling is not None:
        opts.dynamical_decoupling.enable = options.dynamical_decoupling
    if options.twirling is not None:
        opts.twirling.enable_gates = options.twirling
        opts.twirling.enable_measure = options.twirling
    if options.measure_mitigation is not None:
        opts.resilience.measure_mitigation = options.measure_mitigation
    if local and options.seed is not None:
        opts.simulator.seed_simulator = options.seed
    return estimator


class DeferredEstimator(BaseEstimatorV2):
    """An estimator made on its first ``run``: building a model on ``ibm:`` opens no Batch or Session yet."""

    def __init__(self, make: Callable[[], BaseEstimatorV2]):
        self._make = make
        self._estimator: BaseEstimatorV2 | None = None

    def run(self, pubs: Any, *, precision: float | None = None) -> Any:
        if self._estimator is None:
            self._estimator = self._make()
        return self._estimator.run(pubs, precision=precision)
