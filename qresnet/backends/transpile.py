"""Per-backend transpilation of templates and what the transpiled circuit costs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from qiskit import QuantumCircuit
from qiskit.providers import BackendV2
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import Target, generate_preset_pass_manager

from qresnet.circuits import CircuitTemplate
from qresnet.errors import DeviceTooSmallError

_NOT_GATES = ("barrier", "delay")


@dataclass(frozen=True)
class TranspileCost:
    """What one evaluation of a transpiled template costs on its backend."""

    backend: str
    template: str
    num_qubits: int
    layout: tuple[int, ...]
    final_layout: tuple[int, ...]
    depth: int
    two_qubit_gates: int
    ops: dict[str, int]
    estimated_fidelity: float
    rotation_check: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TranspiledTemplate:
    """A template's ISA circuit on one backend, with observables mapped to its physical qubits."""

    template: CircuitTemplate
    circuit: QuantumCircuit
    observables: tuple[SparsePauliOp, ...]
    cost: TranspileCost

    @property
    def response_ready(self) -> bool:
        """Whether the filter-response method holds on the transpiled circuit (docs/design.md section 3)."""
        return self.template.check_rotations(self.circuit).ok


def estimated_fidelity(circuit: QuantumCircuit, target: Target | None, measured: tuple[int, ...]) -> float:
    """Product of (1 - error) over the circuit's gates and the readout of the measured qubits."""
    if target is None:
        return 1.0
    fidelity = 1.0
    for instruction in circuit.data:
        name = instruction.operation.name
        if name in _NOT_GATES or name not in target.operation_names:
            continue
        qargs = tuple(circuit.find_bit(q).index for q in instruction.qubits)
        props = target[name].get(qargs)
        if props is not None and props.error is not None:
            fidelity *= 1.0 - props.error
    if "measure" in target.operation_names:
        for q in measured:
            props = target["measure"].get((q,))
            if props is not None and props.error is not None:
                fidelity *= 1.0 - props.error
    return fidelity


def transpile_template(
    template: CircuitTemplate,
    backend: BackendV2 | None,
    backend_name: str,
    optimization_level: int = 2,
    seed_transpiler: int = 0,
    initial_layout: tuple[int, ...] | None = None,
) -> TranspiledTemplate:
    """Transpile with the preset pass manager and map the observables with ``apply_layout``.

    ``backend=None`` (noiseless Aer) optimises without device constraints. A template that
    opens with an ``amplitude_encoding`` (the head's exact state preparation) has the rest
    transpiled and the encoding put back, untranspiled, on the initial layout's qubits:
    simulators prepare that state exactly, and the cost counts the transpiled rest only.
    """
    n = template.num_qubits
    if backend is not None and n > backend.num_qubits:
        raise DeviceTooSmallError(
            f"template {template.name} needs {n} qubits but {backend_name} has only {backend.num_qubits}; "
            "pick a larger device (see `qresnet backends`) or a smaller template"
        )
    if initial_layout is not None and len(initial_layout) != n:
        raise DeviceTooSmallError(f"initial_layout has {len(initial_layout)} qubits; template {template.name} has {n}")
    pass_manager = generate_preset_pass_manager(
        optimization_level=optimization_level,
        backend=backend,
        seed_transpiler=seed_transpiler,
        initial_layout=list(initial_layout) if initial_layout is not None and backend is not None else None,
    )
    source, encoding = _split_encoding(template.circuit)
    circuit = pass_manager.run(source)
    if circuit.layout is not None:
        observables = tuple(obs.apply_layout(circuit.layout) for obs in template.observables)
        layout = tuple(circuit.layout.initial_index_layout(filter_ancillas=True))
        final = tuple(circuit.layout.final_index_layout(filter_ancillas=True))
    else:
        observables, layout = template.observables, tuple(range(n))
        final = layout
    if encoding is not None:
        circuit = _prepend(encoding, circuit, layout)
    measured = tuple(final[q] for q in template.measured_qubits)
    target = backend.target if backend is not None else None
    ops = {name: count for name, count in circuit.count_ops().items() if name not in _NOT_GATES}
    cost = TranspileCost(
        backend=backend_name,
        template=template.name,
        num_qubits=n,
        layout=layout,
        final_layout=final,
        depth=circuit.depth(lambda inst: inst.operation.name not in _NOT_GATES),
        two_qubit_gates=sum(1 for inst in circuit.data
                            if inst.operation.num_qubits == 2 and inst.operation.name not in _NOT_GATES),
        ops=dict(sorted(ops.items())),
        estimated_fidelity=estimated_fidelity(circuit, target, measured),
        rotation_check=("the amplitude encoding is an exact state preparation (not transpiled)" if encoding is not None
                        else template.check_rotations(circuit).describe()),
    )
    return TranspiledTemplate(template, circuit, observables, cost)


def _split_encoding(circuit: QuantumCircuit):
    """(the circuit without a leading amplitude_encoding, that instruction or None)."""
    if circuit.data and circuit.data[0].operation.name == "amplitude_encoding":
        rest = circuit.copy_empty_like()
        for inst in circuit.data[1:]:
            rest.append(inst)
        return rest, circuit.data[0]
    return circuit, None


def _prepend(encoding, circuit: QuantumCircuit, layout: tuple[int, ...]) -> QuantumCircuit:
    """``encoding`` on the physical qubits its virtual qubits start on, then ``circuit``."""
    out = circuit.copy_empty_like()
    out.append(encoding.operation, [out.qubits[layout[v]] for v in range(encoding.operation.num_qubits)])
    for inst in circuit.data:
        out.append(inst)
    return out


LOCAL_MAX_WIDTH = 24  # local testing mode simulates every qubit of a circuit, measured: 2^24 amplitudes at most


def trim_to_used_qubits(transpiled: TranspiledTemplate, backend_name: str) -> TranspiledTemplate:
    """The ISA circuit cut after its highest used physical qubit, observables cut alike.

    Runtime's local testing mode measures and simulates every qubit of the circuit it is given, so
    a template transpiled onto a 133-qubit fake device would need 2^133 amplitudes; the cut circuit
    keeps the physical qubit indices (and so the device's noise on them) and drops the idle rest.
    """
    circuit = transpiled.circuit
    used = {circuit.find_bit(q).index for inst in circuit.data for q in inst.qubits}
    width = max(used) + 1
    if width > LOCAL_MAX_WIDTH:
        raise DeviceTooSmallError(
            f"on {backend_name} the transpiled {transpiled.template.name} uses physical qubits up to {width - 1}; local "
            f"testing mode simulates every qubit below that. Pin it to low-index connected qubits with --initial-layout, "
            f"or leave the layout to qresnet"
        )
    small = QuantumCircuit(width, name=circuit.name)
    for inst in circuit.data:
        small.append(inst.operation, [small.qubits[circuit.find_bit(q).index] for q in inst.qubits])
    observables = tuple(SparsePauliOp([p.to_label()[-width:] for p in o.paulis], o.coeffs) for o in transpiled.observables)
    return TranspiledTemplate(transpiled.template, small, observables, transpiled.cost)

