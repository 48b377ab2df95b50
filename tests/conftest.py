import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"qiskit_ibm_runtime\..*")


@pytest.fixture
def rng():
    return np.random.default_rng(20240214)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """For the jobs tests: a working directory without .env, the token in the environment, and the fake
    service (tests/jobs_fake.py) behind QiskitRuntimeService."""
    import qiskit_ibm_runtime
    from jobs_fake import TOKEN, FakeService

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QISKIT_IBM_TOKEN", TOKEN)
    monkeypatch.setenv("QISKIT_IBM_INSTANCE", "crn:test")
    store = tmp_path / "service"
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", lambda **kw: FakeService(store, **kw))
    return tmp_path
