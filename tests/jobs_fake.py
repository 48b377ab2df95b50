"""A stand-in for IBM Quantum, kept in files so that several processes see the same jobs.

``FakeService(root)`` offers what qresnet calls on ``QiskitRuntimeService``: ``backend(name)``
(fake_manila for ``ibm_fake_manila``, fake_melbourne for ``ibm_fake_melbourne``), ``job(job_id)``,
``jobs(job_tags=...)``; its jobs have ``job_id()``, ``status()``, ``result()``, ``error_message()``,
``usage()``, ``cancel()``. Submission (``submit``) is the endpoint the Runtime client would POST
to; the service computes results with shots, seeded per job: on ibm_fake_manila with qresnet's
engine and the fake_manila noise model; on ibm_fake_melbourne (15 qubits, for the 10-qubit
quantum head) with Aer sampling under fake_melbourne's *readout errors only* (Aer's own
per-qubit readout model of the device). A 10-qubit head circuit of ~1900 CNOTs under the full
noise model needs a 2^20 density matrix for exact reference values (over a minute per circuit
here) and comes out fully decohered (estimated fidelity ~1e-24), so no test could tell a right
circuit from a wrong one by its values; with readout errors only, <Z_p> is exactly
(1 - 2 e_p) times the ideal value, a reference a test computes in a second.

Faults, read from ``root/faults.json`` on every call (so a test can change them between
commands): ``transient``: how many of the next calls fail with a connection error;
``expired``: every call fails with HTTP 401 (the message echoes the token, as some services
do); ``reject``: how many of the next submissions are refused (HTTP 400); ``fail``: tags of jobs that end in ERROR; ``polls``: status polls a job spends QUEUED then
RUNNING before DONE. Error messages echo the token, as some services do, to check that qresnet scrubs them.
"""

from __future__ import annotations

import json
from pathlib import Path

from qiskit_aer.noise import NoiseModel
from qiskit_aer.noise.device.models import basic_device_readout_errors
from qiskit_ibm_runtime import RuntimeDecoder, RuntimeEncoder
from qiskit_ibm_runtime.api.exceptions import RequestsApiError
from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError, RuntimeJobNotFound

from qresnet.backends import BackendOptions, fake_device, resolve_backend
from qresnet.backends.aer import aer_estimator
from qresnet.jobs import RuntimeTransport, SubmitOptions

TOKEN = "tok-7c1e9b2a44d0f3e8-SECRET"  # the fake service's valid token in the tests

DEVICE = "ibm_fake_manila"
HEAD_DEVICE = "ibm_fake_melbourne"  # >= 10 qubits, rz/sx/cx basis (the filter keeps its response condition)
DEVICES = {DEVICE: "fake_manila", HEAD_DEVICE: "fake_melbourne"}
USAGE_S = 1.5  # QPU seconds the fake charges per job
# the quantum-head submissions of the tests: 3 test images; 4000 two-qubit gates per job splits stage 2 (1913 each)
HEAD_OPTIONS = SubmitOptions(BackendOptions(shots=4000, seed=7, resilience_level=0), validate_patches=2, max_two_qubit_gates=4000)


def readout_only_noise(device: str) -> NoiseModel:
    """Aer's readout-error model of a fake device (what ``NoiseModel.from_backend`` adds for measurements), nothing else."""
    noise = NoiseModel()
    for qubits, error in basic_device_readout_errors(target=fake_device(device).target):
        noise.add_readout_error(error, qubits)
    return noise


class FakeService:
    def __init__(self, root: str | Path, token: str = "", **kwargs):
        self.root = Path(root)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self.token = token

    # --- the state on disk ---
    def faults(self) -> dict:
        path = self.root / "faults.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def set_faults(self, **faults) -> None:
        (self.root / "faults.json").write_text(json.dumps(faults))

    def submissions(self) -> list[dict]:
        log = self.root / "submissions.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []

    def stored(self, job_id: str) -> dict:
        return json.loads((self.root / "jobs" / f"{job_id}.json").read_text())

    def _store(self, job_id: str, record: dict) -> None:
        (self.root / "jobs" / f"{job_id}.json").write_text(json.dumps(record))

    def _call(self) -> None:
        """Every request passes here: an expired token or a transient outage fails it."""
        faults = self.faults()
        if faults.get("expired"):
            raise RequestsApiError(f"'401 Client Error: Unauthorized for url: https://quantum.cloud.ibm.com/api/v1/jobs'. "
                                   f"Invalid or expired token {self.token}", status_code=401)
        if faults.get("transient", 0) > 0:
            self.set_faults(**{**faults, "transient": faults["transient"] - 1})
            raise ConnectionError("('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))")

    # --- QiskitRuntimeService ---
    def backend(self, name: str):
        if name not in DEVICES:
            raise LookupError(f"no backend {name}")
        return fake_device(DEVICES[name])

    def backends(self):
        return [fake_device(device) for device in DEVICES.values()]

    def job(self, job_id: str) -> FakeJob:
        self._call()
        if not (self.root / "jobs" / f"{job_id}.json").is_file():
            raise RuntimeJobNotFound(f"Job not found: {job_id}")
        return FakeJob(self, job_id)

    def jobs(self, job_tags: list[str] | None = None, limit: int | None = 10, **kwargs) -> list[FakeJob]:
        self._call()
        found = [FakeJob(self, p.stem) for p in sorted((self.root / "jobs").glob("*.json"))
                 if set(job_tags or ()) <= set(json.loads(p.read_text())["tags"])]
        return found[:limit]

    # --- the submission endpoint ---
    def submit(self, pubs, tags: list[str], shots: int, seed: int, device: str = DEVICE) -> FakeJob:
        self._call()
        faults = self.faults()
        if faults.get("reject", 0) > 0:
            self.set_faults(**{**faults, "reject": faults["reject"] - 1})
            raise RequestsApiError(f"'400 Client Error: Bad Request'. Job validation failed (token={self.token})", status_code=400)
        job_id = f"fake{len(self.submissions()):04d}"
        seed = seed + len(self.submissions())
        if device == DEVICE:
            estimator = resolve_backend("aer:fake_manila", BackendOptions(shots=shots, seed=seed)).estimator()
        else:
            estimator = aer_estimator(readout_only_noise(DEVICES[device]), None, shots, seed)
        result = estimator.run(list(pubs)).result()
        self._store(job_id, {"tags": tags, "result": json.dumps(result, cls=RuntimeEncoder), "polls": 0, "cancelled": False})
        with open(self.root / "submissions.jsonl", "a") as log:
            log.write(json.dumps({"job_id": job_id, "tags": tags, "shots": shots, "device": device,
                                  "rows": [int(pub.size) for pub in pubs],  # values: parameter sets x observables
                                  "sets": [int(pub.parameter_values.size) for pub in pubs]}) + "\n")  # circuits
        return FakeJob(self, job_id)


class FakeJob:
    def __init__(self, service: FakeService, job_id: str):
        self.service, self._job_id = service, job_id

    def job_id(self) -> str:
        return self._job_id

    def status(self) -> str:
        self.service._call()
        record = self.service.stored(self._job_id)
        if record["cancelled"]:
            return "CANCELLED"
        polls = self.service.faults().get("polls", 0)
        record["polls"] += 1
        self.service._store(self._job_id, record)
        if record["polls"] <= polls:
            return "QUEUED" if record["polls"] <= polls // 2 else "RUNNING"
        return "ERROR" if set(record["tags"]) & set(self.service.faults().get("fail", [])) else "DONE"

    def error_message(self) -> str:
        self.service._call()
        return f"Error code 1517; the job exceeded the device's maximum execution time (request token={self.service.token})"

    def result(self):
        self.service._call()
        if set(self.service.stored(self._job_id)["tags"]) & set(self.service.faults().get("fail", [])):
            raise RuntimeJobFailureError(f"Unable to retrieve job result. {self.error_message()}")
        return json.loads(self.service.stored(self._job_id)["result"], cls=RuntimeDecoder)

    def usage(self) -> float:
        self.service._call()
        return USAGE_S

    def cancel(self) -> None:
        self.service._call()
        record = self.service.stored(self._job_id)
        record["cancelled"] = True
        self.service._store(self._job_id, record)


class FakeServiceTransport(RuntimeTransport):
    """The production transport, except that jobs are sent to the fake's submission endpoint."""

    def send(self, pubs, tag):
        options = self.backend.options
        return self.backend.service.submit(pubs, [tag], options.shots, options.seed or 0, self.backend.spec.device)

    def batch_id(self) -> str:
        return "fake-batch"


def fake_transport(root: str | Path, options: SubmitOptions, token: str = "", device: str = DEVICE) -> FakeServiceTransport:
    backend = resolve_backend(f"ibm:{device}", options.backend, service=FakeService(root, token=token))
    return FakeServiceTransport(backend)
