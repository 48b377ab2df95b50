"""The one exception family of qresnet: every message says what went wrong and what to do."""


class QresnetError(Exception):
    """Base class of the errors qresnet raises on bad input; the CLI prints them without a traceback."""


class TemplateError(QresnetError, ValueError):
    """A circuit template was asked for with invalid arguments."""


class BackendSpecError(QresnetError, ValueError):
    """A backend spec string or a device name could not be resolved."""


class DeviceTooSmallError(QresnetError, ValueError):
    """A template needs more qubits than the device has."""


class CredentialsError(QresnetError):
    """IBM Quantum credentials are missing or were rejected."""


class DataError(QresnetError):
    """A dataset was asked for with invalid arguments, or its files are missing, corrupt or unreachable."""
