"""Any image dataset: ``npz:PATH`` (x_train, y_train, x_test, y_test) and ``idx:DIR`` (the four IDX files, as
Fashion-MNIST and KMNIST ship them), read with MNIST's checks, and resizing. :func:`qresnet.data.load_dataset` reads
them when a config's ``dataset`` names one."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from qresnet.choices import IMAGE_SOURCES
from qresnet.data import read_idx
from qresnet.errors import DataError
from qresnet.values import checked_int

_SPLITS = ("x_train", "y_train", "x_test", "y_test")
_IDX_ROLES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


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
        files = [_find_idx(path, role) for role in _IDX_ROLES]
        arrays, source = tuple(read_idx(f, ndim=3 if i % 2 == 0 else 1) for i, f in enumerate(files)), f"IDX files in {path}"
    images, labels = [], []
    for split in (0, 2):
        x, y, xk, yk = _grayscale(arrays[split], path, _SPLITS[split]), arrays[split + 1], _SPLITS[split], _SPLITS[split + 1]
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
            missing = [k for k in _SPLITS if k not in archive.files]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)}: a dataset .npz holds {', '.join(_SPLITS)}; "
                                f"this one holds {', '.join(archive.files) or 'nothing'}")
            return tuple(archive[k] for k in _SPLITS)
    except (OSError, EOFError, ValueError, TypeError, zipfile.BadZipFile, zlib.error) as exc:
        # TypeError: a single .npy array is no archive; for a pickle numpy advises allow_pickle: never do that
        raise DataError(f"cannot read {path} as an .npz archive of {', '.join(_SPLITS)} ({type(exc).__name__})") from None


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
                        f"{', '.join(_IDX_ROLES)}")
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
