"""The quanvolution filter: a k x k patch angle-encoded into k*k qubits, a trainable ansatz, <Z> readout."""

from __future__ import annotations

import math
from functools import cache

from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp

from qresnet.circuits.ansatz import append_ansatz
from qresnet.circuits.template import CircuitTemplate
from qresnet.choices import READOUTS
from qresnet.errors import TemplateError
from qresnet.values import checked_int


def quanv_filter(
    kernel_size: int = 2, reps: int = 2, entanglement: str = "chain", readout: str = "mean"
) -> CircuitTemplate:
    """The quanvolution filter template of docs/design.md section 1.

    Patch value ``x_i`` (row-major in the patch) is encoded as RY(pi * x_i) on qubit i; then
    ``reps`` repetitions of RY and RZ on every qubit and a CNOT chain (or ring). Readout
    ``mean`` gives one output, the mean of the <Z_i>; ``per-qubit`` gives <Z_i> for each qubit.

    Templates are immutable, so equal arguments return the same object (and Parameters).

    >>> t = quanv_filter()
    >>> (t.num_qubits, t.num_inputs, t.num_weights, t.num_outputs), t is quanv_filter(2, 2)
    ((4, 4, 16, 1), True)
    """
    # checked before the cache, where True would find the template of 1
    return _quanv_filter(checked_int(kernel_size, "kernel_size", error=TemplateError),
                         checked_int(reps, "reps", error=TemplateError), entanglement, readout)


@cache
def _quanv_filter(kernel_size: int, reps: int, entanglement: str, readout: str) -> CircuitTemplate:
    if readout not in READOUTS:
        raise TemplateError(f"readout={readout!r} is not one of {', '.join(READOUTS)}")
    n = kernel_size * kernel_size
    circuit = QuantumCircuit(n, name="quanv")
    inputs = ParameterVector("x", n)
    for q in range(n):
        circuit.ry(math.pi * inputs[q], q)
    weights = append_ansatz(circuit, reps, entanglement)
    if readout == "mean":
        observables = (SparsePauliOp.from_sparse_list([("Z", [q], 1.0 / n) for q in range(n)], n),)
    else:
        observables = tuple(SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], n) for q in range(n))
    return CircuitTemplate(
        name=f"quanv{kernel_size}x{kernel_size}-reps{reps}-{entanglement}-{readout}",
        circuit=circuit,
        input_params=tuple(inputs),
        weight_params=tuple(weights),
        observables=observables,
        input_scale=math.pi,
        settings={"template": "quanv", "kernel_size": kernel_size, "reps": reps,
                  "entanglement": entanglement, "readout": readout},
    )
