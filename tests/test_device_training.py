"""Training on Runtime backends: cost first, a checkpoint after every step, a budget, resume after a dropped session."""

import pytest
import torch
from qiskit_ibm_runtime.fake_provider import FakeManilaV2

from qresnet.errors import QresnetError
from qresnet.config import TrainConfig
from qresnet.run.train import train

SMALL = dict(dataset="digits", classes=(0, 1), per_class=5, test_fraction=0.2, layers=1, residual="none",
             frozen=True, epochs=1, batch_size=2, backend_options={"shots": 64}, seed=3)


class LocalService:
    """Stands in for QiskitRuntimeService: its device is a fake backend, so the Session runs in local mode."""

    def backend(self, name):
        return FakeManilaV2()

    def backends(self):
        return [FakeManilaV2()]


def _weights(path):
    return torch.load(path, weights_only=False)["model"]


def test_budget_then_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    config = TrainConfig(**SMALL, backend="local:fake_manila")
    first = train(TrainConfig(**{**SMALL, "max_steps": 1}, backend="local:fake_manila"), tmp_path / "a")
    printed = capsys.readouterr().out
    assert "device training: per step 81 circuits x 64 shots" in printed and "--resume" in printed
    assert first.stopped_at_max_steps and first.steps_this_session == 1 and first.epochs_completed == 0
    assert (tmp_path / "a" / "checkpoints" / "step.pt").is_file()
    assert not list((tmp_path / "a" / "checkpoints").glob("epoch_*.pt"))
    resumed = train(config, tmp_path / "a", resume=True, progress=False)
    assert resumed.steps_this_session == 3 and resumed.epochs_completed == 1  # 8 training images, batch 2
    whole = train(config, tmp_path / "b", progress=False)
    a, b = _weights(tmp_path / "a/checkpoints/epoch_001.pt"), _weights(tmp_path / "b/checkpoints/epoch_001.pt")
    for key in b:  # local mode is seeded: the resumed run is the uninterrupted one
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-12)
    assert resumed.final_test_acc == whole.final_test_acc


def test_ibm_training_runs_in_a_session_and_a_dropped_session_keeps_every_step(tmp_path, monkeypatch):
    import qiskit_ibm_runtime

    opened = []

    class RecordingSession(qiskit_ibm_runtime.Session):
        def __init__(self, *args, **kwargs):
            opened.append(kwargs.get("backend"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(qiskit_ibm_runtime, "Session", RecordingSession)
    # frozen layers reach the device once (their design points are memoised), so the failure is injected
    # at the third step itself: whatever breaks mid-step, the finished steps must survive
    calls = {"n": 0}
    real_step = torch.optim.Adam.step

    def dropping_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("the session was closed by the service")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", dropping_step)
    config = TrainConfig(**SMALL, backend="ibm:ibm_fake_manila")
    with pytest.raises(QresnetError, match="--resume") as info:
        train(config, tmp_path / "run", progress=False, service=LocalService())
    assert "session was closed" in str(info.value) and len(opened) == 1
    state = torch.load(tmp_path / "run/checkpoints/step.pt", weights_only=False)
    assert state["epoch"] == 1 and state["batch"] == 2  # two steps finished before the third call failed
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    summary = train(config, tmp_path / "run", resume=True, progress=False, service=LocalService())
    assert summary.steps_this_session == 2 and summary.epochs_completed == 1  # the other two of four
