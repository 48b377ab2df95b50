"""Noise models of the ``noise:<channel>:<p>`` and ``aer:<fake device>@<s>`` backends, as Aer ``NoiseModel``s.

Both are ordinary Aer noise models, so Aer's density matrix (``--engine aer``) and the engine (which turns a
noise model into Pauli transfer matrices) run the same noise.

**Channels.** ``noise:<channel>:<p>`` puts the single-qubit channel after every gate, on each qubit the gate
acts on (an n-qubit gate gets the n-fold tensor product). Conventions are Aer's: ``depolarizing`` is
rho -> (1 - p) rho + p I/2 (p = 1 erases the state; PennyLane's ``DepolarizingChannel(q)`` is p = 4q/3),
``amplitude_damping`` and ``phase_damping`` have damping parameter p, ``bit_flip`` and ``phase_flip``
apply X and Z with probability p.

**Scaled device noise.** ``aer:<device>@<s>`` rebuilds the model Aer's ``NoiseModel.from_backend`` builds
from the device's target, with every error scaled by s:

- relaxation rates scaled: each qubit's T1 and T2 become T1/s and T2/s (T2 first truncated to 2 T1, as Aer
  does); the relaxation channel saturates by itself (full decay), so it needs no cap;
- gate errors scaled: the gate's reported error e (1 - average gate fidelity F) becomes s e, capped at its
  physical maximum d / (d + 1) (F >= 1 / (d + 1) for every channel, d = 2^n); the depolarizing part is
  derived from it as Aer does, p = d (s e - r) / (d F_r - 1), with r = 1 - F_r the infidelity of the scaled
  relaxation, so p <= 4^n / (4^n - 1), the largest physical depolarizing parameter (these are Aer's own
  bounds, which it applies to couplers reported dead, e = 1, such as some of fake_torino's);
- readout assignment errors P(1|0) and P(0|1) scaled and capped at 0.5, where a readout carries no
  information; an error the device itself reports above 0.5 (fake_torino's qubit 86: 0.565) is the cap of
  its own, so that s = 1 is the device as it is and a larger s never lowers an error.

s = 1 gives exactly Aer's model (every number is multiplied or divided by 1.0, which is exact), s = 0
an ideal model on the device's basis gates.
"""

from __future__ import annotations

import math
from functools import cache

from qiskit.circuit import Delay, Gate, Measure
from qiskit.providers import BackendV2
from qiskit.quantum_info import average_gate_fidelity
from qiskit_aer.noise import (
    NoiseModel, QuantumError, ReadoutError, amplitude_damping_error, depolarizing_error, pauli_error,
    phase_damping_error, thermal_relaxation_error,
)
from qiskit_aer.noise.passes import RelaxationNoisePass

from qresnet.backends.devices import fake_device
from qresnet.backends.readout import ReadoutErrors, readout_errors
from qresnet.backends.spec import CHANNELS
from qresnet.errors import BackendSpecError

READOUT_CAP = 0.5  # P(wrong bit) at which the outcome is independent of the state

# The standard gates by width (qiskit's names): a channel follows each of these; the templates use ry, rz, cx
_GATES = {
    1: ("id", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "sxdg", "rx", "ry", "rz", "r", "p", "u",
        "u1", "u2", "u3"),
    2: ("cx", "cy", "cz", "ch", "cp", "crx", "cry", "crz", "cs", "csdg", "csx", "cu", "cu1", "cu3", "swap",
        "iswap", "dcx", "ecr", "rxx", "ryy", "rzz", "rzx", "xx_minus_yy", "xx_plus_yy"),
    3: ("ccx", "ccz", "cswap", "rccx"),
}


def channel_error(channel: str, p: float) -> QuantumError:
    """The single-qubit channel of a ``noise:`` spec at strength p (Aer's conventions, module docstring)."""
    if channel not in CHANNELS:
        raise BackendSpecError(f"unknown noise channel {channel!r}; channels: {', '.join(CHANNELS)}")
    if not 0.0 <= p <= 1.0:
        raise BackendSpecError(f"channel strength p={p!r} is outside [0, 1]")
    if channel == "depolarizing":
        return depolarizing_error(p, 1)
    if channel == "amplitude_damping":
        return amplitude_damping_error(p)
    if channel == "phase_damping":
        return phase_damping_error(p)
    return pauli_error([("X" if channel == "bit_flip" else "Z", p), ("I", 1.0 - p)])


@cache
def channel_noise_model(channel: str, p: float) -> NoiseModel:
    """The channel after every one-, two- and three-qubit standard gate, on each of its qubits."""
    single = channel_error(channel, p)
    model = NoiseModel()
    for width, names in _GATES.items():
        error = single
        for _ in range(width - 1):
            error = error.tensor(single)
        model.add_all_qubit_quantum_error(error, list(names))
    return model


def scaled_readout_errors(errors: ReadoutErrors, scale: float) -> dict[int, tuple[float, float]]:
    """Per-qubit (P(1|0), P(0|1)) times ``scale``, each capped at 0.5 or at its own value if that is higher.

    >>> scaled_readout_errors({0: (0.01, 0.3), 1: (0.6, 0.0)}, 2.0)
    {0: (0.02, 0.5), 1: (0.6, 0.0)}
    """
    def scaled(e: float) -> float:
        return min(scale * e, max(e, READOUT_CAP))

    return {q: (scaled(e0), scaled(e1)) for q, (e0, e1) in errors.items()}


@cache
def scaled_device_noise_model(device: str, scale: float) -> NoiseModel:
    """Aer's ``from_backend`` model of a fake device with every error scaled by ``scale`` (module docstring)."""
    backend = fake_device(device)
    model = NoiseModel(basis_gates=backend.operation_names)
    if scale == 0:
        return model
    target = backend.target
    for qubit, (e0, e1) in scaled_readout_errors(readout_errors(backend), scale).items():
        model.add_readout_error(ReadoutError([[1 - e0, e0], [e1, 1 - e1]]), [qubit])
    relaxation = _scaled_relaxation(backend, scale)
    for name, by_qubits in target.items():
        operation = target.operation_from_name(name)
        if isinstance(operation, Measure) or by_qubits is None:
            continue
        for qubits, props in by_qubits.items():
            if props is None:
                continue
            relax = None
            if relaxation and props.duration:
                relax = _relaxation_error(qubits, props.duration, relaxation)
            depol = None
            if props.error and isinstance(operation, Gate):
                depol = _depolarizing_part(len(qubits), scale * props.error, relax)
            error = depol.compose(relax) if depol and relax else depol or relax
            if error:
                model.add_quantum_error(error, name, qubits)
    if relaxation:  # delays relax too, as in from_backend (Aer's own pass, with the scaled times)
        t1s, t2s = zip(*relaxation)
        model._custom_noise_passes.append(RelaxationNoisePass(
            t1s=list(t1s), t2s=list(t2s), dt=backend.dt, op_types=Delay,
            excited_state_populations=[0.0] * len(t1s), target=target))
    return model


def _scaled_relaxation(backend: BackendV2, scale: float) -> list[tuple[float, float]] | None:
    """Per qubit (T1/s, T2/s), T2 truncated to 2 T1 first as Aer does; a missing time is infinite."""
    properties = backend.target.qubit_properties
    if not properties:
        return None
    times = []
    for prop in properties:
        t1 = math.inf if prop.t1 is None else prop.t1
        t2 = 2 * t1 if prop.t2 is None else min(prop.t2, 2 * t1)
        times.append((t1 / scale, t2 / scale))
    return times


def _relaxation_error(qubits: tuple[int, ...], duration: float, relaxation: list[tuple[float, float]]) -> QuantumError:
    """Thermal relaxation on each qubit of a gate (zero temperature), in Aer's qubit order."""
    error = None
    for q in qubits:
        t1, t2 = relaxation[q]
        single = thermal_relaxation_error(t1, t2, duration)
        error = single if error is None else error.expand(single)
    return error


def _depolarizing_part(num_qubits: int, gate_error: float, relax: QuantumError | None) -> QuantumError | None:
    """The depolarizing channel that, composed with ``relax``, has average gate infidelity ``gate_error``
    (Aer's formula and bounds: the infidelity at most d / (d + 1), the parameter at most 4^n / (4^n - 1))."""
    relax_fid = 1.0 if relax is None else average_gate_fidelity(relax)
    relax_infid = 0.0 if relax is None else 1 - relax_fid
    if gate_error <= relax_infid:
        return None
    dim = 2**num_qubits
    gate_error = min(gate_error, dim / (dim + 1))
    param = dim * (gate_error - relax_infid) / (dim * relax_fid - 1)
    return depolarizing_error(min(param, 4**num_qubits / (4**num_qubits - 1)), num_qubits)
