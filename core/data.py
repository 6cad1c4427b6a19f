"""Finding, reading, checking and splitting Weightscope's data sets.

Fashion-MNIST comes as four IDX files (images ``(n, 28, 28)`` uint8, labels
``(n,)`` uint8). :func:`load_dataset` looks for them in a fixed order of
folders, checks every file against the SHA-256 of its decompressed payload,
may download them, and falls back to scikit-learn's 8 x 8 digits, saying
plainly why. Every array handed out is read-only, so cached data sets can be
shared between pages without copies.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import http.client
import io
import math
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

#: name -> (SHA-256 of the decompressed file, header included; its size in bytes).
#: Payload hashes, not .gz hashes: Debian recompressed the files.
FASHION_FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47_040_016),
    "train-labels-idx1-ubyte": (
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008),
    "t10k-images-idx3-ubyte": (
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016),
    "t10k-labels-idx1-ubyte": (
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008),
}

MIRRORS: tuple[str, ...] = (
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

KNOWN_DATASETS: tuple[str, ...] = ("fashion-mnist", "digits")

# (images, labels) file names of each split, in the order FASHION_FILES lists them.
_FASHION_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_GET_FASHION = (
    "to get Fashion-MNIST, run `apt-get install dataset-fashion-mnist`, allow the download "
    "(unset WEIGHTSCOPE_OFFLINE) or set WEIGHTSCOPE_DATA_DIR to a folder holding the four IDX files"
)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image data set with a fixed train/test split.

    Attributes
    ----------
    name : str
        ``"fashion-mnist"`` or ``"digits"``.
    x_train : ndarray of shape (n_train, H, W), uint8, read-only
        Pixel intensities 0..255.
    y_train : ndarray of shape (n_train,), int64, read-only
        Class indices into `class_names`.
    x_test : ndarray of shape (n_test, H, W), uint8, read-only
    y_test : ndarray of shape (n_test,), int64, read-only
    class_names : tuple of str
        One name per class, indexed by label.
    source : str
        One sentence saying where the data came from, or, for the fallback,
        why Fashion-MNIST was not used and how to get it.
    fingerprint : str
        12 hex characters identifying the content (not its location).
    is_fallback : bool
        True for the digits data set, which stands in for Fashion-MNIST.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str
    fingerprint: str
    is_fallback: bool

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != np.uint8 or x.ndim != 3:
                raise ValueError(f"x_{split} must be uint8 (n, H, W), got {x.dtype} {x.shape}")
            if y.dtype != np.int64 or y.shape != x.shape[:1]:
                raise ValueError(f"y_{split} must be int64 ({len(x)},), got {y.dtype} {y.shape}")
            if y.size and (y.min() < 0 or y.max() >= len(self.class_names)):
                raise ValueError(f"y_{split} has labels outside 0..{len(self.class_names) - 1}")
            # Read-only so that a cached data set cannot be changed by one of its users.
            x.setflags(write=False)
            y.setflags(write=False)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"train images {self.x_train.shape[1:]} and test images "
                             f"{self.x_test.shape[1:]} differ in size")

    @property
    def n_classes(self) -> int:
        """Number of classes, ``len(class_names)``."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int]:
        """Image size ``(H, W)`` in pixels."""
        return self.x_train.shape[1], self.x_train.shape[2]


# --------------------------------------------------------------------------- IDX files

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_MAX_DIM = 10**7
_MAX_BYTES = 2**31
_IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int",
              0x0D: "float", 0x0E: "double"}
_IDX_HINT = "expected an IDX images or labels file such as train-images-idx3-ubyte.gz"


class _IdxRead(NamedTuple):
    array: np.ndarray  # read-only uint8, shape as the header declares
    sha256: str        # of the whole decompressed file, header included
    nbytes: int        # size of the whole decompressed file


def gunzip(raw: BinaryIO, name: str) -> gzip.GzipFile:
    """gzip data read from ``raw`` as a stream of its decompressed bytes.

    Each ``read(size)`` decompresses at most ``size`` bytes (plus GzipFile's small
    buffer), which is what keeps a gzip bomb from filling memory: callers never ask
    for more than an IDX header declares plus one byte. Read it inside
    :func:`gzip_errors`. Members may follow one another; zero padding after a
    member is skipped up to :data:`_MAX_PADDING` bytes, longer padding is refused.
    """
    return gzip.GzipFile(fileobj=_PaddingGuard(raw, name), mode="rb")


@contextlib.contextmanager
def gzip_errors(name: str, advice: str = "download it again") -> Iterator[None]:
    """gzip's exceptions while reading ``name`` as ValueErrors saying what is wrong."""
    try:
        yield
    except EOFError:
        raise ValueError(f"{name} is a truncated gzip file (its compressed data ends early); "
                         f"{advice}") from None
    except gzip.BadGzipFile as err:
        # Data is sent to gzip only after its magic bytes, so a missing magic number can
        # only be met after a first member: something else follows the gzip data.
        if str(err).startswith("Not a gzipped file"):
            raise ValueError(f"{name} has stray bytes after its gzip data; {advice}") from None
        raise ValueError(f"{name} is a damaged gzip file ({err}); {advice}") from None
    except zlib.error as err:
        raise ValueError(f"{name} is a damaged gzip file ({err}); {advice}") from None


#: Zero bytes after a gzip member beyond what gzip's read buffer already holds.
_MAX_PADDING = 4096


class _PaddingGuard:
    """``raw`` for :class:`gzip.GzipFile`, refusing long zero padding after a member.

    GzipFile skips padding one ``read(1)`` at a time, about 0.7 s per megabyte: a small
    gzip followed by 50 MB of zeros would hold a thread for half a minute.
    """

    def __init__(self, raw: BinaryIO, name: str):
        self._raw, self._name, self._zeros = raw, name, 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if size == 1 and data == b"\0":
            self._zeros += 1
            if self._zeros > _MAX_PADDING:
                raise gzip.BadGzipFile("Not a gzipped file (long zero padding)")
        else:
            self._zeros = 0
        return data


def _read_capped(stream, n: int, hasher) -> bytes:
    """Read up to `n` bytes in chunks, so a short stream never costs an `n`-byte buffer."""
    parts: list[bytes] = []
    while n > 0:
        chunk = stream.read(min(n, _CHUNK))
        if not chunk:
            break
        hasher.update(chunk)
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def parse_idx_header(head: bytes, name: str) -> int:
    """Check the 4 magic bytes ``00 00 type ndim``; return ndim."""
    if len(head) < 4 or head[:2] != b"\0\0":
        raise ValueError(f"{name} is not an IDX file (magic bytes {head[:8].hex() or 'none'}); "
                         f"{_IDX_HINT}")
    code, ndim = head[2], head[3]
    if code != 0x08:
        kind = _IDX_TYPES.get(code, "unknown")
        raise ValueError(f"{name} uses IDX data type code 0x{code:02X} ({kind}); Weightscope "
                         "reads only code 0x08 (unsigned byte), as Fashion-MNIST uses")
    if not 1 <= ndim <= 4:
        raise ValueError(f"{name} declares {ndim} dimensions; IDX images or labels have 1 to 4")
    return ndim


def parse_idx_dims(raw: bytes, ndim: int, name: str) -> tuple[int, ...]:
    """The ``ndim`` big-endian dimensions in ``raw``, each checked against the limits."""
    if len(raw) < 4 * ndim:
        raise ValueError(f"{name} ends inside its header ({4 + len(raw)} bytes); "
                         "the file is truncated, download it again")
    dims = tuple(int.from_bytes(raw[4 * i:4 * i + 4], "big") for i in range(ndim))
    shown = " x ".join(map(str, dims))
    if min(dims) == 0:
        raise ValueError(f"{name} declares an empty array ({shown}); the file holds no data")
    # Python ints do not overflow, so the product is exact even for absurd headers.
    if max(dims) > _MAX_DIM or math.prod(dims) > _MAX_BYTES:
        raise ValueError(f"{name} declares {shown} bytes of data, more than Weightscope reads "
                         f"(at most {_MAX_DIM:,} per dimension and {_MAX_BYTES:,} in all); "
                         "the header is damaged or this is not an image file")
    return dims


def _decode_idx(stream, name: str) -> _IdxRead:
    """Parse an uncompressed IDX stream, validating the header before reading any data."""
    hasher = hashlib.sha256()
    ndim = parse_idx_header(_read_capped(stream, 4, hasher), name)
    dims = parse_idx_dims(_read_capped(stream, 4 * ndim, hasher), ndim, name)
    size = math.prod(dims)
    # One byte more than declared tells a trailing-bytes file from an exact one.
    payload = _read_capped(stream, size + 1, hasher)
    shown = " x ".join(map(str, dims))
    if len(payload) < size:
        raise ValueError(f"{name} is truncated: its header declares {shown} = {size:,} data "
                         f"bytes but only {len(payload):,} follow; download it again")
    if len(payload) > size:
        raise ValueError(f"{name} has more bytes than the {shown} = {size:,} its header "
                         "declares; it is damaged or not an IDX file, download it again")
    array = np.frombuffer(payload, dtype=np.uint8).reshape(dims)  # bytes: already read-only
    return _IdxRead(array, hasher.hexdigest(), 4 + 4 * ndim + size)


def _read_idx_stream(raw: BinaryIO, name: str) -> _IdxRead:
    """Decode gzip-compressed or plain IDX data from a seekable binary stream."""
    magic = raw.read(2)
    raw.seek(-len(magic), io.SEEK_CUR)  # told apart by magic bytes, not by the name's suffix
    if magic != GZIP_MAGIC:
        return _decode_idx(raw, name)
    with gzip_errors(name), gunzip(raw, name) as stream:
        return _decode_idx(stream, name)


def _read_idx_file(path: str | os.PathLike) -> _IdxRead:
    try:
        with open(path, "rb", buffering=0) as raw:
            return _read_idx_stream(raw, str(path))
    except OSError as err:
        raise ValueError(f"{path} cannot be read: {err.strerror or err}") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed or plain.

    Parameters
    ----------
    path : str or path-like
        File to read; gzip is recognised by its magic bytes, not its suffix.

    Returns
    -------
    ndarray of uint8, read-only
        Shape as the header declares, e.g. ``(n, 28, 28)`` for images or
        ``(n,)`` for labels.

    Raises
    ------
    ValueError
        Naming the file and the problem: not IDX, unsupported data type,
        absurd dimensions, truncated, trailing bytes, damaged gzip. The header
        is checked before any data is read, and gzip data is decompressed only
        up to the declared size plus one byte.
    """
    return _read_idx_file(path).array


def read_idx_bytes(data: bytes, name: str) -> np.ndarray:
    """Read IDX content held in memory (an upload), gzip-compressed or plain.

    Parameters
    ----------
    data : bytes
        The file's content.
    name : str
        File name used in error messages.

    Returns
    -------
    ndarray of uint8, read-only
        As :func:`read_idx`.
    """
    return _read_idx_stream(io.BytesIO(data), name).array


def _check_pair(images: np.ndarray, labels: np.ndarray, images_name: str, labels_name: str,
                n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Check images ``(n, H, W)`` against labels ``(n,)``; return them with int64 labels."""
    if images.ndim != 3:
        raise ValueError(f"{images_name} holds an array of shape {images.shape}; "
                         "expected images of shape (n, height, width)")
    if labels.ndim != 1:
        raise ValueError(f"{labels_name} holds an array of shape {labels.shape}; "
                         "expected labels of shape (n,)")
    if len(images) != len(labels):
        raise ValueError(f"{images_name} has {len(images):,} images but {labels_name} has "
                         f"{len(labels):,} labels; they must come from the same split")
    if labels.max() >= n_classes:
        raise ValueError(f"{labels_name} has label {labels.max()}, but there are only "
                         f"{n_classes} classes (labels 0 to {n_classes - 1})")
    return images, labels.astype(np.int64)


def content_fingerprint(parts: Iterator[bytes]) -> str:
    """Short hex SHA-256 over ``parts`` in order: what caches and links key a data set on."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part)
    return hasher.hexdigest()[:12]


# --------------------------------------------------------------------------- Fashion-MNIST folders


def _find_fashion_files(folder: Path, files: dict[str, tuple[str, int]]) -> dict[str, Path]:
    """Map each file name to ``<name>.gz`` or ``<name>`` in `folder`; ValueError if any lacks."""
    if not folder.is_dir():
        raise ValueError(f"{folder} does not exist")
    found, missing = {}, []
    for name in files:
        candidates = [folder / f"{name}.gz", folder / name]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(name)
        found[name] = path
    if missing:
        raise ValueError(f"{folder} lacks {', '.join(missing)} (.gz or plain)")
    return found


def _read_verified(path: Path, name: str, files: dict[str, tuple[str, int]]) -> _IdxRead:
    """Read `path` and check its decompressed payload against ``files[name]``."""
    read = _read_idx_file(path)
    want_sha, want_size = files[name]
    if read.sha256 != want_sha or read.nbytes != want_size:
        raise ValueError(f"{path} failed its checksum (sha256 {read.sha256[:12]}…, "
                         f"{read.nbytes:,} bytes; expected {want_sha[:12]}…, {want_size:,} "
                         "bytes): it is damaged or a different file")
    return read


def _load_fashion_folder(folder: Path, source: str) -> Dataset:
    """Load and verify the four Fashion-MNIST files in `folder`; ValueError says why not."""
    files = FASHION_FILES  # looked up at call time so tests can substitute small files
    paths = _find_fashion_files(folder, files)
    reads = {name: _read_verified(paths[name], name, files) for name in files}
    arrays = {}
    for split, (images, labels) in _FASHION_SPLITS.items():
        arrays[split] = _check_pair(reads[images].array, reads[labels].array,
                                    str(paths[images]), str(paths[labels]), len(FASHION_CLASSES))
    return Dataset(
        name="fashion-mnist",
        x_train=arrays["train"][0], y_train=arrays["train"][1],
        x_test=arrays["test"][0], y_test=arrays["test"][1],
        class_names=FASHION_CLASSES,
        source=source,
        # Built from payload hashes, so .gz or plain and any folder give the same value.
        fingerprint=content_fingerprint(f"{name}:{reads[name].sha256}\n".encode() for name in files),
        is_fallback=False,
    )


# --------------------------------------------------------------------------- download


class DownloadError(OSError):
    """No mirror delivered a file whose decompressed payload matched its checksum."""


class _Retry(Exception):
    """A failure worth trying the same mirror again for (5xx, connection, short body)."""


class _GiveUp(Exception):
    """A failure that asking the same mirror again will not fix (404, wrong checksum)."""


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    # flock locks belong to the open file, so threads that each open the file exclude
    # one another just as processes do.
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _has_valid_copy(dest: Path, name: str, files: dict[str, tuple[str, int]]) -> bool:
    """True if `dest` holds a verified copy of `name`; a corrupt copy is deleted."""
    for path in (dest / f"{name}.gz", dest / name):
        if path.is_file():
            try:
                _read_verified(path, name, files)
                return True
            except ValueError:
                path.unlink()  # damaged: fetch it again rather than trip over it forever
    return False


def _stream_body(url: str, out: BinaryIO, limit: int, timeout: float) -> None:
    """Copy the body of `url` to `out`; raise _Retry or _GiveUp on failure."""
    request = urllib.request.Request(url, headers={"User-Agent": "weightscope"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared, got = response.headers.get("Content-Length"), 0
            while chunk := response.read(_CHUNK):
                got += len(chunk)
                if got > limit:
                    raise _GiveUp(f"body larger than {limit:,} bytes, not the file asked for")
                out.write(chunk)
    except urllib.error.HTTPError as err:
        fault = _Retry if err.code >= 500 or err.code == 429 else _GiveUp
        raise fault(f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, socket.gaierror):
            # An unknown host name will not resolve a second later (and means offline here).
            raise _GiveUp(f"cannot resolve the host name ({reason})") from None
        # Connection refused or reset, timeouts, malformed responses, a full disk.
        raise _Retry(str(reason) or type(err).__name__) from None
    # http.client returns a short body silently when the server closes early.
    if declared is not None and got != int(declared):
        raise _Retry(f"body ended after {got:,} of {int(declared):,} bytes")


def _fetch_to_temp(url: str, dest: Path, name: str, size: int, timeout: float) -> Path:
    """Download `url` into a temporary file in `dest`; no file is left behind on failure."""
    if not url.startswith(("http://", "https://")):
        raise _GiveUp("not an http(s) URL")
    # A gzip file is never much larger than its payload; a bigger body is not our file.
    limit = size + size // 100 + _CHUNK
    fd, temp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            _stream_body(url, out, limit, timeout)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp)


def _fetch_verified(url: str, dest: Path, name: str, files, timeout: float) -> None:
    """Download `url`, verify its payload and move it to ``dest/<name>.gz`` atomically."""
    temp = None
    try:
        temp = _fetch_to_temp(url, dest, name, files[name][1], timeout)
        try:
            _read_verified(temp, name, files)
        except ValueError as err:
            raise _GiveUp(str(err).replace(str(temp), "the download")) from None
        os.replace(temp, dest / f"{name}.gz")
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)


def _try_mirror(url: str, dest: Path, name: str, files, retries: int, backoff: float,
                timeout: float) -> str | None:
    """Fetch one file from one mirror; None on success, else what the mirror answered."""
    answer = "no attempt made"
    for attempt in range(max(retries, 0) + 1):
        try:
            _fetch_verified(url, dest, name, files, timeout)
            return None
        except _GiveUp as err:
            return str(err)
        except _Retry as err:
            answer = f"{err} ({attempt + 1} attempt{'s' if attempt else ''})"
            if attempt < retries:
                time.sleep(backoff * 2**attempt)
    return answer


def _fetch_from_mirrors(dest: Path, name: str, mirrors, files, **options) -> str:
    """Fetch ``<name>.gz`` from the first mirror that delivers it; return that mirror."""
    answers = []
    for base in mirrors:
        url = f"{base.rstrip('/')}/{name}.gz"
        answer = _try_mirror(url, dest, name, files, **options)
        if answer is None:
            return base
        answers.append(f"{url}: {answer}")
    raise DownloadError(f"could not download {name}.gz into {dest}: "
                        + ("; ".join(answers) or "no mirrors given"))


def _download(dest: Path, mirrors, files, retries=3, backoff=0.5, timeout=30.0) -> list[str]:
    """Fetch every missing file; return the mirrors that served something."""
    dest.mkdir(parents=True, exist_ok=True)
    used: list[str] = []
    with _exclusive_lock(dest / ".lock"):
        for stale in dest.glob(".*.part"):  # left by a killed download; we hold the lock
            stale.unlink(missing_ok=True)
        for name in files:
            if not _has_valid_copy(dest, name, files):
                base = _fetch_from_mirrors(dest, name, mirrors, files, retries=retries,
                                           backoff=backoff, timeout=timeout)
                used += [] if base in used else [base]
    return used


def download_fashion_mnist(dest_dir: str | os.PathLike, *, mirrors: tuple[str, ...] = MIRRORS,
                           files: dict[str, tuple[str, int]] = FASHION_FILES, retries: int = 3,
                           backoff: float = 0.5, timeout: float = 30.0) -> Path:
    """Download the Fashion-MNIST files into `dest_dir`, verifying each payload.

    Each file ``<name>.gz`` is tried on every mirror in order; 5xx answers,
    connection errors and short bodies are retried with exponential backoff,
    other failures move on to the next mirror. A download lands in a temporary
    file, is decompressed and checked against ``files[name]``, and only then
    renamed into place, so `dest_dir` never holds a partial or wrong file.
    Files already there and valid are kept; damaged ones are fetched again.
    A lock on ``dest_dir/.lock`` makes concurrent callers download once.

    Parameters
    ----------
    dest_dir : str or path-like
        Folder to fill (created if needed).
    mirrors : tuple of str
        Base URLs; the file URL is base + name + ``".gz"``.
    files : dict
        name -> (SHA-256 of the decompressed file, its size in bytes).
    retries : int
        Extra attempts per mirror after a retryable failure.
    backoff : float
        Seconds before the first retry; doubled for each later one.
    timeout : float
        Socket timeout in seconds per request.

    Returns
    -------
    Path
        `dest_dir`.

    Raises
    ------
    DownloadError
        If some file could not be fetched; lists what each mirror answered.
    """
    dest = Path(dest_dir)
    _download(dest, mirrors, files, retries, backoff, timeout)
    return dest


# --------------------------------------------------------------------------- digits fallback


def load_digits_dataset() -> Dataset:
    """scikit-learn's 8 x 8 handwritten digits, shaped like Fashion-MNIST.

    Ships inside scikit-learn, so it works offline. Values 0..16 are rescaled
    to uint8 0..255 (``round(x * 255 / 16)``); a stratified 20 % (seed 0) is
    the test split.

    Returns
    -------
    Dataset
        1,438 training and 359 test images of shape (8, 8), classes "0".."9",
        ``is_fallback=True``.
    """
    from sklearn.datasets import load_digits  # imported here: only the fallback needs it

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    train, test = stratified_split(labels, round(0.2 * len(labels)), seed=0)
    arrays = (images[train], labels[train], images[test], labels[test])
    return Dataset(
        name="digits",
        x_train=arrays[0], y_train=arrays[1], x_test=arrays[2], y_test=arrays[3],
        class_names=tuple(str(k) for k in range(10)),
        source="scikit-learn's built-in 8x8 handwritten digits (sklearn.datasets.load_digits), "
               "rescaled to 0-255",
        fingerprint=content_fingerprint(part for a in arrays for part in (str(a.shape).encode(),
                                                                   a.tobytes())),
        is_fallback=True,
    )


# --------------------------------------------------------------------------- stratified sampling


def _class_quotas(counts: np.ndarray, n: int) -> np.ndarray:
    """Split `n` over classes in proportion to `counts` (largest remainder), each at least 1."""
    ideal = counts * (n / counts.sum())
    quotas = np.floor(ideal).astype(np.int64)
    by_remainder = np.argsort(-(ideal - quotas), kind="stable")
    quotas[by_remainder[: n - quotas.sum()]] += 1
    # A class too rare for a share still gets one example, taken from the largest share;
    # one always has two or more, since n >= number of classes.
    for k in np.flatnonzero(quotas == 0):
        quotas[np.argmax(quotas)] -= 1
        quotas[k] = 1
    return quotas


def stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Pick `n` examples at random, keeping the class proportions of `y`.

    Parameters
    ----------
    y : array_like of shape (n_samples,)
        Class labels.
    n : int
        Number of examples to pick, ``n_classes <= n <= n_samples``.
    seed : int
        Seed for ``np.random.default_rng``; the same seed gives the same subset.

    Returns
    -------
    ndarray of shape (n,), int64
        Sorted indices into `y`. Each class gets its share of `n` rounded by
        largest remainder, and at least one example.

    Raises
    ------
    ValueError
        If `n` exceeds the number of labels or is smaller than the number of
        classes.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if n > len(y):
        raise ValueError(f"cannot pick {n:,} examples from only {len(y):,} labels")
    if n < len(classes):
        raise ValueError(f"a stratified pick of {n} examples cannot include each of the "
                         f"{len(classes)} classes; ask for at least {len(classes)}")
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(inverse == k), size=q, replace=False)
             for k, q in enumerate(_class_quotas(counts, n))]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def stratified_split(y: np.ndarray, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split examples into a kept part and a stratified holdout of `n_holdout`.

    Parameters
    ----------
    y : array_like of shape (n_samples,)
        Class labels.
    n_holdout : int
        Size of the holdout: 0 (no holdout), or ``n_classes <= n_holdout <= n_samples``.
    seed : int
        Seed for ``np.random.default_rng``.

    Returns
    -------
    keep_idx : ndarray of shape (n_samples - n_holdout,), int64
        Sorted indices not held out.
    holdout_idx : ndarray of shape (n_holdout,), int64
        Sorted indices of the holdout, chosen as by :func:`stratified_subset`.
    """
    y = np.asarray(y)
    if n_holdout == 0:
        return np.arange(len(y), dtype=np.int64), np.empty(0, dtype=np.int64)
    holdout = stratified_subset(y, n_holdout, seed)
    held = np.zeros(len(y), dtype=bool)
    held[holdout] = True
    return np.flatnonzero(~held).astype(np.int64), holdout


# --------------------------------------------------------------------------- finding the data


def user_cache_dir() -> Path:
    """Weightscope's cache folder.

    ``$WEIGHTSCOPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/weightscope``, else
    ``~/.cache/weightscope``. Not created here.
    """
    if explicit := os.environ.get("WEIGHTSCOPE_CACHE_DIR"):
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore relative paths
        return Path(xdg) / "weightscope"
    return Path.home() / ".cache" / "weightscope"


def _keras_dir() -> Path:
    return Path.home() / ".keras" / "datasets" / "fashion-mnist"


def _standard_folders(cache_base: Path) -> list[tuple[Path, str]]:
    """Folders searched when none is named, each with the source sentence it would give."""
    return [
        (DEBIAN_DIR, f"Fashion-MNIST from Debian's dataset-fashion-mnist package ({DEBIAN_DIR})"),
        (cache_base / "fashion-mnist", f"Fashion-MNIST from Weightscope's download cache "
                                       f"({cache_base / 'fashion-mnist'})"),
        (_keras_dir(), f"Fashion-MNIST from Keras's download folder ({_keras_dir()})"),
    ]


def _explicit_folder(data_dir) -> tuple[Path, str] | None:
    if data_dir is not None:
        return Path(data_dir), "the data_dir argument"
    if env := os.environ.get("WEIGHTSCOPE_DATA_DIR"):
        return Path(env), "WEIGHTSCOPE_DATA_DIR"
    return None


def _load_fashion(data_dir, offline: bool, cache_base: Path, mirrors) -> Dataset:
    explicit = _explicit_folder(data_dir)
    if explicit is not None:
        # The user named this folder, so a problem there is an error, not a reason to look elsewhere.
        folder, origin = explicit
        try:
            return _load_fashion_folder(folder, f"Fashion-MNIST from {folder} (set by {origin})")
        except ValueError as err:
            raise ValueError(f"Fashion-MNIST could not be loaded from {folder}, named by "
                             f"{origin}: {err}") from None
    failures = []
    for folder, source in _standard_folders(cache_base):
        try:
            return _load_fashion_folder(folder, source)
        except ValueError as err:
            failures.append(str(err))
    if offline:
        failures.append("the download was skipped because Weightscope runs offline")
    else:
        dest = cache_base / "fashion-mnist"
        try:
            used = _download(dest, mirrors, FASHION_FILES)
            return _load_fashion_folder(dest, f"Fashion-MNIST downloaded from "
                                              f"{', '.join(used) or 'its mirrors'} into {dest}")
        except (OSError, ValueError) as err:
            failures.append(f"the download failed ({err})")
    return digits_instead(f"Fashion-MNIST was not found ({'; '.join(failures)})")


def digits_instead(why: str) -> Dataset:
    """The bundled digits standing in for Fashion-MNIST, their source saying ``why``.

    Parameters
    ----------
    why : str
        Why Fashion-MNIST is not used, as the start of a sentence.

    Returns
    -------
    Dataset
        :func:`load_digits_dataset`'s, whose ``source`` is ``why`` followed by what it is
        instead and how to get Fashion-MNIST.
    """
    return replace(load_digits_dataset(), source=(
        f"{why}, so this is scikit-learn's built-in 8x8 handwritten digits instead; "
        f"{_GET_FASHION}."))


def load_dataset(name: str = "fashion-mnist", data_dir: str | os.PathLike | None = None, *,
                 offline: bool | None = None, cache_dir: str | os.PathLike | None = None,
                 mirrors: tuple[str, ...] = MIRRORS) -> Dataset:
    """Load a data set by name, finding, checking and if need be downloading its files.

    For ``"fashion-mnist"`` the first folder holding all four files (``.gz``
    or plain) whose payloads match :data:`FASHION_FILES` wins, in this order:

    1. `data_dir`, else ``$WEIGHTSCOPE_DATA_DIR``: when given, it must work,
       or ValueError says why;
    2. :data:`DEBIAN_DIR` (``apt-get install dataset-fashion-mnist``);
    3. ``<cache>/fashion-mnist``;
    4. ``~/.keras/datasets/fashion-mnist``;
    5. a download into ``<cache>/fashion-mnist`` from `mirrors`, unless offline;
    6. :func:`load_digits_dataset`, whose `source` then lists why each place
       failed and how to get Fashion-MNIST.

    Parameters
    ----------
    name : {"fashion-mnist", "digits"}
    data_dir : str or path-like, optional
        Folder with the four Fashion-MNIST IDX files.
    offline : bool, optional
        Skip the download; default: ``$WEIGHTSCOPE_OFFLINE == "1"``.
    cache_dir : str or path-like, optional
        Cache folder; default :func:`user_cache_dir`.
    mirrors : tuple of str
        Download base URLs, tried in order.

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        For an unknown `name`, or a named folder whose files are missing or fail
        their checks.
    """
    if name == "digits":
        return load_digits_dataset()
    if name != "fashion-mnist":
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(KNOWN_DATASETS)}")
    if offline is None:
        offline = os.environ.get("WEIGHTSCOPE_OFFLINE") == "1"
    cache_base = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    return _load_fashion(data_dir, offline, cache_base, mirrors)
