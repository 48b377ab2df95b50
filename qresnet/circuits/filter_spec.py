"""``FilterSpec``: the value a run's config carries to say which quanvolution filter its layers use."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qiskit import QuantumCircuit, qpy

from qresnet.choices import ANSATZES, ENTANGLEMENTS, FILTER_ENCODINGS, READOUTS, WINDOW_PADDINGS
from qresnet.circuits.quanv import quanv_filter
from qresnet.circuits.template import CircuitTemplate
from qresnet.errors import TemplateError
from qresnet.values import known_fields

def load_filter_circuit(path: str | Path) -> QuantumCircuit:
    """The one circuit of a QPY file (``qiskit.qpy.dump``)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            circuits = qpy.load(handle)
    except FileNotFoundError:
        raise TemplateError(f"filter circuit {str(path)!r} does not exist") from None
    except Exception as exc:  # qpy raises several types for a file that is not QPY
        raise TemplateError(f"filter circuit {str(path)!r} is not a readable QPY file ({type(exc).__name__}: {exc})") from None
    if len(circuits) != 1 or not isinstance(circuits[0], QuantumCircuit):
        raise TemplateError(f"filter circuit {str(path)!r} holds {len(circuits)} programs; it must hold one circuit")
    return circuits[0]


def _positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TemplateError(f"{name}={value!r} must be a positive integer")


def _choice(name: str, value: object, allowed) -> None:
    if value not in allowed:
        raise TemplateError(f"{name}={value!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class FilterSpec:
    """Which filter every quanvolution layer runs, and how it slides (torch-free; builds the templates).

    ``kernel_size`` K (K*K qubits) and ``stride`` S (default K); ``padding`` ``cover`` zero-pads a map at
    the bottom and right so that the windows cover every pixel (ceil((H - K) / S) + 1 outputs: with S = K,
    today's ceil(H / K)), ``valid`` keeps only whole windows (floor((H - K) / S) + 1, as torch's ``conv2d``).
    ``reps``, ``entanglement``, ``ansatz``, ``ansatz_seed`` (``random`` only), ``encoding`` and ``readout``
    choose the built-in filter (:func:`~qresnet.circuits.quanv_filter`); ``circuit_path`` a QPY file of
    your own circuit instead, with ``observables`` (Pauli labels; default the mean of the Z's), see
    :meth:`CircuitTemplate.from_circuit`. ``filters_per_layer`` N independent filters give N times the
    filter's outputs as channels.

    >>> spec = FilterSpec.coerce({"kernel_size": 3, "readout": "per-qubit"})
    >>> spec.stride, spec.outputs_per_filter, spec.channels, spec.template().num_qubits
    (3, 9, 9, 9)
    >>> spec.layer_options
    {'stride': 3, 'padding': 'cover', 'filters': 1}
    >>> FilterSpec.coerce(None) == FilterSpec()
    True
    """

    kernel_size: int = 2
    stride: int | None = None
    reps: int = 2
    entanglement: str = "chain"
    ansatz: str = "ry_rz"
    ansatz_seed: int = 0
    encoding: str = "ry_pi"
    readout: str = "mean"
    filters_per_layer: int = 1
    circuit_path: str | None = None
    observables: tuple[str, ...] | None = None
    padding: str = "cover"

    def __post_init__(self) -> None:
        _positive("kernel_size", self.kernel_size)
        if self.stride is None:
            object.__setattr__(self, "stride", self.kernel_size)
        _positive("stride", self.stride)
        _positive("reps", self.reps)
        _positive("filters_per_layer", self.filters_per_layer)
        _choice("entanglement", self.entanglement, ENTANGLEMENTS)
        _choice("ansatz", self.ansatz, ANSATZES)
        _choice("encoding", self.encoding, FILTER_ENCODINGS)
        _choice("readout", self.readout, READOUTS)
        _choice("padding", self.padding, WINDOW_PADDINGS)
        if not isinstance(self.ansatz_seed, int) or isinstance(self.ansatz_seed, bool) or self.ansatz_seed < 0:
            raise TemplateError(f"ansatz_seed={self.ansatz_seed!r} must be a non-negative integer")
        if self.ansatz != "ry_rz" and self.entanglement != "chain":
            raise TemplateError(f"entanglement={self.entanglement!r} applies to the ry_rz ansatz; "
                                f"{self.ansatz} has its own entanglers")
        if isinstance(self.observables, str):
            object.__setattr__(self, "observables", tuple(o.strip() for o in self.observables.split(",")))
        elif self.observables is not None:
            object.__setattr__(self, "observables", tuple(self.observables))
        if self.circuit_path is None:
            if self.observables is not None:
                raise TemplateError("observables apply to your own circuit (circuit_path); the built-in filters "
                                    "choose theirs with readout")
            return
        object.__setattr__(self, "circuit_path", str(self.circuit_path))
        defaults = FilterSpec()
        for name in ("reps", "entanglement", "ansatz", "ansatz_seed", "encoding", "readout"):
            if getattr(self, name) != getattr(defaults, name):
                raise TemplateError(f"{name}={getattr(self, name)!r} describes a built-in filter; circuit_path "
                                    f"{self.circuit_path!r} brings its own (leave {name} at its default)")

    @classmethod
    def coerce(cls, value: FilterSpec | Mapping[str, Any] | None) -> FilterSpec:
        """A FilterSpec from itself, ``None`` (today's filter) or a dict of its fields (unknown keys refused)."""
        if isinstance(value, FilterSpec):
            return value
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise TemplateError(f"filter spec {value!r} must be a FilterSpec or a dict of its fields")
        return cls(**known_fields(cls, value, "filter settings"))

    def template(self) -> CircuitTemplate:
        """The filter's template: built-in (cached, the same object each call) or loaded from ``circuit_path``."""
        if self.circuit_path is None:
            return quanv_filter(self.kernel_size, self.reps, self.entanglement, self.readout, self.ansatz,
                                self.ansatz_seed, self.encoding)
        circuit = load_filter_circuit(self.circuit_path)
        try:
            return CircuitTemplate.from_circuit(circuit, self.observables, kernel_size=self.kernel_size,
                                                name=Path(self.circuit_path).stem)
        except TemplateError as exc:  # name the file: the circuit's own name is often qiskit's "circuit-41"
            raise TemplateError(f"filter circuit {self.circuit_path!r}: {exc}") from None

    @property
    def outputs_per_filter(self) -> int:
        if self.circuit_path is not None:
            return len(self.observables) if self.observables else 1
        return self.kernel_size ** 2 if self.readout == "per-qubit" else 1

    @property
    def channels(self) -> int:
        """Output channels of one layer: filters x outputs per filter."""
        return self.filters_per_layer * self.outputs_per_filter

    @property
    def layer_options(self) -> dict[str, Any]:
        """The keyword arguments of ``QuanvLayer`` and ``ClassicalFilterLayer.like`` that this spec sets."""
        return {"stride": self.stride, "padding": self.padding, "filters": self.filters_per_layer}

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["observables"] = None if self.observables is None else list(self.observables)
        return out
