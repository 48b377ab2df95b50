import json

from qresnet import cli


def test_backends_json_lists_devices(capsys):
    assert cli.main(["backends", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    devices = {d["name"]: d for d in data["fake_devices"]}
    assert devices["fake_manila"]["num_qubits"] == 5 and devices["fake_manila"]["two_qubit_gates"] == ["cx"]
    assert devices["fake_torino"]["num_qubits"] == 133 and devices["fake_torino"]["two_qubit_gates"] == ["cz"]
    assert devices["fake_brisbane"]["two_qubit_gates"] == ["ecr"]
    assert set(data["specs"]) == {"aer", "local", "ibm"}


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
