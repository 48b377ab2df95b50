"""The training configuration: every value that defines a run, validated once, kept as coerced values; and the
data configuration it holds. Free of torch, so that sweeps, reports and the command line can hold configs.

>>> config = TrainConfig(residual="(X+O1)+O2", backend="aer:FakeManilaV2")
>>> config.residual.notation, str(config.backend), config.backend_options.seed
('(X+O1)+O2', 'aer:fake_manila', 0)
>>> TrainConfig.from_dict(config.to_dict()) == config
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from qresnet.backends.options import BackendOptions
from qresnet.backends.spec import BackendSpec
from qresnet.choices import (DATASETS, DEFAULT_HEAD_REPS, DEFAULT_HEAD_SCALE, FILTER_KINDS, HEAD_ENCODING_NOISE, HEADS,
                             IMAGE_SOURCES, RUN_MODES)
from qresnet.circuits.filter_spec import FilterSpec
from qresnet.errors import ConfigError, DataError, QresnetError
from qresnet.provenance import package_versions
from qresnet.residual import ResidualSpec
from qresnet.values import checked_int, known_fields

NUM_CLASSES = 10  # both datasets label the digits 0-9
# what a resume may change: none of these changes a finished epoch's numbers (data_dir: the data is digested)
SAFE_TO_CHANGE = ("epochs", "max_steps", "keep_checkpoints", "curves", "data_dir")
# packages whose version can change a run's numbers
NUMERIC_PACKAGES = ("qresnet", "qiskit", "qiskit-aer", "qiskit-machine-learning", "qiskit-ibm-runtime", "torch",
                    "numpy", "scipy", "scikit-learn")
# TrainConfig's fields that count something
COUNTS = ("layers", "epochs", "batch_size", "torch_threads", "keep_checkpoints", "head_noise_samples", "head_reps")
# fields added after run identities existed: at these values they stay out of the identity, so a run of today's
# filter on today's data keeps the identity it was trained under (and resumes)
IDENTITY_DEFAULTS = {"filter": "quantum", "quanv": FilterSpec().to_dict(), "image_size": None,
                     "head_reps": DEFAULT_HEAD_REPS}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (a filter circuit's: its identity is its content, not its name)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"cannot read filter circuit {str(path)!r} ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class DataConfig:
    """Which images to load and how to split them; every field is recorded with a run's results.

    ``dataset`` is ``digits``, ``mnist``, ``npz:PATH`` or ``idx:DIR`` (:func:`qresnet.data.load_image_arrays`).
    ``classes=None`` keeps every class present; ``per_class=None`` keeps every image of the kept
    classes. ``data_dir`` is only read for MNIST (see :func:`qresnet.data.mnist_dir`). One ``seed``
    drives both the per-class pick and the stratified split. ``image_size`` N resizes every image to N x N.

    >>> DataConfig("mnist", classes=[0, 1, 2, 3], per_class=200).to_dict()
    {'dataset': 'mnist', 'data_dir': None, 'classes': [0, 1, 2, 3], 'per_class': 200, 'test_fraction': 0.2, 'seed': 0, 'image_size': None}
    >>> DataConfig(per_class=0)
    Traceback (most recent call last):
    ...
    qresnet.errors.DataError: per_class=0 must be a positive integer (images kept per class), or None for all of them
    """

    dataset: str = "digits"
    data_dir: str | None = None
    classes: tuple[int, ...] | None = None
    per_class: int | None = None
    test_fraction: float = 0.2
    seed: int = 0
    image_size: int | None = None

    def __post_init__(self) -> None:
        kind, colon, where = str(self.dataset).partition(":")
        if self.dataset not in DATASETS and not (colon and kind in IMAGE_SOURCES and where):
            raise DataError(f"dataset={self.dataset!r} is unknown: use one of {', '.join(DATASETS)}, npz:PATH or idx:DIR")
        if self.image_size is not None:
            object.__setattr__(self, "image_size", checked_int(self.image_size, "image_size", 2, error=DataError,
                                                               hint=" (pixels per side), or None to keep the size"))
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", str(self.data_dir))  # a Path is fine; store text for to_dict
        if self.classes is not None:  # the digits are 0-9; a dataset of one's own may label more classes
            top = NUM_CLASSES - 1 if self.dataset in DATASETS else None
            object.__setattr__(self, "classes", self._labels(self.classes, top))
        if self.per_class is not None:
            object.__setattr__(self, "per_class", checked_int(self.per_class, "per_class", error=DataError,
                                                              hint=" (images kept per class), or None for all of them"))
        if not isinstance(self.test_fraction, (int, float)) or not 0 < self.test_fraction < 1:
            raise DataError(f"test_fraction={self.test_fraction!r} must be a number strictly between 0 and 1, e.g. 0.2")
        object.__setattr__(self, "seed", checked_int(self.seed, "seed", 0, error=DataError))

    @staticmethod
    def _labels(classes: object, top: int | None) -> tuple[int, ...]:
        bad = DataError(f"classes={classes!r} must be distinct labels " + (f"0-{top}" if top is not None else ">= 0")
                        + ", e.g. (0, 1, 2, 3)")
        try:
            labels = tuple(checked_int(c, "label", 0, maximum=top, error=DataError) for c in classes)
        except (DataError, TypeError):
            raise bad from None
        if not labels:
            raise bad
        if len(set(labels)) != len(labels):
            raise DataError(f"classes={classes!r} lists a label twice; each label may appear once")
        return labels

    def to_dict(self) -> dict:
        out = asdict(self)
        out["classes"] = None if self.classes is None else list(self.classes)
        return out


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; stored in ``config.json`` and read back by ``--resume``.

    ``residual`` and ``backend`` accept text and are kept as a :class:`ResidualSpec` and a
    :class:`BackendSpec`; ``backend_options`` accepts a dict (TOML's ``[backend_options]``
    table). The run's ``seed`` seeds the simulators too, and training on ``ibm:`` opens a
    ``Session`` unless ``backend_options.execution_mode`` says otherwise.
    """

    # data
    dataset: str = "digits"
    data_dir: str | None = None
    classes: tuple[int, ...] | None = None
    per_class: int | None = None
    test_fraction: float = 0.2
    image_size: int | None = None  # resize every image to N x N
    # model
    layers: int = 2
    residual: ResidualSpec | str = "O1+O2"
    head: str = "linear"
    head_scale: float = DEFAULT_HEAD_SCALE  # quantum head: logits = head_scale * <Z>
    head_reps: int = DEFAULT_HEAD_REPS  # quantum head: ansatz repetitions
    head_encoding_noise: str = "exact"  # quantum head on a noisy model: "transpiled" also checks the encoding under noise
    head_noise_samples: int = 4  # test samples evaluated with the transpiled encoding under noise
    mode: str | None = None  # None: response for today's 2x2 filter, else auto (fewer rows, chosen when built)
    filter: str = "quantum"  # classical: the control, a classical layer of the quantum layer's size
    quanv: FilterSpec | dict | None = None  # the filter every quantum layer runs; None: today's
    input_gradients: bool = False
    frozen: bool = False
    # where circuits run
    backend: BackendSpec | str = "aer"
    backend_options: BackendOptions = field(default_factory=BackendOptions)
    # optimisation
    epochs: int = 5
    max_steps: int | None = None  # optimizer steps in this session (a device budget); resume continues
    batch_size: int = 16
    lr: float = 0.01
    seed: int = 0
    torch_threads: int = 1  # small tensors: a second intra-op thread costs more than it gives on 2 cores
    keep_checkpoints: int = 3  # epoch checkpoints kept besides the best one; the history lives in metrics.csv
    curves: bool = True  # draw curves.png when the run ends (a sweep's runs leave it to the report unless asked)

    def __post_init__(self) -> None:
        for name in COUNTS:
            object.__setattr__(self, name, checked_int(getattr(self, name), name))
        if not isinstance(self.curves, bool):
            raise ConfigError(f"curves={self.curves!r} must be true or false")
        if self.max_steps is not None:
            object.__setattr__(self, "max_steps", checked_int(self.max_steps, "max_steps", hint=", or None for no limit"))
        object.__setattr__(self, "seed", checked_int(self.seed, "seed", 0))
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr={self.lr!r} must be a positive number")
        if self.head not in HEADS:
            raise ConfigError(f"head={self.head!r} must be one of {', '.join(HEADS)}")
        try:
            object.__setattr__(self, "quanv", FilterSpec.coerce(self.quanv))
        except QresnetError as exc:
            raise ConfigError(f"quanv: {exc}") from None
        if self.filter not in FILTER_KINDS:
            raise ConfigError(f"filter={self.filter!r} must be one of {', '.join(FILTER_KINDS)}")
        if self.mode is None:
            object.__setattr__(self, "mode", "response" if self.quanv == FilterSpec() else "auto")
        if self.mode not in RUN_MODES:
            raise ConfigError(f"mode={self.mode!r} must be one of {', '.join(RUN_MODES)}")
        if self.head_encoding_noise not in HEAD_ENCODING_NOISE:
            raise ConfigError(f"head_encoding_noise={self.head_encoding_noise!r} must be one of {', '.join(HEAD_ENCODING_NOISE)}")
        if not (isinstance(self.head_scale, (int, float)) and math.isfinite(self.head_scale) and self.head_scale > 0):
            raise ConfigError(f"head_scale={self.head_scale!r} must be a positive number")
        object.__setattr__(self, "residual", ResidualSpec.coerce(self.residual, self.layers))
        object.__setattr__(self, "backend", BackendSpec.coerce(self.backend))
        options = BackendOptions.coerce(self.backend_options)
        # one seed per run; training steps depend on each other, so ibm: runs them in a Session
        object.__setattr__(self, "backend_options", dataclasses.replace(
            options, seed=self.seed, execution_mode=options.execution_mode or "session"))
        if isinstance(self.classes, str):
            raise ConfigError(f"classes={self.classes!r} must be a list of labels, e.g. [0, 1, 2, 3] (TOML) or 0,1,2,3 (flag)")
        object.__setattr__(self, "classes", self.data_config().classes)  # validates the data fields

    def data_config(self) -> DataConfig:
        return DataConfig(self.dataset, self.data_dir, self.classes, self.per_class, self.test_fraction, self.seed,
                          self.image_size)

    def identity(self, data_sha256: str) -> dict[str, Any]:
        """Everything that determines the run's numbers: the config less :data:`SAFE_TO_CHANGE`, the data's
        digest and the versions of :data:`NUMERIC_PACKAGES`, and the SHA-256 of a filter circuit file. Stored in
        ``config.json``; a resume or a sweep reuses a run only when this is unchanged. The fields of
        :data:`IDENTITY_DEFAULTS` at their defaults are left out: today's runs keep their identity."""
        config = {k: v for k, v in self.to_dict().items()
                  if k not in SAFE_TO_CHANGE and not (k in IDENTITY_DEFAULTS and v == IDENTITY_DEFAULTS[k])}
        versions = package_versions()
        identity = {"config": config, "data_sha256": data_sha256,
                    "packages": {name: versions.get(name) for name in NUMERIC_PACKAGES}}
        if self.quanv.circuit_path is not None:  # the circuit's content, wherever its file lives (as data_dir)
            config["quanv"] = {k: v for k, v in config["quanv"].items() if k != "circuit_path"}
            identity["filter_circuit_sha256"] = file_sha256(self.quanv.circuit_path)
        return identity

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["classes"] = list(self.classes) if self.classes is not None else None
        out["residual"] = self.residual.notation
        out["backend"] = str(self.backend)
        out["backend_options"] = self.backend_options.to_dict()
        out["quanv"] = self.quanv.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return cls(**known_fields(cls, values, "config keys"))

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        try:
            with open(path, "rb") as handle:
                values = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        return cls.from_dict(values)
