"""Tests for core.data: IDX reading, checks, stratified sampling, search order, download.

Everything runs on small synthetic IDX files in tmp_path and a loopback HTTP
server; only the tests marked ``realdata`` touch the real Fashion-MNIST files.
"""

import gzip
import hashlib
import http.server
import socket
import struct
import threading
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core import data
from core.data import (
    FASHION_CLASSES, FASHION_FILES, Dataset, DownloadError, download_fashion_mnist,
    load_dataset, load_digits_dataset, read_idx, read_idx_bytes, stratified_split,
    stratified_subset, user_cache_dir,
)

# --------------------------------------------------------------------------- synthetic files


def idx_bytes(array: np.ndarray, dtype_code: int = 0x08) -> bytes:
    """IDX encoding of a uint8 array: magic ``00 00 code ndim``, big-endian dims, data."""
    header = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_file(path: Path, payload: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload, mtime=0) if gz else payload)
    return path


def synthetic_arrays() -> dict[str, np.ndarray]:
    """Four small Fashion-MNIST look-alikes; images 4 x 3 so that H and W cannot be swapped."""
    rng = np.random.default_rng(7)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (30, 4, 3), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(30) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 4, 3), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(10)[::-1].astype(np.uint8),
    }


def files_spec(payloads: dict[str, bytes]) -> dict[str, tuple[str, int]]:
    return {name: (hashlib.sha256(p).hexdigest(), len(p)) for name, p in payloads.items()}


SYNTH = synthetic_arrays()
SYNTH_PAYLOADS = {name: idx_bytes(array) for name, array in SYNTH.items()}
SYNTH_FILES = files_spec(SYNTH_PAYLOADS)


def write_fashion(folder: Path, payloads=SYNTH_PAYLOADS, gz: bool = True) -> Path:
    for name, payload in payloads.items():
        write_file(folder / (f"{name}.gz" if gz else name), payload, gz)
    return folder


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real folders, no environment settings, synthetic checksums: each test starts clean."""
    for var in ("WEIGHTSCOPE_DATA_DIR", "WEIGHTSCOPE_OFFLINE", "WEIGHTSCOPE_CACHE_DIR",
                "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setattr(data, "FASHION_FILES", SYNTH_FILES)


def peak_and_error(action) -> tuple[int, str]:
    """Peak traced allocation in bytes while `action` runs, and the ValueError it must raise."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as caught:
            action()
        return tracemalloc.get_traced_memory()[1], str(caught.value)
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 4, 3), (2, 1, 3, 2)])
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips(tmp_path, shape, gz):
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = write_file(tmp_path / "x.idx", idx_bytes(array), gz)
    got = read_idx(path)
    assert got.dtype == np.uint8 and got.shape == shape
    np.testing.assert_array_equal(got, array)
    assert not got.flags.writeable


@pytest.mark.parametrize("gz, suffix", [(True, ""), (False, ".gz")])
def test_read_idx_tells_gzip_by_magic_not_suffix(tmp_path, gz, suffix):
    array = SYNTH["train-images-idx3-ubyte"]
    path = write_file(tmp_path / f"images{suffix}", idx_bytes(array), gz)
    np.testing.assert_array_equal(read_idx(path), array)


def test_read_idx_reads_multi_member_gzip(tmp_path):
    payload = SYNTH_PAYLOADS["train-images-idx3-ubyte"]
    path = tmp_path / "two-members.gz"
    path.write_bytes(gzip.compress(payload[:50]) + gzip.compress(payload[50:]))
    np.testing.assert_array_equal(read_idx(path), SYNTH["train-images-idx3-ubyte"])


def test_read_idx_bytes_matches_file_reading(tmp_path):
    payload = SYNTH_PAYLOADS["t10k-images-idx3-ubyte"]
    for content in (payload, gzip.compress(payload)):
        np.testing.assert_array_equal(read_idx_bytes(content, "upload.gz"),
                                      SYNTH["t10k-images-idx3-ubyte"])
    with pytest.raises(ValueError, match="upload.idx is truncated"):
        read_idx_bytes(payload[:-1], "upload.idx")


GOOD = idx_bytes(np.zeros((2, 2, 2), dtype=np.uint8))  # header declares 8 data bytes

MALFORMED_IDX = {
    "bad magic": (b"PK\x03\x04" + GOOD[4:], r"is not an IDX file \(magic bytes 504b0304"),
    "empty": (b"", r"is not an IDX file \(magic bytes none\)"),
    "float data": (b"\0\0\x0d\x01\0\0\0\x01" + b"\0" * 4, r"data type code 0x0D \(float\)"),
    "unknown type": (b"\0\0\x05\x01\0\0\0\x01" + b"\0", r"data type code 0x05 \(unknown\)"),
    "no dimensions": (b"\0\0\x08\x00", "declares 0 dimensions"),
    "five dimensions": (b"\0\0\x08\x05" + b"\0\0\0\x01" * 5 + b"\0", "declares 5 dimensions"),
    "short header": (GOOD[:10], r"ends inside its header \(10 bytes\)"),
    "zero dimension": (b"\0\0\x08\x02\0\0\0\x00\0\0\0\x03", r"declares an empty array \(0 x 3\)"),
    "truncated": (GOOD[:-3], "is truncated: its header declares 2 x 2 x 2 = 8 data bytes "
                             "but only 5 follow"),
    "trailing bytes": (GOOD + b"\0", "has more bytes than the 2 x 2 x 2 = 8"),
}


@pytest.mark.parametrize("case", MALFORMED_IDX)
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_rejects_malformed_files_naming_them(tmp_path, case, gz):
    content, problem = MALFORMED_IDX[case]
    path = write_file(tmp_path / "broken-idx1-ubyte", content, gz)
    with pytest.raises(ValueError, match=problem) as caught:
        read_idx(path)
    assert str(caught.value).startswith(str(path))


def _flip_middle_byte(content: bytes) -> bytes:
    middle = len(content) // 2
    return content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1:]


BIG = idx_bytes(np.random.default_rng(1).integers(0, 256, (50, 20, 20), dtype=np.uint8))

DAMAGED_GZIP = {
    "cut short": (gzip.compress(BIG)[:-100], "truncated gzip file"),
    "flipped byte": (_flip_middle_byte(gzip.compress(BIG)), "damaged gzip file"),
    "stray bytes after the gzip data": (gzip.compress(GOOD) + b"junk", "stray bytes"),
    # gzip skips zero padding byte by byte (seconds per megabyte): long padding is refused.
    "a megabyte of zero padding": (gzip.compress(GOOD) + bytes(1_000_000), "stray bytes"),
    "cut inside the gzip header": (gzip.compress(GOOD)[:6], "truncated gzip file"),
    "wrong checksum": (gzip.compress(BIG)[:-8] + bytes(8), r"damaged gzip file \(CRC check"),
    "gzip inside gzip": (gzip.compress(gzip.compress(GOOD)),
                         r"is not an IDX file \(magic bytes 1f8b"),
}


@pytest.mark.parametrize("case", DAMAGED_GZIP)
def test_read_idx_rejects_damaged_gzip(tmp_path, case):
    content, problem = DAMAGED_GZIP[case]
    path = tmp_path / "images.gz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=problem) as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("dims", [(10**6, 10**6, 10**6), (10**5, 10**5, 1), (2**32 - 1, 1)])
def test_absurd_dimensions_fail_before_any_allocation(tmp_path, dims):
    header = bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    path = write_file(tmp_path / "huge-idx3-ubyte", header + b"\0" * 100, gz=False)
    peak, message = peak_and_error(lambda: read_idx(path))
    assert "more than Weightscope reads" in message and str(path) in message
    assert peak < 1_000_000


def test_gzip_bomb_is_not_decompressed_past_the_declared_size(tmp_path):
    # 8 declared bytes followed by 50 MB of zeros: about 50 kB compressed.
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(GOOD + bytes(50_000_000), compresslevel=9))
    assert path.stat().st_size < 100_000
    peak, message = peak_and_error(lambda: read_idx(path))
    assert "has more bytes than the 2 x 2 x 2 = 8" in message and str(path) in message
    assert peak < 5_000_000


# --------------------------------------------------------------------------- Dataset


def test_dataset_arrays_are_read_only_and_shape_properties_hold(tmp_path):
    dataset = load_dataset(data_dir=write_fashion(tmp_path / "d"))
    assert dataset.n_classes == 10 and dataset.image_shape == (4, 3)
    assert dataset.class_names == FASHION_CLASSES
    for array in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0] = 1
    assert dataset.y_train.dtype == np.int64 and dataset.x_train.dtype == np.uint8


def test_dataset_rejects_inconsistent_arrays():
    x, y = np.zeros((3, 2, 2), np.uint8), np.zeros(3, np.int64)
    fields = dict(name="t", class_names=("a", "b"), source="s", fingerprint="0" * 12,
                  is_fallback=False)
    with pytest.raises(ValueError, match="x_train must be uint8"):
        Dataset(x_train=x.astype(float), y_train=y, x_test=x, y_test=y, **fields)
    with pytest.raises(ValueError, match="y_test must be int64"):
        Dataset(x_train=x, y_train=y, x_test=x, y_test=y[:2], **fields)
    with pytest.raises(ValueError, match="labels outside 0..1"):
        Dataset(x_train=x, y_train=y + 2, x_test=x, y_test=y, **fields)


# --------------------------------------------------------------------------- pairs of files


def test_image_label_count_mismatch_names_both_files_and_counts(tmp_path, monkeypatch):
    payloads = dict(SYNTH_PAYLOADS)
    payloads["train-labels-idx1-ubyte"] = idx_bytes(SYNTH["train-labels-idx1-ubyte"][:29])
    monkeypatch.setattr(data, "FASHION_FILES", files_spec(payloads))
    folder = write_fashion(tmp_path / "d", payloads)
    with pytest.raises(ValueError, match="has 30 images but .* has 29 labels") as caught:
        load_dataset(data_dir=folder)
    assert "train-images-idx3-ubyte.gz" in str(caught.value)
    assert "train-labels-idx1-ubyte.gz" in str(caught.value)


def test_labels_out_of_range_are_rejected(tmp_path, monkeypatch):
    payloads = dict(SYNTH_PAYLOADS)
    payloads["t10k-labels-idx1-ubyte"] = idx_bytes(np.full(10, 10, dtype=np.uint8))
    monkeypatch.setattr(data, "FASHION_FILES", files_spec(payloads))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz has label 10, but there "
                                         r"are only 10 classes"):
        load_dataset(data_dir=write_fashion(tmp_path / "d", payloads))


def test_images_in_place_of_labels_are_rejected(tmp_path, monkeypatch):
    payloads = dict(SYNTH_PAYLOADS)
    payloads["t10k-labels-idx1-ubyte"] = SYNTH_PAYLOADS["t10k-images-idx3-ubyte"]
    monkeypatch.setattr(data, "FASHION_FILES", files_spec(payloads))
    with pytest.raises(ValueError, match=r"shape \(10, 4, 3\); expected labels"):
        load_dataset(data_dir=write_fashion(tmp_path / "d", payloads))


# --------------------------------------------------------------------------- stratified sampling


def shuffled_labels(counts, seed=0) -> np.ndarray:
    y = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(y)


@pytest.mark.parametrize("counts, n, expected", [
    ([500, 300, 200], 100, [50, 30, 20]),
    ([7, 5, 3], 7, [3, 2, 2]),          # floors 3, 2, 1; the largest remainder (0.4) gets one
    ([1000, 1, 1], 3, [1, 1, 1]),       # rare classes still get one each
    ([1000, 1, 1], 5, [3, 1, 1]),
    ([2, 2, 2], 6, [2, 2, 2]),          # everything
])
def test_stratified_subset_class_counts(counts, n, expected):
    y = shuffled_labels(counts)
    idx = stratified_subset(y, n, seed=3)
    assert idx.dtype == np.int64 and len(idx) == n
    assert np.all(np.diff(idx) > 0), "sorted and without repeats"
    np.testing.assert_array_equal(np.bincount(y[idx], minlength=len(counts)), expected)


@pytest.mark.parametrize("seed", range(5))
def test_stratified_subset_keeps_proportions_within_one(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(50, 400, size=10)
    y = shuffled_labels(counts, seed)
    n = int(rng.integers(100, len(y)))
    got = np.bincount(y[stratified_subset(y, n, seed)], minlength=10)
    assert got.sum() == n
    assert np.all(np.abs(got - n * counts / counts.sum()) < 1)


def test_stratified_subset_is_deterministic_per_seed_and_varies_across_seeds():
    y = shuffled_labels([100] * 10)
    a, b = stratified_subset(y, 50, seed=1), stratified_subset(y, 50, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, stratified_subset(y, 50, seed=2))


def test_stratified_subset_works_on_non_integer_labels():
    y = np.array(["cat", "dog", "cat", "dog", "cat", "dog"])
    assert sorted(y[stratified_subset(y, 2, seed=0)]) == ["cat", "dog"]


@pytest.mark.parametrize("n, problem", [(31, "cannot pick 31 examples from only 30 labels"),
                                        (9, "ask for at least 10"),
                                        (-1, "ask for at least 10")])
def test_stratified_subset_errors(n, problem):
    with pytest.raises(ValueError, match=problem):
        stratified_subset(SYNTH["train-labels-idx1-ubyte"], n, seed=0)


def test_stratified_split_partitions_and_stratifies():
    y = shuffled_labels([300, 200, 100])
    keep, holdout = stratified_split(y, 60, seed=4)
    assert keep.dtype == holdout.dtype == np.int64
    assert np.all(np.diff(keep) > 0) and np.all(np.diff(holdout) > 0)
    assert len(np.intersect1d(keep, holdout)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([keep, holdout])), np.arange(len(y)))
    np.testing.assert_array_equal(np.bincount(y[holdout]), [30, 20, 10])
    np.testing.assert_array_equal(holdout, stratified_split(y, 60, seed=4)[1])


def test_stratified_split_without_holdout_keeps_everything():
    keep, holdout = stratified_split(np.arange(5) % 2, 0, seed=0)
    np.testing.assert_array_equal(keep, np.arange(5))
    assert holdout.shape == (0,) and holdout.dtype == np.int64


def test_stratified_split_errors():
    with pytest.raises(ValueError, match="cannot pick"):
        stratified_split(np.arange(5) % 2, 6, seed=0)


# --------------------------------------------------------------------------- digits


def test_digits_dataset_is_rescaled_and_split_20_percent():
    from sklearn.datasets import load_digits

    digits = load_digits()
    dataset = load_digits_dataset()
    assert dataset.name == "digits" and dataset.is_fallback
    assert dataset.class_names == tuple("0123456789")
    assert dataset.x_train.shape == (1438, 8, 8) and dataset.x_test.shape == (359, 8, 8)
    assert dataset.x_train.dtype == np.uint8 and dataset.x_train.max() == 255
    # Every test image is the rescaled original of the same label, and the split is stratified.
    originals = {img.tobytes(): t for img, t in zip(np.rint(digits.images * 255 / 16)
                                                      .astype(np.uint8), digits.target)}
    assert all(originals[img.tobytes()] == t for img, t in zip(dataset.x_test, dataset.y_test))
    expected = 0.2 * np.bincount(digits.target)
    assert np.all(np.abs(np.bincount(dataset.y_test) - expected) < 1)
    assert load_digits_dataset().fingerprint == dataset.fingerprint
    assert len(dataset.fingerprint) == 12 and int(dataset.fingerprint, 16) >= 0


# --------------------------------------------------------------------------- cache folder


def test_user_cache_dir_precedence(monkeypatch, tmp_path):
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "weightscope"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "weightscope"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "weightscope"
    monkeypatch.setenv("WEIGHTSCOPE_CACHE_DIR", str(tmp_path / "mine"))
    assert user_cache_dir() == tmp_path / "mine"


# --------------------------------------------------------------------------- search order

PLACES = {
    "debian": lambda tmp: tmp / "debian",
    "cache": lambda tmp: tmp / "home" / ".cache" / "weightscope" / "fashion-mnist",
    "keras": lambda tmp: tmp / "home" / ".keras" / "datasets" / "fashion-mnist",
}
SOURCE_WORDS = {"debian": "Debian's dataset-fashion-mnist package",
                "cache": "Weightscope's download cache", "keras": "Keras's download folder"}


@pytest.mark.parametrize("present, winner", [
    (("debian", "cache", "keras"), "debian"),
    (("cache", "keras"), "cache"),
    (("keras",), "keras"),
])
def test_search_order(tmp_path, present, winner):
    for i, place in enumerate(present):
        write_fashion(PLACES[place](tmp_path), gz=i % 2 == 0)  # mixes .gz and plain files
    dataset = load_dataset(offline=True)
    assert not dataset.is_fallback
    assert dataset.source.startswith("Fashion-MNIST from " + SOURCE_WORDS[winner])
    assert str(PLACES[winner](tmp_path)) in dataset.source
    np.testing.assert_array_equal(dataset.x_train, SYNTH["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(dataset.y_test, SYNTH["t10k-labels-idx1-ubyte"])


def test_fingerprint_identifies_content_not_location_or_compression(tmp_path, monkeypatch):
    gz = load_dataset(data_dir=write_fashion(tmp_path / "a", gz=True))
    plain = load_dataset(data_dir=write_fashion(tmp_path / "b", gz=False))
    assert gz.fingerprint == plain.fingerprint
    assert len(gz.fingerprint) == 12 and int(gz.fingerprint, 16) >= 0
    payloads = dict(SYNTH_PAYLOADS)
    payloads["t10k-labels-idx1-ubyte"] = idx_bytes(np.arange(10, dtype=np.uint8))
    monkeypatch.setattr(data, "FASHION_FILES", files_spec(payloads))
    other = load_dataset(data_dir=write_fashion(tmp_path / "c", payloads))
    assert other.fingerprint != gz.fingerprint


def test_explicit_folder_beats_debian(tmp_path, monkeypatch):
    write_fashion(tmp_path / "debian")
    mine = write_fashion(tmp_path / "mine", gz=False)
    assert str(mine) in load_dataset(data_dir=mine).source
    monkeypatch.setenv("WEIGHTSCOPE_DATA_DIR", str(mine))
    assert "WEIGHTSCOPE_DATA_DIR" in load_dataset().source


def test_broken_explicit_folder_raises_instead_of_falling_back(tmp_path, monkeypatch):
    write_fashion(tmp_path / "debian")  # a good copy elsewhere must not hide the problem
    folder = write_fashion(tmp_path / "mine")
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    labels.unlink()
    with pytest.raises(ValueError, match=r"named by the data_dir argument: .* lacks "
                                         r"t10k-labels-idx1-ubyte"):
        load_dataset(data_dir=folder)
    write_file(labels, idx_bytes(np.zeros(10, np.uint8)), gz=True)
    monkeypatch.setenv("WEIGHTSCOPE_DATA_DIR", str(folder))
    with pytest.raises(ValueError, match=r"WEIGHTSCOPE_DATA_DIR: .*t10k-labels-idx1-ubyte.gz "
                                         r"failed its checksum"):
        load_dataset()


def test_corrupt_debian_copy_is_skipped_with_its_reason(tmp_path):
    debian = write_fashion(tmp_path / "debian")
    write_file(debian / "train-images-idx3-ubyte.gz",
               idx_bytes(np.zeros((30, 4, 3), np.uint8)), gz=True)
    assert "download cache" in load_dataset(
        offline=True, cache_dir=write_fashion(tmp_path / "c" / "fashion-mnist").parent).source
    fallback = load_dataset(offline=True)
    assert fallback.is_fallback
    assert f"{debian / 'train-images-idx3-ubyte.gz'} failed its checksum" in fallback.source


def test_offline_without_data_falls_back_to_digits_and_says_how_to_get_fashion(monkeypatch):
    monkeypatch.setenv("WEIGHTSCOPE_OFFLINE", "1")
    dataset = load_dataset()
    assert dataset.is_fallback and dataset.name == "digits"
    assert dataset.source.startswith("Fashion-MNIST was not found")
    assert "apt-get install dataset-fashion-mnist" in dataset.source
    assert "download was skipped" in dataset.source
    assert "WEIGHTSCOPE_DATA_DIR" in dataset.source


def test_digits_by_name_and_unknown_names():
    assert load_dataset("digits").name == "digits"
    with pytest.raises(ValueError, match="unknown data set 'mnist'; known: fashion-mnist, digits"):
        load_dataset("mnist")


# --------------------------------------------------------------------------- loopback mirrors

GZ_BODIES = {f"{name}.gz": gzip.compress(p, mtime=0) for name, p in SYNTH_PAYLOADS.items()}
TRAIN_GZ = "train-images-idx3-ubyte.gz"


class FakeMirrors:
    """A loopback HTTP server; each first path segment is a mirror with scripted faults.

    A fault is an HTTP status (int), ``"truncate"`` (half the body, then hang up)
    or bytes to serve in place of the file.
    """

    def __init__(self, bodies: dict[str, bytes]):
        self.bodies = bodies
        self.faults: dict[tuple[str, str], list] = {}  # consumed one per request
        self.always: dict[str, object] = {}            # mirror -> fault on every request
        self.requests: Counter = Counter()
        self._lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,),
                                       daemon=True)  # short poll: quick shutdown
        self.thread.start()

    def url(self, mirror: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{mirror}/"

    def _next_fault(self, mirror: str, file: str):
        with self._lock:
            self.requests[mirror, file] += 1
            queued = self.faults.get((mirror, file))
            return self.always.get(mirror) or (queued.pop(0) if queued else None)

    def _handler(self):
        mirrors = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                _, mirror, file = self.path.split("/", 2)
                fault = mirrors._next_fault(mirror, file)
                body = fault if isinstance(fault, bytes) else mirrors.bodies.get(file)
                if isinstance(fault, int) or body is None:
                    self.send_error(fault if isinstance(fault, int) else 404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if fault == "truncate" else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        return Handler

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def mirrors():
    server = FakeMirrors(GZ_BODIES)
    yield server
    server.close()


def download(dest, server, names=("a",), **kwargs):
    options = dict(files=SYNTH_FILES, retries=2, backoff=0.001, timeout=5.0) | kwargs
    return download_fashion_mnist(dest, mirrors=tuple(server.url(n) for n in names), **options)


def assert_complete(dest: Path):
    """`dest` holds exactly the four verified files (and the lock), no partial downloads."""
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted([".lock", *GZ_BODIES]), names
    for file, body in GZ_BODIES.items():
        assert gzip.decompress((dest / file).read_bytes()) == gzip.decompress(body)


def test_download_fetches_each_file_once(tmp_path, mirrors):
    assert download(tmp_path / "dl", mirrors) == tmp_path / "dl"
    assert_complete(tmp_path / "dl")
    assert mirrors.requests == Counter({("a", f): 1 for f in GZ_BODIES})
    loaded = load_dataset(data_dir=tmp_path / "dl")
    np.testing.assert_array_equal(loaded.x_test, SYNTH["t10k-images-idx3-ubyte"])


def test_download_retries_server_errors(tmp_path, mirrors):
    mirrors.faults["a", TRAIN_GZ] = [503, 503]
    download(tmp_path, mirrors, retries=3)
    assert mirrors.requests["a", TRAIN_GZ] == 3
    assert_complete(tmp_path)


@pytest.mark.parametrize("fault, attempts", [(503, 3), (404, 1), ("truncate", 3)])
def test_download_moves_to_the_next_mirror(tmp_path, mirrors, fault, attempts):
    mirrors.always["down"] = fault
    download(tmp_path, mirrors, names=("down", "a"), retries=2)
    assert_complete(tmp_path)
    for file in GZ_BODIES:
        assert mirrors.requests["down", file] == attempts  # retries only for retryable faults
        assert mirrors.requests["a", file] == 1


def test_truncated_body_is_retried_and_leaves_no_partial_file(tmp_path, mirrors):
    mirrors.faults["a", TRAIN_GZ] = ["truncate"]
    download(tmp_path, mirrors)
    assert mirrors.requests["a", TRAIN_GZ] == 2
    assert_complete(tmp_path)


def test_checksum_mismatch_leaves_no_file_and_the_error_lists_every_mirror(tmp_path, mirrors):
    wrong = gzip.compress(idx_bytes(np.zeros((30, 4, 3), np.uint8)))
    mirrors.always["bad"] = wrong
    mirrors.always["down"] = 503
    with pytest.raises(DownloadError) as caught:
        download(tmp_path, mirrors, names=("down", "bad"), retries=1)
    message = str(caught.value)
    assert isinstance(caught.value, OSError)
    assert f"{mirrors.url('down')}{TRAIN_GZ}: HTTP 503" in message and "2 attempts" in message
    assert f"{mirrors.url('bad')}{TRAIN_GZ}: the download failed its checksum" in message
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]


def test_unreachable_and_non_http_mirrors_are_skipped(tmp_path, mirrors):
    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    refused, local = f"http://127.0.0.1:{closed_port}/", f"file://{tmp_path}/"
    download_fashion_mnist(tmp_path / "dl", mirrors=(refused, local, mirrors.url("a")),
                           files=SYNTH_FILES, retries=1, backoff=0.001)
    assert_complete(tmp_path / "dl")
    mirrors.always["a"] = 404
    with pytest.raises(DownloadError, match=r"refused \(2 attempts\); .*not an http\(s\) URL"):
        download_fashion_mnist(tmp_path / "dl2", mirrors=(refused, local, mirrors.url("a")),
                               files=SYNTH_FILES, retries=1, backoff=0.001)


def test_oversized_body_is_refused(tmp_path, mirrors):
    mirrors.always["huge"] = gzip.compress(GOOD) + bytes(2_000_000)
    with pytest.raises(DownloadError, match="body larger than"):
        download(tmp_path, mirrors, names=("huge",))
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]


def test_existing_files_are_kept_and_a_corrupt_one_is_fetched_again(tmp_path, mirrors):
    download(tmp_path, mirrors)
    download(tmp_path, mirrors)
    assert sum(mirrors.requests.values()) == 4, "valid files are not fetched again"
    (tmp_path / TRAIN_GZ).write_bytes(b"garbage")
    (tmp_path / ".t10k-images-idx3-ubyte.x.part").write_bytes(b"left by a killed download")
    download(tmp_path, mirrors)
    assert mirrors.requests["a", TRAIN_GZ] == 2 and sum(mirrors.requests.values()) == 5
    assert_complete(tmp_path)


def test_concurrent_downloads_fetch_each_file_once(tmp_path, mirrors):
    start, errors = threading.Barrier(16), []  # 16 cold sessions at once

    def worker():
        start.wait()
        try:
            download(tmp_path, mirrors)
        except Exception as err:  # collected: an exception in a thread would pass silently
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert mirrors.requests == Counter({("a", f): 1 for f in GZ_BODIES})
    assert_complete(tmp_path)


def test_load_dataset_downloads_into_the_cache_then_reuses_it(tmp_path, mirrors):
    first = load_dataset(offline=False, mirrors=(mirrors.url("a"),))
    cache = tmp_path / "home" / ".cache" / "weightscope" / "fashion-mnist"
    assert first.source == f"Fashion-MNIST downloaded from {mirrors.url('a')} into {cache}"
    assert not first.is_fallback
    second = load_dataset(offline=False, mirrors=(mirrors.url("a"),))
    assert second.source.startswith("Fashion-MNIST from Weightscope's download cache")
    assert second.fingerprint == first.fingerprint
    assert sum(mirrors.requests.values()) == 4


def test_offline_never_contacts_a_mirror(monkeypatch, mirrors):
    monkeypatch.setenv("WEIGHTSCOPE_OFFLINE", "1")
    assert load_dataset(mirrors=(mirrors.url("a"),)).is_fallback
    assert load_dataset(offline=True, mirrors=(mirrors.url("a"),)).is_fallback
    assert sum(mirrors.requests.values()) == 0


def test_failed_download_falls_back_and_says_why(mirrors):
    mirrors.always["gone"] = 404
    dataset = load_dataset(offline=False, mirrors=(mirrors.url("gone"),))
    assert dataset.is_fallback
    assert f"the download failed (could not download {TRAIN_GZ}" in dataset.source
    assert "HTTP 404" in dataset.source


# --------------------------------------------------------------------------- real Fashion-MNIST

REAL_FINGERPRINT = "ff46814726d6"  # from the payload hashes in FASHION_FILES


@pytest.mark.realdata
def test_real_fashion_mnist_from_debian(fashion_dir, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_DIR", fashion_dir)
    monkeypatch.setattr(data, "FASHION_FILES", FASHION_FILES)
    dataset = load_dataset(offline=True)
    assert not dataset.is_fallback and dataset.name == "fashion-mnist"
    assert dataset.source == ("Fashion-MNIST from Debian's dataset-fashion-mnist package "
                              f"({fashion_dir})")
    assert dataset.x_train.shape == (60000, 28, 28) and dataset.x_test.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(dataset.y_train), [6000] * 10)
    assert dataset.y_test.min() == 0 and dataset.y_test.max() == 9
    assert dataset.fingerprint == REAL_FINGERPRINT


@pytest.mark.realdata
def test_real_files_served_by_a_mirror_pass_the_real_checksums(fashion_dir, tmp_path,
                                                               monkeypatch):
    server = FakeMirrors({f"{name}.gz": (fashion_dir / f"{name}.gz").read_bytes()
                          for name in FASHION_FILES})
    try:
        dest = download_fashion_mnist(tmp_path / "dl", mirrors=(server.url("real"),),
                                      backoff=0.001, timeout=30.0)
    finally:
        server.close()
    assert sum(server.requests.values()) == 4
    monkeypatch.setattr(data, "FASHION_FILES", FASHION_FILES)
    assert load_dataset(data_dir=dest).fingerprint == REAL_FINGERPRINT


def test_an_interrupted_download_leaves_nothing_and_the_next_one_completes(tmp_path, mirrors,
                                                                          monkeypatch):
    import core.data as data

    real = data._stream_body

    def dies_half_way(url, out, limit, timeout):
        out.write(b"\x1f\x8b half a file")
        raise KeyboardInterrupt  # the process is stopped mid-write

    monkeypatch.setattr(data, "_stream_body", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        download(tmp_path, mirrors)
    # Nothing under a final name: a half-written file is never mistaken for data.
    assert not any((tmp_path / name).exists() for name in GZ_BODIES)
    monkeypatch.setattr(data, "_stream_body", real)
    download(tmp_path, mirrors)
    assert_complete(tmp_path)  # and no leftover partial file either
