"""The fake IBM devices shipped with qiskit-ibm-runtime, by name (``fake_manila``, ``fake_torino``, ...)."""

from __future__ import annotations

import difflib
import warnings
from functools import cache

from qiskit.providers import BackendV2

from qresnet.errors import BackendSpecError


@cache
def _fake_devices() -> dict[str, BackendV2]:
    from qiskit_ibm_runtime.fake_provider import FakeProviderForBackendV2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "properties of fake_nighthawk are not typical"
        return {b.name: b for b in FakeProviderForBackendV2().backends()}


def fake_device_names() -> tuple[str, ...]:
    return tuple(sorted(_fake_devices()))


def canonical_device_name(name: str) -> str:
    """``fake_manila``, ``FakeManilaV2``, ``manila`` -> ``fake_manila``; an unknown name lists the valid ones."""
    key = name.strip().lower()
    if key.endswith("v2"):
        key = key[:-2]
    key = key.removeprefix("fake_").removeprefix("fake")
    candidate = f"fake_{key}"
    names = fake_device_names()
    if candidate in names:
        return candidate
    close = difflib.get_close_matches(candidate, names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise BackendSpecError(
        f"unknown fake device {name!r}.{hint} Valid devices: {', '.join(names)} (run `qresnet backends`)."
    )


def fake_device(name: str) -> BackendV2:
    """The shared instance of a fake device (its target and noise data load once per process)."""
    return _fake_devices()[canonical_device_name(name)]


def two_qubit_gate_names(backend: BackendV2) -> tuple[str, ...]:
    target = backend.target
    return tuple(
        sorted(n for n in target.operation_names
               if getattr(target.operation_from_name(n), "num_qubits", 0) == 2)
    )


def describe_fake_devices() -> list[dict[str, object]]:
    """One row per fake device: name, qubits, two-qubit gates."""
    rows = []
    for name in fake_device_names():
        backend = fake_device(name)
        rows.append({"name": name, "num_qubits": backend.num_qubits,
                     "two_qubit_gates": list(two_qubit_gate_names(backend))})
    return rows


def low_connected_qubits(device: BackendV2, count: int) -> tuple[int, ...]:
    """``count`` connected physical qubits grown from qubit 0, always taking the lowest-index neighbour next.

    >>> low_connected_qubits(fake_device("fake_manila"), 3)
    (0, 1, 2)
    """
    edges = device.coupling_map.get_edges() if device.coupling_map is not None else []
    neighbours: dict[int, set[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    chosen, frontier = [0], set(neighbours.get(0, ()))
    while len(chosen) < count and frontier:
        nxt = min(frontier)
        chosen.append(nxt)
        frontier = (frontier | neighbours.get(nxt, set())) - set(chosen)
    if len(chosen) < count:
        raise BackendSpecError(f"{device.name} has no {count} connected qubits")
    return tuple(chosen)

