"""Circuit templates as value objects; nothing here knows about backends."""

from qresnet.circuits.head import amplitude_angles, quantum_head
from qresnet.circuits.quanv import quanv_filter
from qresnet.circuits.rotation_check import RotationCheck, check_input_rotations
from qresnet.circuits.template import CircuitTemplate

TEMPLATES = ("quanv", "head")

__all__ = [
    "TEMPLATES",
    "CircuitTemplate",
    "RotationCheck",
    "amplitude_angles",
    "check_input_rotations",
    "quantum_head",
    "quanv_filter",
]
