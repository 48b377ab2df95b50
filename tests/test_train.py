import csv
import json

import pytest
import torch

from qresnet import cli
from qresnet.backends import resolve_backend
from qresnet.data import DataConfig, load_dataset
from qresnet.errors import DataError, QresnetError
from qresnet.run.build import build_model
from qresnet.config import TrainConfig
from qresnet.errors import ConfigError, ResidualSpecError
from qresnet.run.train import train

SMALL = dict(classes=(0, 1, 2), per_class=16, epochs=3, batch_size=8, lr=0.05, seed=3)


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig(classes=(0, 1, 2), per_class=16, seed=3))


def _metrics(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def _final_state(run_dir):
    last = sorted((run_dir / "checkpoints").glob("epoch_*.pt"))[-1]
    return torch.load(last, weights_only=False)["model"]


def test_training_lowers_the_loss_and_writes_the_run_directory(tmp_path, data):
    result = train(TrainConfig(**SMALL), tmp_path / "run", progress=False, data=data)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.csv", "summary.json", "curves.png", "checkpoints"}
    rows = _metrics(run)
    assert len(rows) == 3 and float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert all(float(r["grad_norm_layer1"]) > 0 and float(r["grad_norm_layer2"]) > 0 for r in rows)  # O1+O2 reaches both
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["config"]["residual"] == "O1+O2" and recorded["backend"]["spec"] == "aer"
    assert recorded["environment"]["packages"]["qiskit"]
    assert result.epochs_completed == 3
    # the reported accuracy is what the saved model scores on the test set, counted here by hand
    model = build_model(TrainConfig(**SMALL), resolve_backend("aer"), data.image_shape, data.num_classes)
    model.load_state_dict(_final_state(run))
    with torch.no_grad():
        hits = sum(int(model(x[None]).argmax()) == int(y) for x, y in zip(data.x_test, data.y_test))
    assert result.final_test_acc == hits / len(data.y_test)
    assert result.best_test_acc == max(float(r["test_acc"]) for r in rows)
    assert result.parameter_sets_evaluated_this_session > 0


def test_frozen_keeps_quantum_weights_bit_identical(tmp_path, data):
    config = TrainConfig(**SMALL, frozen=True)
    train(config, tmp_path / "frozen", progress=False, data=data)
    final = _final_state(tmp_path / "frozen")
    initial = build_model(config, resolve_backend("aer"), data.image_shape, data.num_classes).state_dict()
    for k in (1, 2):
        key = f"layers.{k - 1}.connector.weight"
        assert torch.equal(final[key], initial[key]), key
    assert not torch.equal(final["head.weight"], initial["head.weight"])
    rows = _metrics(tmp_path / "frozen")
    assert all(float(r["grad_norm_layer1"]) == 0.0 == float(r["grad_norm_layer2"]) for r in rows)


def test_resume_after_an_interruption_gives_the_uninterrupted_metrics(tmp_path, data, monkeypatch):
    config = TrainConfig(**SMALL)
    train(config, tmp_path / "whole", progress=False, data=data)
    train(config, tmp_path / "parts", progress=False, data=data, stop_after_epoch=1)
    train(config, tmp_path / "parts", resume=True, progress=False, data=data)
    assert _metrics(tmp_path / "parts") == _metrics(tmp_path / "whole")
    whole, parts = _final_state(tmp_path / "whole"), _final_state(tmp_path / "parts")
    assert all(torch.equal(whole[k], parts[k]) for k in whole)

    # Ctrl-C in the middle of epoch 2 keeps epoch 1 intact, and resuming ends where the whole run ended
    import qresnet.run.train as train_module

    calls = {"n": 0}
    real = torch.nn.functional.cross_entropy

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 14:  # epoch 1 makes 12 calls (5 batches, then 5 + 2 evaluating); 14 is inside epoch 2
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module.torch.nn.functional, "cross_entropy", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "ctrl_c", progress=False, data=data)
    monkeypatch.setattr(train_module.torch.nn.functional, "cross_entropy", real)
    assert [p.name for p in sorted((tmp_path / "ctrl_c" / "checkpoints").glob("epoch_*.pt"))] == ["epoch_001.pt"]
    assert len(_metrics(tmp_path / "ctrl_c")) == 1
    train(config, tmp_path / "ctrl_c", resume=True, progress=False, data=data)
    assert _metrics(tmp_path / "ctrl_c") == _metrics(tmp_path / "whole")


@pytest.mark.parametrize("values, error, fragment", [
    ({"epochs": 0}, ConfigError, "epochs=0"),
    ({"lr": -1.0}, ConfigError, "lr=-1.0"),
    ({"lr": float("nan")}, ConfigError, "lr=nan"),
    ({"head": "cnn"}, ConfigError, "head='cnn'"),
    ({"head_encoding_noise": "some"}, ConfigError, "head_encoding_noise='some'"),
    ({"max_steps": 0}, ConfigError, "max_steps=0"),
    ({"residual": "X+O"}, ResidualSpecError, "malformed residual spec"),
    ({"residual": "O2+O3"}, ResidualSpecError, "model has 2 layers"),
    ({"dataset": "cifar"}, DataError, "cifar"),
    ({"backend_options": {"shots": 0}}, QresnetError, "shots=0"),
    ({"backend_options": {"engine": "gpu"}}, QresnetError, "engine='gpu'"),
])
def test_config_validation_names_the_value(values, error, fragment):
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        TrainConfig(**values)


def test_toml_config_and_unknown_keys(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('layers = 3\nresidual = "(O1+O2)+O3"\nclasses = [0, 1]\nepochs = 2\nlr = 0.02\n')
    config = TrainConfig.from_toml(path)
    assert (config.layers, config.residual.notation, config.classes, config.epochs) == (3, "(O1+O2)+O3", (0, 1), 2)
    path.write_text("layer = 3\n")
    with pytest.raises(ConfigError, match="unknown config keys \\['layer'\\]"):
        TrainConfig.from_toml(path)
    path.write_text("layers = [\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        TrainConfig.from_toml(path)


def test_cli_train_and_resume(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--classes", "0,1", "--per-class", "10", "--batch-size", "8", "--lr", "0.05", "--out", str(out)]
    assert cli.main(args + ["--epochs", "1"]) == 0
    assert cli.main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    assert len(_metrics(out)) == 2
    assert "final test accuracy" in capsys.readouterr().out
    assert cli.main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "no config.json" in capsys.readouterr().err


class _TwoLayers(torch.nn.Module):
    """A stand-in with the shape train_step expects: per-layer weights (one never used: no gradient) and a head."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w1, self.w2, self.unused = (torch.nn.Parameter(torch.randn(3, dtype=torch.float64, generator=gen))
                                         for _ in range(3))
        self.head = torch.nn.Linear(3, 4, dtype=torch.float64)

    def forward(self, x):
        return self.head(x * self.w1 + torch.sin(x) * self.w2)

    def quantum_parameters(self):
        return [self.w1, self.unused, self.w2]


def test_train_step_measures_and_steps_as_computed_by_hand():
    import copy

    from qresnet.errors import TrainingError
    from qresnet.run.step import train_step

    torch.manual_seed(1)
    model = _TwoLayers()
    reference = copy.deepcopy(model)
    x = torch.rand(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    outcome = train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y)
    # by hand: the mean negative log-likelihood, autograd's gradients, their 2-norms, and a plain SGD update
    logits = reference(x)
    loss = -(logits - logits.exp().sum(1, keepdim=True).log())[torch.arange(6), y].mean()
    params = [reference.w1, reference.w2, reference.head.weight, reference.head.bias]
    grads = torch.autograd.grad(loss, params)
    norms = [float(torch.sqrt((g ** 2).sum())) for g in grads]
    assert outcome.loss == pytest.approx(loss.detach().item(), abs=1e-12) and outcome.size == 6
    assert outcome.correct == sum(int(logits[i].argmax()) == int(y[i]) for i in range(6))
    assert outcome.layer_grad_norms == pytest.approx((norms[0], 0.0, norms[1]), abs=1e-12)
    assert outcome.head_grad_norm == pytest.approx((norms[2] ** 2 + norms[3] ** 2) ** 0.5, abs=1e-12)
    for p, g, after in zip(params, grads, [model.w1, model.w2, model.head.weight, model.head.bias]):
        torch.testing.assert_close(after.detach(), (p - 0.1 * g).detach(), rtol=0, atol=1e-12)
    # a non-finite loss stops before any weight moves
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingError, match="the loss became nan"):
        train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x * float("nan"), y)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
