"""What qresnet's estimators and gradients share: a finished job, a PUB's rows grouped, and abilities.

An ability is something an estimator may do beyond ``EstimatorV2``. Callers ask with
``isinstance(estimator, Ability)`` (the protocols are runtime-checkable) or through
:class:`qresnet.backends.Backend`, never by probing attribute names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.primitives import BasePrimitiveJob, PrimitiveResult
from qiskit.providers import JobStatus
from qiskit.quantum_info import SparsePauliOp


@runtime_checkable
class ExactStatePreparation(Protocol):
    """Prepares an ``amplitude_encoding`` exactly and differentiates values by its features."""

    def encoding_gradients(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp],
                           values: np.ndarray) -> np.ndarray:
        """(R, K, F): d value / d feature for each parameter row, observable and encoded feature."""
        ...


@runtime_checkable
class ExactGradients(Protocol):
    """Exact values and exact derivatives by every circuit parameter, in one sweep (no parameter shift).

    ``gives_exact_values``: whether the estimator's values are exact (no shots), so that these
    derivatives are the ones parameter shift would give and may stand in for it.
    """

    gives_exact_values: bool

    def value_and_gradients(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp], values: np.ndarray,
                            parameters: Sequence[Parameter] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """((R, K) values, (R, K, P) derivatives by ``parameters``, default all of ``circuit.parameters``)."""
        ...

    def exact_values(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp], values: np.ndarray) -> np.ndarray:
        """(R, K) exact values without a PUB (a QNN's forward pass without gradients)."""
        ...


@runtime_checkable
class ExactPullbacks(Protocol):
    """Reverse-mode derivatives: the values now, and a pullback of the cotangent (R, K) later.

    Where ``pulls_back(circuit, inputs)`` is True, ``value_and_pullback`` returns (R, K) values and
    g -> (d/d inputs per row (R, I) or None, d/d weights summed over rows (W,)): one extra sweep whatever
    the number of weights."""

    def pulls_back(self, circuit: QuantumCircuit, inputs: Sequence[Parameter] = ()) -> bool:
        ...

    def value_and_pullback(self, circuit: QuantumCircuit, observables: Sequence[SparsePauliOp], values: np.ndarray,
                           inputs: Sequence[Parameter], weights: Sequence[Parameter]) -> tuple[np.ndarray, Any]:
        ...


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

    The key is a fixed random projection of each row; equal rows get equal keys, and the
    grouping is checked row by row, with the exact (slower) ``np.unique`` if two distinct
    rows ever share a key.

    >>> rows, inverse = group_rows(np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]]))
    >>> rows.tolist(), inverse.tolist()
    ([[1.0, 2.0], [3.0, 4.0]], [0, 1, 0])
    """
    if x.shape[1] == 0:
        return x[:1], np.zeros(len(x), dtype=np.int64)
    key = x @ _PROJECTION[: x.shape[1]]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    distinct = x[first]
    if not np.array_equal(distinct[inverse], x):
        distinct, inverse = np.unique(x, axis=0, return_inverse=True)
    return distinct, inverse.reshape(-1)


_PROJECTION = np.random.default_rng(20240214).uniform(0.5, 1.5, 4096) * np.sqrt(np.arange(1, 4097))
