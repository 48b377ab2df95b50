"""The circuit template: one parameterised circuit with its inputs, weights and observables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp

from qresnet.errors import TemplateError
from qresnet.circuits.rotation_check import RotationCheck, check_input_rotations


@dataclass(frozen=True)
class CircuitTemplate:
    """A parameterised circuit as a value: what goes in, what is trained, what is measured.

    ``input_params`` enter rotation angles as ``input_scale * x`` (pi for the quanvolution
    filter, 1 for the head's encoding angles); ``observables`` are in the circuit's own
    (virtual) qubit order. The circuit must not be mutated after construction.
    """

    name: str
    circuit: QuantumCircuit
    input_params: tuple[Parameter, ...]
    weight_params: tuple[Parameter, ...]
    observables: tuple[SparsePauliOp, ...]
    input_scale: float
    settings: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        missing = set(self.input_params + self.weight_params) - set(self.circuit.parameters)
        if missing:
            raise TemplateError(f"template {self.name!r}: parameters {sorted(p.name for p in missing)} are not in the circuit")
        extra = set(self.circuit.parameters) - set(self.input_params + self.weight_params)
        if extra:
            raise TemplateError(f"template {self.name!r}: circuit parameters {sorted(p.name for p in extra)} are neither inputs nor weights")
        for obs in self.observables:
            if obs.num_qubits != self.circuit.num_qubits:
                raise TemplateError(f"template {self.name!r}: observable on {obs.num_qubits} qubits, circuit has {self.circuit.num_qubits}")

    @property
    def num_qubits(self) -> int:
        return self.circuit.num_qubits

    @property
    def num_inputs(self) -> int:
        return len(self.input_params)

    @property
    def num_weights(self) -> int:
        return len(self.weight_params)

    @property
    def num_outputs(self) -> int:
        return len(self.observables)

    @property
    def measured_qubits(self) -> tuple[int, ...]:
        """Virtual qubits on which some observable acts non-trivially."""
        support: set[int] = set()
        for obs in self.observables:
            for pauli in obs.paulis:
                support.update(int(q) for q, on in enumerate(pauli.x | pauli.z) if on)
        return tuple(sorted(support))

    def check_rotations(self, circuit: QuantumCircuit | None = None) -> RotationCheck:
        """The filter-response condition on the logical circuit, or on a transpiled version of it."""
        return check_input_rotations(self.circuit if circuit is None else circuit, self.input_params, self.input_scale)
