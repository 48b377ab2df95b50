"""Circuit templates as value objects; nothing here knows about backends."""

from qresnet.circuits.filter_spec import FilterSpec, load_filter_circuit
from qresnet.circuits.head import ENCODINGS, AmplitudeEncoding, amplitude_angles, encoded_state, quantum_head
from qresnet.circuits.quanv import quanv_filter
from qresnet.circuits.rotation_check import RotationCheck, check_input_rotations
from qresnet.circuits.template import CircuitTemplate

__all__ = [
    "ENCODINGS",
    "AmplitudeEncoding",
    "CircuitTemplate",
    "FilterSpec",
    "RotationCheck",
    "amplitude_angles",
    "check_input_rotations",
    "encoded_state",
    "load_filter_circuit",
    "quantum_head",
    "quanv_filter",
]
