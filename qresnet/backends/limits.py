"""Runtime job limits, and estimator PUBs split into jobs that respect them.

IBM's job validation rejects a job whose circuits, after broadcasting, hold more than
10,000 two-qubit gates in total, or more than 10 million executions (circuits x shots);
the limits are per job, not per PUB. A parameter set renders one circuit per group of
qubit-wise commuting observables broadcast against it. A PUB here is split into runs of
whole parameter sets, jobs are filled in order, and the results are put back into each
PUB's own shape, so a caller sees one ``PrimitiveResult`` as if nothing had been split.

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
from functools import cached_property

import numpy as np
from qiskit import QuantumCircuit
from qiskit.exceptions import QiskitError
from qiskit.primitives import BaseEstimatorV2, DataBin, PrimitiveResult, PubResult
from qiskit.primitives.containers import EstimatorPubLike, ObservablesArray
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.providers import BackendV2

from qresnet.backends.primitives import CompletedJob
from qresnet.errors import JobLimitError

MAX_TWO_QUBIT_GATES_PER_JOB = 10_000
MAX_EXECUTIONS_PER_JOB = 10_000_000
DEFAULT_RUNTIME_SHOTS = 4096  # the Runtime estimator's default precision 1/64, as shots
JOB_OVERHEAD_S = 2.0  # per job: queueing aside, the service's own set-up (an assumption)
DEFAULT_REP_DELAY_S = 250e-6
_NOT_GATES = ("barrier", "delay")


def qpu_seconds(circuits: Sequence[tuple[QuantumCircuit, int]], shots: int, device: BackendV2 | None, jobs: int) -> float:
    """Estimated QPU time: ``jobs * JOB_OVERHEAD_S + sum of count * shots * (rep_delay + duration)`` over
    (ISA circuit, count) pairs, each duration from the device target (``QuantumCircuit.estimate_duration``)
    and the device's default repetition delay (250 us if it has none). The overhead per job is an
    assumption; mitigation adds calibration circuits (TREX) and noise-amplified copies (ZNE) that the
    count of circuits leaves out."""
    configuration = getattr(device, "configuration", None)
    rep_delay = getattr(configuration(), "default_rep_delay", None) if callable(configuration) else None
    rep_delay = rep_delay or DEFAULT_REP_DELAY_S
    seconds = jobs * JOB_OVERHEAD_S
    for circuit, count in circuits:
        try:
            duration = circuit.estimate_duration(device.target, unit="s") if device is not None else 0.0
        except QiskitError:  # a target without gate durations
            duration = 0.0
        seconds += count * shots * (rep_delay + duration)
    return seconds


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
    """Parameter sets ``start:stop`` (flattened) of PUB ``pub``, each with every observable broadcast against it."""

    pub: int
    start: int
    stop: int


@dataclass(frozen=True)
class _Layout:
    """Where a PUB's broadcast entries sit: ``entries[r]`` are the flat positions paired with parameter set r."""

    entries: np.ndarray  # (R, K') flat positions in the PUB's shape
    observables: np.ndarray  # (R, K') object array of observables
    values: np.ndarray  # (R, P)


def _layout(pub: EstimatorPub) -> _Layout:
    shape = pub.shape
    values = pub.parameter_values.as_array(pub.circuit.parameters)
    param_shape = values.shape[:-1]
    rows = int(np.prod(param_shape, dtype=int))
    param_index = np.broadcast_to(np.arange(rows).reshape(param_shape), shape).reshape(-1)
    obs_index = np.broadcast_to(np.arange(pub.observables.size).reshape(pub.observables.shape), shape).reshape(-1)
    flat_obs = [pub.observables[np.unravel_index(i, pub.observables.shape)] if pub.observables.shape
                else pub.observables[()] for i in range(pub.observables.size)]
    order = np.argsort(param_index, kind="stable")
    entries = order.reshape(rows, -1)  # a broadcast pairs every parameter set with equally many observables
    observables = np.empty(entries.shape, dtype=object)
    for index in np.ndindex(entries.shape):
        observables[index] = flat_obs[obs_index[entries[index]]]
    return _Layout(entries, observables, values.reshape(rows, values.shape[-1]))


@dataclass(frozen=True)
class JobPlan:
    """The PUBs, coerced, and the jobs they split into; totals count circuits after broadcasting."""

    pubs: tuple[EstimatorPub, ...]
    jobs: tuple[tuple[PubSlice, ...], ...]
    pub_circuits: tuple[int, ...]  # circuits each PUB renders
    circuits: int
    two_qubit_gates: int
    executions: int

    @cached_property
    def layouts(self) -> tuple[_Layout, ...]:
        """Each PUB's parameter sets and the broadcast entries they own, worked out once."""
        return tuple(_layout(pub) for pub in self.pubs)

    def job_pubs(self, j: int) -> list[EstimatorPub]:
        """Job ``j`` as PUBs: parameter sets (n, 1, P) against their observables (n, K')."""
        return [_slice_pub(self.pubs[s.pub], self.layouts[s.pub], s.start, s.stop) for s in self.jobs[j]]


def circuits_per_parameter_set(pub: EstimatorPub, layout: _Layout | None = None) -> int:
    """Circuits one parameter set of ``pub`` renders: the bases of the observables broadcast against it."""
    layout = layout or _layout(pub)
    return measurement_bases(ObservablesArray(layout.observables[0])) if len(layout.values) else 0


def plan_jobs(pubs: Iterable[EstimatorPubLike], limits: JobLimits = JobLimits(),
              precision: float | None = None) -> JobPlan:
    """Split ``pubs`` into jobs under ``limits``, filling each job in PUB order, whole parameter sets at a time."""
    coerced = tuple(EstimatorPub.coerce(p, precision) for p in pubs)
    jobs: list[tuple[PubSlice, ...]] = []
    current: list[PubSlice] = []
    gates = executions = 0
    total_circuits = total_gates = 0
    pub_circuits: list[int] = []
    for p, pub in enumerate(coerced):
        layout = _layout(pub)
        rows = len(layout.values)
        per_row_circuits = circuits_per_parameter_set(pub, layout)
        per_row_gates = two_qubit_gates(pub.circuit) * per_row_circuits
        per_row_exec = limits.shots * per_row_circuits
        if per_row_gates > limits.max_two_qubit_gates or per_row_exec > limits.max_executions:
            raise JobLimitError(
                f"PUB {p} renders circuits with {per_row_gates} two-qubit gates and {per_row_exec} executions "
                f"per parameter set; one job allows {limits.max_two_qubit_gates} and {limits.max_executions}. "
                "Use a smaller circuit, fewer non-commuting observables or fewer shots."
            )
        pub_circuits.append(rows * per_row_circuits)
        total_circuits += rows * per_row_circuits
        total_gates += rows * per_row_gates
        start = 0
        while start < rows:
            room = min((limits.max_two_qubit_gates - gates) // per_row_gates if per_row_gates else rows,
                       (limits.max_executions - executions) // per_row_exec if per_row_exec else rows)
            if room <= 0:
                jobs.append(tuple(current))
                current, gates, executions = [], 0, 0
                continue
            stop = min(rows, start + room)
            current.append(PubSlice(p, start, stop))
            gates += (stop - start) * per_row_gates
            executions += (stop - start) * per_row_exec
            start = stop
    if current:
        jobs.append(tuple(current))
    return JobPlan(coerced, tuple(jobs), tuple(pub_circuits), total_circuits, total_gates, total_circuits * limits.shots)


def _slice_pub(pub: EstimatorPub, layout: _Layout, start: int, stop: int) -> EstimatorPub:
    values = layout.values[start:stop, None, :] if pub.circuit.num_parameters else None
    return EstimatorPub.coerce((pub.circuit, ObservablesArray(layout.observables[start:stop]), values), pub.precision)


def assemble(plan: JobPlan, job_results: Sequence[PrimitiveResult]) -> PrimitiveResult:
    """Each PUB's values back in its own shape, from the results of the plan's jobs."""
    evs = [np.zeros(int(np.prod(pub.shape, dtype=int))) for pub in plan.pubs]
    stds = [np.zeros_like(e) for e in evs]
    metadata: list[list[dict]] = [[] for _ in plan.pubs]
    for job, result in zip(plan.jobs, job_results):
        for s, pub_result in zip(job, result):
            positions = plan.layouts[s.pub].entries[s.start:s.stop]
            evs[s.pub][positions] = np.asarray(pub_result.data.evs).reshape(positions.shape)
            stds[s.pub][positions] = np.asarray(pub_result.data.stds).reshape(positions.shape)
            metadata[s.pub].append(dict(pub_result.metadata))
    out = []
    for p, pub in enumerate(plan.pubs):
        meta = {**(metadata[p][0] if metadata[p] else {}), "jobs": len(metadata[p])}
        out.append(PubResult(DataBin(evs=evs[p].reshape(pub.shape), stds=stds[p].reshape(pub.shape), shape=pub.shape),
                             metadata=meta))
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
        if len(plan.jobs) == 1 and len(plan.jobs[0]) == len(plan.pubs):
            self.jobs_submitted += 1
            return self.estimator.run(list(plan.pubs), precision=precision)  # nothing to split
        submitted = [self.estimator.run(plan.job_pubs(j), precision=precision) for j in range(len(plan.jobs))]
        self.jobs_submitted += len(submitted)
        return CompletedJob(assemble(plan, [job.result() for job in submitted]), job_id="qresnet-split")
