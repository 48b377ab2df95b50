"""Runtime job limits, and estimator PUBs split into jobs that respect them.

IBM's job validation rejects a job whose circuits, after broadcasting, hold more than
10,000 two-qubit gates in total, or more than 10 million executions (circuits x shots);
the limits are per job, not per PUB. A PUB here is split along its flattened broadcast
shape (one slice per run of parameter sets), jobs are filled in order, and the results are
put back into each PUB's own shape, so a caller sees one ``PrimitiveResult`` as if nothing
had been split.

>>> from qiskit import QuantumCircuit
>>> from qiskit.circuit import Parameter
>>> from qiskit.quantum_info import SparsePauliOp
>>> qc = QuantumCircuit(2); _ = qc.ry(Parameter("t"), 0); _ = qc.cx(0, 1)
>>> plan = plan_jobs([(qc, SparsePauliOp("ZZ"), [[0.1]] * 5)], JobLimits(max_two_qubit_gates=2))
>>> [[s.stop - s.start for s in job] for job in plan.jobs], plan.two_qubit_gates
([[2], [2], [1]], 5)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit
from qiskit.primitives import BaseEstimatorV2, DataBin, PrimitiveResult, PubResult
from qiskit.primitives.base.base_primitive_job import BasePrimitiveJob
from qiskit.primitives.containers import EstimatorPubLike, ObservablesArray
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.providers import JobStatus

from qresnet.errors import QresnetError

MAX_TWO_QUBIT_GATES_PER_JOB = 10_000
MAX_EXECUTIONS_PER_JOB = 10_000_000
DEFAULT_RUNTIME_SHOTS = 4096  # the Runtime estimator's default precision 1/64, as shots
_NOT_GATES = ("barrier", "delay")


class JobLimitError(QresnetError, ValueError):
    """A single circuit exceeds a per-job limit, so no split can make it fit."""


def two_qubit_gates(circuit: QuantumCircuit) -> int:
    """Two-qubit gates of one circuit (barriers and delays are not gates)."""
    return sum(1 for inst in circuit.data if inst.operation.num_qubits == 2 and inst.operation.name not in _NOT_GATES)


def measurement_bases(observables: ObservablesArray) -> int:
    """Circuits one parameter set renders: groups of qubit-wise commuting Pauli terms (greedy)."""
    labels = sorted({label for index in np.ndindex(observables.shape) for label in observables[index]})
    groups: list[str] = []
    for label in labels:
        for g, basis in enumerate(groups):
            if all(a == "I" or b == "I" or a == b for a, b in zip(label, basis)):
                groups[g] = "".join(b if a == "I" else a for a, b in zip(label, basis))
                break
        else:
            groups.append(label)
    return max(1, len(groups))


@dataclass(frozen=True)
class JobLimits:
    """Per-job bounds; ``shots`` is what one circuit costs in executions."""

    max_two_qubit_gates: int = MAX_TWO_QUBIT_GATES_PER_JOB
    max_executions: int = MAX_EXECUTIONS_PER_JOB
    shots: int = DEFAULT_RUNTIME_SHOTS


@dataclass(frozen=True)
class PubSlice:
    """Entries ``start:stop`` of PUB ``pub``'s flattened broadcast shape."""

    pub: int
    start: int
    stop: int


@dataclass(frozen=True)
class JobPlan:
    """The PUBs, coerced, and the jobs they split into; totals count circuits after broadcasting."""

    pubs: tuple[EstimatorPub, ...]
    jobs: tuple[tuple[PubSlice, ...], ...]
    circuits: int
    two_qubit_gates: int
    executions: int

    def job_pubs(self, j: int) -> list[EstimatorPub]:
        """Job ``j`` as PUBs: each slice flattened to one dimension."""
        return [_slice_pub(self.pubs[s.pub], s.start, s.stop) for s in self.jobs[j]]


def plan_jobs(pubs: Iterable[EstimatorPubLike], limits: JobLimits = JobLimits(),
              precision: float | None = None) -> JobPlan:
    """Split ``pubs`` into jobs under ``limits``, filling each job in PUB order."""
    coerced = tuple(EstimatorPub.coerce(p, precision) for p in pubs)
    jobs: list[tuple[PubSlice, ...]] = []
    current: list[PubSlice] = []
    gates = executions = 0
    total_circuits = total_gates = 0
    for p, pub in enumerate(coerced):
        per_entry_circuits = measurement_bases(pub.observables)
        per_entry_gates = two_qubit_gates(pub.circuit) * per_entry_circuits
        per_entry_exec = limits.shots * per_entry_circuits
        if per_entry_gates > limits.max_two_qubit_gates or per_entry_exec > limits.max_executions:
            raise JobLimitError(
                f"PUB {p} renders circuits with {per_entry_gates} two-qubit gates and {per_entry_exec} executions "
                f"per parameter set; one job allows {limits.max_two_qubit_gates} and {limits.max_executions}. "
                "Use a smaller circuit, fewer non-commuting observables or fewer shots."
            )
        size = int(np.prod(pub.shape, dtype=int))
        total_circuits += size * per_entry_circuits
        total_gates += size * per_entry_gates
        start = 0
        while start < size:
            room = min((limits.max_two_qubit_gates - gates) // per_entry_gates if per_entry_gates else size,
                       (limits.max_executions - executions) // per_entry_exec)
            if room <= 0:
                jobs.append(tuple(current))
                current, gates, executions = [], 0, 0
                continue
            stop = min(size, start + room)
            current.append(PubSlice(p, start, stop))
            gates += (stop - start) * per_entry_gates
            executions += (stop - start) * per_entry_exec
            start = stop
    if current:
        jobs.append(tuple(current))
    return JobPlan(coerced, tuple(jobs), total_circuits, total_gates, total_circuits * limits.shots)


def _broadcast(pub: EstimatorPub) -> tuple[np.ndarray, np.ndarray]:
    """The PUB's observables (N,) and parameter rows (N, P), flattened over its broadcast shape."""
    shape = pub.shape
    values = pub.parameter_values.as_array(pub.circuit.parameters)
    values = np.broadcast_to(values, shape + values.shape[-1:]).reshape(-1, values.shape[-1])
    index = np.broadcast_to(np.arange(pub.observables.size).reshape(pub.observables.shape), shape).reshape(-1)
    flat = [pub.observables[np.unravel_index(i, pub.observables.shape)] if pub.observables.shape
            else pub.observables[()] for i in range(pub.observables.size)]
    observables = np.empty(len(index), dtype=object)
    for j, i in enumerate(index):
        observables[j] = flat[i]
    return observables, values


def _slice_pub(pub: EstimatorPub, start: int, stop: int) -> EstimatorPub:
    observables, values = _broadcast(pub)
    return EstimatorPub.coerce((pub.circuit, ObservablesArray(observables[start:stop]),
                                values[start:stop] if pub.circuit.num_parameters else None), pub.precision)


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


def assemble(plan: JobPlan, job_results: Sequence[PrimitiveResult]) -> PrimitiveResult:
    """Each PUB's values back in its own shape, from the results of the plan's jobs."""
    evs: list[list[np.ndarray]] = [[] for _ in plan.pubs]
    stds: list[list[np.ndarray]] = [[] for _ in plan.pubs]
    metadata: list[list[dict]] = [[] for _ in plan.pubs]
    for job, result in zip(plan.jobs, job_results):
        for s, pub_result in zip(job, result):
            evs[s.pub].append(np.asarray(pub_result.data.evs).reshape(-1))
            stds[s.pub].append(np.asarray(pub_result.data.stds).reshape(-1))
            metadata[s.pub].append(dict(pub_result.metadata))
    out = []
    for p, pub in enumerate(plan.pubs):
        shape = pub.shape
        e = np.concatenate(evs[p]).reshape(shape) if evs[p] else np.zeros(shape)
        d = np.concatenate(stds[p]).reshape(shape) if stds[p] else np.zeros(shape)
        meta = metadata[p][0] if metadata[p] else {}
        meta = {**meta, "jobs": len(metadata[p])}
        out.append(PubResult(DataBin(evs=e, stds=d, shape=shape), metadata=meta))
    return PrimitiveResult(out, metadata={"version": 2, "jobs": len(plan.jobs)})


class SplittingEstimator(BaseEstimatorV2):
    """An estimator that sends each ``run`` as as many jobs as the limits need, all submitted before any is awaited.

    ``jobs_submitted`` counts jobs over the estimator's life; ``last_plan`` is the latest split.
    """

    def __init__(self, estimator: BaseEstimatorV2, limits: JobLimits = JobLimits()):
        self.estimator = estimator
        self.limits = limits
        self.jobs_submitted = 0
        self.last_plan: JobPlan | None = None

    def run(self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None) -> CompletedJob:
        plan = plan_jobs(pubs, self.limits, precision)
        self.last_plan = plan
        if len(plan.jobs) == 1 and all(s.start == 0 and s.stop == int(np.prod(plan.pubs[s.pub].shape, dtype=int))
                                       for s in plan.jobs[0]):
            self.jobs_submitted += 1
            return self.estimator.run(list(plan.pubs), precision=precision)  # nothing to split
        submitted = [self.estimator.run(plan.job_pubs(j), precision=precision) for j in range(len(plan.jobs))]
        self.jobs_submitted += len(submitted)
        return CompletedJob(assemble(plan, [job.result() for job in submitted]), job_id="qresnet-split")
