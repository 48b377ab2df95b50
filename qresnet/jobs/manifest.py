"""What a submission sends, as named parts, and the hash that identifies it.

Per quanvolution layer, one PUB of the 3^q design points of the filter (design section 3) with
the layer's trained weights bound in every row: the device values give the layer's response
tensor, whatever the input. Layers after the first need no input at submit time, so all layers
go in one submission. The ``validation`` part runs ``validate_patches`` distinct test-set
patches of layer 1 directly, to measure the response method's error on the device.

The hash covers the ISA circuits (OpenQASM 3, which names parameters but holds no object ids),
the observables, the parameter values rounded to 12 decimals, the backend and the Runtime
options that shape the values: the same checkpoint sent twice the same way has the same hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qiskit import QuantumCircuit, qasm3
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.quantum_info import SparsePauliOp
from qiskit_ibm_runtime import RuntimeDecoder, RuntimeEncoder

from qresnet.backends import Backend, resolve_backend
from qresnet.jobs.errors import JobsError
from qresnet.jobs.run import TrainedRun

PART_KINDS = ("design", "patches")


@dataclass(frozen=True, eq=False)
class ManifestPart:
    """One PUB: a circuit, its observable, and rows of filter ``inputs`` (N, q) with ``weights`` bound in each.

    ``input_params`` and ``weight_params`` name the circuit's parameters in input and weight order.

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
    observable: SparsePauliOp
    input_params: tuple[str, ...]
    weight_params: tuple[str, ...]
    inputs: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        if self.kind not in PART_KINDS:
            raise JobsError(f"part {self.name!r}: kind={self.kind!r} must be one of {', '.join(PART_KINDS)}")
        names = [p.name for p in self.circuit.parameters]
        if sorted(names) != sorted(self.input_params + self.weight_params):
            raise JobsError(f"part {self.name!r}: the circuit's parameters {names} are not its inputs and weights")
        object.__setattr__(self, "inputs", np.asarray(self.inputs, dtype=float).reshape(-1, len(self.input_params)))
        object.__setattr__(self, "weights", np.asarray(self.weights, dtype=float).reshape(len(self.weight_params)))

    @property
    def values(self) -> np.ndarray:
        """Parameter values (N, P) in the order of ``circuit.parameters``."""
        rows = len(self.inputs)
        columns = {**{name: self.inputs[:, i] for i, name in enumerate(self.input_params)},
                   **{name: np.full(rows, w) for name, w in zip(self.weight_params, self.weights)}}
        return np.stack([columns[p.name] for p in self.circuit.parameters], axis=1)

    @property
    def pub(self) -> EstimatorPub:
        return EstimatorPub.coerce((self.circuit, self.observable, self.values))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "kind": self.kind, "circuit": self.circuit,
                "observable": self.observable.to_list(), "input_params": list(self.input_params),
                "weight_params": list(self.weight_params), "inputs": self.inputs, "weights": self.weights}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ManifestPart:
        return cls(d["name"], d["layer"], d["kind"], d["circuit"], SparsePauliOp.from_list(d["observable"]),
                   tuple(d["input_params"]), tuple(d["weight_params"]), d["inputs"], d["weights"])


@dataclass(frozen=True, eq=False)
class Manifest:
    """The parts of one submission, on one backend, with the Runtime options that shape the values."""

    backend: str
    runtime: dict[str, Any]
    parts: tuple[ManifestPart, ...]

    @property
    def pubs(self) -> list[EstimatorPub]:
        return [part.pub for part in self.parts]

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
            h.update(repr([(label, complex(c)) for label, c in part.observable.to_list()]).encode())
            h.update((np.round(part.values, 12) + 0.0).tobytes())  # + 0.0 turns -0.0 into 0.0
        return h.hexdigest()

    def to_json(self) -> str:
        return json.dumps({"backend": self.backend, "runtime": self.runtime,
                           "parts": [p.to_dict() for p in self.parts]}, cls=RuntimeEncoder)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        d = json.loads(text, cls=RuntimeDecoder)
        return cls(d["backend"], d["runtime"], tuple(ManifestPart.from_dict(p) for p in d["parts"]))


def sample_patches(patches: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` distinct patches (rows), seeded, leaving out design points (the layer parts run those already).

    >>> sample_patches(np.array([[0, 0.5], [0.2, 1], [0.2, 1], [0.3, 0]]), 5, seed=0).tolist()
    [[0.2, 1.0], [0.3, 0.0]]
    """
    unique = np.unique(np.asarray(patches, dtype=float).reshape(-1, patches.shape[-1]), axis=0)
    informative = unique[~np.all(np.isin(unique, (0.0, 0.5, 1.0)), axis=1)]
    pick = np.random.default_rng(seed).choice(len(informative), size=min(count, len(informative)), replace=False)
    return informative[np.sort(pick)]


def build_manifest(run: TrainedRun, backend: Backend, runtime: dict[str, Any], validate_patches: int) -> Manifest:
    """The parts ``layer1`` .. ``layerL`` (design points) and ``validation`` (patches) for ``run`` on ``backend``."""
    model = run.model(resolve_backend("aer"))  # the weights and templates; nothing is simulated here
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
    return Manifest(backend.name, dict(runtime), tuple(parts))


def _part(name: str, layer: int, kind: str, isa: Any, inputs: np.ndarray, weights: np.ndarray) -> ManifestPart:
    if len(isa.observables) != 1:
        raise JobsError(f"part {name}: the filter has {len(isa.observables)} outputs; device evaluation needs one")
    template = isa.template
    return ManifestPart(name, layer, kind, isa.circuit, isa.observables[0], tuple(p.name for p in template.input_params),
                        tuple(p.name for p in template.weight_params), inputs, weights)

