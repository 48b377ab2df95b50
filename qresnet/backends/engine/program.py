"""A circuit compiled for the engine: per-qubit prefixes, a body, affine angle maps, noise as PTMs.

The prefix of a qubit is every operation on it before its first multi-qubit operation, its
local noise included: the state stays a product there, one Bloch vector per qubit and row.
The body is the rest; rows that share the body's parameter values share its Heisenberg image
of the observable (docs/design.md section 5). Runs of single-qubit body operations on one qubit
between multi-qubit operations form one block, fused at run time into one 4x4 PTM.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterExpression
from qiskit.quantum_info import Operator, SuperOp

from qresnet.backends.primitives import group_rows
from qresnet.backends.engine.ptm import compose_1q, kraus_ptm, rotation_ptm_terms, superop_ptm, unitary_ptm
from qresnet.circuits.rotation_check import PAULI_ROTATIONS
from qresnet.errors import EngineUnsupportedError

IGNORED = frozenset({"barrier"})
IDLE = frozenset({"delay", "id"})  # identities that may still carry noise
# instructions the engine takes as they are; any other non-standard instruction is replaced by its definition
NATIVE = IGNORED | IDLE | frozenset({"reset", "measure", "unitary", "quantum_channel", "kraus", "superop"})


@dataclass
class AngleMap:
    """Gate angles as affine functions of the circuit's parameter values: values @ coeffs + const."""

    coeffs: np.ndarray  # (P, m)
    const: np.ndarray  # (m,)
    nonlinear: list[tuple[int, ParameterExpression, list[int]]] = field(default_factory=list)

    def __call__(self, values: np.ndarray, params: Sequence[Parameter]) -> np.ndarray:
        angles = values @ self.coeffs + self.const
        for column, expr, used in self.nonlinear:  # rare: expressions that are not affine
            for row in range(len(values)):
                angles[row, column] = float(expr.bind({params[j]: values[row, j] for j in used}).numeric())
        return angles

    @property
    def columns(self) -> set[int]:
        used = set(np.flatnonzero(np.any(self.coeffs != 0, axis=1)).tolist())
        for _, _, cols in self.nonlinear:
            used.update(cols)
        return used


def angle_map(angles: Sequence, index: dict[Parameter, int]) -> AngleMap:
    coeffs = np.zeros((len(index), len(angles)))
    const = np.zeros(len(angles))
    nonlinear = []
    for m, angle in enumerate(angles):
        if not isinstance(angle, ParameterExpression) or not angle.parameters:
            const[m] = float(angle)
            continue
        slopes = {p: angle.gradient(p) for p in angle.parameters}
        if any(isinstance(s, ParameterExpression) and s.parameters for s in slopes.values()):
            nonlinear.append((m, angle, [index[p] for p in angle.parameters]))
            continue
        for p, s in slopes.items():
            coeffs[index[p], m] = complex(s).real
        const[m] = complex(angle.bind({p: 0.0 for p in angle.parameters}).numeric()).real
    return AngleMap(coeffs, const, nonlinear)


def _u3(theta, phi, lam):
    c, s = np.cos(theta / 2), np.sin(theta / 2)
    return np.stack([np.stack([c + 0j, -np.exp(1j * lam) * s], -1),
                     np.stack([np.exp(1j * phi) * s, np.exp(1j * (phi + lam)) * c], -1)], -2)


# multi-angle gates with closed forms, vectorised over rows of angles
UNITARY_BUILDERS = {
    "u": lambda a: _u3(a[:, 0], a[:, 1], a[:, 2]),
    "u3": lambda a: _u3(a[:, 0], a[:, 1], a[:, 2]),
    "u2": lambda a: _u3(np.full(len(a), np.pi / 2), a[:, 0], a[:, 1]),
    "r": lambda a: _u3(a[:, 0], a[:, 1] - np.pi / 2, np.pi / 2 - a[:, 1]),
}


@dataclass
class Step:
    """One operation (gate and the noise after it) on compact qubits, as a PTM or a PTM builder."""

    qubits: tuple[int, ...]
    fixed: np.ndarray | None = None  # (4^k, 4^k) when no parameter enters
    rotation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # R = A + cos B + sin C
    builder: object = None  # angles (N, m) -> unitaries (N, 2^k, 2^k)
    angles: AngleMap | None = None
    noise: np.ndarray | None = None  # PTM applied after the gate
    generator: np.ndarray | None = None  # Pauli rotations: P, for the statevector route
    plane: tuple[int, int] | None = None  # 1q Pauli rotations: the two Bloch components it turns
    matrix: np.ndarray | None = None  # fixed unitary, for the statevector route (None for channels)
    operation: object = None

    @property
    def columns(self) -> set[int]:
        return self.angles.columns if self.angles is not None else set()

    def ptm(self, values: np.ndarray, params: Sequence[Parameter]) -> np.ndarray:
        """(4^k, 4^k), or (N, 4^k, 4^k) for N rows of parameter values."""
        if self.fixed is not None:
            return self.fixed
        angles = self.angles(values, params)
        if self.rotation is not None:
            a, b, c = self.rotation
            theta = angles[:, 0, None, None]
            r = a + np.cos(theta) * b + np.sin(theta) * c
        else:
            r = unitary_ptm(self.unitary(angles))
        return r if self.noise is None else self.noise @ r

    def unitary(self, angles: np.ndarray) -> np.ndarray:
        if self.builder is not None:
            return self.builder(angles)
        out = np.empty((len(angles), 2 ** len(self.qubits), 2 ** len(self.qubits)), dtype=complex)
        for row, values in enumerate(angles):  # any other parameterised standard gate
            out[row] = Operator(_with_params(self.operation, [float(v) for v in values])).data
        return out


@dataclass
class Block:
    """A run of single-qubit body steps on one qubit, fused into one PTM per row."""

    qubit: int
    steps: list[Step]

    @property
    def qubits(self) -> tuple[int, ...]:
        return (self.qubit,)

    @property
    def columns(self) -> set[int]:
        return set().union(*(s.columns for s in self.steps))

    def ptm(self, values: np.ndarray, params: Sequence[Parameter]) -> np.ndarray:
        return compose_1q([s.ptm(values, params) for s in self.steps])


@dataclass
class Program:
    """A compiled circuit: ``n`` simulated qubits (``physical[i]`` is compact qubit i)."""

    physical: tuple[int, ...]
    parameters: tuple[Parameter, ...]
    prefix: list[list[Step]]  # per compact qubit, forward order
    body: list[Step | Block]  # forward order
    noisy: bool
    steps: list[Step]  # every step in circuit order (statevector route)
    derived: dict = field(default_factory=dict, repr=False, compare=False)  # plans made from it once, by name

    @property
    def num_qubits(self) -> int:
        return len(self.physical)

    @cached_property
    def body_columns(self) -> list[int]:
        return sorted(set().union(*(op.columns for op in self.body))) if self.body else []

    @cached_property
    def prefix_columns(self) -> list[list[int]]:
        """Per compact qubit, the parameter columns its prefix reads."""
        return [sorted(set().union(*(s.columns for s in steps))) if steps else [] for steps in self.prefix]

    def prefix_rows(self, values: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray]:
        """(representative rows, inverse): the distinct settings of qubit q's prefix columns as full rows
        (other columns 0), and the representative of each row. The filter's 81 design points give 3 per qubit."""
        columns = self.prefix_columns[q]
        distinct, inverse = group_rows(values[:, columns])
        representatives = np.zeros((len(distinct), values.shape[1]))
        representatives[:, columns] = distinct
        return representatives, inverse


def _fuse_fixed(steps: list[Step]) -> list[Step]:
    """Merge consecutive parameter-free single-qubit steps into one fixed PTM."""
    out: list[Step] = []
    for step in steps:
        if step.fixed is not None and out and out[-1].fixed is not None:
            out[-1] = Step(step.qubits, fixed=step.fixed @ out[-1].fixed)
        else:
            out.append(step)
    return out


_ERROR_PTMS: OrderedDict[int, tuple[Any, np.ndarray]] = OrderedDict()  # id(error) -> (error, its PTM)
_ERROR_PTMS_HELD = 4096


def _channel_ptm(error) -> np.ndarray:
    """The PTM of an Aer ``QuantumError`` (read-only), worked out once per error object: converting one takes tens
    of milliseconds, and every circuit a process compiles under one noise model meets the same errors (a stack's
    runs each bring their own circuits)."""
    entry = _ERROR_PTMS.get(id(error))
    if entry is None or entry[0] is not error:  # the entry holds its error, so the id is not reused while it lives
        ptm = superop_ptm(SuperOp(error.to_quantumchannel()).data)
        ptm.setflags(write=False)
        entry = _ERROR_PTMS[id(error)] = (error, ptm)
        if len(_ERROR_PTMS) > _ERROR_PTMS_HELD:
            _ERROR_PTMS.popitem(last=False)
    _ERROR_PTMS.move_to_end(id(error))
    return entry[1]


def _noise_lookup(noise_model):
    """(instruction name, physical qubits) -> (noise PTM, its qubit count) or None, from an Aer ``NoiseModel``
    (None: no noise), each worked out once."""
    local = noise_model._local_quantum_errors if noise_model is not None else {}
    default = noise_model._default_quantum_errors if noise_model is not None else {}
    noise_cache: dict = {}

    def noise_for(name: str, qubits: tuple[int, ...]):
        if noise_model is None:
            return None
        key = (name, qubits)
        if key not in noise_cache:
            error = local.get(name, {}).get(qubits, default.get(name))
            noise_cache[key] = None if error is None else (_channel_ptm(error), error.num_qubits)
        return noise_cache[key]

    return noise_for


def _compile_step(inst, circuit: QuantumCircuit, compact: dict[int, int], index: dict[Parameter, int],
                  noise_for) -> Step:
    """One instruction (not in ``IGNORED``) as a :class:`Step` on compact qubits, with the noise the model attaches."""
    op = inst.operation
    name = op.name
    phys = tuple(circuit.find_bit(q).index for q in inst.qubits)
    if inst.clbits or name in ("measure",) or getattr(op, "blocks", None):
        raise EngineUnsupportedError(
            f"the engine evaluates estimator circuits without measurements or control flow; "
            f"found {name!r} on qubits {phys}. An estimator measures the observables itself: drop final "
            f"measurements (circuit.remove_final_measurements(inplace=False)); for mid-circuit measurements or "
            f"control flow use Aer (qresnet: --engine aer)"
        )
    qubits = tuple(compact[q] for q in phys)
    k = len(qubits)
    step = Step(qubits, operation=op)
    params = list(op.params) if name not in IDLE else []
    if name in IDLE:
        step.fixed, step.matrix = np.eye(4**k), np.eye(2**k)
    elif name == "reset":
        step.fixed = kraus_ptm([np.array([[1, 0], [0, 0]]), np.array([[0, 1], [0, 0]])])
    elif hasattr(op, "_quantum_error"):  # Aer's quantum_channel instructions, e.g. from the delay pass
        step.fixed = _channel_ptm(op._quantum_error)
    elif any(isinstance(p, ParameterExpression) and p.parameters for p in params):
        if getattr(op, "_standard_gate", None) is None:  # its matrix would come from a definition bound elsewhere
            raise EngineUnsupportedError(
                f"instruction {name!r} on qubits {phys} has parameters {params} but is neither a standard gate "
                f"nor a sub-circuit the engine can open ({'the noise model names it' if op.definition is not None else 'it has no definition'}); "
                f"decompose it into standard gates first (e.g. circuit.decompose())")
        unknown = {q for p in params if isinstance(p, ParameterExpression) for q in p.parameters} - index.keys()
        if unknown:
            raise EngineUnsupportedError(
                f"instruction {name!r} on qubits {phys} uses parameters {sorted(p.name for p in unknown)} that the "
                f"circuit does not list in circuit.parameters (a sub-circuit whose definition was not rebound)")
        step.angles = angle_map(params, index)
        if name in PAULI_ROTATIONS:
            gate_at = lambda t, op=op: unitary_ptm(Operator(_with_params(op, [t])).data)  # noqa: E731
            step.rotation = rotation_ptm_terms(gate_at)
            if k == 1:  # B is the identity on two Bloch components, C turns one into the other
                i, j = np.flatnonzero(np.diag(step.rotation[1]))
                step.plane = (int(i), int(j)) if step.rotation[2][j, i] > 0 else (int(j), int(i))
            # U(pi) = -i P; p and u1 are rz up to a global phase
            step.generator = (np.diag([1.0, -1.0]).astype(complex) if name in ("p", "u1")
                              else 1j * Operator(_with_params(op, [np.pi])).data)
        elif name in UNITARY_BUILDERS:
            step.builder = UNITARY_BUILDERS[name]
    else:
        try:
            step.matrix = Operator(op).data
            step.fixed = unitary_ptm(step.matrix)
        except Exception:
            try:
                step.fixed = superop_ptm(SuperOp(op).data)
            except Exception as exc:
                raise EngineUnsupportedError(f"the engine cannot simulate instruction {name!r}: {exc}") from None
    found = noise_for(getattr(op, "label", None) or name, phys)
    if found is not None:
        ptm, error_qubits = found
        if error_qubits != k:
            raise EngineUnsupportedError(f"noise on {name!r} acts on {error_qubits} qubits, the gate on {k}")
        if step.fixed is not None:
            step.fixed = ptm @ step.fixed
            step.matrix = None
        else:
            step.noise = ptm
    return step


def _prefix_and_body(steps: list[Step], n: int, product_prefix: bool) -> tuple[list[list[Step]], list[Step | Block]]:
    """Each qubit's steps before its first multi-qubit step (none without ``product_prefix``), and the body, with
    runs of single-qubit body steps on one qubit between multi-qubit steps as one :class:`Block`."""
    prefix: list[list[Step]] = [[] for _ in range(n)]
    entangled = [False] * n
    raw_body: list[Step] = []
    for step in steps:
        if product_prefix and len(step.qubits) == 1 and not entangled[step.qubits[0]]:
            prefix[step.qubits[0]].append(step)
        else:
            for q in step.qubits:
                entangled[q] = entangled[q] or len(step.qubits) > 1
            raw_body.append(step)
    body: list[Step | Block] = []
    pending: dict[int, list[Step]] = {}
    for step in raw_body:
        if len(step.qubits) == 1:
            pending.setdefault(step.qubits[0], []).append(step)
            continue
        for q in step.qubits:
            if pending.get(q):
                body.append(Block(q, _fuse_fixed(pending.pop(q))))
        body.append(step)
    for q, run in pending.items():
        if run:
            body.append(Block(q, _fuse_fixed(run)))
    return [_fuse_fixed(p) for p in prefix], body


def compile_circuit(circuit: QuantumCircuit, noise_model=None, extra_qubits: Sequence[int] = (),
                    product_prefix: bool = True) -> Program:
    """Compile ``circuit`` (logical or ISA) under an optional Aer ``NoiseModel``.

    ``product_prefix=False`` puts every operation in the body: for circuits that do not start
    from |0...0>, such as the body after a state preparation.
    """
    # the qubits the caller sees the circuit touch, before sub-circuits are opened (one may leave a qubit idle)
    touched = {circuit.find_bit(q).index for inst in circuit.data
               if inst.operation.name not in IGNORED for q in inst.qubits}
    parameters = tuple(circuit.parameters)  # the column order of the PUB's parameter values
    circuit = flatten(circuit, noise_model)
    if noise_model is not None and any(inst.operation.name == "delay" for inst in circuit.data):
        pass_manager = noise_model._pass_manager()  # Aer's own relaxation-on-delay pass, as Aer applies it
        if pass_manager is not None:
            circuit = pass_manager.run(circuit)
    physical = tuple(sorted(touched | set(extra_qubits)))
    compact = {q: i for i, q in enumerate(physical)}
    index = {p: j for j, p in enumerate(parameters)}
    noise_for = _noise_lookup(noise_model)
    steps = [_compile_step(inst, circuit, compact, index, noise_for) for inst in circuit.data
             if inst.operation.name not in IGNORED]
    prefix, body = _prefix_and_body(steps, len(physical), product_prefix)
    return Program(physical, parameters, prefix, body, noisy=noise_model is not None, steps=steps)


def flatten(circuit: QuantumCircuit, noise_model=None) -> QuantumCircuit:
    """``circuit`` with every sub-circuit and non-standard gate replaced by its definition, recursively.

    What stays: standard gates, the engine's own instructions (``NATIVE``, Aer's noise
    instructions) and instructions the noise model attaches errors to by name. Qiskit keeps a
    definition's parameters bound to the instruction's (``assign_parameters`` rebinds both), so
    the opened circuit carries the outer circuit's parameters; binding only the instruction's
    ``params`` would leave the definition unbound. Returns ``circuit`` itself when nothing opens.
    """
    named = set(noise_model.noise_instructions) if noise_model is not None else set()

    def opens(op) -> bool:
        if getattr(op, "_standard_gate", None) is not None or op.name in NATIVE or op.name in named:
            return False
        if hasattr(op, "_quantum_error") or getattr(op, "blocks", None) or (op.label is not None and op.label in named):
            return False
        return op.definition is not None

    if not any(opens(inst.operation) for inst in circuit.data):
        return circuit
    out = circuit.copy_empty_like()

    def add(definition: QuantumCircuit, qubits: list, clbits: list) -> None:
        for inst in definition.data:
            q = [qubits[definition.find_bit(b).index] for b in inst.qubits]
            c = [clbits[definition.find_bit(b).index] for b in inst.clbits]
            if opens(inst.operation):
                add(inst.operation.definition, q, c)
            else:
                out._append(inst.replace(qubits=q, clbits=c))

    add(circuit, list(circuit.qubits), list(circuit.clbits))
    return out


def _with_params(op, values: list[float]):
    gate = op.copy()
    gate.params = values
    return gate
