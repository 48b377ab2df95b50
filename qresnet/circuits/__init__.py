"""Circuit templates as value objects; nothing here knows about backends."""

from qresnet.circuits.ansatz import ANSATZES, ENTANGLEMENTS
from qresnet.circuits.filter_spec import PADDINGS, FilterSpec, load_filter_circuit
from qresnet.circuits.head import ENCODINGS, AmplitudeEncoding, amplitude_angles, encoded_state, quantum_head
from qresnet.circuits.quanv import ENCODINGS as FILTER_ENCODINGS
from qresnet.circuits.quanv import READOUTS, quanv_filter
from qresnet.circuits.rotation_check import RotationCheck, check_input_rotations
from qresnet.circuits.template import CircuitTemplate

TEMPLATES = ("quanv", "head")

__all__ = [
    "ANSATZES",
    "ENCODINGS",
    "ENTANGLEMENTS",
    "FILTER_ENCODINGS",
    "PADDINGS",
    "READOUTS",
    "TEMPLATES",
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
