"""The filter-response condition (docs/design.md section 3): every input enters exactly one rotation.

If input x enters exactly one gate exp(-i angle/2 P) (P a Pauli string) and the angle is
``c + s*x`` with |s| equal to the template's input scale, then every expectation value is
multilinear in (1, sin(s*x), cos(s*x)) per input, whatever else the circuit does. The check
runs on a template's logical circuit and on any transpiled version of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterExpression

# Gates of the form exp(-i angle/2 P) up to a global phase; p and u1 are rz up to phase.
PAULI_ROTATIONS = frozenset({"rx", "ry", "rz", "p", "u1", "rxx", "ryy", "rzz", "rzx"})


@dataclass(frozen=True)
class RotationCheck:
    """Outcome of :func:`check_input_rotations`: ``ok`` and, if not, one line per problem."""

    ok: bool
    problems: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.ok

    def describe(self) -> str:
        return "every input enters exactly one rotation" if self.ok else "; ".join(self.problems)


def check_input_rotations(
    circuit: QuantumCircuit, inputs: Iterable[Parameter], scale: float
) -> RotationCheck:
    """Check that each of ``inputs`` enters exactly one Pauli rotation, linearly with slope +-``scale``."""
    inputs = tuple(inputs)
    uses: dict[Parameter, list[str]] = {p: [] for p in inputs}
    problems: list[str] = []
    for index, instruction in enumerate(circuit.data):
        op = instruction.operation
        for angle in op.params:
            if not isinstance(angle, ParameterExpression):
                continue
            for p in angle.parameters & uses.keys():
                where = f"{op.name} #{index}"
                uses[p].append(where)
                if op.name not in PAULI_ROTATIONS:
                    problems.append(f"input {p.name} enters {where}, which is not a Pauli rotation")
                    continue
                slope = angle.gradient(p)
                if isinstance(slope, ParameterExpression):
                    if slope.parameters:
                        problems.append(f"input {p.name} enters {where} non-linearly (angle {angle})")
                        continue
                    slope = complex(slope).real
                if not math.isclose(abs(float(slope)), scale, rel_tol=1e-9):
                    problems.append(f"input {p.name} enters {where} with slope {float(slope):.6g}, expected +-{scale:.6g}")
    for p, where in uses.items():
        if not where:
            problems.append(f"input {p.name} enters no gate")
        elif len(where) > 1:
            problems.append(f"input {p.name} enters {len(where)} gates ({', '.join(where)})")
    return RotationCheck(ok=not problems, problems=tuple(problems))
