"""Device evaluation of a quantum-head checkpoint: stage 2 (one head circuit per test image) sent by fetch.

The run: digits 0/1, 6 per class (3 test images), one layer, no residual (final map 4x4 = 16
features), 10-qubit head measuring 2 qubits. The device: ibm_fake_melbourne of the fake service
(15 qubits, rz/sx/cx; the transpiled head has 1913 CNOTs), whose values carry shot noise and the
device's readout errors only (why: jobs_fake.py). Local testing mode with the full noise model
runs the head too (the local crash test), with 2 shots. Measured on this (loaded, 2-core)
machine: one head circuit in local mode takes about 1 s + 0.9 s per shot on fake_melbourne
(1913 CNOTs, 14 simulated qubits: 8.2 s at 8 shots, 31 s at 32) and 6.4 s + 0.2 s per shot on
fake_torino (3158 CNOTs on qubits 0-9); exact noisy values need a 2^20 density matrix: Aer took
69 s for one 1803-CNOT head (fake_singapore) and 139 s for fake_torino's 2564-CNOT one (qresnet's
engine 488 s). So local-mode head values are checked for shot statistics, not against a reference.

References, computed here: the final maps by the numpy forward of test_jobs.py from the stored
layer values; the head's ideal <Z_q> from the exactly normalised, zero-padded feature vector
evolved through the ansatz with the checkpoint's head weights (Qiskit Statevector, no Mottonen
circuit); counts from the PUBs the fake service received.
"""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import qiskit_ibm_runtime
import torch
from jobs_fake import HEAD_DEVICE, HEAD_OPTIONS, FakeService, fake_transport
from qiskit import QuantumCircuit
from qiskit.quantum_info import Statevector
from qiskit_aer.primitives import EstimatorV2 as AerEstimator
from test_jobs import COST_LINE, TESTS, ref_filter, ref_patches, ref_tensor, two_qubit_ops

from qresnet.backends import BackendOptions, fake_device
from qresnet.backends.limits import MAX_TWO_QUBIT_GATES_PER_JOB
from qresnet.circuits.ansatz import append_ansatz
from qresnet.data import load_dataset
from qresnet.jobs import DuplicateSubmissionError, Ledger, Manifest, SubmitOptions, fetch, prepare, submit
from qresnet.cli.main import main
from qresnet.config import TrainConfig
from qresnet.run.rundir import RunDir
from qresnet.run.train import train

RUN = dict(dataset="digits", classes=(0, 1), per_class=6, layers=1, residual="none", head="quantum", epochs=1,
           batch_size=4, lr=0.05, seed=3)
HEAD_LINE = re.compile(r"of which stage 2, the quantum head .*: (\d+) jobs?, (\d+) circuits \(one per test image\) = "
                       r"(\d+) executions, (\d+) two-qubit gates")


@pytest.fixture(scope="module")
def head_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs-head") / "run"
    train(TrainConfig(**RUN), out, progress=False)
    return out


@pytest.fixture
def cli_home(home, monkeypatch):
    """``home``, with CLI commands sending to the fake service's melbourne through the fake transport."""
    opened = lambda backend, options, service=None: fake_transport(home / "service", options, device=HEAD_DEVICE)  # noqa: E731
    monkeypatch.setattr("qresnet.jobs.submission.open_transport", opened)
    monkeypatch.setattr("qresnet.jobs.retrieval.open_transport", opened)
    return home


def checkpoint(run_dir):
    return torch.load(sorted((run_dir / "checkpoints").glob("epoch_*.pt"))[-1], weights_only=False)


def y_test():
    return load_dataset(TrainConfig(**RUN).data_config()).y_test.numpy()


def head_values(ledger, submission_id):
    """Per part name: (values, stds) from the jobs' stored results and slices; the head's as (N, classes)."""
    record = ledger.submission(submission_id)
    manifest = Manifest.from_json(record.manifest)
    names = [part.name for part in manifest.parts]
    chunks = {name: [] for name in names}
    for job in ledger.jobs(submission_id):
        result = json.loads(job.result, cls=qiskit_ibm_runtime.RuntimeDecoder)
        for (p, start, stop), pub_result in zip(job.slices, result):
            evs, stds = np.asarray(pub_result.data.evs), np.asarray(pub_result.data.stds)
            assert len(evs) == stop - start
            chunks[names[p]].append((start, evs, stds))
    out = {}
    for name, pieces in chunks.items():
        pieces.sort(key=lambda c: c[0])
        assert [c[0] for c in pieces] == list(np.cumsum([0] + [len(c[1]) for c in pieces[:-1]]))  # no gap, no overlap
        out[name] = (np.concatenate([c[1] for c in pieces]), np.concatenate([c[2] for c in pieces]))
    return manifest, out


def ideal_head_values(run_dir, layer_values):
    """<Z_q> of the trained head on each test image's final map, from the stored layer values; no Mottonen circuit."""
    x = load_dataset(TrainConfig(**RUN).data_config()).x_test.numpy()
    features = ref_filter(ref_tensor(layer_values), ref_patches(x)).reshape(len(x), -1)  # residual none: h1 = O1
    weights = checkpoint(run_dir)["model"]["head.connector.weight"].numpy()
    ansatz = QuantumCircuit(10)
    params = append_ansatz(ansatz, 2, "chain")
    bound = ansatz.assign_parameters(dict(zip(params, weights)))
    out = []
    for f in features:
        psi = np.zeros(1024)
        psi[:len(f)] = f
        psi = psi / np.linalg.norm(psi) if np.linalg.norm(psi) > 0 else np.eye(1024)[0]
        probs = Statevector(psi).evolve(bound).probabilities()
        out.append([probs @ (1 - 2 * ((np.arange(1024) >> q) & 1)) for q in range(2)])
    return np.array(out)


def measured_qubit(observable):
    (qubit,) = np.flatnonzero(observable.paulis[0].z)
    return int(qubit)


def check_head(run_dir, ledger, submission_id, readout_only=True):
    """The head part and the report against the references; returns (manifest, values, report)."""
    manifest, values = head_values(ledger, submission_id)
    head = manifest.part("head")
    record = ledger.submission(submission_id)
    assert not head.pending and len(head.inputs) == len(y_test()) == 3
    assert manifest.digest == record.digest  # the stage-2 rows leave the submission's hash as it was
    ideal = ideal_head_values(run_dir, values["layer1"][0])
    # the circuits sent: the transpiled Mottonen encoding with the stored angles, then the ansatz, prepare exactly
    # that state (Aer statevector, exact) -- the angles follow from the device's layer values
    exact = AerEstimator(options={"default_precision": 0.0}).run([head.pub]).result()[0].data.evs
    assert np.allclose(exact, ideal, atol=1e-8)
    device, stds = values["head"][0].reshape(3, 2), values["head"][1].reshape(3, 2)
    if readout_only:  # the fake service's melbourne: readout error e_p on the measured qubit p, nothing else
        target = fake_device("fake_melbourne").target
        e = np.array([target["measure"][(measured_qubit(obs),)].error for obs in head.observables])
        assert np.all(stds > 0) and np.all(np.abs(device - (1 - 2 * e) * ideal) <= 5 * stds)
    else:  # full noise in local mode: shot statistics of a +-1 observable, std = sqrt((1 - ev^2) / shots)
        shots = record.cost["shots"]
        assert np.allclose(stds, np.sqrt((1 - device ** 2) / shots), atol=1e-9)
    report = json.loads((run_dir / "device" / submission_id / "report.json").read_text())
    predictions = device.argmax(1)  # logits = scale * <Z_q>, scale > 0
    assert report["head"] == "quantum" and report["device_predictions"] == predictions.tolist()
    assert report["device_accuracy"] == pytest.approx(float(np.mean(predictions == y_test())), abs=1e-12)
    assert np.allclose(report["device_head_values"], device, atol=0)
    assert report["ideal_accuracy"] == pytest.approx(RunDir(run_dir).read_metrics()[-1].test_acc, abs=1e-12)  # what training recorded
    assert report["noisy_backend"] == "aer:fake_melbourne" and report["noisy_accuracy"] is not None
    assert report["head_circuits"] == 3 and report["head_two_qubit_gates"] == two_qubit_ops(head.circuit)
    assert report["circuits"] == 81 + 2 + 3 and report["per_patch_circuits"] == 3 * (16 + 1)
    assert any("exact state-preparation head" in note for note in report["notes"])
    assert "input gradient" not in (run_dir / "device" / submission_id / "report.md").read_text()
    return manifest, values, report


def test_head_cycle_submit_fetch_report(head_run, cli_home, capsys, monkeypatch):
    store, ledger_path = cli_home / "service", str(cli_home / "ledger.sqlite")
    args = ["jobs", "submit", str(head_run), "--backend", f"ibm:{HEAD_DEVICE}", "--ledger", ledger_path,
            "--shots", str(HEAD_OPTIONS.backend.shots), "--seed", str(HEAD_OPTIONS.backend.seed), "--resilience-level", "0",
            "--validate-patches", "2", "--max-two-qubit-gates", str(HEAD_OPTIONS.max_two_qubit_gates)]
    assert main(args + ["--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "head (3, at stage 2)" in dry and not FakeService(store).submissions()
    prompts = []
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or "y")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"send 1 job\(s\) now and 2 quantum-head job\(s\) when", prompts[0])  # the confirmation covers both
    jobs, circuits, shots, executions, gates, _ = map(int, COST_LINE.search(out).groups())
    head_jobs, head_circuits, head_executions, head_gates = map(int, HEAD_LINE.search(out).groups())
    assert COST_LINE.search(dry).groups() == COST_LINE.search(out).groups()
    submission_id = re.search(r"submission (\w+):", out).group(1)
    assert len(FakeService(store).submissions()) == 1  # stage 1 only
    assert main(["jobs", "list", "--ledger", ledger_path]) == 0
    assert re.search(rf"{submission_id}\s+run\s+ibm:{HEAD_DEVICE}\s+submitted\s+0/3 fetched", capsys.readouterr().out)

    assert main(["jobs", "fetch", submission_id, "--ledger", ledger_path]) == 0
    out = capsys.readouterr().out
    assert "stage 2: sent 2 quantum-head job(s)" in out and "quantum-head circuits" in out
    ledger = Ledger(ledger_path)
    assert ledger.submission(submission_id).status == "done"
    manifest, _, report = check_head(head_run, ledger, submission_id)

    # what the service received is what the cost said, per stage; no job over the two-qubit-gate bound
    log = FakeService(store).submissions()
    head_gates_per_circuit = two_qubit_ops(manifest.part("head").circuit)
    per_job = [sum(s * two_qubit_ops(manifest.ready_parts()[p].circuit) for s, (p, _, _) in zip(entry["sets"], job.slices))
               for entry, job in zip(log, ledger.jobs(submission_id))]
    assert [entry["tags"][0] for entry in log] == [job.tag for job in ledger.jobs(submission_id)]
    assert len(log) == jobs == 3 and head_jobs == 2
    assert sum(sum(entry["sets"]) for entry in log) == circuits == 81 + 2 + 3
    assert [entry["sets"] for entry in log[1:]] == [[2], [1]] and head_circuits == 3  # 2 x 1913 <= 4000 < 3 x 1913
    assert head_gates == 3 * head_gates_per_circuit and gates == sum(per_job)
    assert max(per_job) <= HEAD_OPTIONS.max_two_qubit_gates <= MAX_TWO_QUBIT_GATES_PER_JOB
    assert {entry["shots"] for entry in log} == {shots} == {HEAD_OPTIONS.backend.shots}
    assert executions == circuits * shots and head_executions == 3 * shots
    assert report["jobs"] == jobs and report["circuits"] == circuits and report["executions"] == executions
    assert main(["jobs", "list", "--ledger", ledger_path]) == 0
    assert re.search(rf"{submission_id}\s+run\s+ibm:{HEAD_DEVICE}\s+done\s+3/3 fetched", capsys.readouterr().out)
    assert main(args + ["--yes"]) == 2 and f"submitted already as {submission_id}" in capsys.readouterr().err


def test_head_split_under_the_default_limit_on_fake_torino(head_run, home):
    """fake_torino's transpiled head (~2500-3200 CNOTs): 3 per job under 10,000; counted at submit, nothing sent.

    Local testing mode simulates every qubit up to the highest used, so the filter is pinned to
    qubits 0-3 and the head goes to the lowest-index connected qubits (0-9 here).
    """
    prepared = prepare(head_run, "local:fake_torino", SubmitOptions(BackendOptions(shots=100, initial_layout=(0, 1, 2, 3))))
    head = prepared.manifest.part("head")
    per_circuit = two_qubit_ops(head.circuit)
    fit = MAX_TWO_QUBIT_GATES_PER_JOB // per_circuit
    assert head.pending and head.planned == 3 and 2000 < per_circuit and fit == 3 and head.circuit.num_qubits == 10
    stage2 = prepared.cost.head_stage
    assert stage2.jobs == math.ceil(3 / fit) and stage2.circuits == 3 and stage2.two_qubit_gates == 3 * per_circuit
    assert prepared.cost.jobs == len(prepared.plan.jobs) + stage2.jobs
    assert prepared.cost.circuits == 81 + len(prepared.manifest.part("validation").inputs) + 3
    assert len(head.observables) == 2


@pytest.mark.parametrize("backend", ["ibm", "local"])
def test_sigkill_while_sending_stage_two_then_fetch_completes(head_run, home, backend):
    store, ledger_path = home / "service", home / "ledger.sqlite"
    crashed = subprocess.run([sys.executable, str(TESTS / "jobs_crash.py"), str(head_run), str(ledger_path), str(store),
                              backend, "head-mid-send"], capture_output=True, text=True, timeout=300)
    assert crashed.returncode == -9, crashed.stderr
    ledger = Ledger(ledger_path)
    (record,) = ledger.submissions()
    jobs = ledger.jobs(record.id)
    # stage 1 in, stage 2 recorded before anything was sent; its first job accepted, but its id never written
    assert record.status == "submitting" and len(jobs) == 3 and jobs[0].result is not None
    assert [(job.status, job.job_id) for job in jobs[1:]] == [("pending", None)] * 2
    assert not Manifest.from_json(record.manifest).part("head").pending
    transport = fake_transport(store, HEAD_OPTIONS, device=HEAD_DEVICE) if backend == "ibm" else None
    if backend == "ibm":
        assert [entry["tags"][0] for entry in FakeService(store).submissions()] == [jobs[0].tag, jobs[1].tag]
        again = prepare(head_run, f"ibm:{HEAD_DEVICE}", HEAD_OPTIONS, transport=transport)
        assert again.manifest.digest == record.digest
        with pytest.raises(DuplicateSubmissionError):
            submit(again, ledger)

    outcome = fetch(ledger, record.id, transport=transport)
    assert (outcome.status, outcome.done, outcome.failed, outcome.waiting) == ("done", 3, 0, 0)
    jobs = ledger.jobs(record.id)
    assert [job.status for job in jobs] == ["DONE"] * 3 and len({job.job_id for job in jobs}) == 3
    assert sorted(job.slices for job in jobs[1:]) == [((2, 0, 2),), ((2, 2, 3),)]  # each head row in exactly one job
    if backend == "ibm":  # the service saw every job once: the accepted one was adopted by its tag, not sent again
        log = FakeService(store).submissions()
        assert sorted(entry["tags"][0] for entry in log) == sorted(job.tag for job in jobs)
        assert {entry["tags"][0]: entry["job_id"] for entry in log} == {job.tag: job.job_id for job in jobs}
        assert sum(sum(entry["sets"]) for entry in log) == 81 + 2 + 3
    # local testing mode has no service to find the killed process's job by: it runs again (nothing is charged)
    check_head(head_run, ledger, record.id, readout_only=backend == "ibm")


def test_cancel_before_stage_two_drops_it(head_run, cli_home, capsys):
    store, ledger_path = cli_home / "service", str(cli_home / "ledger.sqlite")
    FakeService(store).set_faults(polls=100)  # stage 1 stays queued
    args = ["--ledger", ledger_path]
    assert main(["jobs", "submit", str(head_run), "--backend", f"ibm:{HEAD_DEVICE}", "--yes", "--validate-patches", "2",
                 "--shots", "100", *args]) == 0
    submission_id = re.search(r"submission (\w+):", capsys.readouterr().out).group(1)
    assert main(["jobs", "status", submission_id, *args]) == 0
    assert "stage 2 (1 quantum-head job(s)) is sent by `qresnet jobs fetch" in capsys.readouterr().out
    assert main(["jobs", "cancel", submission_id, *args]) == 0
    out = capsys.readouterr().out
    assert ": cancelled" in out and "stage 2 (1 quantum-head job(s), not built yet): will not be sent" in out
    assert main(["jobs", "fetch", submission_id, *args]) == 0
    ledger = Ledger(ledger_path)
    assert ledger.submission(submission_id).status == "cancelled" and len(ledger.jobs(submission_id)) == 1
    assert len(FakeService(store).submissions()) == 1 and Manifest.from_json(ledger.submission(submission_id).manifest).part("head").pending
