"""What a submission sends, as named parts, and the hash that identifies it.

Per quanvolution layer, one PUB of the 3^q design points of the filter (docs/design.md section 3) with
the layer's trained weights bound in every row: the device values give the layer's response
tensor, whatever the input. Layers after the first need no input at submit time, so all layers
go in one submission. The ``validation`` part runs ``validate_patches`` distinct test-set
patches of layer 1 directly, to measure the response method's error on the device.

A quantum head adds the ``head`` part: the transpiled angle-encoded head circuit, its mapped
observables (<Z_q>, q < classes) and the trained head weights, with one row per test image
(the Mottonen angles of its flattened final map). Those angles depend on the device's layer
values, so the part is *pending* at submit (no rows, ``planned`` of them) and gets its rows at
fetch, once every layer job has results (stage 2, :mod:`qresnet.jobs.stages`); it is always
the last part, so stage 1's PUB indices never change.

The hash covers the ISA circuits (OpenQASM 3, which names parameters but holds no object ids),
the observables, the parameter values rounded to 12 decimals, the backend and the Runtime
options that shape the values: the same checkpoint sent twice the same way has the same hash.
A head part is hashed by its circuit, observables, weights and planned rows, not its angles:
those are a deterministic function of stage 1's results, so the hash is the same before and
after stage 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qiskit import QuantumCircuit, qasm3
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.quantum_info import SparsePauliOp
from qiskit_ibm_runtime import RuntimeDecoder, RuntimeEncoder

from qresnet.backends import Backend
from qresnet.circuits import CircuitTemplate, quantum_head
from qresnet.errors import JobsError
from qresnet.jobs.run import TrainedRun
from qresnet.qnn import sample_patches

PART_KINDS = ("design", "patches", "head")


@dataclass(frozen=True, eq=False)
class ManifestPart:
    """One PUB: a circuit, its observable, and rows of filter ``inputs`` (N, q) with ``weights`` bound in each.

    ``input_params`` and ``weight_params`` name the circuit's parameters in input and weight order.
    ``observable`` may be a tuple of observables (the head's classes): each row is then
    broadcast against all of them, and the PUB's values have shape (N, m). ``planned`` is the
    number of rows a pending part (no rows yet) will get.

    >>> from qresnet.circuits import quanv_filter
    >>> t = quanv_filter()
    >>> part = ManifestPart("layer1", 1, "design", t.circuit, t.observables[0], tuple(p.name for p in t.input_params),
    ...                     tuple(p.name for p in t.weight_params), np.zeros((81, 4)), np.arange(16.0))
    >>> part.pub.shape, part.values[0, :3].tolist()
    ((81,), [0.0, 1.0, 2.0])
    """

    name: str
    layer: int
    kind: str
    circuit: QuantumCircuit
    observable: SparsePauliOp | tuple[SparsePauliOp, ...]
    input_params: tuple[str, ...]
    weight_params: tuple[str, ...]
    inputs: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)
    planned: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.observable, (list, tuple)):
            object.__setattr__(self, "observable", tuple(self.observable))
        if self.kind not in PART_KINDS:
            raise JobsError(f"part {self.name!r}: kind={self.kind!r} must be one of {', '.join(PART_KINDS)}")
        names = [p.name for p in self.circuit.parameters]
        if sorted(names) != sorted(self.input_params + self.weight_params):
            raise JobsError(f"part {self.name!r}: the circuit's parameters {names} are not its inputs and weights")
        object.__setattr__(self, "inputs", np.asarray(self.inputs, dtype=float).reshape(-1, len(self.input_params)))
        object.__setattr__(self, "weights", np.asarray(self.weights, dtype=float).reshape(len(self.weight_params)))
        if self.planned is not None and len(self.inputs) not in (0, self.planned):
            raise JobsError(f"part {self.name!r} has {len(self.inputs)} rows; {self.planned} were planned")

    @property
    def observables(self) -> tuple[SparsePauliOp, ...]:
        return self.observable if isinstance(self.observable, tuple) else (self.observable,)

    @property
    def pending(self) -> bool:
        """Rows planned but not yet known (a quantum head before stage 2)."""
        return bool(self.planned) and len(self.inputs) == 0

    @property
    def rows(self) -> int:
        return self.planned if self.planned is not None else len(self.inputs)

    def with_inputs(self, inputs: np.ndarray) -> ManifestPart:
        """This part with its rows."""
        return dataclasses.replace(self, inputs=inputs)

    @property
    def values(self) -> np.ndarray:
        """Parameter values (N, P) in the order of ``circuit.parameters``."""
        rows = len(self.inputs)
        columns = {**{name: self.inputs[:, i] for i, name in enumerate(self.input_params)},
                   **{name: np.full(rows, w) for name, w in zip(self.weight_params, self.weights)}}
        return np.stack([columns[p.name] for p in self.circuit.parameters], axis=1)

    @property
    def pub(self) -> EstimatorPub:
        if isinstance(self.observable, tuple):  # rows (N, 1, P) against observables (1, m): values (N, m)
            return EstimatorPub.coerce((self.circuit, [list(self.observable)], self.values[:, None, :]))
        return EstimatorPub.coerce((self.circuit, self.observable, self.values))

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "layer": self.layer, "kind": self.kind, "circuit": self.circuit,
               "input_params": list(self.input_params), "weight_params": list(self.weight_params),
               "inputs": self.inputs, "weights": self.weights}
        if isinstance(self.observable, tuple):
            out["observables"] = [obs.to_list() for obs in self.observable]
        else:
            out["observable"] = self.observable.to_list()
        if self.planned is not None:
            out["planned"] = self.planned
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ManifestPart:
        observable = (tuple(SparsePauliOp.from_list(o) for o in d["observables"]) if "observables" in d
                      else SparsePauliOp.from_list(d["observable"]))
        return cls(d["name"], d["layer"], d["kind"], d["circuit"], observable, tuple(d["input_params"]),
                   tuple(d["weight_params"]), d["inputs"], d["weights"], d.get("planned"))


@dataclass(frozen=True, eq=False)
class Manifest:
    """The parts of one submission, on one backend, with the Runtime options that shape the values."""

    backend: str
    runtime: dict[str, Any]
    parts: tuple[ManifestPart, ...]

    @property
    def pubs(self) -> list[EstimatorPub]:
        """The PUBs of the parts that have their rows, in order (a pending head part comes last, so it shifts none)."""
        return [part.pub for part in self.ready_parts()]

    def ready_parts(self) -> list[ManifestPart]:
        return [part for part in self.parts if not part.pending]

    def head_part(self) -> ManifestPart | None:
        heads = [part for part in self.parts if part.kind == "head"]
        return heads[0] if heads else None

    def with_part(self, new: ManifestPart) -> Manifest:
        """This manifest with the part of ``new``'s name replaced by ``new``."""
        self.part(new.name)
        return dataclasses.replace(self, parts=tuple(new if part.name == new.name else part for part in self.parts))

    def part(self, name: str) -> ManifestPart:
        for part in self.parts:
            if part.name == name:
                return part
        raise JobsError(f"the manifest has no part {name!r}; it has {', '.join(p.name for p in self.parts)}")

    def layer_parts(self) -> list[ManifestPart]:
        return [part for part in self.parts if part.kind == "design"]

    @property
    def digest(self) -> str:
        h = hashlib.sha256(json.dumps({"backend": self.backend, "runtime": self.runtime}, sort_keys=True).encode())
        for part in self.parts:
            h.update(f"\n{part.name}\n".encode())
            h.update(qasm3.dumps(part.circuit).encode())
            terms = [[(label, complex(c)) for label, c in obs.to_list()] for obs in part.observables]
            h.update(repr(terms if isinstance(part.observable, tuple) else terms[0]).encode())
            if part.kind == "head":  # its rows follow from stage 1's results: hashed by weights and count
                h.update(f"{part.planned}\n".encode())
                h.update((np.round(part.weights, 12) + 0.0).tobytes())
            else:
                h.update((np.round(part.values, 12) + 0.0).tobytes())  # + 0.0 turns -0.0 into 0.0
        return h.hexdigest()

    def to_json(self) -> str:
        return json.dumps({"backend": self.backend, "runtime": self.runtime,
                           "parts": [p.to_dict() for p in self.parts]}, cls=RuntimeEncoder)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        d = json.loads(text, cls=RuntimeDecoder)
        return cls(d["backend"], d["runtime"], tuple(ManifestPart.from_dict(p) for p in d["parts"]))


def build_manifest(run: TrainedRun, backend: Backend, runtime: dict[str, Any], validate_patches: int) -> Manifest:
    """The parts ``layer1`` .. ``layerL`` (design points), ``validation`` (patches) and, for a quantum head,
    ``head`` (pending: one row per test image, filled at stage 2) for ``run`` on ``backend``."""
    model = run.model(backend)  # the weights and templates; nothing runs until a job is sent
    parts: list[ManifestPart] = []
    for k, layer in enumerate(model.layers, start=1):
        isa = backend.transpile(layer.template)
        if not isa.response_ready:
            raise JobsError(f"on {backend.name} the filter breaks the response condition ({isa.cost.rotation_check}); "
                            "try another --optimization-level or --initial-layout")
        parts.append(_part(f"layer{k}", k, "design", isa, layer.design_inputs.numpy(), layer.weight.detach().numpy()))
    if validate_patches:
        first = model.layers[0]
        patches = first.patches(run.data.x_test).reshape(-1, first.template.num_inputs).numpy()
        picked = sample_patches(patches, validate_patches, run.config.seed)
        parts.append(_part("validation", 1, "patches", backend.transpile(first.template), picked,
                           first.weight.detach().numpy()))
    if run.config.head == "quantum":
        parts.append(head_part(model.head, backend, len(run.data.y_test), len(model.layers) + 1))
    return Manifest(backend.name, dict(runtime), tuple(parts))


def head_template(head: Any) -> CircuitTemplate:
    """The angle-encoded template of a trained quantum head (what hardware runs), whatever encoding it trained with."""
    settings = head.template.settings
    return quantum_head(settings["num_qubits"], settings["measured"], settings["reps"], settings["entanglement"])


def head_part(head: Any, backend: Backend, samples: int, layer: int) -> ManifestPart:
    """The pending ``head`` part: the transpiled angle-encoded head, its mapped observables and trained weights."""
    template = head.template if head.encoding == "angles" else head_template(head)
    weights = head.weight.detach().numpy()
    if len(weights) != template.num_weights:
        raise JobsError(f"the head has {len(weights)} weights; its angle-encoded template {template.name} takes "
                        f"{template.num_weights}")
    isa = backend.transpile(template)
    return ManifestPart("head", layer, "head", isa.circuit, tuple(isa.observables),
                        tuple(p.name for p in template.input_params), tuple(p.name for p in template.weight_params),
                        np.zeros((0, template.num_inputs)), weights, planned=samples)


def _part(name: str, layer: int, kind: str, isa: Any, inputs: np.ndarray, weights: np.ndarray) -> ManifestPart:
    if len(isa.observables) != 1:
        raise JobsError(f"part {name}: the filter has {len(isa.observables)} outputs; device evaluation needs one")
    template = isa.template
    return ManifestPart(name, layer, kind, isa.circuit, isa.observables[0], tuple(p.name for p in template.input_params),
                        tuple(p.name for p in template.weight_params), inputs, weights)

