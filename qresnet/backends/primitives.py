"""What qresnet's estimators and gradients share: a finished job, a PUB's rows grouped, and abilities.

An ability is something an estimator may do beyond ``EstimatorV2``. Callers ask with
``isinstance(estimator, Ability)`` (the protocols are runtime-checkable) or through
:class:`qresnet.backends.Backend`, never by probing attribute names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.primitives import BasePrimitiveJob, PrimitiveResult
from qiskit.providers import JobStatus
from qiskit.quantum_info import SparsePauliOp

# reverse mode's answer: the cotangent g (R, K) -> (d/d inputs per row (R, I) or None, d/d weights summed over rows (W,),
# or over each setting's rows (S, W) when the call was given segments)
Pullback = Callable[[np.ndarray], tuple[np.ndarray | None, np.ndarray]]
# value_and_pullback with its circuit, observables and parameter split fixed: (rows (R, P), segments or None) ->
# ((R, K) values, the pullback)
PreparedPullback = Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, Pullback]]


@runtime_checkable
class Differentiator(Protocol):
    """Exact values and exact derivatives of circuits without PUBs: one object per estimator that has them
    (the engine's :class:`~qresnet.backends.engine.EngineDifferentiator`).

    Values include the estimator's noise model and readout errors as its exact values do. Rows ``values`` are
    (R, P) parameter values in ``circuit.parameters`` order; results are per row and observable.
    """

    gives_exact_values: bool  # the estimator's values are exact (no shots): these derivatives are parameter shift's

    def exact_values(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp], values: np.ndarray) -> np.ndarray:
        """(R, K) exact values (a QNN's forward pass without gradients)."""
        ...

    def value_and_gradients(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp], values: np.ndarray,
                            parameters: Sequence[Parameter] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """((R, K) values, (R, K, P) derivatives by ``parameters``, default all of ``circuit.parameters``)."""
        ...

    def pulls_back(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp],
                   inputs: Sequence[Parameter] = ()) -> bool:
        """Whether :meth:`value_and_pullback` takes this circuit and observables with these per-row inputs."""
        ...

    def value_and_pullback(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp], values: np.ndarray,
                           inputs: Sequence[Parameter], weights: Sequence[Parameter],
                           segments: np.ndarray | None = None) -> tuple[np.ndarray, Pullback]:
        """Reverse mode: (R, K) values and the pullback g (R, K) -> (d/d inputs per row (R, I) or None, d/d weights
        summed over rows (W,)), one extra sweep whatever the number of weights. With ``segments`` (R,) ints
        (row -> setting, S settings) the weight part is (S, W), each setting's sum over its own rows."""
        ...

    def prepare_pullback(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp],
                         inputs: Sequence[Parameter], weights: Sequence[Parameter]) -> PreparedPullback:
        """:meth:`value_and_pullback` with the circuit, observables and split fixed: a call of the rows alone."""
        ...

    def encoding_gradients(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp],
                           values: np.ndarray) -> np.ndarray:
        """(R, K, F): d value / d feature of the circuit's amplitude encoding (exact even when values are sampled)."""
        ...


@runtime_checkable
class Differentiable(Protocol):
    """An estimator with a :class:`Differentiator` for its circuits (the engine, in exact mode or with shots)."""

    differentiator: Differentiator


@runtime_checkable
class CountsRows(Protocol):
    """Counts the parameter sets x observables it evaluated, for cost reports."""

    rows_evaluated: int


class CompletedJob(BasePrimitiveJob):
    """A primitive job whose result is already computed."""

    def __init__(self, result: PrimitiveResult, job_id: str = "qresnet-local"):
        super().__init__(job_id=job_id)
        self._result = result

    def result(self) -> PrimitiveResult:
        return self._result

    def status(self) -> JobStatus:
        return JobStatus.DONE

    def done(self) -> bool:
        return True

    def running(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def in_final_state(self) -> bool:
        return True

    def cancel(self) -> None:
        return None


def group_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct rows, inverse) of a 2D array, like ``np.unique(axis=0)`` but by a 1D key.

    The key is a fixed random projection of each row. Equal rows may get keys that differ in the
    last bits (a matrix product rounds some rows by another kernel than others), so neighbours in
    key order whose rows are equal are merged; the grouping is checked row by row, with the exact
    (slower) ``np.unique`` if two distinct rows ever share a key.

    >>> rows, inverse = group_rows(np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]]))
    >>> rows.tolist(), inverse.tolist()
    ([[1.0, 2.0], [3.0, 4.0]], [0, 1, 0])
    """
    if x.shape[1] == 0:
        return x[:1], np.zeros(len(x), dtype=np.int64)
    key = x @ _PROJECTION[: x.shape[1]]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    distinct = x[first]
    if len(distinct) > 1:
        same = np.all(distinct[1:] == distinct[:-1], axis=1)  # equal rows split by their keys' rounding
        if same.any():
            merged = np.concatenate([[0], np.cumsum(~same)])
            distinct, inverse = distinct[np.concatenate([[True], ~same])], merged[inverse]
    if not np.array_equal(distinct[inverse], x):
        distinct, inverse = np.unique(x, axis=0, return_inverse=True)
    return distinct, inverse.reshape(-1)


_PROJECTION = np.random.default_rng(20240214).uniform(0.5, 1.5, 4096) * np.sqrt(np.arange(1, 4097))
