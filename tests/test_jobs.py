"""The jobs layer without network: local testing mode on fake_manila, and a file-backed fake IBM service.

References are computed here, independently of qresnet.jobs: the response tensor and the
filter's multilinear form in numpy, the O1+O2 model forward in numpy from the checkpoint,
the run's own recorded test accuracy, per-patch simulation for the noisy model, and counts
taken from the PUBs the service received.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from jobs_fake import TOKEN, USAGE_S, FakeService, fake_transport
from qiskit_ibm_runtime import RuntimeDecoder
from qiskit_ibm_runtime.api.exceptions import RequestsApiError
from qiskit_ibm_runtime.exceptions import IBMNotAuthorizedError, RuntimeJobFailureError

from qresnet.backends import BackendOptions, fake_device, resolve_backend
from qresnet.data import load_dataset
from qresnet.jobs import (
    DuplicateSubmissionError,
    JobsError,
    Ledger,
    Manifest,
    Retry,
    RuntimeTransport,
    SubmitOptions,
    classify,
    fetch,
    prepare,
    submit,
)
from qresnet.cli.main import main
from qresnet.run.build import build_model
from qresnet.config import TrainConfig
from qresnet.run.rundir import RunDir
from qresnet.run.train import train


TESTS = Path(__file__).parent
RUN = dict(dataset="digits", classes=(0, 1), per_class=12, layers=2, residual="O1+O2", epochs=2, batch_size=8,
           lr=0.05, seed=2)
FAKE_OPTIONS = SubmitOptions(BackendOptions(shots=3000, seed=11, resilience_level=0), validate_patches=4, max_two_qubit_gates=400)
COST_LINE = re.compile(r"cost: (\d+) jobs?, (\d+) circuits x (\d+) shots = (\d+) executions, (\d+) two-qubit gates, "
                       r"about (\d+) s of QPU time")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs") / "run"
    train(TrainConfig(**RUN), out, progress=False)
    return out


# --- independent references -------------------------------------------------------------------------------------

A = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, -1.0]])  # rows v(0), v(pi/2), v(pi), v = (1, sin, cos)


def ref_tensor(values):
    t = np.asarray(values, dtype=float).reshape(3, 3, 3, 3)
    for axis in range(4):
        t = np.moveaxis(np.tensordot(np.linalg.inv(A), t, axes=([1], [axis])), 0, axis)
    return t


def ref_filter(t, patches):
    theta = np.pi * np.asarray(patches, dtype=float)
    v = np.stack([np.ones_like(theta), np.sin(theta), np.cos(theta)], axis=-1)  # (..., 4, 3)
    return np.einsum("abcd,...a,...b,...c,...d->...", t, v[..., 0, :], v[..., 1, :], v[..., 2, :], v[..., 3, :])


def ref_patches(maps):
    n, h, w = maps.shape
    padded = np.zeros((n, h + h % 2, w + w % 2))
    padded[:, :h, :w] = maps
    n, h, w = padded.shape
    return padded.reshape(n, h // 2, 2, w // 2, 2).transpose(0, 1, 3, 2, 4).reshape(n, h // 2, w // 2, 4)


def ref_predictions(run_dir, layer_values):
    """O1+O2 in numpy: h1 = O1, h2 = O2 (zero-padded bottom-right) + h1, logits = W h2 + b."""
    config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())["config"])
    assert config.residual.notation == "O1+O2"
    state = _last_checkpoint(run_dir)["model"]
    x = load_dataset(config.data_config()).x_test.numpy()
    o1 = ref_filter(ref_tensor(layer_values[0]), ref_patches(x))
    o2 = ref_filter(ref_tensor(layer_values[1]), ref_patches(o1))
    h2 = o1.copy()
    h2[:, :o2.shape[1], :o2.shape[2]] += o2
    logits = h2.reshape(len(x), -1) @ state["head.weight"].numpy().T + state["head.bias"].numpy()
    return logits.argmax(1)


def _last_checkpoint(run_dir):
    return torch.load(sorted((run_dir / "checkpoints").glob("epoch_*.pt"))[-1], weights_only=False)


def ledger_values(ledger, submission_id):
    """Each PUB's device values, put together here from the jobs' stored results and PUB slices."""
    record = ledger.submission(submission_id)
    names = [part.name for part in Manifest.from_json(record.manifest).parts]
    pieces = {p: [] for p in range(len(names))}
    for job in ledger.jobs(submission_id):
        result = json.loads(job.result, cls=RuntimeDecoder)
        assert len(result) == len(job.slices)
        for (p, start, stop), pub_result in zip(job.slices, result):  # one observable: one value per parameter set
            evs, stds = np.ravel(pub_result.data.evs), np.ravel(pub_result.data.stds)
            assert len(evs) == stop - start
            pieces[p].append((start, evs, stds))
    values, stds = {}, {}
    for p, name in enumerate(names):
        chunks = sorted(pieces[p], key=lambda c: c[0])
        values[name] = np.concatenate([c[1] for c in chunks])
        stds[name] = np.concatenate([c[2] for c in chunks])
    return values, stds


def check_report(run_dir, ledger, submission_id, noisy_accuracy=None):
    """The written report against the references; returns it."""
    report = json.loads((run_dir / "device" / submission_id / "report.json").read_text())
    values, _ = ledger_values(ledger, submission_id)
    assert len(values["layer1"]) == len(values["layer2"]) == 81
    predictions = ref_predictions(run_dir, [values["layer1"], values["layer2"]])
    y_test = load_dataset(TrainConfig(**RUN).data_config()).y_test.numpy()
    assert report["device_predictions"] == predictions.tolist()
    assert report["device_accuracy"] == pytest.approx(float(np.mean(predictions == y_test)), abs=1e-12)
    assert report["ideal_accuracy"] == pytest.approx(RunDir(run_dir).read_metrics()[-1].test_acc, abs=1e-12)  # what training recorded
    if noisy_accuracy is not None:
        assert report["noisy_backend"] == "aer:fake_manila"
        assert report["noisy_accuracy"] == pytest.approx(noisy_accuracy, abs=1e-12)
    patches = Manifest.from_json(ledger.submission(submission_id).manifest).part("validation").inputs
    gap = np.abs(ref_filter(ref_tensor(values["layer1"]), patches) - values["validation"])
    assert report["validation_patches"] == len(patches)
    assert report["validation_max_abs"] == pytest.approx(gap.max(), abs=1e-12)
    assert report["validation_mean_abs"] == pytest.approx(gap.mean(), abs=1e-12)
    assert report["per_patch_circuits"] == len(y_test) * (16 + 4)  # 8x8 -> 4x4 patches, then 4x4 -> 2x2
    return report


def noisy_per_patch_accuracy(run_dir):
    """The checkpoint on aer:fake_manila, every patch its own circuit (no response tensor)."""
    config = TrainConfig(**{**RUN, "mode": "per-patch"})
    data = load_dataset(config.data_config())
    model = build_model(config, resolve_backend("aer:fake_manila"), data.image_shape, data.num_classes)
    _, unexpected = model.load_state_dict(_last_checkpoint(run_dir)["model"], strict=False)
    assert all(key.endswith("design_inputs") for key in unexpected)
    with torch.no_grad():
        return float((model(data.x_test).argmax(1) == data.y_test).double().mean())


def exact_design_values(run_dir):
    """Exact noisy values (readout folded in) of each layer's 81 design points on aer:fake_manila."""
    config = TrainConfig(**RUN)
    data = load_dataset(config.data_config())
    model = build_model(config, resolve_backend("aer:fake_manila"), data.image_shape, data.num_classes)
    model.load_state_dict(_last_checkpoint(run_dir)["model"])
    with torch.no_grad():
        return [layer.connector(layer.design_inputs)[:, 0].numpy() for layer in model.layers]


def scheduled_duration(circuit, target):
    """Seconds from the first gate to the last, each gate starting when all its qubits are free."""
    free = {}
    for inst in circuit.data:
        qubits = [circuit.find_bit(q).index for q in inst.qubits]
        start = max((free.get(q, 0.0) for q in qubits), default=0.0)
        for q in qubits:
            free[q] = start + (target[inst.operation.name][tuple(qubits)].duration or 0.0)
    return max(free.values())


def two_qubit_ops(circuit):
    return sum(1 for inst in circuit.data if len(inst.qubits) == 2)


# --- the whole cycle in local testing mode ----------------------------------------------------------------------

def test_local_cycle_submit_list_status_fetch_report(run_dir, home, capsys, monkeypatch):
    sent = []
    original = RuntimeTransport.send

    def spy(self, pubs, tag):
        sent.append(list(pubs))
        return original(self, pubs, tag)

    monkeypatch.setattr(RuntimeTransport, "send", spy)
    ledger_path = str(home / "ledger.sqlite")
    submit_args = ["jobs", "submit", str(run_dir), "--backend", "local:fake_manila", "--shots", "2000", "--seed", "5",
                   "--resilience-level", "0", "--validate-patches", "6", "--ledger", ledger_path]

    assert main(submit_args + ["--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "dry run: nothing was sent" in dry and not sent
    assert main(["jobs", "list", "--ledger", ledger_path]) == 0
    assert "no submissions" in capsys.readouterr().out

    assert main(submit_args + ["--yes"]) == 0
    out = capsys.readouterr().out
    jobs, circuits, shots, executions, gates, _ = map(int, COST_LINE.search(out).groups())
    assert COST_LINE.search(dry).groups() == COST_LINE.search(out).groups()
    submission_id = re.search(r"submission (\w+):", out).group(1)
    # the cost equals what was sent: one job of three PUBs (81 + 81 + 6 rows)
    assert len(sent) == jobs == 1
    assert [pub.size for pub in sent[0]] == [81, 81, 6] and circuits == 81 + 81 + 6
    assert gates == sum(pub.size * two_qubit_ops(pub.circuit) for pub in sent[0])
    with Ledger(ledger_path) as ledger:
        result = json.loads(ledger.jobs(submission_id)[0].result, cls=RuntimeDecoder)
    assert [r.metadata["executor"]["shots"] for r in result] == [shots] * 3 and shots == 2000
    assert executions == circuits * shots

    assert main(["jobs", "list", "--ledger", ledger_path]) == 0
    listed = capsys.readouterr().out
    assert re.search(rf"{submission_id}\s+run\s+local:fake_manila\s+submitted\s+1/1 fetched", listed)
    assert main(["jobs", "status", submission_id, "--ledger", ledger_path]) == 0
    assert re.search(r"\b0\s+\S+\s+DONE\s+fetched", capsys.readouterr().out)

    assert main(["jobs", "fetch", submission_id, "--ledger", ledger_path]) == 0
    out = capsys.readouterr().out
    assert "# Device evaluation" in out and f"device/{submission_id}/report.md" in out
    with Ledger(ledger_path) as ledger:
        report = check_report(run_dir, ledger, submission_id, noisy_accuracy=noisy_per_patch_accuracy(run_dir))
        values, stds = ledger_values(ledger, submission_id)
        assert ledger.submission(submission_id).status == "done"
    assert report["shots"] == 2000 and report["circuits"] == circuits and report["qpu_seconds_used"] == 0
    # the device values are fake_manila's noisy values with shot noise: within 5 standard errors of the exact ones
    for name, exact in zip(("layer1", "layer2"), exact_design_values(run_dir)):
        assert np.all(np.abs(values[name] - exact) <= 5 * stds[name] + 1e-9), name
    assert main(["jobs", "list", "--ledger", ledger_path]) == 0
    assert re.search(rf"{submission_id}\s+run\s+local:fake_manila\s+done", capsys.readouterr().out)
    assert main(submit_args + ["--yes"]) == 2  # the same manifest again
    assert f"submitted already as {submission_id}" in capsys.readouterr().err and len(sent) == 1


def test_confirmation_and_clear_errors(run_dir, home, capsys, monkeypatch):
    ledger_path = str(home / "ledger.sqlite")
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["jobs", "submit", str(run_dir), "--backend", "local:fake_manila", "--ledger", ledger_path]) == 1
    assert "nothing was sent" in capsys.readouterr().out
    assert Ledger(ledger_path).submissions() == []
    for argv, message in [
        (["submit", str(run_dir), "--backend", "aer:fake_manila", "--yes"], "jobs run on local:<fake device> or ibm:<device>"),
        (["submit", str(home / "nowhere"), "--backend", "local:fake_manila"], "has no config.json"),
        (["fetch", "abc"], "no submission"),
        (["fetch"], "give a submission id or --all"),
        (["cancel", "abc"], "no submission"),
    ]:
        assert main(["jobs", *argv, "--ledger", ledger_path]) == 2, argv
        assert message in capsys.readouterr().err
    quantum = home / "quantum-run"
    (quantum / "checkpoints").mkdir(parents=True)
    config = json.loads((run_dir / "config.json").read_text())
    config["config"]["head"] = "quantum"
    (quantum / "config.json").write_text(json.dumps(config))
    assert main(["jobs", "submit", str(quantum), "--backend", "local:fake_manila", "--ledger", ledger_path]) == 2
    assert "has no checkpoint under checkpoints/" in capsys.readouterr().err  # a quantum head is evaluated too


# --- IBM Quantum through the fake service -----------------------------------------------------------------------

def test_duplicate_manifest_and_cost_from_sent_pubs(run_dir, home):
    store = home / "service"
    ledger = Ledger(home / "ledger.sqlite")
    prepared = prepare(run_dir, "ibm:ibm_fake_manila", FAKE_OPTIONS, transport=fake_transport(store, FAKE_OPTIONS))
    first = submit(prepared, ledger)
    again = prepare(run_dir, "ibm:ibm_fake_manila", FAKE_OPTIONS, transport=fake_transport(store, FAKE_OPTIONS))
    assert again.manifest.digest == prepared.manifest.digest  # rebuilt from the run, same hash
    with pytest.raises(DuplicateSubmissionError, match=f"submitted already as {first}.*--force"):
        submit(again, ledger)
    log = FakeService(store).submissions()
    cost = prepared.cost
    assert len(log) == cost.jobs == 3  # 81 + 81 + 4 rows at 6 CNOTs each: 400 two-qubit gates per job fit 66 rows
    assert sum(sum(entry["rows"]) for entry in log) == cost.circuits == 81 + 81 + 4
    assert {entry["shots"] for entry in log} == {cost.shots} == {3000} and cost.executions == cost.circuits * 3000
    circuit = prepared.manifest.parts[0].circuit
    assert cost.two_qubit_gates == cost.circuits * two_qubit_ops(circuit)
    # QPU time: per circuit, shots x (repetition delay + the circuit's duration on the target), plus 2 s per job
    device = fake_device("fake_manila")
    assert cost.qpu_seconds == pytest.approx(
        3 * 2.0 + cost.executions * (device.configuration().default_rep_delay + scheduled_duration(circuit, device.target)),
        rel=1e-9)
    other = prepare(run_dir, "ibm:ibm_fake_manila", FAKE_OPTIONS.with_backend(shots=2500),
                    transport=fake_transport(store, FAKE_OPTIONS))
    assert other.manifest.digest != prepared.manifest.digest
    forced = submit(again, ledger, force=True)
    assert forced != first and len(FakeService(store).submissions()) == 6


def test_a_refused_job_stays_in_the_ledger_for_the_next_command(run_dir, home, capsys):
    store = home / "service"
    service = FakeService(store, token=TOKEN)
    ledger = Ledger(home / "ledger.sqlite")
    service.set_faults(reject=1)
    prepared = prepare(run_dir, "ibm:ibm_fake_manila", FAKE_OPTIONS, transport=fake_transport(store, FAKE_OPTIONS, token=TOKEN))
    with pytest.raises(JobsError, match="sending job 0 of submission .* failed .*400 Client Error.*jobs fetch") as info:
        submit(prepared, ledger)
    assert TOKEN not in str(info.value) and service.submissions() == []
    (record,) = ledger.submissions()
    assert record.status == "submitting" and [job.status for job in ledger.jobs(record.id)] == ["pending"] * 3
    outcome = fetch(ledger, record.id, transport=fake_transport(store, FAKE_OPTIONS))
    assert outcome.status == "done" and "sent 3 job(s)" in outcome.notes[0] and len(service.submissions()) == 3


def test_fake_service_transient_errors_failed_job_and_expired_token(run_dir, home, capsys):
    store = home / "service"
    service = FakeService(store, token=TOKEN)
    ledger_path = home / "ledger.sqlite"
    ledger = Ledger(ledger_path)
    transport = fake_transport(store, FAKE_OPTIONS, token=TOKEN)
    first = submit(prepare(run_dir, "ibm:ibm_fake_manila", FAKE_OPTIONS, transport=transport), ledger)
    tags = [job.tag for job in ledger.jobs(first)]
    assert [job.status for job in ledger.jobs(first)] == ["QUEUED"] * 3

    # three connection resets, then job 1 fails on the device: retried with backoff, the failure recorded, the rest kept
    service.set_faults(transient=3, fail=[tags[1]])
    delays = []
    outcome = fetch(ledger, first, transport=transport, retry=Retry(base_delay=1.0, sleep=delays.append))
    assert delays == [1.0, 2.0, 4.0]
    jobs = ledger.jobs(first)
    assert [job.status for job in jobs] == ["DONE", "ERROR", "DONE"]
    assert jobs[0].result is not None and jobs[1].result is None and jobs[2].result is not None
    assert "Error code 1517" in jobs[1].message and jobs[0].usage == USAGE_S
    assert (outcome.status, outcome.done, outcome.failed, outcome.waiting) == ("failed", 2, 1, 0)
    assert "--force" in ledger.submission(first).message
    for job in (jobs[0], jobs[2]):  # stored as the service returned them
        stored = json.loads(service.stored(job.job_id)["result"], cls=RuntimeDecoder)
        fetched = json.loads(job.result, cls=RuntimeDecoder)
        assert all(np.array_equal(a.data.evs, b.data.evs) for a, b in zip(stored, fetched))

    # an expired token stops fetch with what to do, records nothing, and never shows the token
    options = FAKE_OPTIONS.with_backend(shots=2500)
    second = submit(prepare(run_dir, "ibm:ibm_fake_manila", options, transport=fake_transport(store, options)), ledger)
    service.set_faults(expired=True)
    assert main(["jobs", "fetch", second, "--ledger", str(ledger_path)]) == 2
    captured = capsys.readouterr()
    assert "rejected the credentials" in captured.err and "QISKIT_IBM_TOKEN" in captured.err
    assert TOKEN not in captured.out + captured.err
    assert [(job.status, job.result) for job in ledger.jobs(second)] == [("QUEUED", None)] * 3

    # a new token: status --watch follows the jobs to the end, then fetch writes the report
    service.set_faults(polls=2)
    assert main(["jobs", "status", second, "--watch", "--interval", "0", "--ledger", str(ledger_path)]) == 0
    watched = capsys.readouterr().out
    assert watched.count(f"submission {second}:") == 3 and "QUEUED" in watched and "RUNNING" in watched
    assert [job.status for job in ledger.jobs(second)] == ["DONE"] * 3
    assert main(["jobs", "fetch", "--all", "--ledger", str(ledger_path)]) == 0
    out = capsys.readouterr().out
    assert f"{second}: done, 3 job(s) fetched" in out and first not in out  # a failed submission is final
    report = check_report(run_dir, ledger, second, noisy_accuracy=None)
    assert report["qpu_seconds_used"] == pytest.approx(3 * USAGE_S) and report["noisy_backend"] == "aer:fake_manila"

    # cancel: jobs still queued are cancelled on the service and in the ledger
    service.set_faults(polls=100)
    options = FAKE_OPTIONS.with_backend(shots=2000)
    third = submit(prepare(run_dir, "ibm:ibm_fake_manila", options, transport=fake_transport(store, options)), ledger)
    assert main(["jobs", "cancel", third[:6], "--ledger", str(ledger_path)]) == 0
    assert capsys.readouterr().out.count(": cancelled") == 3
    assert [job.status for job in ledger.jobs(third)] == ["CANCELLED"] * 3
    assert all(service.stored(job.job_id)["cancelled"] for job in ledger.jobs(third))
    assert ledger.submission(third).status == "cancelled"
    assert main(["jobs", "list", "--ledger", str(ledger_path)]) == 0
    listed = capsys.readouterr().out
    assert all(re.search(rf"{i}\s+run\s+ibm:ibm_fake_manila\s+{s}", listed)
               for i, s in ((first, "failed"), (second, "done"), (third, "cancelled")))

    # the token is nowhere: not in the ledger, its journal, the reports or anything printed
    files = [p for p in home.rglob("*") if p.is_file() and "service" not in p.parts]
    assert any(p.name == "ledger.sqlite" for p in files) and any(p.name == "report.json" for p in run_dir.rglob("*"))
    for path in files + [p for p in run_dir.rglob("*") if p.is_file()]:
        assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in watched + out + listed


@pytest.mark.parametrize("backend, when", [("ibm", "mid-send"), ("ibm", "after-submit"), ("local", "mid-send")])
def test_sigkill_after_submission_then_fetch_completes(run_dir, home, backend, when):
    store, ledger_path = home / "service", home / "ledger.sqlite"
    crashed = subprocess.run([sys.executable, str(TESTS / "jobs_crash.py"), str(run_dir), str(ledger_path), str(store),
                              backend, when], capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -9, crashed.stderr
    ledger = Ledger(ledger_path)
    (record,) = ledger.submissions()
    jobs = ledger.jobs(record.id)
    assert len(jobs) == 3
    if when == "mid-send":  # job 1 was accepted (ibm) or ran (local), but the process died before writing its id
        assert record.status == "submitting"
        assert jobs[0].job_id is not None and [job.status for job in jobs[1:]] == ["pending", "pending"]
    else:
        assert record.status == "submitted" and all(job.job_id for job in jobs)
    transport = fake_transport(store, FAKE_OPTIONS) if backend == "ibm" else None
    # the manifest rebuilt in this process has the hash the killed process recorded, so it is not sent again
    again = prepare(run_dir, f"{backend}:{'ibm_' if backend == 'ibm' else ''}fake_manila", FAKE_OPTIONS, transport=transport)
    assert again.manifest.digest == record.digest
    with pytest.raises(DuplicateSubmissionError):
        submit(again, ledger)

    outcome = fetch(ledger, record.id, transport=transport)
    assert (outcome.status, outcome.done, outcome.failed, outcome.waiting) == ("done", 3, 0, 0)
    jobs = ledger.jobs(record.id)
    values, _ = ledger_values(ledger, record.id)
    assert [len(values[name]) for name in ("layer1", "layer2", "validation")] == [81, 81, 4]
    if backend == "ibm":  # the service saw every job exactly once, and the ledger holds what it returned
        log = FakeService(store).submissions()
        assert sorted(entry["tags"][0] for entry in log) == sorted(job.tag for job in jobs)
        assert {entry["tags"][0]: entry["job_id"] for entry in log} == {job.tag: job.job_id for job in jobs}
        assert sum(sum(entry["rows"]) for entry in log) == 81 + 81 + 4
        for job in jobs:
            stored = json.loads(FakeService(store).stored(job.job_id)["result"], cls=RuntimeDecoder)
            fetched = json.loads(job.result, cls=RuntimeDecoder)
            assert all(np.array_equal(a.data.evs, b.data.evs) for a, b in zip(stored, fetched))
    check_report(run_dir, ledger, record.id)


def test_error_classes():
    assert classify(RequestsApiError("503 Server Error: Service Unavailable", status_code=503)) == "transient"
    assert classify(RequestsApiError("429 Too Many Requests", status_code=429)) == "transient"
    assert classify(ConnectionResetError(104, "Connection reset by peer")) == "transient"
    assert classify(RequestsApiError("401 Client Error: Unauthorized", status_code=401)) == "credentials"
    assert classify(IBMNotAuthorizedError("not authorised")) == "credentials"
    assert classify(RuntimeJobFailureError("Unable to retrieve job result. Error code 1517")) == "permanent"
    assert classify(ValueError("bad input")) == "permanent"
    with pytest.raises(ConnectionError):  # still down after the last attempt: the error itself, for the caller to note
        Retry(attempts=2, sleep=lambda s: None).call("poll", lambda: (_ for _ in ()).throw(ConnectionError("down")))
