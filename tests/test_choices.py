"""The shared names are defined once and used everywhere; one rule checks every integer; configs import no torch."""

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qresnet import choices
from qresnet.backends.options import BackendOptions
from qresnet.circuits import quantum_head, quanv_filter
from qresnet.cli.main import build_parser
from qresnet.config import DataConfig, TrainConfig
from qresnet.errors import ConfigError, DataError, JobsError, LayoutError, ResidualSpecError, TemplateError
from qresnet.jobs.options import SubmitOptions
from qresnet.residual import ResidualSpec
from qresnet.study.sweep import PRESETS, SweepConfig
from qresnet.values import checked_int

PACKAGE = Path(__file__).resolve().parents[1] / "qresnet"
SHARED = {name for name in vars(choices) if name.isupper()}


def test_checked_int_accepts_integers_and_returns_plain_ints():
    assert checked_int(7, "epochs") == 7
    value = checked_int(np.int64(3), "per_class")
    assert value == 3 and type(value) is int
    assert checked_int(0, "validate_patches", 0) == 0
    assert checked_int(-5, "offset", None) == -5
    assert checked_int(4, "measured", maximum=4) == 4


@pytest.mark.parametrize("value, minimum, maximum, message", [
    (True, 1, None, "epochs=True must be a positive integer"),
    (False, 0, None, "epochs=False must be a non-negative integer"),
    (2.0, 1, None, "epochs=2.0 must be a positive integer"),
    ("3", 1, None, "epochs='3' must be a positive integer"),
    (None, 1, None, "epochs=None must be a positive integer"),
    (0, 1, None, "epochs=0 must be a positive integer"),
    (-1, 0, None, "epochs=-1 must be a non-negative integer"),
    (2, 3, None, "epochs=2 must be an integer of at least 3"),
    (5, 1, 4, "epochs=5 must be an integer from 1 to 4"),
    (True, None, None, "epochs=True must be an integer"),
])
def test_checked_int_refuses_in_one_line_naming_the_field(value, minimum, maximum, message):
    with pytest.raises(ConfigError) as caught:
        checked_int(value, "epochs", minimum, maximum=maximum)
    assert str(caught.value) == message


def test_checked_int_raises_the_callers_error_with_its_hint():
    with pytest.raises(JobsError, match=r"^shots=0 must be a positive integer, or None$"):
        checked_int(0, "shots", error=JobsError, hint=", or None")


# every integer field of the value objects: (constructor, field, error class, smallest valid value)
INTEGER_FIELDS = [
    (lambda v: TrainConfig(layers=v, residual="none"), "layers", ConfigError, 1),
    (lambda v: TrainConfig(epochs=v), "epochs", ConfigError, 1),
    (lambda v: TrainConfig(batch_size=v), "batch_size", ConfigError, 1),
    (lambda v: TrainConfig(torch_threads=v), "torch_threads", ConfigError, 1),
    (lambda v: TrainConfig(keep_checkpoints=v), "keep_checkpoints", ConfigError, 1),
    (lambda v: TrainConfig(head_noise_samples=v), "head_noise_samples", ConfigError, 1),
    (lambda v: TrainConfig(max_steps=v), "max_steps", ConfigError, 1),
    (lambda v: TrainConfig(seed=v), "seed", ConfigError, 0),
    (lambda v: DataConfig(per_class=v), "per_class", DataError, 1),
    (lambda v: DataConfig(seed=v), "seed", DataError, 0),
    (lambda v: BackendOptions(shots=v), "shots", ConfigError, 1),
    (lambda v: BackendOptions(seed=v), "seed", ConfigError, 0),
    (lambda v: BackendOptions(seed_transpiler=v), "seed_transpiler", ConfigError, 0),
    (lambda v: BackendOptions(optimization_level=v), "optimization_level", ConfigError, 0),
    (lambda v: BackendOptions(resilience_level=v), "resilience_level", ConfigError, 0),
    (lambda v: BackendOptions(initial_layout=(v, 5)), "initial_layout qubit", LayoutError, 0),
    (lambda v: SubmitOptions(validate_patches=v), "validate_patches", JobsError, 0),
    (lambda v: SubmitOptions(max_two_qubit_gates=v), "max_two_qubit_gates", JobsError, 1),
    (lambda v: SubmitOptions(max_executions=v), "max_executions", JobsError, 1),
    (lambda v: SweepConfig(seeds=(0, v)), "seed", ConfigError, 0),
    (lambda v: ResidualSpec(v, frozenset()), "num_layers", ResidualSpecError, 1),
    (lambda v: quanv_filter(kernel_size=v), "kernel_size", TemplateError, 1),
    (lambda v: quanv_filter(reps=v), "reps", TemplateError, 1),
    (lambda v: quantum_head(num_qubits=v, measured=1), "num_qubits", TemplateError, 1),
    (lambda v: quantum_head(4, measured=v), "measured", TemplateError, 1),
    (lambda v: quantum_head(4, 2, encoding="state", num_features=v), "num_features", TemplateError, 1),
]
IDS = [f"{error.__name__}-{name}" for _, name, error, _ in INTEGER_FIELDS]


@pytest.mark.parametrize("make, name, error, minimum", INTEGER_FIELDS, ids=IDS)
def test_every_integer_field_refuses_a_bool(make, name, error, minimum):
    # True passes `isinstance(x, int)` and equals 1: the old checks of several fields let it through
    with pytest.raises(error, match=f"^{name}=True must be "):
        make(True)


@pytest.mark.parametrize("make, name, error, minimum", INTEGER_FIELDS, ids=IDS)
def test_every_integer_field_refuses_values_below_its_minimum_and_non_integers(make, name, error, minimum):
    with pytest.raises(error, match=f"^{name}={minimum - 1} must be "):
        make(minimum - 1)
    with pytest.raises(error, match=rf"^{name}=1\.5 must be "):
        make(1.5)


def test_integer_fields_keep_plain_ints():
    config = TrainConfig(epochs=np.int64(2), seed=np.int64(3), classes=[np.int64(1), np.int64(2)])
    assert (config.epochs, config.seed, config.classes) == (2, 3, (1, 2))
    assert all(type(v) is int for v in (config.epochs, config.seed, *config.classes))
    assert TrainConfig.from_dict(config.to_dict()) == config


def _defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_each_shared_name_is_defined_only_in_choices():
    assert {"HEADS", "MODES", "ENGINES", "EXECUTORS", "EXECUTION_MODES", "READOUTS", "HEAD_ENCODING_NOISE",
            "DEFAULT_HEAD_SCALE", "PRESET_NAMES"} <= SHARED
    copies = {f"{path.relative_to(PACKAGE)}: {name}" for path in PACKAGE.rglob("*.py") if path.name != "choices.py"
              for name in _defined_names(path) & (SHARED | {"DEFAULT_SCALE", "TEMPLATES"})}
    assert not copies


def test_the_presets_are_the_named_ones():
    assert tuple(PRESETS) == choices.PRESET_NAMES


def _choices_of(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> dict[str, object]:
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return {a.option_strings[0] if a.option_strings else a.dest: a.choices for a in parser._actions}


@pytest.mark.parametrize("command, flag, shared", [
    (("train",), "--head", "HEADS"), (("train",), "--mode", "RUN_MODES"), (("grads",), "--mode", "MODES"),
    (("train",), "--head-encoding-noise", "HEAD_ENCODING_NOISE"), (("train",), "--filter", "FILTER_KINDS"),
    (("train",), "--ansatz", "ANSATZES"), (("train",), "--encoding", "FILTER_ENCODINGS"),
    (("train",), "--readout", "READOUTS"), (("train",), "--entanglement", "ENTANGLEMENTS"),
    (("train",), "--engine", "ENGINES"), (("train",), "--execution-mode", "EXECUTION_MODES"),
    (("train",), "--optimization-level", "OPTIMIZATION_LEVELS"), (("train",), "--resilience-level", "RESILIENCE_LEVELS"),
    (("compare",), "--preset", "PRESET_NAMES"), (("compare",), "--executor", "EXECUTORS"),
    (("reproduce",), "--executor", "EXECUTORS"),
    (("reproduce",), "--budget", "BUDGETS"), (("reproduce",), "--study", "REPRODUCTION_STUDIES"),
    (("grads",), "--configs", "CONFIG_SETS"),
    (("transpile",), "--template", "TEMPLATES"), (("transpile",), "--readout", "READOUTS"),
    (("transpile",), "--entanglement", "ENTANGLEMENTS"), (("backends",), "--format", "FORMATS"),
    (("jobs", "submit"), "--engine", "ENGINES"),
])
def test_the_command_lines_choices_are_the_shared_tuples_not_copies(command, flag, shared):
    assert _choices_of(build_parser(), command)[flag] is getattr(choices, shared)


@pytest.mark.parametrize("module", ["qresnet.config", "qresnet.residual", "qresnet.choices", "qresnet.values"])
def test_configs_and_residual_specs_import_without_torch(module):
    code = f"import {module}, sys; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_nn_still_exports_the_residual_spec():
    from qresnet import nn

    assert nn.ResidualSpec is ResidualSpec
