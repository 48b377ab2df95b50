"""Datasets. The embedded default is scikit-learn's 8x8 digits, so every command works offline.

MNIST is read from a directory holding ``mnist.npz`` (keys x_train, y_train, x_test, y_test) or
the four IDX files (optionally gzipped, ``.gz``); ``qresnet data fetch mnist`` downloads them
(:mod:`qresnet.data.download`).
The directory is, in order: an explicit ``data_dir``, ``$QRESNET_DATA_DIR``, ``~/.cache/qresnet/mnist``.
Every file is checked against its own header or keys, so a corrupt or truncated file is an error,
never a silent partial load.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from qresnet.choices import IMAGE_SOURCES
from qresnet.config import NUM_CLASSES, DataConfig
from qresnet.errors import DataError
from qresnet.values import checked_int

DATA_DIR_VAR = "QRESNET_DATA_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/qresnet/mnist")
MNIST_NPZ = "mnist.npz"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")  # an .npz dataset: mnist.npz, or any npz:PATH
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
GET_MNIST = (
    f"get them with `qresnet data fetch mnist` (downloads to the default directory), or point --data-dir "
    f"or {DATA_DIR_VAR} at a directory holding {MNIST_NPZ} or the four IDX files"
)


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors has no single truth value
class Dataset:
    """A seeded train/test split: images float64 (N, H, W) in [0, 1], labels int64 in 0..k-1.

    ``classes[i]`` is the original label of class ``i``, so a subset (3, 7) trains a 2-way head.
    """

    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    num_classes: int
    image_shape: tuple[int, ...]
    source: str
    classes: tuple[int, ...]

    def digest(self) -> str:
        """SHA-256 of the split's arrays: the data a run saw, wherever its files lived."""
        h = hashlib.sha256()
        for tensor in (self.x_train, self.y_train, self.x_test, self.y_test):
            array = np.ascontiguousarray(tensor.numpy())
            h.update(f"{array.dtype}{array.shape}".encode())
            h.update(array.tobytes())
        return h.hexdigest()


def load_digits_images(num_samples: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as (N, 8, 8) float64 images in [0, 1] and int64 labels; a seeded sample if asked."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target
    if num_samples is not None:
        pick = np.random.default_rng(seed).choice(len(images), size=num_samples, replace=False)
        images, labels = images[pick], labels[pick]
    return torch.as_tensor(images, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.int64)


def load_dataset(config: DataConfig) -> Dataset:
    """Pool the dataset's images, pick ``per_class`` of each class, and split them stratified.

    >>> data = load_dataset(DataConfig(classes=(3, 7), per_class=10, seed=1))
    >>> data
    Dataset(num_classes=2, image_shape=(8, 8), source='scikit-learn digits (1797 images, 8x8)', classes=(3, 7))
    >>> tuple(data.x_train.shape), tuple(data.x_test.shape), data.y_test.bincount().tolist()
    ((16, 8, 8), (4, 8, 8), [2, 2])
    """
    if config.dataset == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images, labels, max_value = digits.images, digits.target, 16.0
        source = f"scikit-learn digits ({len(images)} images, 8x8)"
    elif config.dataset == "mnist":
        images, labels, source = load_mnist_arrays(config.data_dir)
        max_value = 255.0
    else:
        images, labels, source, max_value = load_image_arrays(config.dataset)
    classes = config.classes if config.classes is not None else tuple(int(c) for c in np.unique(labels))
    picked, targets = _pick_per_class(labels, classes, config.per_class, config.seed, source)
    train, test = _stratified_split(targets, config.test_fraction, config.seed)

    def as_images(rows: np.ndarray) -> torch.Tensor:
        # Scale after picking: the full MNIST pool in float64 would take 440 MB.
        x = torch.as_tensor(images[picked[rows]].astype(np.float64) / max_value)
        return x if config.image_size is None else resize_images(x, config.image_size)

    shape = tuple(int(d) for d in images.shape[1:]) if config.image_size is None else (config.image_size,) * 2
    return Dataset(
        x_train=as_images(train), y_train=torch.as_tensor(targets[train], dtype=torch.int64),
        x_test=as_images(test), y_test=torch.as_tensor(targets[test], dtype=torch.int64),
        num_classes=len(classes), image_shape=shape, source=source + ("" if config.image_size is None else
                                                                      f", resized to {config.image_size}x{config.image_size}"),
        classes=classes,
    )


def validation_split(data: Dataset, fraction: float = 0.25, seed: int = 0) -> Dataset:
    """A validation split carved from ``data``'s training images (stratified, seeded): the rest trains, the carved
    part stands in ``x_test``/``y_test``, and ``data``'s test set is not looked at, so settings chosen on it never
    saw the test set.

    >>> data = load_dataset(DataConfig(classes=(3, 7), per_class=20, seed=1))
    >>> carved = validation_split(data, 0.25, seed=0)
    >>> len(carved.y_train), len(carved.y_test), carved.y_test.bincount().tolist()
    (24, 8, [4, 4])
    """
    train, held = _stratified_split(data.y_train.numpy(), fraction, seed)
    return Dataset(x_train=data.x_train[train], y_train=data.y_train[train], x_test=data.x_train[held],
                   y_test=data.y_train[held], num_classes=data.num_classes, image_shape=data.image_shape,
                   source=f"{data.source}, validation split ({fraction:g} of the training images, seed {seed})",
                   classes=data.classes)


def _pick_per_class(
    labels: np.ndarray, classes: tuple[int, ...], per_class: int | None, seed: int, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the pool and their labels re-indexed to 0..k-1 in the order of ``classes``."""
    rng = np.random.default_rng(seed)
    picked, targets = [], []
    for target, label in enumerate(classes):
        members = np.flatnonzero(labels == label)
        if per_class is not None and len(members) < per_class:
            raise DataError(f"class {label} has only {len(members)} images in {source}, fewer than per_class={per_class}; "
                            "ask for fewer per class")
        if len(members) == 0:
            raise DataError(f"class {label} has no images in {source}; leave it out of classes")
        if per_class is not None:
            members = rng.choice(members, size=per_class, replace=False)
        picked.append(members)
        targets.append(np.full(len(members), target, dtype=np.int64))
    return np.concatenate(picked), np.concatenate(targets)


def _stratified_split(targets: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(np.arange(len(targets)), test_size=test_fraction, stratify=targets,
                                shuffle=True, random_state=seed)
    except ValueError as exc:  # too few images for every class to reach both sides
        raise DataError(f"cannot split {len(targets)} images of {len(np.unique(targets))} classes stratified with "
                        f"test_fraction={test_fraction}: {exc}. Use a larger per_class or a different test_fraction") from None


# --- MNIST files ------------------------------------------------------------------------------------------


def mnist_dir(data_dir: str | Path | None = None) -> Path:
    """Where MNIST is read from and fetched to: ``data_dir``, else ``$QRESNET_DATA_DIR``, else ``~/.cache/qresnet/mnist``."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_VAR) or DEFAULT_CACHE_DIR
    return Path(chosen).expanduser()


def load_mnist_arrays(data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """MNIST train and test pooled: uint8 images (N, H, W), integer labels, and a description of the source.

    ``mnist.npz`` wins over IDX files in the same directory; for each IDX file the plain name wins over ``.gz``.
    """
    directory = mnist_dir(data_dir)
    origin = ("data_dir/--data-dir" if data_dir is not None else f"${DATA_DIR_VAR}" if os.environ.get(DATA_DIR_VAR)
              else "the default directory")
    if directory.is_file():
        raise DataError(f"the MNIST data directory {directory} (from {origin}) is a file; pass the directory that holds it, "
                        f"{directory.parent}")
    npz = directory / MNIST_NPZ
    if npz.is_file():
        return (*_pooled_mnist_npz(npz), str(npz))
    found = {name: next((p for p in (directory / name, directory / f"{name}.gz") if p.is_file()), None)
             for name in MNIST_FILES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        what = ("no MNIST files" if len(missing) == len(MNIST_FILES)
                else f"an incomplete set of MNIST IDX files (missing {', '.join(missing)})")
        if not directory.is_dir():
            what = "no MNIST files (the directory does not exist)"
        raise DataError(
            f"{what} in {directory} (from {origin}): looked for {MNIST_NPZ} or the four IDX files "
            f"{', '.join(MNIST_FILES)} (each optionally gzipped, .gz); {GET_MNIST}"
        )
    x_train, y_train = _idx_pair(found[MNIST_FILES[0]], found[MNIST_FILES[1]])
    x_test, y_test = _idx_pair(found[MNIST_FILES[2]], found[MNIST_FILES[3]])
    source = f"MNIST IDX files in {directory}"
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"the MNIST IDX files in {directory} disagree on the image size: train "
                        f"{x_train.shape[1:]}, test {x_test.shape[1:]}; replace them with a consistent set")
    return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test]), source


def _idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
                        "the pair must come from the same release, fetch them again")
    _check_labels(labels, labels_path)
    return images, labels


def _check_labels(labels: np.ndarray, path: Path) -> None:
    if labels.size and not 0 <= labels.min() <= labels.max() < NUM_CLASSES:
        raise DataError(f"{path} has labels {labels.min()}-{labels.max()}, but MNIST labels are 0-{NUM_CLASSES - 1}; "
                        "is it an MNIST file?")


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``ndim`` dimensions (images 3, magic 0x00000803; labels 1, 0x00000801).

    A ``.gz`` name is decompressed first. The header's dimensions must account for every byte.
    """
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # EOFError: a truncated gzip stream
        raise DataError(f"cannot read {path}: {exc}; the file is damaged, delete it and fetch it again") from None
    expected_magic = 0x0800 | ndim
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: {len(data)} bytes, shorter than an IDX header; delete it and fetch it again")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        hint = (f"; it looks gzip-compressed, name it {path.name}.gz" if data[:2] == b"\x1f\x8b"
                else "; is it an MNIST IDX file of the right kind?")
        raise DataError(f"{path} starts with magic 0x{magic:08x}, but an IDX file of unsigned bytes with {ndim} "
                        f"dimension{'s' * (ndim > 1)} starts with 0x{expected_magic:08x}{hint}")
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        size = "uncompressed size" if path.suffix == ".gz" else "size"
        raise DataError(f"{path} is {state}: its header says {' x '.join(map(str, dims))} bytes, so the {size} must be "
                        f"{expected} bytes, but it is {len(data)}; delete it and fetch it again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


# the last file read, keyed on its path, size and modification time: its arrays, and train and test pooled
_READ: dict[tuple[str, int, int], tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray]]] = {}


def read_mnist_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` of an ``mnist.npz``: uint8 images (N, H, W) and matching labels, read-only.

    The last file read is kept, keyed on its path, size and modification time (the runs of a process read it once,
    not once a run: decompressing it takes 0.3 s); a changed file is read again."""
    return _read_kept(Path(path))[0]


def _pooled_mnist_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_mnist_npz`'s train and test images, and labels, pooled (kept with it: pooling copies 55 MB)."""
    return _read_kept(path)[1]


def _read_kept(path: Path) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray]]:
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _READ:
        return _READ[key]
    arrays = _read_mnist_npz(path)
    pooled = (np.concatenate([arrays[0], arrays[2]]), np.concatenate([arrays[1], arrays[3]]))
    for array in arrays + pooled:
        array.setflags(write=False)  # shared by every run that reads the file: never edited in place
    if key is not None:
        _READ.clear()
        _READ[key] = (arrays, pooled)
    return arrays, pooled


def _read_mnist_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`read_mnist_npz`, from the file."""
    keys = NPZ_KEYS
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path} is a single .npy array, not an .npz archive with keys {', '.join(keys)}")
        with archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DataError(f"{path} lacks the key{'s' * (len(missing) > 1)} {', '.join(missing)}: an MNIST .npz "
                                f"holds {', '.join(keys)}, this one holds {', '.join(archive.files) or 'nothing'}")
            arrays = tuple(archive[k] for k in keys)  # reading a member checks its CRC
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        # numpy takes anything that is neither zip nor .npy for a pickle, and advises allow_pickle: never do that
        reason = "it is not an .npz archive (a zip file of arrays)" if "pickle" in str(exc) else str(exc)
        raise DataError(f"cannot read {path}: {reason}; the file is damaged or not an .npz archive, replace it") from None
    for split in (0, 2):
        images, labels = arrays[split], arrays[split + 1]
        xk, yk = keys[split], keys[split + 1]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{path}: {xk} has shape {images.shape} and {yk} {labels.shape}, but they must be "
                            f"(N, H, W) and (N,) with the same N")
        if images.dtype != np.uint8:
            raise DataError(f"{path}: {xk} has dtype {images.dtype}, but MNIST pixels must be uint8 0-255")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: {yk} has dtype {labels.dtype}, but labels must be integers")
        _check_labels(labels, path)
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise DataError(f"{path}: x_train images are {arrays[0].shape[1:]} but x_test images {arrays[2].shape[1:]}; "
                        "they must be the same size")
    return arrays


# --- any image dataset: npz:PATH and idx:DIR (Fashion-MNIST, KMNIST), and resizing ---------------------------


def load_image_arrays(spec: str) -> tuple[np.ndarray, np.ndarray, str, float]:
    """Train and test pooled from ``npz:PATH`` or ``idx:DIR``: images (N, H, W), integer labels >= 0, a
    description of the source, and the pixel maximum (255 for uint8, 1 for floats in [0, 1]).

    ``npz:PATH``: an .npz with x_train, y_train, x_test, y_test; grayscale images (N, H, W) of any size
    (a single channel axis, (N, H, W, 1) or (N, 1, H, W), is dropped), uint8 or floats in [0, 1].
    ``idx:DIR``: the four IDX files as Fashion-MNIST and KMNIST ship them (``*train-images-idx3-ubyte``,
    ``*train-labels-idx1-ubyte``, ``*t10k-images-idx3-ubyte``, ``*t10k-labels-idx1-ubyte``, any prefix,
    each plain or ``.gz``), read by :func:`read_idx`.
    """
    kind, _, where = str(spec).partition(":")
    if kind not in IMAGE_SOURCES or not where:
        raise DataError(f"dataset {spec!r} must be npz:PATH or idx:DIR")
    path = Path(where).expanduser()
    if kind == "npz":
        arrays, source = _read_npz_arrays(path), str(path)
    else:
        files = [_find_idx(path, role) for role in MNIST_FILES]  # the names Fashion-MNIST and KMNIST ship too
        arrays, source = tuple(read_idx(f, ndim=3 if i % 2 == 0 else 1) for i, f in enumerate(files)), f"IDX files in {path}"
    images, labels = [], []
    for split in (0, 2):
        x, y, xk, yk = _grayscale(arrays[split], path, NPZ_KEYS[split]), arrays[split + 1], NPZ_KEYS[split], NPZ_KEYS[split + 1]
        if y.ndim != 1 or len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: {xk} has shape {x.shape} and {yk} {y.shape} ({y.dtype}), but they must be "
                            "(N, H, W) images and N integer labels")
        if y.size and y.min() < 0:
            raise DataError(f"{path}: {yk} holds label {y.min()}; labels must be integers >= 0")
        images.append(x), labels.append(y.astype(np.int64))
    if images[0].shape[1:] != images[1].shape[1:]:
        raise DataError(f"{path}: train images are {images[0].shape[1:]} but test images {images[1].shape[1:]}; "
                        "they must be the same size")
    pixels = np.concatenate(images)
    if pixels.dtype == np.uint8:
        return pixels, np.concatenate(labels), source, 255.0
    if not np.issubdtype(pixels.dtype, np.floating) or not (np.isfinite(pixels).all() and 0 <= pixels.min()
                                                           and pixels.max() <= 1):
        raise DataError(f"{path}: pixels of dtype {pixels.dtype} must be uint8 0-255 or floats in [0, 1]")
    return pixels, np.concatenate(labels), source, 1.0


def _read_npz_arrays(path: Path) -> tuple[np.ndarray, ...]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in NPZ_KEYS if k not in archive.files]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)}: a dataset .npz holds {', '.join(NPZ_KEYS)}; "
                                f"this one holds {', '.join(archive.files) or 'nothing'}")
            return tuple(archive[k] for k in NPZ_KEYS)
    except (OSError, EOFError, ValueError, TypeError, zipfile.BadZipFile, zlib.error) as exc:
        # TypeError: a single .npy array is no archive; for a pickle numpy advises allow_pickle: never do that
        raise DataError(f"cannot read {path} as an .npz archive of {', '.join(NPZ_KEYS)} ({type(exc).__name__})") from None


def _grayscale(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if x.ndim == 4 and 1 in (x.shape[1], x.shape[3]):
        x = x[:, 0] if x.shape[1] == 1 else x[..., 0]
    if x.ndim != 3:
        raise DataError(f"{path}: {key} has shape {x.shape}; images must be grayscale, (N, H, W)")
    return x


def _find_idx(directory: Path, role: str) -> Path:
    found = sorted(p for p in directory.glob(f"*{role}*") if p.name.endswith((role, f"{role}.gz")))
    plain = [p for p in found if p.name.endswith(role)]  # a plain file wins over its .gz, as for MNIST
    if len(plain or found) != 1:
        what = "no file" if not found else f"{len(plain or found)} files ({', '.join(p.name for p in plain or found)})"
        raise DataError(f"idx:{directory} has {what} named *{role} (or .gz); it needs exactly one of each of "
                        f"{', '.join(MNIST_FILES)}")
    return (plain or found)[0]


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W) -> (N, size, size) float64 by antialiased bilinear interpolation: each pixel a weighted mean of
    its neighbours, so values stay within the input's range ([0, 1] stays [0, 1]); the same size is returned as is."""
    size = checked_int(size, "image_size", error=DataError)
    x = torch.as_tensor(images, dtype=torch.float64)
    if tuple(x.shape[-2:]) == (size, size):
        return x
    out = torch.nn.functional.interpolate(x[:, None], size=(size, size), mode="bilinear", antialias=True,
                                          align_corners=False)
    return out[:, 0].clamp(float(x.min()), float(x.max())) if x.numel() else out[:, 0]
