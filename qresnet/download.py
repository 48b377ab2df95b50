"""Downloading MNIST: the four IDX files from a mirror, each verified against its published SHA-256 before it
replaces anything in the cache (``qresnet data fetch mnist``). Reading them is :mod:`qresnet.data`'s job."""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from qresnet.data import DATA_DIR_VAR, MNIST_FILES, MNIST_NPZ, mnist_dir
from qresnet.errors import DataError

# A public mirror of the original gzipped files (the one torchvision uses).
DEFAULT_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
# SHA-256 of the uncompressed IDX files, the widely published values for the official files.
MNIST_SHA256: Mapping[str, str] = MappingProxyType({
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
})
_CHUNK = 1 << 16
def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file as hex, read in chunks so a 47 MB IDX file is never held twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_mnist(
    cache_dir: str | Path | None = None,
    base_url: str = DEFAULT_MNIST_URL,
    checksums: Mapping[str, str] = MNIST_SHA256,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download the four MNIST IDX files into ``cache_dir`` (default :func:`mnist_dir`) and return it.

    Each file is fetched as ``<base_url><name>.gz`` (or, if that is not found, ``<name>``), stored
    uncompressed, and kept only if its SHA-256 matches ``checksums``; files already present with the
    right checksum are not downloaded again. Writes go to a temporary file renamed into place, so an
    interrupted or rejected download never leaves a partial file under the real name.
    """
    directory = mnist_dir(cache_dir)
    unknown = [name for name in MNIST_FILES if name not in checksums]
    if unknown:
        raise DataError(f"no SHA-256 given for {', '.join(unknown)}; every downloaded file is verified, pass all four")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the MNIST directory {directory}: {exc}; pass a writable --data-dir") from None
    base_url = base_url.rstrip("/") + "/"
    for name in MNIST_FILES:
        target = directory / name
        expected = checksums[name].lower()
        if target.is_file() and sha256_file(target) == expected:
            continue
        _download_verified(base_url, name, target, expected, timeout, progress)
    return directory


def _download_verified(base_url: str, name: str, target: Path, expected: str, timeout: float, progress: bool) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            url, digest = _download(base_url, name, out, timeout, progress)
        if digest != expected:
            raise DataError(f"{name} downloaded from {url} has SHA-256 {digest}, but {expected} was expected; "
                            "the download is corrupt or the mirror serves other files. Nothing was kept; try again "
                            "or use another --url")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _download(base_url: str, name: str, out: BinaryIO, timeout: float, progress: bool) -> tuple[str, str]:
    """Stream ``name`` (gzipped if the server has it) into ``out``; return the URL used and the SHA-256 written."""
    from tqdm import tqdm

    response, url = None, ""
    for url in (f"{base_url}{name}.gz", f"{base_url}{name}"):
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
            break
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise DataError(f"{url} answered HTTP {exc.code} {exc.reason}; try again later or use another --url") from None
        except ValueError as exc:  # urllib's word for a malformed URL
            raise DataError(f"{url} is not a valid URL ({exc}); pass --url like {DEFAULT_MNIST_URL}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _network_error(url, exc) from None
    if response is None:
        raise DataError(f"{base_url} has neither {name}.gz nor {name} (HTTP 404 for both); check --url")
    digest = hashlib.sha256()
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if url.endswith(".gz") else None
    total = int(response.headers.get("Content-Length") or 0) or None
    with response, tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr, disable=not progress) as bar:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise _network_error(url, exc) from None
            if not chunk:
                break
            bar.update(len(chunk))
            if inflate is not None:
                try:
                    chunk = inflate.decompress(chunk)
                except zlib.error as exc:
                    raise DataError(f"{url} is not valid gzip data ({exc}); try again or use another --url") from None
            digest.update(chunk)
            out.write(chunk)
    if inflate is not None and not inflate.eof:
        raise DataError(f"the download of {url} ended before the end of its gzip stream; try again")
    return url, digest.hexdigest()


def _network_error(url: str, exc: BaseException) -> DataError:
    reason = getattr(exc, "reason", None) or exc
    return DataError(
        f"could not download {url}: {reason}. This machine may have no network: copy {MNIST_NPZ} or the four IDX "
        f"files from a machine that has one into a directory and pass --data-dir DIR or set {DATA_DIR_VAR}=DIR"
    )


# --- any image dataset: npz:PATH, idx:DIR, resizing ------------------------------------------------------
