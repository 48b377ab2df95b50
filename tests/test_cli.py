import json

from qresnet import cli


def test_backends_json_lists_devices(capsys):
    assert cli.main(["backends", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    devices = {d["name"]: d for d in data["fake_devices"]}
    assert devices["fake_manila"]["num_qubits"] == 5 and devices["fake_manila"]["two_qubit_gates"] == ["cx"]
    assert devices["fake_torino"]["num_qubits"] == 133 and devices["fake_torino"]["two_qubit_gates"] == ["cz"]
    assert devices["fake_brisbane"]["two_qubit_gates"] == ["ecr"]
    assert set(data["specs"]) == {"aer", "noise", "local", "ibm"}
    assert "aer:<fake device>@<s>" in data["specs"]["aer"] and "bit_flip" in data["specs"]["noise"]


def test_transpile_json_report(capsys):
    assert cli.main(["transpile", "--template", "quanv", "--backend", "aer:fake_manila", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"backend", "template", "depth", "two_qubit_gates", "ops", "layout", "estimated_fidelity"} <= set(report)
    assert report["backend"] == "aer:fake_manila"
    assert report["two_qubit_gates"] == report["ops"]["cx"] >= 6  # the two CNOT chains survive optimisation
    assert len(set(report["layout"])) == 4 and max(report["layout"]) < 5
    assert 0 < report["estimated_fidelity"] < 1


def test_transpile_table_and_errors(capsys):
    assert cli.main(["transpile", "--backend", "aer"]) == 0
    assert "two_qubit_gates" in capsys.readouterr().out
    assert cli.main(["transpile", "--backend", "aer:fake_nowhere"]) == 2
    assert "unknown fake device" in capsys.readouterr().err
    assert cli.main(["transpile", "--template", "head", "--backend", "aer:fake_manila"]) == 2
    assert "needs 10 qubits but aer:fake_manila has only 5" in capsys.readouterr().err
    assert cli.main(["transpile", "--backend", "aer:fake_manila", "--initial-layout", "a,b"]) == 2
    assert "--initial-layout" in capsys.readouterr().err


BAD_INPUTS = [
    (["train", "--lr", "-1"], "lr=-1.0 must be a positive number"),
    (["train", "--epochs", "0"], "epochs=0 must be a positive integer"),
    (["train", "--residual", "X+O"], "malformed residual spec"),
    (["train", "--classes", "a,b"], "--classes 'a,b' must be comma-separated labels"),
    (["train", "--backend", "gpu"], "unknown backend 'gpu'"),
    (["train", "--backend", "aer:fake_nowhere"], "unknown fake device"),
    (["train", "--shots", "0"], "shots=0 must be a positive integer"),
    (["train", "--backend", "aer", "--initial-layout", "0,1,2,3"], "--initial-layout needs a device"),
    (["train", "--backend", "aer:fake_manila", "--initial-layout", "0,1,2,9"], "names qubit 9, but aer:fake_manila has qubits 0-4"),
    (["train", "--backend", "aer:fake_manila", "--initial-layout", "0,1,1,2"], "uses qubit(s) 1 more than once"),
    (["train", "--resume", "no/such/run"], "no config.json there"),
    (["train", "--config", "no/such.toml"], "cannot read config"),
    (["train", "--dataset", "mnist", "--data-dir", "no/such/dir"], "no/such/dir"),
    (["compare", "--head", "cnn"], "unknown head 'cnn'"),
    (["compare", "--configs", "O3+O4"], "names layer 4, but the model has 2 layers"),
    (["grads", "--backend", "local:fake_manila", "--initial-layout", "x"], "--initial-layout 'x'"),
    (["transpile", "--backend", "aer:fake_manila", "--initial-layout", "0,1"], "--initial-layout has 2 qubits"),
    (["jobs", "submit", "no/such/run", "--backend", "local:fake_manila", "--ledger", "l.sqlite"], "no/such/run has no config.json"),
    (["train", "--preset", "x"], "unrecognized arguments"),
    (["train", "--seed", "-1"], "seed=-1 must be a non-negative integer"),
    (["train", "--keep-checkpoints", "0"], "keep_checkpoints=0 must be a positive integer"),
    (["compare", "--jobs", "0"], "--jobs=0 must be a positive integer"),
    (["compare", "--seeds", "0,0"], "--seeds '0,0' names a seed twice"),
    (["reproduce", "--jobs", "-2"], "--jobs=-2 must be a positive integer"),
    (["reproduce", "--max-seeds", "0"], "--max-seeds=0 must be a positive integer"),
    (["reproduce", "--pilot-seeds", "1"], "--pilot-seeds=1 must be"),
    (["reproduce", "--budget", "tiny", "--pilot-seeds", "4", "--max-seeds", "3", "--out", "r"], "seed cap=3 must be"),
    (["reproduce", "--max-seeds", "40,paper-quantum=3", "--out", "r"], "seed cap of study paper-quantum=3 must be"),
    (["reproduce", "--max-seeds", "40,three=10", "--out", "r"], "the power plan sets the seeds of single, paper"),
    (["reproduce", "--max-seeds", "40,50"], "--max-seeds '40,50' must be a count, STUDY=count pairs"),
    (["reproduce", "--max-seeds", "paper=0"], "--max-seeds paper=0 must be a positive integer"),
    (["grads", "--seed", "-1"], "--seed=-1 must be a non-negative integer"),
    (["grads", "--batch-size", "0"], "--batch-size=0 must be a positive integer"),
    (["jobs", "submit", "r", "--backend", "local:fake_manila", "--validate-patches", "-1", "--ledger", "l.sqlite"],
     "validate_patches=-1 must be a non-negative integer"),
]


def test_every_bad_input_ends_in_one_line_and_a_nonzero_exit(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing the commands might write lands in the checkout
    for argv, message in BAD_INPUTS:
        assert cli.main(argv) != 0, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert "Traceback" not in err, argv
        lines = [line for line in err.splitlines() if line.strip()]
        if argv[0:2] != ["train", "--preset"]:  # argparse adds its usage line above its own error
            caret = 2 if "malformed residual spec" in message else 0  # the spec and a caret under the fault
            assert len(lines) == 1 + caret and lines[0].startswith("error: "), (argv, err)
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "r").exists() and not (tmp_path / "reports").exists()  # refused before --out is made


def test_train_takes_the_transpiler_flags(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--optimization-level", "1", "--initial-layout", "0,1,2,3", "--backend", "aer:fake_manila",
                     "--layers", "1", "--residual", "none", "--classes", "0,1", "--per-class", "6", "--epochs", "1",
                     "--out", str(out)]) == 0
    recorded = json.loads((out / "config.json").read_text())
    options = recorded["config"]["backend_options"]
    assert (options["optimization_level"], options["initial_layout"]) == (1, [0, 1, 2, 3])
    assert recorded["backend"]["options"]["initial_layout"] == [0, 1, 2, 3]
    from qresnet.backends import BackendOptions, resolve_backend
    from qresnet.circuits import quanv_filter

    # the layout was used: the filter sits on qubits 0-3 of fake_manila, as a direct transpilation places it
    isa = resolve_backend("aer:fake_manila", BackendOptions(optimization_level=1, initial_layout=(0, 1, 2, 3)))
    assert isa.transpile(quanv_filter()).cost.layout == (0, 1, 2, 3)
    assert "final test accuracy" in capsys.readouterr().out
