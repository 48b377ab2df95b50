"""Stacked training (issue 23): K runs of one shape in one process equal the same runs trained one by one; a killed
stack resumes to the numbers of an uninterrupted one; a failing run leaves the stack and the others finish; Ray.

The reference is the one-run path (``--stack 1``): alone, each layer's values and gradient come from the engine's
reverse-mode call; stacked, from one forward-mode call for all the runs. Both are exact, summed in other orders,
so losses agree to rounding and predictions (accuracies) exactly.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from qresnet import cli
from qresnet.config import TrainConfig
from qresnet.data import load_dataset
from qresnet.errors import ConfigError, SweepError
from qresnet.nn import QuanvLayer
from qresnet.run.rundir import RunDir
from qresnet.run import stack as stack_module
from qresnet.run.stack import default_stack_size, joint_optimizer, stack_key, train_stack
from qresnet.run.train import train
from qresnet.study import sweep as sweep_module
from qresnet.study.sweep import SweepConfig, plan_stacks, run_sweep

SMALL = dict(classes=(0, 1), per_class=8, configs="O1+O2", epochs=2, batch_size=8, lr=0.05, seeds=(0, 1),
             backends=("aer",))
FLAGS = ["--configs", "O1+O2", "--backends", "aer", "--seeds", "0,1", "--classes", "0,1", "--per-class", "8",
         "--epochs", "2", "--batch-size", "8", "--lr", "0.05"]
# the killed process SIGKILLs itself at its 3rd optimizer step: the stack of 4 runs takes one joint Adam step per
# batch, 2 an epoch, so inside epoch 2
KILL_IN_SECOND_EPOCH = """
import os, signal, torch
_step, _calls = torch.optim.Adam.step, []
def _dies(self, *a, **k):
    _calls.append(1)
    if len(_calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return _step(self, *a, **k)
torch.optim.Adam.step = _dies
"""


def _metrics(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in dataclasses.asdict(m).items() if k != "seconds"} for m in RunDir(run_dir).read_metrics()]


def _agree(stacked: list[dict], alone: list[dict]) -> None:
    """Accuracies equal; losses and gradient norms to 1e-9."""
    assert len(stacked) == len(alone)
    for s, a in zip(stacked, alone):
        assert (s["epoch"], s["train_acc"], s["test_acc"]) == (a["epoch"], a["train_acc"], a["test_acc"])
        for name in ("train_loss", "test_loss", "grad_norm_head"):
            assert s[name] == pytest.approx(a[name], abs=1e-9), name
        assert s["grad_norm_layers"] == pytest.approx(a["grad_norm_layers"], abs=1e-9)


def test_a_stacked_sweep_equals_the_same_sweep_run_one_by_one(tmp_path):
    sweep = SweepConfig.from_preset("quick", **SMALL)
    alone = run_sweep(sweep, tmp_path / "alone", progress=False, stack=1)
    stacked = run_sweep(dataclasses.replace(sweep, run_curves=True), tmp_path / "stacked", progress=False, stack=4)
    assert len(stacked.runs) == len(alone.runs) == 4
    for s, a in zip(stacked.runs, alone.runs):
        assert (s.seed, s.frozen, s.run_dir) == (a.seed, a.frozen, a.run_dir)
        _agree(_metrics(tmp_path / "stacked" / s.run_dir), _metrics(tmp_path / "alone" / a.run_dir))
        # each stacked run keeps its own directory: identity, initial weights, checkpoints, curves
        run = tmp_path / "stacked" / s.run_dir
        assert {"config.json", "metrics.csv", "summary.json", "curves.png"} <= {p.name for p in run.iterdir()}
        assert {"initial.pt", "epoch_002.pt"} <= {p.name for p in (run / "checkpoints").iterdir()}
        assert RunDir(run).read_identity() == RunDir(tmp_path / "alone" / a.run_dir).read_identity()
        assert not (tmp_path / "alone" / a.run_dir / "curves.png").exists()  # a sweep's runs draw none unless asked
    # the same initial weights: a stack builds each run from its own seed
    for s in stacked.runs:
        mine = torch.load(tmp_path / "stacked" / s.run_dir / "checkpoints" / "initial.pt", weights_only=False)["model"]
        theirs = torch.load(tmp_path / "alone" / s.run_dir / "checkpoints" / "initial.pt", weights_only=False)["model"]
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_a_quantum_head_stack_equals_its_runs_alone(tmp_path):
    common = dict(classes=(0, 1, 2, 3), per_class=4, head="quantum", epochs=1, batch_size=8, lr=0.05,
                  backend="aer:fake_torino")
    configs = [TrainConfig(seed=0, **common), TrainConfig(seed=1, frozen=True, **common)]
    stacked = train_stack(configs, [tmp_path / "s0", tmp_path / "s1"])
    for k, config in enumerate(configs):
        train(config, tmp_path / f"a{k}", progress=False)
        assert stacked[k].epochs_completed == 1
        _agree(_metrics(tmp_path / f"s{k}"), _metrics(tmp_path / f"a{k}"))


def test_a_stack_across_residual_configurations_equals_its_runs_alone(tmp_path, monkeypatch):
    """Residual configurations share their layers, so they stack: each configuration's runs go through the layers
    as one forward (its own skips), every trainable run's filters in one engine call; each run's numbers equal the
    run trained alone. The layers take the batches in parts (``MAP_IMAGES`` 7): 2 images a run for the 3 runs
    through them, in the training steps and the evaluations; 7 for the frozen run's fixed maps."""
    common = dict(classes=(0, 1), per_class=8, epochs=2, batch_size=4, lr=0.05)
    configs = [TrainConfig(seed=0, residual="O1+O2", **common), TrainConfig(seed=1, residual="X+O1", **common),
               TrainConfig(seed=0, residual="none", **common), TrainConfig(seed=1, residual="X+O1", frozen=True, **common)]
    assert len({stack_key(c) for c in configs}) == 1
    monkeypatch.setattr(stack_module, "MAP_IMAGES", 7)
    parts = []
    maps = stack_module.stacked_maps
    monkeypatch.setattr(stack_module, "stacked_maps", lambda models, inputs, *a: parts.append(
        (len(models), len(inputs[0]))) or maps(models, inputs, *a))
    stacked = train_stack(configs, [tmp_path / f"s{k}" for k in range(len(configs))])
    assert {p for p in parts if p[0] == 3} == {(3, 2)}  # a step's 4 images a run in 2 parts, an evaluation's in 6
    assert {(1, 7), (1, 5)} <= set(parts)  # the frozen run's 12 training images
    monkeypatch.undo()
    assert [r.epochs_completed for r in stacked] == [2] * len(configs)
    for k, config in enumerate(configs):
        train(config, tmp_path / f"a{k}", progress=False)
        _agree(_metrics(tmp_path / f"s{k}"), _metrics(tmp_path / f"a{k}"))


def test_the_joint_optimizer_moves_each_run_bit_for_bit_as_its_own_adam():
    """The stack's one Adam (multi-tensor kernels, each run's state in its own optimizer) against each run's own
    Adam (single-tensor, as a run alone steps), over steps with random gradients: equal weights, bit for bit."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(16,), (16,), (10, 49), (10,)]

    def session(lr: float) -> Any:
        params = [torch.randn(s, dtype=torch.float64, generator=generator).requires_grad_() for s in shapes]
        return SimpleNamespace(optimizer=torch.optim.Adam(params, lr=lr), params=params)

    stacked = [session(lr) for lr in (0.01, 0.05, 0.01, 0.01)]
    alone = [SimpleNamespace(params=[p.detach().clone().requires_grad_() for p in s.params]) for s in stacked]
    for a, s in zip(alone, stacked):
        a.optimizer = torch.optim.Adam(a.params, lr=s.optimizer.param_groups[0]["lr"])
    for a, s in zip(alone[3:], stacked[3:]):  # a resumed run: its own steps so far, its bias correction its own
        for _ in range(3):
            for p, q in zip(a.params, s.params):
                grad = torch.randn(p.shape, dtype=torch.float64, generator=generator)
                p.grad, q.grad = grad.clone(), grad.clone()
            a.optimizer.step()
            s.optimizer.step()
    joint = joint_optimizer(stacked)
    assert len(joint.param_groups) == 2  # the runs at lr 0.01 share one group
    for _ in range(20):
        for a, s in zip(alone, stacked):
            for p, q in zip(a.params, s.params):
                grad = torch.randn(p.shape, dtype=torch.float64, generator=generator)
                p.grad, q.grad = grad.clone(), grad.clone()
            a.optimizer.step()
        joint.step()
    assert all(torch.equal(p, q) for a, s in zip(alone, stacked) for p, q in zip(a.params, s.params))


def test_a_frozen_run_in_a_stack_computes_its_maps_once(tmp_path, monkeypatch):
    """A frozen run's layers never change, so a stack runs them once per image (both sets, before the first
    epoch) and only its head after that: the frozen layers' forward calls do not grow with the epochs, while its
    numbers equal the run trained alone (the maps are the values its layers give)."""
    calls = []
    forward = QuanvLayer.forward

    def counted(self, x):
        if not self.weight.requires_grad:
            calls.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(QuanvLayer, "forward", counted)
    common = dict(classes=(0, 1), per_class=8, epochs=1, batch_size=4, lr=0.05)
    images = {}
    for epochs in (1, 3):
        calls.clear()
        configs = [TrainConfig(seed=0, **{**common, "epochs": epochs}), TrainConfig(seed=0, frozen=True,
                                                                                    **{**common, "epochs": epochs})]
        train_stack(configs, [tmp_path / f"t{epochs}", tmp_path / f"f{epochs}"])
        images[epochs] = sum(calls)
    data = load_dataset(configs[1].data_config())
    assert images[1] == images[3] == 2 * (len(data.y_train) + len(data.y_test))  # each layer once over both sets
    train(configs[1], tmp_path / "alone", progress=False)
    _agree(_metrics(tmp_path / "f3"), _metrics(tmp_path / "alone"))


def _command(hook: str, argv: list[str]) -> list[str]:
    script = hook + "\nimport sys\nfrom qresnet.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    return [sys.executable, "-c", script, *argv]


def test_a_stack_killed_mid_epoch_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path):
    argv = ["compare", *FLAGS, "--stack", "4", "--out", str(tmp_path / "D")]
    killed = subprocess.run(_command(KILL_IN_SECOND_EPOCH, argv), cwd=tmp_path, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    runs = sorted((tmp_path / "D" / "runs" / "aer").iterdir())
    assert len(runs) == 4 and all(len(RunDir(r).read_metrics()) == 1 for r in runs)  # every run inside epoch 2
    assert cli.main(argv) == 0
    whole = run_sweep(SweepConfig.from_preset("quick", **SMALL), tmp_path / "whole", progress=False, stack=4)
    for r in whole.runs:
        assert _metrics(tmp_path / "D" / r.run_dir) == _metrics(tmp_path / "whole" / r.run_dir)


def test_a_failing_run_is_reported_and_its_neighbours_finish(tmp_path, monkeypatch):
    load = sweep_module.load_dataset

    def nan_for_seed_1(config):
        data = load(config)
        if config.seed == 1:
            data.x_train[3, 2, 2] = float("nan")
        return data

    monkeypatch.setattr(sweep_module, "load_dataset", nan_for_seed_1)
    with pytest.raises(SweepError) as info:
        run_sweep(SweepConfig.from_preset("quick", **SMALL), tmp_path / "D", progress=False, stack=4)
    finished, failures = info.value.result.runs, info.value.failures
    assert [(r.seed, r.frozen, r.epochs_completed) for r in finished] == [(0, False, 2), (0, True, 2)]
    assert len(failures) == 2 and all("seed 1" in f and "NaN" in f for f in failures), failures


def test_stacks_group_runs_of_one_shape_and_refuse_others(tmp_path):
    sweep = SweepConfig.from_preset("quick", **{**SMALL, "configs": "O1+O2;none", "seeds": (0, 1, 2)})
    plan = sweep.runs()
    stacks = plan_stacks(plan, list(range(len(plan))), 4)
    # the two configurations share their layers: one shape; 6 trainable runs at most 4 a stack -> 2 stacks of 3,
    # cut in plan order (a configuration's seeds together), each with the frozen benchmarks of the same part
    assert [len(s) for s in stacks] == [6, 6]
    assert [{plan[i].config.residual.notation for i in s} for s in stacks] == [{"O1+O2"}, {"none"}]
    by_two = plan_stacks(plan, list(range(len(plan))), 2)
    assert [len(s) for s in by_two] == [4, 4, 4]
    assert all(sum(not plan[i].frozen for i in s) == 2 and sum(plan[i].frozen for i in s) == 2 for s in by_two)
    assert sorted(i for s in by_two for i in s) == list(range(len(plan)))
    assert [len(s) for s in plan_stacks(plan, list(range(len(plan))), 16)] == [12]
    frozen_only = [i for i, p in enumerate(plan) if p.frozen][:3]
    assert sorted(len(s) for s in plan_stacks(plan, frozen_only, 2)) == [1, 2]
    for s in stacks + by_two:
        assert len({stack_key(plan[i].config) for i in s}) == 1
    other = TrainConfig(classes=(0, 1), lr=0.5)
    with pytest.raises(ConfigError, match="differ only in seed, frozen flag and residual"):
        train_stack([TrainConfig(classes=(0, 1)), other], [tmp_path / "a", tmp_path / "b"])
    # from memory: half the available memory over the processes, 64 MiB a run, at most 16, spread over the jobs
    assert default_stack_size(40, 2, available=1 << 30) == 4
    assert default_stack_size(40, 1, available=64 << 30) == 16
    assert default_stack_size(3, 2, available=64 << 30) == 2
    assert default_stack_size(40, 1, available=1 << 20) == 1


def test_a_stacked_sweep_on_ray_equals_the_stacked_sweep_in_process(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="Ray is the optional extra [ray]")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    sweep = SweepConfig.from_preset("quick", **SMALL)
    local = run_sweep(sweep, tmp_path / "local", progress=False, stack=2)
    on_ray = run_sweep(sweep, tmp_path / "ray", progress=False, stack=2, executor="ray")
    assert [r.run_dir for r in on_ray.runs] == [r.run_dir for r in local.runs]
    for r in local.runs:
        assert _metrics(tmp_path / "ray" / r.run_dir) == _metrics(tmp_path / "local" / r.run_dir)
        summary = json.loads((tmp_path / "ray" / r.run_dir / "summary.json").read_text())
        assert summary["run_dir"] == str(tmp_path / "ray" / r.run_dir)


def test_a_weight_that_overflows_in_a_stack_stops_its_run_only(tmp_path, monkeypatch):
    """The stack checks all its runs' weights in one call after each step; where one is not finite, that run's own
    check names it and the run leaves the stack, while its neighbour finishes."""
    from qresnet.run import stack as stack_module

    joint = stack_module.joint_optimizer

    def overflowing(sessions):
        optimizer = joint(sessions)
        step = optimizer.step

        def step_then_overflow(*a, **k):
            out = step(*a, **k)
            if len(sessions) == 2:
                with torch.no_grad():
                    sessions[1].model.head.weight[0, 0] = float("inf")
            return out

        optimizer.step = step_then_overflow
        return optimizer

    monkeypatch.setattr(stack_module, "joint_optimizer", overflowing)
    common = dict(classes=(0, 1), per_class=8, epochs=2, batch_size=4, lr=0.05)
    results = train_stack([TrainConfig(seed=0, **common), TrainConfig(seed=1, **common)],
                          [tmp_path / "a", tmp_path / "b"])
    assert results[0].epochs_completed == 2
    assert "weight head.weight became non-finite" in str(results[1])
