"""Where a submission's jobs go and how they come back: the Runtime service, and its errors, retried or reported.

Errors from the service fall in three classes (:func:`classify`): rejected credentials
(HTTP 401/403, expired or invalid token) stop the command with a :class:`CredentialsError`
that says what to do and never holds the token; transient ones (connection errors, timeouts,
HTTP 429 and 5xx) are retried with exponential backoff; anything else is permanent, and the
caller records its (scrubbed) message against the job and carries on with the others.

>>> classify(ConnectionError("reset by peer")), classify(RuntimeError("401 Client Error: Unauthorized"))
('transient', 'credentials')
>>> delays = []
>>> calls = iter([TimeoutError("slow"), TimeoutError("slow"), "ok"])
>>> def flaky():
...     outcome = next(calls)
...     if isinstance(outcome, Exception):
...         raise outcome
...     return outcome
>>> Retry(base_delay=1.0, sleep=delays.append).call("poll", flaky), delays
('ok', [1.0, 2.0])
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from qiskit.primitives.containers.estimator_pub import EstimatorPub

from qresnet.backends import Backend, IBMCredentials, resolve_backend
from qresnet.backends.runtime import CHANNEL_VAR, INSTANCE_VAR, TOKEN_VAR
from qresnet.errors import CredentialsError, JobsError
from qresnet.jobs.options import SubmitOptions

T = TypeVar("T")
_HTTP_CODE = re.compile(r"\b([45]\d\d)\b")
_CREDENTIAL_WORDS = ("unauthorized", "forbidden", "invalid token", "expired token", "token expired", "invalid api key")
_SECRET_FIELD = re.compile(r"(?i)\b(token|apikey|api_key|bearer|authorization)(\W{1,3})[^\s\"',;}]+")


class RuntimeTransport:
    """Jobs through qiskit-ibm-runtime's estimator on a ``local:`` or ``ibm:`` backend, one ``run`` per job.

    ibm: jobs go in one ``Batch`` (or ``Session``) per transport, opened on the first job and
    closed by :meth:`close`; local testing mode runs them on the fake device directly.
    """

    def __init__(self, backend: Backend):
        if backend.spec.kind not in ("local", "ibm"):
            raise JobsError(f"jobs run on local:<fake device> or ibm:<device>, not {backend.name}; "
                               "simulate aer backends with `qresnet train` or `qresnet compare`")
        self.backend = backend
        self.local = backend.spec.kind == "local"

    def estimator(self) -> Any:
        """The Runtime ``Estimator`` (unsplit: the job plan already respects the limits), made on first use."""
        return self.backend.runtime_estimator()

    def send(self, pubs: Sequence[EstimatorPub], tag: str) -> Any:
        """Submit one job, tagged so that :meth:`find` can find it again."""
        estimator = self.estimator()
        estimator.options.environment.job_tags = [tag]
        return estimator.run(list(pubs))

    def job(self, job_id: str) -> Any:
        if self.local:
            raise JobsError(f"job {job_id} ran in local testing mode, whose jobs live only in the process that ran them")
        return self.backend.service.job(job_id)

    def find(self, tag: str) -> Any | None:
        """The job tagged ``tag``, if the service has one (local testing mode keeps none)."""
        if self.local:
            return None
        found = self.backend.service.jobs(job_tags=[tag], limit=1)
        return found[0] if found else None

    def batch_id(self) -> str | None:
        return self.backend.session_id

    def close(self) -> None:
        """Close the Batch or Session: it accepts no new jobs, and the queued ones still run."""
        self.backend.close()


def open_transport(backend: str, options: SubmitOptions, service: Any = None) -> RuntimeTransport:
    """Resolve ``backend`` (for ibm:, connect to IBM Quantum, or use ``service``) and wrap it."""
    return RuntimeTransport(resolve_backend(backend, options.backend, service=service))


def status_name(status: Any) -> str:
    """``JobStatus.DONE`` (local jobs) and ``'DONE'`` (Runtime jobs) alike as ``'DONE'``; ``FAILED`` as ``'ERROR'``."""
    name = status.name if isinstance(status, enum.Enum) else str(status).upper()
    return "ERROR" if name == "FAILED" else name


def _http_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if isinstance(code, int) and code > 0:
        return code
    match = _HTTP_CODE.search(str(exc))
    return int(match.group(1)) if match else None


def classify(exc: BaseException) -> str:
    """``credentials``, ``transient`` or ``permanent``."""
    from qiskit_ibm_runtime.exceptions import IBMNotAuthorizedError, RuntimeJobTimeoutError

    code, text = _http_code(exc), str(exc).lower()
    if isinstance(exc, IBMNotAuthorizedError) or code in (401, 403) or any(w in text for w in _CREDENTIAL_WORDS):
        return "credentials"
    if isinstance(exc, (OSError, RuntimeJobTimeoutError)) or code == 429 or (code is not None and code >= 500):
        return "transient"  # requests' ConnectionError and Timeout are OSErrors
    return "permanent"


def scrub(text: str) -> str:
    """``text`` without the token of the environment (or .env) and without any ``token=...``-like field."""
    try:
        text = IBMCredentials.from_env().token.scrub(text)
    except CredentialsError:
        pass
    return _SECRET_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


def credentials_rejected(what: str, exc: BaseException) -> CredentialsError:
    code = _http_code(exc)
    return CredentialsError(
        f"IBM Quantum rejected the credentials while trying to {what} ({type(exc).__name__}"
        + (f", HTTP {code}" if code else "") + f"): the token may have expired or been revoked. "
        f"Create a new API key, set {TOKEN_VAR} (and {INSTANCE_VAR}, {CHANNEL_VAR}) or --account, "
        "and run the command again; the ledger keeps everything fetched so far"
    )


@dataclass(frozen=True)
class Retry:
    """Retry transient errors up to ``attempts`` times, sleeping ``base_delay * 2**k`` (at most ``max_delay``)."""

    attempts: int = 6
    base_delay: float = 2.0
    max_delay: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``; a rejected token raises :class:`CredentialsError`; other errors propagate, transient ones after the retries."""
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:  # the service raises many types; classify() sorts them
                kind = classify(exc)
                if kind == "permanent" or (kind == "transient" and attempt + 1 >= self.attempts):
                    raise
                rejected = credentials_rejected(what, exc) if kind == "credentials" else None
            if rejected is not None:
                raise rejected  # outside the except block: no traceback chains to a message that may hold the token
            self.sleep(min(self.max_delay, self.base_delay * 2 ** attempt))
            attempt += 1


DEFAULT_RETRY = Retry()
