"""The engine's differentiation API: exact values and exact derivatives of circuits, without PUBs.

An :class:`EngineDifferentiator` works on its :class:`~qresnet.backends.engine.EngineEstimator`'s core: the
same compiled programs, the same route choice (:meth:`~qresnet.backends.engine.core.EngineCore.route`), the
same noise model and readout folding, so its values are the values ``run`` gives at precision 0.

>>> import math
>>> from qiskit import QuantumCircuit
>>> from qiskit.circuit import Parameter
>>> from qiskit.quantum_info import SparsePauliOp
>>> from qresnet.backends.engine import EngineEstimator
>>> theta = Parameter("theta")
>>> qc = QuantumCircuit(1); _ = qc.ry(theta, 0)
>>> values, grads = EngineEstimator().differentiator.value_and_gradients(qc, [SparsePauliOp("Z")], [[math.pi / 2]])
>>> round(float(values[0, 0]), 12), round(float(grads[0, 0, 0]), 12)  # cos(theta), -sin(theta)
(0.0, -1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp

from qresnet.backends.engine import route as bounds
from qresnet.backends.engine.adjoint import statevector_value_gradients
from qresnet.backends.engine.core import EngineCore, Terms, parameter_rows, route_values, support_of
from qresnet.backends.engine.encoded import EncodedProgram, encoded_gradients, encoded_value_gradients
from qresnet.backends.engine.gradient import heisenberg_gradients
from qresnet.backends.engine.pullback import (
    Pullback,
    heisenberg_pullback,
    program_pullback,
    segment_count,
    segment_sum,
    statevector_pullback,
)
from qresnet.backends.engine.route import Route, RouteKind
from qresnet.backends.engine.simulate import observable_vectors
from qresnet.errors import ConfigError, EngineUnsupportedError

if TYPE_CHECKING:
    from qresnet.backends.engine.estimator import EngineEstimator


class EngineDifferentiator:
    """Exact values, Jacobians and pullbacks of circuits on an ``EngineEstimator``'s programs and caches.

    Get it as ``estimator.differentiator`` (one per estimator). Values include the noise model and the
    readout errors as :meth:`EngineEstimator.run` includes them at precision 0; derivatives are exact (no
    parameter shift, no shot noise).
    """

    def __init__(self, estimator: EngineEstimator):
        self._estimator = estimator
        self._core = estimator.core

    @property
    def gives_exact_values(self) -> bool:
        """Whether the estimator's PUBs without a precision get exact values (no shots): then exact derivatives
        are what parameter shift would give, and :meth:`value_and_gradients` may stand in for it."""
        return self._estimator.exact or self._estimator.shots is None

    def _prepare(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp], values: np.ndarray
                 ) -> tuple[list[Terms], np.ndarray, set[int]]:
        """(terms, checked rows, support), with the rows counted as evaluated."""
        terms = self._core.terms(observables)
        values = parameter_rows(circuit, values)
        self._core.rows_evaluated += len(values) * len(terms)
        return terms, values, support_of(terms)

    def exact_values(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp], values: np.ndarray) -> np.ndarray:
        """(R, K) exact values, as ``run`` computes them at precision 0: for callers that evaluate the same
        circuit every step (a QNN's forward pass). A circuit too wide for the engine is refused (a PUB of it
        goes to the estimator's fallback)."""
        terms, values, support = self._prepare(circuit, observables, values)
        route = self._core.route(circuit, support, values)
        if route.kind is RouteKind.TOO_WIDE:
            raise EngineUnsupportedError(f"circuit {circuit.name!r} is too wide for the engine; run it as a PUB "
                                         "(the fallback estimator takes it)")
        return route_values(route, terms, values).T

    def _derivative_route(self, circuit: QuantumCircuit, support: set[int]) -> Route:
        route = self._core.route(circuit, support)
        if route.kind is RouteKind.TOO_WIDE:
            raise EngineUnsupportedError(
                f"circuit {circuit.name!r} touches {route.width} qubits; the engine's exact gradients take at most "
                f"{route.bound} (its Heisenberg images hold 4^n numbers): use parameter shift")
        return route

    def value_and_gradients(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp], values: np.ndarray,
                            parameters: Sequence[Parameter] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(R, K) exact values and (R, K, P) exact derivatives by ``parameters`` (default: all of
        ``circuit.parameters``, in that order; ``values`` columns are always in that order).

        One backward sweep per distinct setting of the circuit's body carries the observables and their
        derivatives by the body's parameters; prefix parameters (the inputs) are differentiated analytically
        from each qubit's Bloch vector, and an amplitude encoding's features by the adjoint of the state
        preparation (:mod:`qresnet.backends.engine.gradient`).
        """
        terms, values, support = self._prepare(circuit, observables, values)
        columns = self._core.columns(circuit, parameters)
        wanted = frozenset(columns)
        route = self._derivative_route(circuit, support)
        if route.kind is RouteKind.ENCODED_STATEVECTOR:
            out, grads = statevector_value_gradients(route.encoded, terms, values, wanted)
        elif route.kind is RouteKind.ENCODED_CONE:
            out, grads = encoded_value_gradients(route.encoded, terms, values, wanted)
        else:
            out, grads = heisenberg_gradients(route.program, observable_vectors(terms, route.program), values, wanted)
        return out.T, grads[:, :, columns].transpose(1, 0, 2)

    def pulls_back(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp],
                   inputs: Sequence[Parameter] = ()) -> bool:
        """Whether :meth:`value_and_pullback` takes ``circuit`` and ``observables`` with these per-row ``inputs``:
        an amplitude encoding's features, or parameters of the qubits' product-state prefixes (a filter's
        encoding), on a circuit within the engine's bound for derivatives."""
        route = self._core.route(circuit, support_of(self._core.terms(observables)))
        if route.kind.encoded:
            return True
        if route.kind is RouteKind.TOO_WIDE:
            return False
        return not set(self._core.columns(circuit, inputs)) & set(route.program.body_columns)

    def value_and_pullback(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp], values: np.ndarray,
                           inputs: Sequence[Parameter], weights: Sequence[Parameter],
                           segments: np.ndarray | None = None) -> tuple[np.ndarray, Pullback]:
        """(R, K) exact values, and the pullback g (R, K) -> (sum_k g_rk df_rk / d inputs per row (R, I), or None
        without inputs; sum_rk g_rk df_rk / d weights (W,)).

        ``segments`` (R,) ints, row -> setting s < S (a stack of runs, each row carrying its setting's weights):
        the weight part is then (S, W), each setting's sum over its own rows only.

        ``inputs`` must be per-row parameters the engine can differentiate row by row (see :meth:`pulls_back`).
        Reverse mode (:mod:`qresnet.backends.engine.pullback`): one extra sweep whatever the number of
        weights, where :meth:`value_and_gradients` carries one tangent per weight, on the route
        :meth:`value_and_gradients` takes. A caller that evaluates the same circuit every step keeps
        :meth:`prepare_pullback`'s call instead.
        """
        return self.prepare_pullback(circuit, observables, inputs, weights)(values, segments)

    def prepare_pullback(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp],
                         inputs: Sequence[Parameter], weights: Sequence[Parameter]) -> EnginePullback:
        """:meth:`value_and_pullback` of ``circuit`` and ``observables`` with this parameter split, everything that
        does not depend on the rows worked out now (the observables' terms, the route, the columns): a QNN's step
        then costs its rows only. Keep it only while ``circuit`` and ``observables`` are not edited (a QNN's
        layout holds copies of its own)."""
        input_columns, weight_columns = self._core.columns(circuit, inputs), self._core.columns(circuit, weights)
        if set(input_columns) & set(weight_columns):
            raise ConfigError("value_and_pullback: a parameter cannot be both an input (per row) and a weight (summed)")
        if not self.pulls_back(circuit, observables, inputs):
            raise EngineUnsupportedError("value_and_pullback differentiates inputs row by row only where they enter "
                                         "before any multi-qubit gate (or are an amplitude encoding's features)")
        terms = self._core.terms(observables)
        route = self._derivative_route(circuit, support_of(terms))
        vectors = None if route.kind.encoded else observable_vectors(terms, route.program)
        return EnginePullback(self._core, circuit, terms, route, vectors, input_columns, weight_columns)

    def encoding_gradients(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp],
                           values: np.ndarray) -> np.ndarray:
        """(R, K, F): exact derivatives of each observable's value by the features of the circuit's encoding.

        The noise model and the readout errors are included as in ``run``; with shots, the estimator's values
        are sampled but these derivatives stay exact (an adjoint pass has no shot noise).
        """
        terms, values, support = self._prepare(circuit, observables, values)
        route = self._core.route(circuit, support)
        if not route.kind.encoded:
            raise EngineUnsupportedError("encoding_gradients needs a circuit that opens with an amplitude_encoding")
        if route.kind is RouteKind.ENCODED_STATEVECTOR:
            wide = route.encoded
            features = frozenset(wide.feature_columns.tolist())
            return statevector_value_gradients(wide, terms, values, features)[1][:, :, wide.feature_columns].transpose(1, 0, 2)
        return encoded_gradients(route.encoded, terms, values)


@dataclass(frozen=True, eq=False)
class EnginePullback:
    """:meth:`EngineDifferentiator.value_and_pullback` of one circuit, observables and parameter split: called with
    rows (R, P) and optional ``segments``, it gives ((R, K) values, the pullback)."""

    core: EngineCore
    circuit: QuantumCircuit
    terms: list[Terms]
    route: Route
    vectors: np.ndarray | None  # (K, 4^n): the observables on a product-state program's qubits; None if encoded
    input_columns: list[int]
    weight_columns: list[int]

    def __call__(self, values: np.ndarray, segments: np.ndarray | None = None) -> tuple[np.ndarray, Pullback]:
        values = parameter_rows(self.circuit, values)
        self.core.rows_evaluated += len(values) * len(self.terms)
        segments = _checked_segments(segments, len(values))
        if self.vectors is not None:
            out, pullback = program_pullback(self.route.program, self.vectors, values, self.input_columns,
                                             self.weight_columns, segments)
            return out.T, pullback
        return _encoded_pullback(self.route, self.terms, values, self.input_columns, self.weight_columns, segments)


def _checked_segments(segments: np.ndarray | None, rows: int) -> np.ndarray | None:
    """``segments`` as an int array of one setting index (>= 0) per row, or None."""
    if segments is None:
        return None
    checked = np.asarray(segments)
    if checked.shape != (rows,) or (rows and (checked.dtype.kind not in "iu" or checked.min() < 0)):
        raise ConfigError(f"segments={segments!r} must be {rows} setting indices >= 0 (one int per row)")
    return checked.astype(np.int64)


def _encoded_pullback(route: Route, terms: list[Terms], values: np.ndarray, input_columns: list[int],
                      weight_columns: list[int], segments: np.ndarray | None) -> tuple[np.ndarray, Pullback]:
    """:meth:`EngineDifferentiator.value_and_pullback` on an encoded route: the features are the inputs."""
    ep: EncodedProgram = route.encoded
    feature_at = {int(c): f for f, c in enumerate(ep.feature_columns)}
    if any(c not in feature_at for c in input_columns) or any(c in feature_at for c in weight_columns):
        raise EngineUnsupportedError("value_and_pullback of an encoded circuit takes its features as the inputs "
                                     "and parameters after the encoding as the weights")
    program_at = {int(c): j for j, c in enumerate(ep.body_columns)}
    kept = len(ep.program.body) * len(terms) * 4**ep.program.num_qubits * 8  # the images reverse mode keeps
    if route.kind is RouteKind.ENCODED_CONE and kept > bounds.MAX_PULLBACK_BYTES:
        # a wide noisy cone (a 10-class noisy head): forward-mode tangents, chunked, instead of every image
        out, grads = encoded_value_gradients(ep, terms, values, frozenset(input_columns) | frozenset(weight_columns))

        def contracted(g: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
            g = np.asarray(g, dtype=float).reshape(len(values), len(terms))
            d_inputs = np.einsum("rk,krp->rp", g, grads[:, :, input_columns]) if input_columns else None
            if segments is None:
                return d_inputs, np.einsum("rk,krp->p", g, grads[:, :, weight_columns])
            per_row = np.einsum("rk,krp->rp", g, grads[:, :, weight_columns])
            return d_inputs, segment_sum(per_row, segments, segment_count(segments))

        return out.T, contracted
    sweep = statevector_pullback if route.kind is RouteKind.ENCODED_STATEVECTOR else heisenberg_pullback
    out, pull = sweep(ep, terms, values, bool(input_columns), segments)
    features = [feature_at[c] for c in input_columns]
    # a weight the circuit does not use (absent from the body) gets 0
    present = [j for j, c in enumerate(weight_columns) if c in program_at]
    body = [program_at[weight_columns[j]] for j in present]

    def pullback(g: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        d_features, d_body = pull(g)
        d_weights = np.zeros(d_body.shape[:-1] + (len(weight_columns),))
        d_weights[..., present] = d_body[..., body]
        return (None if d_features is None else d_features[:, features]), d_weights

    return out.T, pullback
