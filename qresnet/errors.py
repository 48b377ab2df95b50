"""The one exception family of qresnet: every message says what went wrong and what to do.

Every class a user can trigger lives here, so that the CLI prints each of them as one line and
exits non-zero. The ``ValueError`` mix-in marks the ones that reject a bad value.
"""

from __future__ import annotations

from typing import Any


class QresnetError(Exception):
    """Base class of the errors qresnet raises on bad input; the CLI prints them without a traceback."""


class ConfigError(QresnetError, ValueError):
    """A configuration value (training, sweep, backend option, layer) is out of range or unknown."""


class ResidualSpecError(ConfigError):
    """A residual configuration string or edge set is malformed."""


class TemplateError(QresnetError, ValueError):
    """A circuit template was asked for with invalid arguments."""


class BackendSpecError(QresnetError, ValueError):
    """A backend spec string or a device name could not be resolved."""


class DeviceTooSmallError(QresnetError, ValueError):
    """A template needs more qubits than the device has."""


class LayoutError(QresnetError, ValueError):
    """An initial layout does not fit the template or the device (width, range, repeated qubits)."""


class CredentialsError(QresnetError):
    """IBM Quantum credentials are missing or were rejected."""


class DataError(QresnetError):
    """A dataset was asked for with invalid arguments, or its files are missing, corrupt or unreachable."""


class EngineUnsupportedError(QresnetError, ValueError):
    """The engine cannot simulate a circuit, an instruction or an observable of a PUB."""


class CapabilityError(QresnetError):
    """An estimator or backend lacks an ability the run asks for (e.g. an encoding's input gradient)."""


class JobLimitError(QresnetError, ValueError):
    """A single circuit exceeds a per-job limit, so no split can make it fit."""


class RunDirError(QresnetError):
    """A run directory is missing, holds another run, or its files cannot be read or written."""


class LockedError(RunDirError):
    """An output directory is in use by another process (it holds the directory's lock)."""


class SweepError(QresnetError):
    """Some runs of a sweep failed; the others finished. ``result`` is theirs (a ``SweepResult``), ``failures`` one
    line per failed run."""

    def __init__(self, result: Any, failures: list[str]):
        super().__init__(f"{len(failures)} run(s) of the sweep failed (the other {len(result.runs)} finished): "
                         + "; ".join(failures))
        self.result, self.failures = result, failures


class ResultError(QresnetError, ValueError):
    """A run result (summary.json, a results.json row) or a sweep.json lacks a field or holds one it cannot."""


class TrainingError(QresnetError):
    """Training stopped: a non-finite loss, or a device run that lost its session."""


class JobsError(QresnetError):
    """A submission could not be prepared, sent, fetched or found in the ledger."""


class DuplicateSubmissionError(JobsError):
    """The same manifest was submitted before; ``--force`` sends it again."""
