"""Any image dataset (issue 26): npz:PATH and idx:DIR readers, and resizing. The files are written here by hand."""

import gzip
import struct

import numpy as np
import pytest
import torch

from qresnet.config import DataConfig
from qresnet.data import load_dataset, load_image_arrays, resize_images
from qresnet.errors import QresnetError


def write_idx(path, array: np.ndarray) -> None:
    """The IDX format: 0x00 0x00 0x08 (unsigned bytes) ndim, the dimensions as big-endian int32, then the bytes."""
    data = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_npz_of_any_size_pools_train_and_test(tmp_path, rng):
    x_train, x_test = rng.uniform(0, 1, (6, 12, 10)), rng.uniform(0, 1, (3, 12, 10))
    y_train, y_test = np.array([0, 1, 2, 3, 4, 11]), np.array([11, 0, 2])
    np.savez(tmp_path / "mine.npz", x_train=x_train, y_train=y_train, x_test=x_test[:, None], y_test=y_test)
    images, labels, source, top = load_image_arrays(f"npz:{tmp_path / 'mine.npz'}")
    np.testing.assert_array_equal(images, np.concatenate([x_train, x_test]))
    np.testing.assert_array_equal(labels, [0, 1, 2, 3, 4, 11, 11, 0, 2])
    assert top == 1.0 and source.endswith("mine.npz")
    np.savez(tmp_path / "bytes.npz", x_train=(x_train * 255).astype(np.uint8), y_train=y_train,
             x_test=(x_test * 255).astype(np.uint8), y_test=y_test)
    assert load_image_arrays(f"npz:{tmp_path / 'bytes.npz'}")[3] == 255.0
    # a dataset of one's own may label more than the digits' ten classes, and --classes picks among them
    data = load_dataset(DataConfig(f"npz:{tmp_path / 'mine.npz'}", classes=(11, 2), test_fraction=0.5))
    assert data.classes == (11, 2) and sorted(data.y_train.tolist() + data.y_test.tolist()) == [0, 0, 1, 1]
    with pytest.raises(QresnetError, match="must be distinct labels 0-9"):
        DataConfig("mnist", classes=(0, 11))


@pytest.mark.parametrize("prefix, gz", [("", False), ("fashion-", True)])
def test_idx_directory_as_fashion_mnist_ships_it(tmp_path, rng, prefix, gz):
    train, test = rng.integers(0, 256, (5, 4, 6)), rng.integers(0, 256, (2, 4, 6))
    y_train, y_test = rng.integers(0, 10, 5), rng.integers(0, 10, 2)
    suffix = ".gz" if gz else ""
    for name, array in [("train-images-idx3-ubyte", train), ("train-labels-idx1-ubyte", y_train),
                        ("t10k-images-idx3-ubyte", test), ("t10k-labels-idx1-ubyte", y_test)]:
        write_idx(tmp_path / f"{prefix}{name}{suffix}", array)
    images, labels, _, top = load_image_arrays(f"idx:{tmp_path}")
    np.testing.assert_array_equal(images, np.concatenate([train, test]))
    np.testing.assert_array_equal(labels, np.concatenate([y_train, y_test]))
    assert top == 255.0 and images.dtype == np.uint8


def _npz(path, **override):
    arrays = {"x_train": np.zeros((2, 4, 4)), "y_train": np.array([0, 1]), "x_test": np.zeros((1, 4, 4)),
              "y_test": np.array([1])}
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return f"npz:{path}"


@pytest.mark.parametrize("override, match", [
    ({"y_test": None}, "lacks y_test"),
    ({"y_train": np.array([0, -1])}, "holds label -1"),
    ({"y_train": np.array([0.0, 1.0])}, "integer labels"),
    ({"y_train": np.array([0, 1, 1])}, "N integer labels"),
    ({"x_train": np.zeros((2, 4, 4, 3))}, "must be grayscale"),
    ({"x_test": np.zeros((1, 5, 4))}, "same size"),
    ({"x_train": np.full((2, 4, 4), 2.0)}, "uint8 0-255 or floats in \\[0, 1\\]"),
])
def test_bad_npz_files_are_refused_in_one_line(tmp_path, override, match):
    with pytest.raises(QresnetError, match=match) as excinfo:
        load_image_arrays(_npz(tmp_path / "bad.npz", **override))
    assert "\n" not in str(excinfo.value)


def test_bad_sources_are_refused_in_one_line(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"no zip")
    np.save(tmp_path / "single.npy", np.zeros(3))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((1, 2, 2)))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((1, 2, 2)))
    for spec, match in [("csv:x", "must be npz:PATH or idx:DIR"), ("npz:", "must be npz:PATH"),
                        (f"npz:{tmp_path / 'junk.npz'}", "cannot read"), (f"npz:{tmp_path / 'single.npy'}", "cannot read"),
                        (f"npz:{tmp_path / 'none.npz'}", "cannot read"),
                        (f"idx:{tmp_path}", "no file named \\*train-labels-idx1-ubyte")]:
        with pytest.raises(QresnetError, match=match) as excinfo:
            load_image_arrays(spec)
        assert "\n" not in str(excinfo.value)


def test_resize_keeps_range_constants_and_shape(rng):
    images = torch.as_tensor(rng.uniform(0, 1, (3, 28, 28)))
    small = resize_images(images, 14)
    assert small.shape == (3, 14, 14) and small.dtype == torch.float64
    assert 0 <= small.min() and small.max() <= 1
    constant = torch.full((1, 28, 28), 0.3, dtype=torch.float64)
    torch.testing.assert_close(resize_images(constant, 9), torch.full((1, 9, 9), 0.3, dtype=torch.float64))
    torch.testing.assert_close(resize_images(constant, 40), torch.full((1, 40, 40), 0.3, dtype=torch.float64))
    assert torch.equal(resize_images(images, 28), images)
    # a left-to-right ramp stays a ramp: each pixel a weighted mean of its neighbours
    ramp = torch.linspace(0, 1, 28, dtype=torch.float64).expand(1, 28, 28)
    row = resize_images(ramp, 10)[0]
    assert torch.all(row[:, 1:] > row[:, :-1]) and torch.allclose(row, row[:1].expand(10, 10))
    with pytest.raises(QresnetError, match="image_size=0"):
        resize_images(images, 0)
