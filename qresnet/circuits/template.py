"""The circuit template: one parameterised circuit with its inputs, weights and observables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterExpression, ParameterVectorElement
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

    @classmethod
    def from_circuit(
        cls, circuit: QuantumCircuit, observables: Sequence[str | SparsePauliOp] | str | None = None,
        kernel_size: int | None = None, name: str = "custom",
    ) -> CircuitTemplate:
        """A filter template from your own circuit: inputs are the parameters ``x[0]``, ``x[1]``, ... (one
        ``ParameterVector("x")``, row-major in the patch), every other parameter is a weight.

        ``observables`` (Pauli labels, ``SparsePauliOp``s, or one comma-separated string such as
        ``"ZIII,IZII"``) default to the mean of the Z's. ``kernel_size`` defaults to the square root of
        the number of inputs; the circuit may have more qubits than inputs. The input scale is the
        slope of the first input's angle; :meth:`check_rotations` says whether the response condition holds.

        >>> from qiskit.circuit import ParameterVector
        >>> qc, x = QuantumCircuit(4), ParameterVector("x", 4)
        >>> for q in range(4): _ = qc.rx(2 * x[q], q)
        >>> t = CircuitTemplate.from_circuit(qc)
        >>> t.num_inputs, t.num_weights, t.input_scale, t.settings["kernel_size"], bool(t.check_rotations())
        (4, 0, 2.0, 2, True)
        """
        if not isinstance(circuit, QuantumCircuit):
            raise TemplateError(f"from_circuit takes a QuantumCircuit, got {type(circuit).__name__}")
        if any(op.operation.name in ("measure", "reset") for op in circuit.data):
            raise TemplateError(f"circuit {circuit.name!r} holds measurements or resets; the estimator measures the "
                                "observables: remove them (circuit.remove_final_measurements())")
        inputs = _inputs_named_x(circuit)
        k = math.isqrt(len(inputs)) if kernel_size is None else kernel_size
        if k * k != len(inputs):
            raise TemplateError(f"circuit {circuit.name!r} has {len(inputs)} inputs x[i]; a "
                                f"{k} x {k} filter needs {k * k}" if kernel_size else
                                f"circuit {circuit.name!r} has {len(inputs)} inputs x[i], not a square number K*K")
        n = circuit.num_qubits
        if observables is None:
            observables = (SparsePauliOp.from_sparse_list([("Z", [q], 1.0 / n) for q in range(n)], n),)
        else:
            observables = tuple(_observable(o, n) for o in
                                (observables.split(",") if isinstance(observables, str) else observables))
            if not observables:
                raise TemplateError("observables is empty; give at least one, or none for the mean of the Z's")
        weights = tuple(p for p in circuit.parameters if p not in set(inputs))  # qiskit's order: w[2] before w[10]
        return cls(name=f"{name}{k}x{k}-{n}q-{len(weights)}w-{len(observables)}obs", circuit=circuit,
                   input_params=inputs, weight_params=weights, observables=observables,
                   input_scale=_first_slope(circuit, inputs[0]),
                   settings={"template": "quanv", "kernel_size": k, "readout": "custom", "source": name})

    def check_rotations(self, circuit: QuantumCircuit | None = None) -> RotationCheck:
        """The filter-response condition on the logical circuit, or on a transpiled version of it."""
        return check_input_rotations(self.circuit if circuit is None else circuit, self.input_params, self.input_scale)


def _inputs_named_x(circuit: QuantumCircuit) -> tuple[Parameter, ...]:
    """The elements x[0], ..., x[n-1] of the circuit's ParameterVector "x", every one of them used."""
    found = [p for p in circuit.parameters if isinstance(p, ParameterVectorElement) and p.vector.name == "x"]
    if not found:
        names = ", ".join(p.name for p in circuit.parameters) or "none"
        raise TemplateError(f"circuit {circuit.name!r} has no inputs named x[i] (a ParameterVector 'x'); "
                            f"its parameters: {names}")
    size = max(len(p.vector) for p in found)
    by_index = {p.index: p for p in found}
    missing = [f"x[{i}]" for i in range(size) if i not in by_index]
    if missing or len(by_index) != len(found):
        raise TemplateError(f"circuit {circuit.name!r}: inputs must be x[0] .. x[{size - 1}] of one ParameterVector "
                            f"'x', each used; missing {', '.join(missing) or 'none'}, {len(found)} found")
    return tuple(by_index[i] for i in range(size))


def _observable(value: str | SparsePauliOp, num_qubits: int) -> SparsePauliOp:
    try:
        op = SparsePauliOp(value.strip()) if isinstance(value, str) else SparsePauliOp(value)
    except Exception as exc:  # qiskit raises several types for a bad label
        raise TemplateError(f"observable {value!r} is not a Pauli label or operator ({exc})") from None
    if op.num_qubits != num_qubits:
        raise TemplateError(f"observable {value!r} acts on {op.num_qubits} qubits; the circuit has {num_qubits}")
    return op


def _first_slope(circuit: QuantumCircuit, parameter: Parameter) -> float:
    """|d angle / d parameter| at the first gate the parameter enters (1 if that is not a constant)."""
    for instruction in circuit.data:
        for angle in instruction.operation.params:
            if isinstance(angle, ParameterExpression) and parameter in angle.parameters:
                slope = angle.gradient(parameter)
                if isinstance(slope, ParameterExpression):
                    if slope.parameters:
                        return 1.0
                    slope = complex(slope).real
                return abs(float(slope)) or 1.0
    return 1.0
