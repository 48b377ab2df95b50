"""Where circuits run: spec parsing, per-backend transpilation and cost, estimators and their abilities.

Names load on first use (as in ``qresnet.jobs``), so that ``qresnet --help`` and the command
line's flags (from :mod:`qresnet.backends.options`) do not import Qiskit.
"""

from qresnet.values import lazy_exports

_HOMES = {
    "qresnet.backends.backend": ("Backend", "resolve_backend"),
    "qresnet.backends.devices": ("describe_fake_devices", "fake_device", "fake_device_names"),
    "qresnet.backends.options": ("BackendOptions",),
    "qresnet.backends.engine": ("EngineDifferentiator", "EngineEstimator"),
    "qresnet.backends.primitives": ("CompletedJob", "CountsRows", "Differentiable", "Differentiator", "group_rows"),
    "qresnet.backends.readout": ("ReadoutFoldingEstimator", "fold_readout", "readout_errors"),
    "qresnet.backends.runtime": ("IBMCredentials", "Secret", "connect_service"),
    "qresnet.backends.spec": ("KINDS", "BackendSpec"),
    "qresnet.backends.transpile": ("TranspileCost", "TranspiledTemplate"),
}
__getattr__, __all__ = lazy_exports("qresnet.backends", _HOMES)
