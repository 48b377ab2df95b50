"""Where circuits run: spec parsing, per-backend transpilation and cost, estimators."""

from qresnet.backends.backend import Backend, BackendOptions, resolve_backend
from qresnet.backends.devices import describe_fake_devices, fake_device, fake_device_names
from qresnet.backends.readout import ReadoutFoldingEstimator, fold_readout, readout_errors
from qresnet.backends.runtime import IBMCredentials, Secret, connect_service
from qresnet.backends.spec import KINDS, BackendSpec
from qresnet.backends.transpile import TranspileCost, TranspiledTemplate

__all__ = [
    "KINDS",
    "Backend",
    "BackendOptions",
    "BackendSpec",
    "IBMCredentials",
    "ReadoutFoldingEstimator",
    "Secret",
    "TranspileCost",
    "TranspiledTemplate",
    "connect_service",
    "describe_fake_devices",
    "fake_device",
    "fake_device_names",
    "fold_readout",
    "readout_errors",
    "resolve_backend",
]
