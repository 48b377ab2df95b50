"""The Runtime path without network: credentials, token hygiene, and Batch/Session through local mode."""

import pickle
import traceback

import numpy as np
import pytest
from qiskit_ibm_runtime.fake_provider import FakeManilaV2

from qresnet import cli
from qresnet.backends import BackendOptions, IBMCredentials, Secret, connect_service, resolve_backend
from qresnet.circuits import quanv_filter
from qresnet.errors import BackendSpecError, CredentialsError

TOKEN = "tok-3f9a8c7e1d2b4a6f-SECRET"


class FailingService:
    """Stands in for QiskitRuntimeService when the token is rejected; echoes the token as some services do."""

    def __init__(self, **kwargs):
        raise RuntimeError(f"401 Unauthorized: invalid token {kwargs.get('token')}")


class LocalService:
    """A service whose devices are fake backends, so Batch and Session run in local testing mode."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def backend(self, name):
        if name != "ibm_fake_manila":
            raise LookupError(f"no backend {name}")
        return FakeManilaV2()

    def backends(self):
        return [FakeManilaV2()]


def test_missing_credentials_say_what_to_set(tmp_path):
    with pytest.raises(CredentialsError) as info:
        IBMCredentials.from_env(env={}, dotenv_path=tmp_path / ".env")
    message = str(info.value)
    assert "QISKIT_IBM_TOKEN" in message and "QISKIT_IBM_INSTANCE" in message and ".env" in message


def test_credentials_from_dotenv_and_environment(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"QISKIT_IBM_TOKEN={TOKEN}\nQISKIT_IBM_INSTANCE=from-file\n")
    creds = IBMCredentials.from_env(env={}, dotenv_path=dotenv)
    assert creds.token.reveal() == TOKEN and creds.instance == "from-file" and creds.channel == "ibm_quantum_platform"
    creds = IBMCredentials.from_env(env={"QISKIT_IBM_INSTANCE": "from-env", "QISKIT_IBM_CHANNEL": "ibm_cloud"}, dotenv_path=dotenv)
    assert creds.instance == "from-env" and creds.channel == "ibm_cloud"


def test_token_never_shows(tmp_path):
    creds = IBMCredentials(Secret(TOKEN), "inst")
    assert TOKEN not in repr(creds) and TOKEN not in str(creds.token)
    with pytest.raises(TypeError):
        pickle.dumps(creds)
    with pytest.raises(CredentialsError) as info:
        connect_service(creds, service_factory=FailingService)
    text = "".join(traceback.format_exception(info.value))
    assert "401 Unauthorized" in text and "***" in text
    assert TOKEN not in text and info.value.__context__ is None and info.value.__cause__ is None


def test_cli_never_prints_the_token(monkeypatch, capsys, tmp_path):
    import qiskit_ibm_runtime

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", FailingService)
    assert cli.main(["transpile", "--backend", "ibm:ibm_torino"]) == 2
    out, err = capsys.readouterr()
    assert "could not connect to IBM Quantum" in err
    assert TOKEN not in out + err


def test_ibm_without_credentials_names_the_variables(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QISKIT_IBM_TOKEN", raising=False)
    assert cli.main(["transpile", "--backend", "ibm:ibm_torino"]) == 2
    assert "QISKIT_IBM_TOKEN" in capsys.readouterr().err


def test_unknown_ibm_device_lists_available():
    with pytest.raises(BackendSpecError, match="available: fake_manila"):
        resolve_backend("ibm:ibm_nowhere", service=LocalService())


@pytest.mark.parametrize("mode", ["batch", "session"])
def test_ibm_path_runs_in_batch_and_session(rng, mode):
    """The ibm: code path (Session/Batch, Runtime estimator) on a fake device, which local mode runs."""
    options = BackendOptions(shots=4000, seed=1, resilience_level=0, execution_mode=mode)
    template = quanv_filter()
    with resolve_backend("ibm:ibm_fake_manila", options, service=LocalService()) as backend:
        tt = backend.transpile(template)
        values = rng.uniform(0, 1, (3, len(tt.circuit.parameters)))
        ibm = backend.estimator().run([(tt.circuit, tt.observables[0], values)]).result()[0]
        assert type(backend._mode).__name__ == mode.capitalize()
    exact_backend = resolve_backend("aer:fake_manila")
    exact_tt = exact_backend.transpile(template)
    assert exact_tt.circuit.parameters == tt.circuit.parameters
    exact = exact_backend.estimator().run([(exact_tt.circuit, exact_tt.observables[0], values)]).result()[0]
    assert np.all(np.abs(ibm.data.evs - exact.data.evs) < 5 / np.sqrt(4000))


def test_local_mode_on_a_large_device_runs_the_circuit_cut_to_its_qubits():
    """Local mode simulates every qubit it is given: the ISA circuit is cut after its highest used qubit,
    and the values still agree with the exact readout-inclusive noisy values of the same physical qubits."""
    from qresnet.errors import DeviceTooSmallError

    with pytest.raises(DeviceTooSmallError, match="--initial-layout"):  # a layout the user pinned high stays an error
        resolve_backend("local:fake_torino", BackendOptions(initial_layout=(120, 121, 122, 123))).transpile(quanv_filter())
    # without one, the transpiler's choice (qubits ~80-99) is replaced by the lowest connected qubits
    placed = resolve_backend("local:fake_torino").transpile(quanv_filter())
    assert placed.circuit.num_qubits <= 24 and placed.cost.layout == (0, 1, 2, 3)
    options = BackendOptions(initial_layout=(0, 1, 2, 3), resilience_level=0, shots=4000, seed=11)
    local = resolve_backend("local:fake_torino", options)
    tt = local.transpile(quanv_filter())
    assert tt.circuit.num_qubits == 4 and tt.observables[0].num_qubits == 4
    values = np.random.default_rng(2).uniform(-1, 1, (3, tt.circuit.num_parameters))
    result = local.estimator().run([(tt.circuit, tt.observables[0], values)]).result()[0]
    exact_backend = resolve_backend("aer:fake_torino", BackendOptions(initial_layout=(0, 1, 2, 3)))
    et = exact_backend.transpile(quanv_filter())
    exact = exact_backend.estimator().run([(et.circuit, et.observables[0], values)]).result()[0].data.evs
    assert np.all(np.abs(result.data.evs - exact) < 5 / np.sqrt(4000))
