"""The quanvolution filter: a k x k patch angle-encoded into k*k qubits, a trainable ansatz, <Z> readout."""

from __future__ import annotations

import math
from functools import cache

from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp

from qresnet.circuits.ansatz import append_ansatz, append_random_layers, append_strongly_entangling
from qresnet.circuits.template import CircuitTemplate
from qresnet.choices import ANSATZES, FILTER_ENCODINGS, READOUTS
from qresnet.errors import TemplateError
from qresnet.values import checked_int

# encoding -> (gate, input scale): each input enters exactly one rotation, so the response condition holds
ENCODINGS = dict(zip(FILTER_ENCODINGS, (("ry", math.pi), ("ry", 1.0), ("rx", math.pi))))


def mean_z(num_qubits: int) -> SparsePauliOp:
    """The mean of the <Z_i> over ``num_qubits`` qubits, as one observable."""
    return SparsePauliOp.from_sparse_list([("Z", [q], 1.0 / num_qubits) for q in range(num_qubits)], num_qubits)


def quanv_filter(
    kernel_size: int = 2, reps: int = 2, entanglement: str = "chain", readout: str = "mean",
    ansatz: str = "ry_rz", ansatz_seed: int = 0, encoding: str = "ry_pi",
) -> CircuitTemplate:
    """The quanvolution filter template of docs/design.md section 1.

    Patch value ``x_i`` (row-major in the patch) is encoded on qubit i by ``encoding``: ``ry_pi``
    RY(pi * x_i) (the paper's), ``ry`` RY(x_i) or ``rx_pi`` RX(pi * x_i); then the ``ansatz``
    (:mod:`qresnet.circuits.ansatz`): ``ry_rz``, ``reps`` repetitions of RY and RZ on every qubit and
    CNOT ``entanglement`` (chain, ring or full); ``random``, seeded by ``ansatz_seed``; or
    ``strongly_entangling`` (both with their own entanglers, so ``entanglement`` must stay ``chain``).
    Readout ``mean`` gives one output, the mean of the <Z_i>; ``per-qubit`` gives <Z_i> for each qubit.

    Templates are immutable, so equal arguments return the same object (and Parameters).

    >>> t = quanv_filter()
    >>> (t.num_qubits, t.num_inputs, t.num_weights, t.num_outputs), t is quanv_filter(2, 2)
    ((4, 4, 16, 1), True)
    >>> quanv_filter(3, ansatz="strongly_entangling", encoding="rx_pi").name
    'quanv3x3-reps2-strongly_entangling-mean-rx_pi'
    """
    # checked before the cache, where True would find the template of 1
    return _quanv_filter(checked_int(kernel_size, "kernel_size", error=TemplateError),
                         checked_int(reps, "reps", error=TemplateError), entanglement, readout, ansatz,
                         checked_int(ansatz_seed, "ansatz_seed", minimum=0, error=TemplateError), encoding)


@cache
def _quanv_filter(kernel_size: int, reps: int, entanglement: str, readout: str, ansatz: str, ansatz_seed: int,
                  encoding: str) -> CircuitTemplate:
    if readout not in READOUTS:
        raise TemplateError(f"readout={readout!r} is not one of {', '.join(READOUTS)}")
    if encoding not in ENCODINGS:
        raise TemplateError(f"encoding={encoding!r} is not one of {', '.join(ENCODINGS)}")
    if ansatz not in ANSATZES:
        raise TemplateError(f"ansatz={ansatz!r} is not one of {', '.join(ANSATZES)}")
    if ansatz != "ry_rz" and entanglement != "chain":
        raise TemplateError(f"entanglement={entanglement!r} applies to the ry_rz ansatz; {ansatz} has its own entanglers")
    n = kernel_size * kernel_size
    circuit = QuantumCircuit(n, name="quanv")
    inputs = ParameterVector("x", n)
    gate, scale = ENCODINGS[encoding]
    for q in range(n):
        getattr(circuit, gate)(scale * inputs[q] if scale != 1.0 else inputs[q], q)
    if ansatz == "ry_rz":
        weights = append_ansatz(circuit, reps, entanglement)
    elif ansatz == "random":
        weights = append_random_layers(circuit, reps, ansatz_seed)
    else:
        weights = append_strongly_entangling(circuit, reps)
    if readout == "mean":
        observables = (mean_z(n),)
    else:
        observables = tuple(SparsePauliOp.from_sparse_list([("Z", [q], 1.0)], n) for q in range(n))
    # today's filter keeps today's name; other families name what differs
    family = {"ry_rz": entanglement, "random": f"random{ansatz_seed}", "strongly_entangling": "strongly_entangling"}
    suffix = "" if encoding == "ry_pi" else f"-{encoding}"
    settings = {"template": "quanv", "kernel_size": kernel_size, "reps": reps, "entanglement": entanglement,
                "readout": readout, "ansatz": ansatz, "encoding": encoding}
    if ansatz == "random":
        settings["ansatz_seed"] = ansatz_seed
    return CircuitTemplate(
        name=f"quanv{kernel_size}x{kernel_size}-reps{reps}-{family[ansatz]}-{readout}{suffix}",
        circuit=circuit,
        input_params=tuple(inputs),
        weight_params=tuple(weights),
        observables=observables,
        input_scale=scale,
        settings=settings,
    )
