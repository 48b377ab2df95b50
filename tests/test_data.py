import gzip
import hashlib
import socket
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from qresnet import cli, data, download
from qresnet.data import MNIST_FILES, DataConfig, DataError, load_dataset

REAL_MNIST = Path("/work/shared/data/mnist.npz")
N_TRAIN, N_TEST, K = 30, 15, 3  # synthetic MNIST: 45 images of 28x28, labels i % 3


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    # No test may see the caller's QRESNET_DATA_DIR or ~/.cache/qresnet.
    monkeypatch.delenv(data.DATA_DIR_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def synthetic_mnist():
    """Image i is filled with 5*i, so every loaded pixel tells which pooled image it came from."""
    index = np.arange(N_TRAIN + N_TEST)
    images = np.broadcast_to((5 * index).astype(np.uint8)[:, None, None], (len(index), 28, 28)).copy()
    labels = (index % K).astype(np.uint8)
    return images[:N_TRAIN], labels[:N_TRAIN], images[N_TRAIN:], labels[N_TRAIN:]


def idx_bytes(array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_dir(directory, gz=False):
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in zip(MNIST_FILES, synthetic_mnist()):
        raw = idx_bytes(array)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)
    return directory


def write_npz_dir(directory, **overrides):
    directory.mkdir(parents=True, exist_ok=True)
    arrays = dict(zip(("x_train", "y_train", "x_test", "y_test"), synthetic_mnist()))
    arrays.update(overrides)
    np.savez_compressed(directory / "mnist.npz", **{k: v for k, v in arrays.items() if v is not None})
    return directory


def pool_index(x):
    """Which synthetic image each loaded image is (see synthetic_mnist)."""
    return torch.round(x[:, 0, 0] * 255 / 5).long()


def assert_stratified(dataset, fraction):
    for c in range(dataset.num_classes):
        n_train, n_test = int((dataset.y_train == c).sum()), int((dataset.y_test == c).sum())
        assert abs(n_test - fraction * (n_train + n_test)) <= 1, (c, n_train, n_test)


# --- digits ------------------------------------------------------------------------------------------------


def test_digits_per_class_shapes_range_and_stratified_split():
    d = load_dataset(DataConfig(per_class=50))
    assert d.x_train.shape == (400, 8, 8) and d.x_test.shape == (100, 8, 8)
    assert d.x_train.dtype == torch.float64 and d.y_train.dtype == torch.int64
    assert 0 <= d.x_train.min() and d.x_train.max() <= 1 and d.x_train.max() > 0.9
    assert d.num_classes == 10 and d.classes == tuple(range(10)) and d.image_shape == (8, 8)
    assert d.y_train.bincount().tolist() == [40] * 10 and d.y_test.bincount().tolist() == [10] * 10
    assert "digits" in d.source


def test_digits_all_images_split_stratified():
    d = load_dataset(DataConfig(test_fraction=0.3))
    assert len(d.y_train) + len(d.y_test) == 1797
    assert_stratified(d, 0.3)


def test_seed_reproducible_and_different_seeds_differ():
    a, b = (load_dataset(DataConfig(per_class=20, seed=3)) for _ in range(2))
    c = load_dataset(DataConfig(per_class=20, seed=4))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


def test_digits_class_subset_reindexed_in_given_order():
    from sklearn.datasets import load_digits

    raw = load_digits()
    label_of = {(img / 16.0).tobytes(): int(t) for img, t in zip(raw.images, raw.target)}
    d = load_dataset(DataConfig(classes=(7, 3), per_class=20))
    assert d.classes == (7, 3) and d.num_classes == 2
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        assert [label_of[img.numpy().tobytes()] for img in x] == [d.classes[t] for t in y.tolist()]


def test_load_digits_images_unchanged():
    images, labels = data.load_digits_images(5, seed=1)
    assert images.shape == (5, 8, 8) and labels.shape == (5,) and images.max() <= 1


# --- MNIST files -------------------------------------------------------------------------------------------


def test_mnist_npz_pools_train_and_test_and_scales(tmp_path):
    directory = write_npz_dir(tmp_path / "npz")
    d = load_dataset(DataConfig("mnist", data_dir=directory, per_class=10, seed=1))
    assert d.x_train.shape == (24, 28, 28) and d.x_test.shape == (6, 28, 28)
    assert d.classes == (0, 1, 2) and d.image_shape == (28, 28) and d.source == str(directory / "mnist.npz")
    x = torch.cat([d.x_train, d.x_test])
    index = pool_index(x)
    assert torch.allclose(x, (5 * index).double()[:, None, None].expand(-1, 28, 28) / 255)  # pixels / 255
    assert torch.equal(torch.cat([d.y_train, d.y_test]), index % K)  # each image keeps its own label
    assert len(set(index.tolist())) == 30 and (index >= N_TRAIN).any()  # without replacement, from both parts
    assert_stratified(d, 0.2)


def test_an_npz_is_pooled_once_and_a_changed_one_read_again(tmp_path):
    """The runs of a process share one read-only pool of the file; the file rewritten, its new pixels are read."""
    directory = write_npz_dir(tmp_path / "npz")
    images, labels, _ = data.load_mnist_arrays(directory)
    again, _, _ = data.load_mnist_arrays(directory)
    assert again is images and not images.flags.writeable and not labels.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        images[0, 0, 0] = 1
    x_train, y_train, x_test, y_test = synthetic_mnist()
    write_npz_dir(tmp_path / "npz", x_train=x_train + 1, x_test=x_test + 1)
    changed, _, _ = data.load_mnist_arrays(directory)
    np.testing.assert_array_equal(changed, np.concatenate([x_train, x_test]) + 1)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_load_like_the_npz(tmp_path, gz):
    config = dict(dataset="mnist", classes=(2, 0), per_class=12, test_fraction=0.25, seed=5)
    from_npz = load_dataset(DataConfig(data_dir=write_npz_dir(tmp_path / "npz"), **config))
    from_idx = load_dataset(DataConfig(data_dir=write_idx_dir(tmp_path / "idx", gz=gz), **config))
    assert from_idx.source == f"MNIST IDX files in {tmp_path / 'idx'}"
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(from_npz, name), getattr(from_idx, name)), name
    assert from_idx.classes == (2, 0) and from_idx.y_test.bincount().tolist() == [3, 3]
    assert torch.equal(pool_index(from_idx.x_train) % K, torch.tensor((2, 0))[from_idx.y_train])


def test_mnist_dir_from_environment(tmp_path, monkeypatch):
    write_idx_dir(tmp_path / "env")
    monkeypatch.setenv(data.DATA_DIR_VAR, str(tmp_path / "env"))
    assert load_dataset(DataConfig("mnist")).source == f"MNIST IDX files in {tmp_path / 'env'}"


def test_missing_data_dir_says_how_to_get_mnist():
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig("mnist"))
    message = str(err.value)
    assert "QRESNET_DATA_DIR" in message and "qresnet data fetch mnist" in message and "--data-dir" in message
    assert str(data.mnist_dir()) in message and "mnist.npz" in message and all(n in message for n in MNIST_FILES)
    assert "does not exist" in message and "from the default directory" in message


def test_incomplete_idx_set_names_the_missing_file(tmp_path):
    directory = write_idx_dir(tmp_path / "idx")
    (directory / MNIST_FILES[3]).unlink()
    with pytest.raises(DataError, match=f"missing {MNIST_FILES[3]}"):
        load_dataset(DataConfig("mnist", data_dir=directory))


def test_truncated_and_padded_idx(tmp_path):
    directory = write_idx_dir(tmp_path / "idx")
    images = directory / MNIST_FILES[0]
    images.write_bytes(images.read_bytes()[:-10])
    expected = 16 + N_TRAIN * 28 * 28
    with pytest.raises(DataError, match=f"{images}.* is truncated.*{expected} bytes, but it is {expected - 10}"):
        load_dataset(DataConfig("mnist", data_dir=directory))
    images.write_bytes(idx_bytes(synthetic_mnist()[0]) + b"\0")
    with pytest.raises(DataError, match=f"longer than its header says.*but it is {expected + 1}"):
        load_dataset(DataConfig("mnist", data_dir=directory))


def test_truncated_gzip_idx(tmp_path):
    directory = write_idx_dir(tmp_path / "idx", gz=True)
    labels = directory / f"{MNIST_FILES[1]}.gz"
    labels.write_bytes(labels.read_bytes()[:-12])
    with pytest.raises(DataError, match=f"cannot read {labels}"):
        load_dataset(DataConfig("mnist", data_dir=directory))


def test_wrong_magic_and_mismatched_counts(tmp_path):
    directory = write_idx_dir(tmp_path / "idx")
    labels = directory / MNIST_FILES[1]
    labels.write_bytes(idx_bytes(synthetic_mnist()[0]))  # an images file under the labels name
    with pytest.raises(DataError, match=f"{labels} starts with magic 0x00000803.*0x00000801"):
        load_dataset(DataConfig("mnist", data_dir=directory))
    labels.write_bytes(gzip.compress(idx_bytes(synthetic_mnist()[1])))
    with pytest.raises(DataError, match="looks gzip-compressed"):
        load_dataset(DataConfig("mnist", data_dir=directory))
    labels.write_bytes(idx_bytes(synthetic_mnist()[1][:-1]))
    with pytest.raises(DataError, match=f"holds {N_TRAIN} images but .* holds {N_TRAIN - 1} labels"):
        load_dataset(DataConfig("mnist", data_dir=directory))


def test_npz_missing_key_wrong_shape_and_corrupt(tmp_path):
    directory = write_npz_dir(tmp_path / "a", y_test=None)
    with pytest.raises(DataError, match="mnist.npz lacks the key y_test"):
        load_dataset(DataConfig("mnist", data_dir=directory))
    directory = write_npz_dir(tmp_path / "b", x_train=np.zeros((N_TRAIN, 784), np.uint8))
    with pytest.raises(DataError, match=r"x_train has shape \(30, 784\)"):
        load_dataset(DataConfig("mnist", data_dir=directory))
    directory = write_npz_dir(tmp_path / "c")
    npz = directory / "mnist.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(DataError, match=f"cannot read {npz}"):
        load_dataset(DataConfig("mnist", data_dir=directory))
    npz.write_bytes(b"not a zip archive at all")
    with pytest.raises(DataError, match=f"cannot read {npz}"):
        load_dataset(DataConfig("mnist", data_dir=directory))


def test_labels_outside_0_to_9(tmp_path):
    directory = write_npz_dir(tmp_path / "npz", y_test=np.full(N_TEST, 12, np.uint8))
    with pytest.raises(DataError, match="has labels 12-12, but MNIST labels are 0-9"):
        load_dataset(DataConfig("mnist", data_dir=directory))


def test_per_class_larger_than_available():
    with pytest.raises(DataError, match=r"class 0 has only 178 images in scikit-learn digits.*per_class=500"):
        load_dataset(DataConfig(per_class=500))


def test_split_too_small_for_every_class():
    with pytest.raises(DataError, match="cannot split 10 images of 10 classes"):
        load_dataset(DataConfig(per_class=1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(dataset="cifar"), "dataset='cifar' is unknown: use one of digits, mnist"),
    (dict(per_class=0), "per_class=0 must be a positive integer"),
    (dict(per_class=2.5), "per_class=2.5"),
    (dict(classes=(0, 10)), r"classes=\(0, 10\) must be distinct labels 0-9"),
    (dict(classes=()), "classes=()"),
    (dict(classes=(1, 1)), "lists a label twice"),
    (dict(test_fraction=1.0), "test_fraction=1.0 must be a number strictly between 0 and 1"),
    (dict(test_fraction=0), "test_fraction=0"),
    (dict(seed=-1), "seed=-1"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(DataError, match=match):
        DataConfig(**kwargs)


def test_config_normalises_and_serialises(tmp_path):
    config = DataConfig("mnist", data_dir=tmp_path, classes=[0, 1, 2, 3], per_class=200, seed=7)
    assert config.classes == (0, 1, 2, 3) and hash(config)
    assert config.to_dict() == {"dataset": "mnist", "data_dir": str(tmp_path), "classes": [0, 1, 2, 3],
                                "per_class": 200, "test_fraction": 0.2, "seed": 7,
                                "image_size": None}


# --- fetching from a server on 127.0.0.1 --------------------------------------------------------------------


@contextmanager
def serve(directory):
    """A static file server on a free loopback port; yields its URL and the paths requested."""
    requests = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(directory), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def synthetic_checksums():
    return {name: hashlib.sha256(idx_bytes(a)).hexdigest() for name, a in zip(MNIST_FILES, synthetic_mnist())}


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_fetch_downloads_verifies_and_caches(tmp_path):
    mirror = write_idx_dir(tmp_path / "mirror", gz=True)
    cache = tmp_path / "cache" / "mnist"
    with serve(mirror) as (url, requests):
        assert download.fetch_mnist(cache, url, synthetic_checksums(), timeout=5, progress=False) == cache
        assert requests == [f"/{name}.gz" for name in MNIST_FILES]
        assert download.fetch_mnist(cache, url, synthetic_checksums(), timeout=5, progress=False) == cache
        assert len(requests) == 4  # everything was cached with the right checksum
    assert sorted(p.name for p in cache.iterdir()) == sorted(MNIST_FILES)
    assert all(download.sha256_file(cache / n) == s for n, s in synthetic_checksums().items())
    assert load_dataset(DataConfig("mnist", data_dir=cache)).source == f"MNIST IDX files in {cache}"


def test_fetch_falls_back_to_uncompressed_and_replaces_a_bad_copy(tmp_path):
    mirror = write_idx_dir(tmp_path / "mirror")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / MNIST_FILES[2]).write_bytes(b"stale")
    with serve(mirror) as (url, requests):
        download.fetch_mnist(cache, url, synthetic_checksums(), timeout=5, progress=False)
    assert requests[:2] == [f"/{MNIST_FILES[0]}.gz", f"/{MNIST_FILES[0]}"]
    assert download.sha256_file(cache / MNIST_FILES[2]) == synthetic_checksums()[MNIST_FILES[2]]


def test_fetch_rejects_a_corrupt_file_and_keeps_nothing_of_it(tmp_path):
    mirror = write_idx_dir(tmp_path / "mirror", gz=True)
    bad = mirror / f"{MNIST_FILES[3]}.gz"
    bad.write_bytes(gzip.compress(idx_bytes(synthetic_mnist()[3][::-1])))  # same size, other labels
    cache = tmp_path / "cache"
    expected = synthetic_checksums()[MNIST_FILES[3]]
    actual = hashlib.sha256(gzip.decompress(bad.read_bytes())).hexdigest()
    with serve(mirror) as (url, _), pytest.raises(DataError) as err:
        download.fetch_mnist(cache, url, synthetic_checksums(), timeout=5, progress=False)
    assert MNIST_FILES[3] in str(err.value) and expected in str(err.value) and actual in str(err.value)
    assert not (cache / MNIST_FILES[3]).exists() and leftovers(cache) == []
    assert all((cache / n).is_file() for n in MNIST_FILES[:3])  # the verified ones stay


@pytest.mark.parametrize("damage, match", [
    (lambda gz: b"plain text, not gzip", "is not valid gzip data"),
    (lambda gz: gz[: len(gz) // 2], "ended before the end of its gzip stream"),
])
def test_fetch_rejects_invalid_or_truncated_gzip(tmp_path, damage, match):
    mirror = write_idx_dir(tmp_path / "mirror", gz=True)
    served = mirror / f"{MNIST_FILES[0]}.gz"
    served.write_bytes(damage(served.read_bytes()))
    cache = tmp_path / "cache"
    with serve(mirror) as (url, _), pytest.raises(DataError, match=match):
        download.fetch_mnist(cache, url, synthetic_checksums(), timeout=5, progress=False)
    assert list(cache.iterdir()) == []


def test_fetch_without_network_says_how_to_use_a_copy(tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError) as err:
        download.fetch_mnist(tmp_path / "cache", f"http://127.0.0.1:{port}", timeout=5, progress=False)
    assert "may have no network" in str(err.value) and "QRESNET_DATA_DIR" in str(err.value) and "--data-dir" in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_fetch_requires_every_checksum(tmp_path):
    with pytest.raises(DataError, match=f"no SHA-256 given for {MNIST_FILES[1]}"):
        download.fetch_mnist(tmp_path, checksums={n: "0" * 64 for n in MNIST_FILES if n != MNIST_FILES[1]})


def test_cli_data_fetch(tmp_path, monkeypatch, capsys):
    real_fetch = download.fetch_mnist
    monkeypatch.setattr(download, "fetch_mnist", lambda d, u: real_fetch(d, u, synthetic_checksums(), timeout=5, progress=False))
    with serve(write_idx_dir(tmp_path / "mirror", gz=True)) as (url, _):
        assert cli.main(["data", "fetch", "mnist", "--data-dir", str(tmp_path / "c"), "--url", url]) == 0
    out = capsys.readouterr().out
    assert f"MNIST is in {tmp_path / 'c'}" in out and str(tmp_path / "c" / MNIST_FILES[0]) in out
    monkeypatch.setattr(download, "fetch_mnist", real_fetch)
    assert cli.main(["data", "fetch", "mnist", "--data-dir", str(tmp_path / "d"), "--url", "http://127.0.0.1:9/"]) == 2
    assert "error: could not download" in capsys.readouterr().err


# --- the real MNIST ----------------------------------------------------------------------------------------


@pytest.fixture
def real_mnist_dir():
    if not REAL_MNIST.is_file():
        pytest.skip(f"{REAL_MNIST} is absent: the real-MNIST checks need it (see /work/shared/data/README.md)")
    return REAL_MNIST.parent


def test_real_mnist_paper_subset(real_mnist_dir):
    d = load_dataset(DataConfig("mnist", data_dir=real_mnist_dir, classes=(0, 1, 2, 3), per_class=200))
    assert d.x_train.shape == (640, 28, 28) and d.x_test.shape == (160, 28, 28)
    assert d.y_train.bincount().tolist() == [160] * 4 and d.y_test.bincount().tolist() == [40] * 4
    assert 0.11 < float(d.x_train.mean()) < 0.15 and d.x_train.min() == 0 and d.x_train.max() == 1


def test_real_mnist_idx_files_match_the_published_checksums(real_mnist_dir, tmp_path):
    # Rebuilt from the npz, the IDX files must hash to MNIST_SHA256, so fetch finds them cached.
    arrays = data.read_mnist_npz(real_mnist_dir / "mnist.npz")
    cache = tmp_path / "idx"
    cache.mkdir()
    for name, array in zip(MNIST_FILES, arrays):
        (cache / name).write_bytes(idx_bytes(array))
    assert download.fetch_mnist(cache, "http://127.0.0.1:9/", progress=False) == cache  # nothing to download
    config = dict(dataset="mnist", classes=(4, 9), per_class=50)
    from_idx = load_dataset(DataConfig(data_dir=cache, **config))
    assert torch.equal(from_idx.x_test, load_dataset(DataConfig(data_dir=real_mnist_dir, **config)).x_test)
