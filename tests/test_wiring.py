"""Issue 26's wiring: the filter, dataset and image-size flags train; today's runs keep their identity; Q6 (does the
quantum layer beat a classical layer of its size?) is decided by the Q3 rule; bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from qiskit import QuantumCircuit, qpy
from qiskit.circuit import ParameterVector

from qresnet import cli
from qresnet.circuits import FilterSpec
from qresnet.config import TrainConfig
from qresnet.run.result import EpochMetrics, RunResult
from qresnet.run.rundir import RunDir
from qresnet.study import evidence as ev
from qresnet.study.report import Runs, assess
from qresnet.study.sweep import SweepConfig
from tests.test_design_data import write_idx

TINY = ["--classes", "0,1", "--per-class", "6", "--epochs", "1", "--batch-size", "8"]
# TrainConfig's identity keys before issue 26 (written out here, not read from the code under test)
KEYS_BEFORE = {"dataset", "classes", "per_class", "test_fraction", "layers", "residual", "head", "head_scale",
               "head_encoding_noise", "head_noise_samples", "mode", "input_gradients", "frozen", "backend",
               "backend_options", "batch_size", "lr", "seed", "torch_threads"}


def write_circuit(path: Path, double_input: bool = False) -> Path:
    """A 2x2 filter of one's own: RY(x[i]) (and RX(x[i]) too, breaking the response condition), RZ(w), CNOTs."""
    x, w = ParameterVector("x", 4), ParameterVector("w", 4)
    qc = QuantumCircuit(4)
    for q in range(4):
        qc.ry(x[q], q)
        if double_input:
            qc.rx(x[q], q)
        qc.rz(w[q], q)
    for q in range(3):
        qc.cx(q, q + 1)
    with path.open("wb") as handle:
        qpy.dump(qc, handle)
    return path


def write_datasets(root: Path, rng: np.random.Generator) -> tuple[str, str]:
    """An npz of 10x10 uint8 images and an IDX directory of 9x9 ones, labels 0-2."""
    x = rng.integers(0, 256, (60, 10, 10), dtype=np.uint8)
    y = np.tile(np.arange(3), 20)
    np.savez(root / "data.npz", x_train=x[:45], y_train=y[:45], x_test=x[45:], y_test=y[45:])
    (root / "idx").mkdir()
    xi = rng.integers(0, 256, (60, 9, 9), dtype=np.uint8)
    for name, array in [("train-images-idx3-ubyte", xi[:45]), ("train-labels-idx1-ubyte", y[:45].astype(np.uint8)),
                        ("t10k-images-idx3-ubyte", xi[45:]), ("t10k-labels-idx1-ubyte", y[45:].astype(np.uint8))]:
        write_idx(root / "idx" / name, array)
    return f"npz:{root / 'data.npz'}", f"idx:{root / 'idx'}"


COMBINATIONS = {
    "3x3 stride 2, 1 rep (auto: per-patch)": ["--kernel-size", "3", "--stride", "2", "--filter-reps", "1"],
    "per-qubit, 2 filters, ring": ["--readout", "per-qubit", "--filters-per-layer", "2", "--entanglement", "ring"],
    "random ansatz, RY(x)": ["--ansatz", "random", "--ansatz-seed", "3", "--encoding", "ry"],
    "classical control of strongly entangling, RX(pi x)": ["--ansatz", "strongly_entangling", "--encoding", "rx_pi",
                                                           "--filter", "classical"],
    "strongly entangling, RX(pi x)": ["--ansatz", "strongly_entangling", "--encoding", "rx_pi"],
    "full entanglement": ["--entanglement", "full"],
    "3x3 at stride 3 (its default)": ["--kernel-size", "3"],
    "own circuit, two observables": ["--filter-circuit", "{f}", "--filter-observables", "ZIII,IIIZ"],
    "own circuit breaking the response condition": ["--filter-circuit", "{g}", "--mode", "response"],
    "npz resized to 6": ["--dataset", "{npz}", "--image-size", "6", "--classes", "0,1,2"],
    "idx": ["--dataset", "{idx}", "--classes", "0,1,2"],
}


@pytest.mark.parametrize("name", COMBINATIONS)
def test_every_new_flag_trains_on_aer(name, tmp_path, rng, capsys):
    files = {"f": write_circuit(tmp_path / "f.qpy"), "g": write_circuit(tmp_path / "g.qpy", double_input=True)}
    files["npz"], files["idx"] = write_datasets(tmp_path, rng)
    flags = [flag.format(**files) for flag in COMBINATIONS[name]]
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, *flags, "--out", str(out)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    record = json.loads((out / "config.json").read_text())
    config = TrainConfig.from_dict(record["config"])
    assert len(RunDir(out).read_metrics()) == 1
    if config.filter == "classical":
        assert "classical control" in printed and RunDir(out).read_result().gradient == "autograd"
    elif config.quanv != FilterSpec():  # the filter and its cost were said before the run, mode and why
        assert "filter mode" in printed and "circuits per step" in printed
    if "--kernel-size" in flags:
        stride, reps = (2, 1) if "--stride" in flags else (3, 2)  # the stride defaults to the kernel's size
        assert (config.quanv.kernel_size, config.quanv.stride, config.quanv.reps) == (3, stride, reps)
        assert "filter mode per-patch (auto, fewer rows)" in printed  # 2 x 3^9 design points vs 8 images' windows
    if "{g}" in COMBINATIONS[name]:
        assert "the response condition fails" in printed
    if "--image-size" in flags:
        assert record["data"]["source"].endswith("resized to 6x6")
    if "--dataset" in flags:
        assert config.dataset == files["npz" if "npz" in name else "idx"]


def test_the_default_filter_keeps_todays_identity(tmp_path):
    today = TrainConfig()
    assert set(today.identity("d")["config"]) == KEYS_BEFORE
    before = {k: v for k, v in today.to_dict().items() if k in KEYS_BEFORE | {"epochs", "max_steps", "keep_checkpoints",
                                                                                "data_dir"}}
    assert TrainConfig.from_dict(before).identity("d") == today.identity("d")
    # a run whose config.json was written before the new keys existed still resumes
    out = tmp_path / "run"
    args = ["train", *TINY, "--out", str(out)]
    assert cli.main(args) == 0
    record = json.loads((out / "config.json").read_text())
    record["config"] = {k: v for k, v in record["config"].items() if k in before}
    (out / "config.json").write_text(json.dumps(record))
    assert cli.main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    assert len(RunDir(out).read_metrics()) == 2
    # any other filter is part of the identity, and a circuit file by its content
    assert TrainConfig(quanv={"kernel_size": 3}).identity("d") != today.identity("d")
    path = write_circuit(tmp_path / "f.qpy")
    first = TrainConfig(quanv={"circuit_path": str(path)}).identity("d")
    write_circuit(path, double_input=True)
    second = TrainConfig(quanv={"circuit_path": str(path)}).identity("d")
    assert first["config"] == second["config"] and first["filter_circuit_sha256"] != second["filter_circuit_sha256"]
    moved = path.rename(tmp_path / "moved.qpy")  # where the file lives is no part of the identity
    assert TrainConfig(quanv={"circuit_path": str(moved)}).identity("d") == second
    assert TrainConfig(filter="classical").identity("d")["config"]["filter"] == "classical"


def test_old_sweeps_and_run_directories_keep_their_names(tmp_path):
    sweep = SweepConfig.from_preset("quick", backends=("aer",), configs="O1+O2", seeds=(0,),
                                    filters=("quantum", "classical"))
    dirs = [str(p.directory(Path("S"))) for p in sweep.runs()]
    assert dirs[:2] == ["S/runs/aer/O1_O2-trainable-seed0", "S/runs/aer/O1_O2-frozen-seed0"]
    assert dirs[2:] == ["S/runs/aer/O1_O2-trainable-classical-seed0", "S/runs/aer/O1_O2-frozen-classical-seed0"]
    written = sweep.to_dict()
    for key in ("filters", "quanv", "image_size"):  # a sweep.json of an earlier version
        del written[key]
    earlier = SweepConfig.from_dict(written)
    assert earlier.filters == ("quantum",) and earlier.quanv == FilterSpec() and earlier.image_size is None
    assert [p.config for p in earlier.runs()] == [p.config for p in sweep.runs()[:2]]
    # a sweep's filter and image size reach every run
    wide = SweepConfig.from_preset("quick", backends=("aer",), configs="O1+O2", seeds=(0,), image_size=9,
                                   quanv={"kernel_size": 3, "readout": "per-qubit"})
    assert {(p.config.quanv.kernel_size, p.config.quanv.readout, p.config.image_size) for p in wide.runs()} == {
        (3, "per-qubit", 9)}
    assert SweepConfig.from_dict(wide.to_dict()) == wide


def _row(accuracy: float, seed: int, frozen: bool = False, kind: str = "quantum") -> RunResult:
    metrics = (EpochMetrics(1, 0.5, accuracy, 0.5, accuracy, 1.0, (0.1, 0.1), 0.1),)
    return RunResult("aer", "linear", "O1+O2", frozen, seed, 1, metrics, 40, 100, "engine-exact", "r", 1.0,
                     filter=kind)


@pytest.mark.parametrize("quantum, classical, verdict", [
    ([0.90, 0.88, 0.91, 0.89], [0.80, 0.79, 0.82, 0.80], ev.YES),  # the quantum layer ahead in every seed
    ([0.800, 0.801, 0.799, 0.800], [0.800, 0.800, 0.800, 0.801], ev.NO),  # a gain of 2 points ruled out
    ([0.9, 0.5, 0.8], [0.6, 0.7, 0.5], ev.INCONCLUSIVE),
])
def test_q6_is_decided_by_the_paired_rule(quantum, classical, verdict):
    rows = [_row(a, s) for s, a in enumerate(quantum)] + [_row(a, s, kind="classical") for s, a in enumerate(classical)]
    rows += [_row(0.5, s, frozen=True) for s in range(len(quantum))]
    sweep = SweepConfig.from_preset("quick", backends=("aer",), configs="O1+O2", seeds=tuple(range(len(quantum))),
                                    filters=("quantum", "classical"))
    assessed = assess(Runs(rows), sweep)
    item = assessed["aer"]["O1+O2"]
    assert item["verdicts"]["Q6 beats a classical layer of its size"] == verdict
    difference = np.subtract(quantum, classical)
    assert item["numbers"]["quantum_minus_classical"]["mean"] == pytest.approx(difference.mean(), abs=1e-12)
    assert item["numbers"]["classical_command"] is None
    assert assessed["aer, classical control"]["O1+O2"]["verdicts"]["Q6 beats a classical layer of its size"] == "-"


def test_q6_is_not_tested_without_a_classical_control():
    rows = [_row(0.9, s) for s in range(3)] + [_row(0.5, s, frozen=True) for s in range(3)]
    sweep = SweepConfig.from_preset("quick", backends=("aer",), configs="O1+O2", seeds=(0, 1, 2))
    item = assess(Runs(rows), sweep)["aer"]["O1+O2"]
    assert item["verdicts"]["Q6 beats a classical layer of its size"] == ev.NOT_TESTED
    assert "--filters quantum,classical" in item["numbers"]["classical_command"]


@pytest.mark.parametrize("flags, match", [
    (["--kernel-size", "9"], "kernel 9x9 is larger than the 8-pixel side"),
    (["--filter-circuit", "{f}", "--kernel-size", "3"], "has 4 inputs x\\[i\\]; a 3 x 3 filter needs 9"),
    (["--filter-circuit", "{f}", "--filter-observables", "ZII"], "observable 'ZII' acts on 3 qubits; the circuit has 4"),
    (["--filter-circuit", "{bare}"], "no inputs named x\\[i\\]"),
    (["--dataset", "npz:{npz}"], "lacks y_train, x_test, y_test"),
    (["--dataset", "npz:{negative}"], "y_train holds label -1; labels must be integers >= 0"),
    (["--dataset", "csv:x"], "dataset='csv:x' is unknown: use one of digits, mnist, npz:PATH or idx:DIR"),
    (["--filter-observables", "ZIII"], "observables apply to your own circuit"),
])
@pytest.mark.parametrize("command", ["train", "compare"])
def test_bad_input_is_one_line(command, flags, match, tmp_path, capsys):
    import re

    f = write_circuit(tmp_path / "f.qpy")
    bare = tmp_path / "bare.qpy"
    with bare.open("wb") as handle:
        qc = QuantumCircuit(4)
        qc.rx(ParameterVector("theta", 1)[0], 0)
        qpy.dump(qc, handle)
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((4, 8, 8), np.uint8))
    np.savez(tmp_path / "negative.npz", x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([0, 1, -1, 0]),
             x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.array([0, 1]))
    args = [a.format(f=f, bare=bare, npz=tmp_path / "bad.npz", negative=tmp_path / "negative.npz") for a in flags]
    # a sweep refuses before its first run, in the same one line, not once per run
    extra = ["--backends", "aer", "--configs", "none", "--seeds", "0,1"] if command == "compare" else []
    assert cli.main([command, *TINY, *extra, *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err), err


# --- issue 25's comparison parts: noisy backends in a sweep, robustness.png, drift ------------------------------

def test_noise_families_and_the_robustness_figure(tmp_path):
    from qresnet.study.report_figures import noise_families, robustness_figure

    backends = ["aer", "noise:depolarizing:0.1", "noise:depolarizing:0.5", "aer:fake_manila@2", "noise:bit_flip:0.2"]
    rows = [dataclasses_replace(_row(0.9 - 0.1 * i, s), backend=b) for i, b in enumerate(backends) for s in range(3)]
    families = noise_families(Runs(rows))
    levels = {key[0]: [(level, setting.backend) for level, setting in value.items()] for key, value in families.items()}
    assert levels == {"noise:depolarizing": [(0.0, "aer"), (0.1, "noise:depolarizing:0.1"), (0.5, "noise:depolarizing:0.5")],
                      "aer:fake_manila": [(0.0, "aer"), (2.0, "aer:fake_manila@2")],
                      "noise:bit_flip": [(0.0, "aer"), (0.2, "noise:bit_flip:0.2")]}
    assert robustness_figure(Runs(rows), tmp_path) and (tmp_path / "robustness.png").stat().st_size > 0
    assert not robustness_figure(Runs([_row(0.9, s) for s in range(3)]), tmp_path / "none")  # no noisy backend


def dataclasses_replace(row: RunResult, **changes) -> RunResult:
    import dataclasses

    return dataclasses.replace(row, **changes)


def test_a_noisy_sweep_with_drift(tmp_path, capsys):
    import torch

    from qresnet.backends import resolve_backend
    from qresnet.data import load_dataset
    from qresnet.run.build import build_model

    out = tmp_path / "S"
    assert cli.main(["compare", "--backends", "aer,noise:depolarizing:0.3", "--drift", "noise:bit_flip:0.2",
                     "--configs", "O1+O2", "--seeds", "0,1", "--classes", "0,1", "--per-class", "8", "--epochs", "1",
                     "--batch-size", "8", "--out", str(out)]) == 0, capsys.readouterr().err
    text = (out / "report.md").read_text()
    assert "## noise:depolarizing:0.3 minus aer (paired by seed)" in text
    assert "## Drift: every run's last checkpoint evaluated on noise:bit_flip:0.2" in text
    assert "![accuracy against noise level](robustness.png)" in text and (out / "robustness.png").stat().st_size > 0
    # one run's drift, by hand: its checkpoint on the other backend, the accuracy counted here
    run = RunDir(out / "runs" / "noise_depolarizing_0.3" / "O1_O2-trainable-seed1")
    written = json.loads((run.path / "evaluations" / "noise_bit_flip_0.2.json").read_text())
    config = TrainConfig.from_dict(run.read_config()["config"])
    data = load_dataset(config.data_config())
    state = torch.load(run.epoch_checkpoint(1), weights_only=False)["model"]
    by_hand, correct = {}, {}
    for spec in ("noise:depolarizing:0.3", "noise:bit_flip:0.2"):
        model = build_model(config, resolve_backend(spec, config.backend_options), data.image_shape, data.num_classes)
        model.load_state_dict(state)
        with torch.no_grad():
            correct[spec] = (model(data.x_test).argmax(1) == data.y_test).double().numpy()
        by_hand[spec] = float(correct[spec].mean())
    assert written["other_accuracy"] == by_hand["noise:bit_flip:0.2"]
    assert written["trained_accuracy"] == by_hand["noise:depolarizing:0.3"] == run.read_metrics()[0].test_acc
    # the change's interval, paired over the test images: scipy's paired t-test on each image's outcome
    other, trained = correct["noise:bit_flip:0.2"], correct["noise:depolarizing:0.3"]
    if (other != trained).any():
        low, high = stats.ttest_rel(other, trained).confidence_interval(0.95)
    else:
        low = high = 0.0
    assert written["change_interval"] == pytest.approx([low, high], abs=1e-12)
    assert cli.main(["evaluate", str(run.path), "--backend", "aer:fake_manila", "--checkpoint", "best"]) == 0
    assert "on aer:fake_manila: change" in capsys.readouterr().out
    assert (run.path / "evaluations" / "aer_fake_manila.json").is_file()


def test_bad_drift_and_evaluate_input_is_one_line(tmp_path, capsys):
    assert cli.main(["compare", "--drift", "noise:sparkle:0.1", "--out", str(tmp_path / "S")]) == 2
    assert "sparkle" in capsys.readouterr().err and not (tmp_path / "S").exists()
    assert cli.main(["evaluate", str(tmp_path), "--backend", "aer"]) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_a_sweep_of_another_filter_says_its_cost_first_and_checks_the_layout_against_it(tmp_path, capsys):
    """A 3x3 filter (9 qubits) trains on aer:fake_torino in a sweep, on the nine qubits it is given."""
    layout = ["--initial-layout", "0,1,2,3,4,5,6,7,8"]  # nine qubits: the 3x3 filter's, not today's four
    torino = ["--backends", "aer:fake_torino", "--configs", "none", "--seeds", "0"]
    assert cli.main(["compare", *TINY, "--kernel-size", "3", "--stride", "2", "--filter-reps", "1", *torino, *layout,
                     "--out", str(tmp_path / "S")]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "aer:fake_torino: filter mode per-patch (auto, fewer rows)" in printed and "circuits per step" in printed
    # the report counts the mode the runs took: 3x3 windows at stride 2 start at 0, 2, 4, 6 on an 8-pixel side
    # (16 windows), then at 0, 2 on the 4-pixel map (4); 8 images a batch; 2 x 9 weights at one repetition
    costs = json.loads((tmp_path / "S" / "results.json").read_text())["evidence"]["aer:fake_torino"]["none"]
    assert costs["numbers"]["costs"]["circuits_per_step"] == 8 * (16 + 4) * (1 + 2 * 18)
    assert cli.main(["compare", *TINY, *torino, *layout, "--out", str(tmp_path / "T")]) == 2
    assert "has 9 qubits, but this run's templates have 4" in capsys.readouterr().err
