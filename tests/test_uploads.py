"""Tests for core.uploads: bring-your-own-data parsing of .npz, .zip of PNG folders and IDX files.

Every input is built in memory. Each bad input must raise UploadError with a
message naming the file (and member) and the problem; the huge-shape and bomb
cases must also be refused without a large allocation.
"""

import builtins
import gzip
import io
import os
import stat
import struct
import tracemalloc
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from numpy.lib import format as npy
from PIL import Image

from core import uploads
from core.data import Dataset
from core.uploads import (
    LIMITS, Upload, UploadError, UploadLimits, describe_limits, load_folder, load_upload,
)

# --------------------------------------------------------------------------- building inputs

SHAPE = (6, 5)  # H != W, so that a swap would show


def labelled(counts=(5, 5, 5), seed=0, shape=SHAPE):
    """Random uint8 images ``(n, *shape)`` and labels with ``counts[k]`` images of class k."""
    y = np.repeat(np.arange(len(counts)), counts)
    x = np.random.default_rng(seed).integers(0, 256, (len(y), *shape), dtype=np.uint8)
    return x, y


def idx(array, code=0x08) -> bytes:
    array = np.asarray(array)
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def idx_header(*dims) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def gzip_bomb(head: bytes, zeros: int) -> bytes:
    """gzip of `head` followed by `zeros` zero bytes, compressed chunk by chunk (~1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(head)]
    block = bytes(2**20)
    for _ in range(zeros // len(block)):
        parts.append(packer.compress(block))
    return b"".join(parts) + packer.flush()


def npz(compressed=False, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def npy_header_only(shape, descr="|u1") -> bytes:
    """A .npy header declaring `shape` followed by a few bytes, not the data it promises."""
    buf = io.BytesIO()
    npy.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + bytes(16)


def png(pixels, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(pixels), mode).save(buf, format="PNG")
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but whose data is a few bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I",
                                                                        zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b""))


def zipped(members: dict, dirs=()) -> bytes:
    """A zip of `members` (name or ZipInfo -> bytes, or pixels saved as PNG; a dict or pairs)
    and folder entries `dirs`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a duplicate name is one of the bad inputs
        for folder in dirs:
            zf.writestr(zipfile.ZipInfo(folder), b"")
        for name, content in members.items() if isinstance(members, dict) else members:
            zf.writestr(name, content if isinstance(content, bytes) else png(content),
                        compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def class_folders(x, y, names=("cat", "dog", "emu"), prefix="") -> dict:
    return {f"{prefix}{names[label]}/{i:03d}.png": image
            for i, (image, label) in enumerate(zip(x, y))}


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def idx_files(x_train, y_train, x_test=None, y_test=None, pack=gz, suffix=".gz"):
    files = [(f"train-images-idx3-ubyte{suffix}", pack(idx(x_train))),
             (f"train-labels-idx1-ubyte{suffix}", pack(idx(y_train)))]
    if x_test is not None:
        files += [(f"t10k-images-idx3-ubyte{suffix}", pack(idx(x_test))),
                  (f"t10k-labels-idx1-ubyte{suffix}", pack(idx(y_test)))]
    return files


X, Y = labelled()
XT, YT = labelled((2, 2, 2), seed=1)
TRAIN_LABELS = ("train-labels-idx1-ubyte", idx(Y))


# --------------------------------------------------------------------------- npz


def test_npz_with_test_split_keeps_everything():
    up = load_upload([("mine.npz", npz(x_train=X, y_train=Y, x_test=XT, y_test=YT))])
    ds = up.dataset
    assert isinstance(up, Upload) and isinstance(ds, Dataset)
    np.testing.assert_array_equal(ds.x_train, X)
    np.testing.assert_array_equal(ds.y_train, Y)
    np.testing.assert_array_equal(ds.x_test, XT)
    np.testing.assert_array_equal(ds.y_test, YT)
    assert (ds.name, ds.is_fallback, ds.class_names) == ("upload", False, ("0", "1", "2"))
    assert ds.image_shape == SHAPE and ds.source == "Uploaded by you: mine.npz"
    assert up.notices == ()
    for array in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        assert not array.flags.writeable
    assert (ds.x_train.dtype, ds.y_train.dtype) == (np.uint8, np.int64)


def test_npz_without_test_split_holds_out_a_stratified_fifth():
    x, y = labelled((20, 10, 10))
    up = load_upload([("mine.npz", npz(x_train=x, y_train=y))])
    ds = up.dataset
    assert (len(ds.y_train), len(ds.y_test)) == (32, 8)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [4, 2, 2])
    # The held-out images are the training images, split, not invented or repeated.
    together = np.concatenate([ds.x_train, ds.x_test]).reshape(40, -1)
    assert sorted(map(bytes, together)) == sorted(map(bytes, x.reshape(40, -1)))
    assert any("No test split: 20 % of the training images (stratified" in n for n in up.notices)
    again = load_upload([("mine.npz", npz(x_train=x, y_train=y))]).dataset
    np.testing.assert_array_equal(again.y_test, ds.y_test)  # seed 0: same split every time
    np.testing.assert_array_equal(again.x_test, ds.x_test)


def test_npz_class_names_are_used():
    names = np.array(["shoe", "bag", "hat"])
    ds = load_upload([("m.npz", npz(x_train=X, y_train=Y, class_names=names))]).dataset
    assert ds.class_names == ("shoe", "bag", "hat")


@pytest.mark.parametrize("kind", ["npz", "idx"])
def test_labels_not_numbered_from_zero_are_renumbered(kind):
    original = np.array([3, 7, 9])[Y]
    files = ([("m.npz", npz(x_train=X, y_train=original))] if kind == "npz"
             else idx_files(X, original, pack=bytes, suffix=""))
    up = load_upload(files)
    assert up.dataset.class_names == ("3", "7", "9")
    assert set(up.dataset.y_train.tolist()) == {0, 1, 2}
    # Every image keeps its class: renumbering preserves which images belong together.
    assert any("Labels 3, 7, 9 were renumbered 0 to 2" in n for n in up.notices)


def test_npz_float_and_colour_images_become_grayscale_uint8():
    rng = np.random.default_rng(3)
    rgb = rng.random((15, *SHAPE, 3))
    up = load_upload([("c.npz", npz(x_train=rgb, y_train=Y, x_test=rgb[:6, ..., 0],
                                    y_test=np.arange(6) % 3))])
    want = np.rint(rgb * 255 @ np.array([0.299, 0.587, 0.114]))  # ITU-R 601-2 luma
    np.testing.assert_array_equal(up.dataset.x_train, want)
    np.testing.assert_array_equal(up.dataset.x_test, np.rint(rgb[:6, ..., 0] * 255))
    assert "Colour images were converted to grayscale." in up.notices
    assert "Float images in 0..1 were scaled to 0..255." in up.notices


def test_npz_integer_images_and_single_channel_are_accepted():
    up = load_upload([("i.npz", npz(x_train=X.astype(np.int64)[..., None], y_train=Y))])
    assert up.dataset.x_train.dtype == np.uint8 and up.dataset.image_shape == SHAPE
    assert not any("Colour" in n for n in up.notices)


# --------------------------------------------------------------------------- IDX


def test_idx_four_gzipped_files():
    up = load_upload(idx_files(X, Y, XT, YT))
    ds = up.dataset
    np.testing.assert_array_equal(ds.x_train, X)
    np.testing.assert_array_equal(ds.y_test, YT)
    np.testing.assert_array_equal(ds.x_test, XT)
    assert ds.class_names == ("0", "1", "2") and up.notices == ()
    assert ds.source.startswith("Uploaded by you: t10k-images-idx3-ubyte.gz, ")


def test_idx_two_plain_files_hold_out_a_test_split():
    up = load_upload(idx_files(X, Y, pack=bytes, suffix=""))
    assert (len(up.dataset.y_train), len(up.dataset.y_test)) == (12, 3)
    assert any(n.startswith("No test split") for n in up.notices)


def test_idx_files_pair_by_image_counts_when_names_do_not_say():
    files = [("a", idx(X)), ("b", idx(YT)), ("c", idx(XT)), ("d", idx(Y))]
    up = load_upload(files)
    np.testing.assert_array_equal(up.dataset.x_train, X)
    np.testing.assert_array_equal(up.dataset.x_test, XT)
    assert any("larger pair" in n for n in up.notices)


def test_idx_is_read_by_core_data(monkeypatch):
    seen = []
    real = uploads.read_idx_bytes

    def spy(data, name):
        seen.append(name)
        return real(data, name)

    monkeypatch.setattr(uploads, "read_idx_bytes", spy)
    load_upload(idx_files(X, Y))
    assert sorted(seen) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


# --------------------------------------------------------------------------- zip of PNG folders


def test_zip_with_train_and_test_folders():
    members = {**class_folders(X, Y, prefix="train/"), **class_folders(XT, YT, prefix="test/")}
    up = load_upload([("pics.zip", zipped(members))])
    ds = up.dataset
    assert ds.class_names == ("cat", "dog", "emu") and up.notices == ()
    np.testing.assert_array_equal(ds.x_train, X)  # member order = class, then file name
    np.testing.assert_array_equal(ds.y_train, Y)
    np.testing.assert_array_equal(ds.x_test, XT)
    np.testing.assert_array_equal(ds.y_test, YT)


def test_zip_of_class_folders_in_a_wrapping_folder_with_system_files():
    names = ("10", "2", "sock")
    members = class_folders(X, Y, names=names, prefix="my-images/")
    members.update({"__MACOSX/my-images/._x.png": b"junk", "my-images/.DS_Store": b"junk"})
    up = load_upload([("pics.zip", zipped(members, dirs=["my-images/", "my-images/sock/"]))])
    assert up.dataset.class_names == ("2", "10", "sock")  # numbers in number order
    assert len(up.dataset.y_train) + len(up.dataset.y_test) == 15
    assert any("2 system files" in n for n in up.notices)
    assert any(n.startswith("No test split") for n in up.notices)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_zip_colour_pngs_are_converted_to_grayscale(mode):
    rng = np.random.default_rng(5)
    colour = [Image.fromarray(rng.integers(0, 256, (*SHAPE, 3), dtype=np.uint8)).convert(mode)
              for _ in Y]
    members = {}
    for i, (image, label) in enumerate(zip(colour, Y)):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        members[f"c{label}/{i:03d}.png"] = buf.getvalue()
    up = load_upload([("colour.zip", zipped(members))])
    expected = np.stack([np.asarray(image.convert("L")) for image in colour])
    got = np.concatenate([up.dataset.x_train, up.dataset.x_test])
    assert sorted(map(bytes, got)) == sorted(map(bytes, expected))
    assert "Colour images were converted to grayscale." in up.notices


def test_zip_sixteen_bit_pngs_keep_their_top_eight_bits():
    deep = (X.astype(np.uint16) << 8) | 0x7F
    members = {f"c{label}/{i:03d}.png": png(image) for i, (image, label) in enumerate(zip(deep, Y))}
    ds = load_upload([("deep.zip", zipped(members))]).dataset
    got = np.concatenate([ds.x_train, ds.x_test])
    assert sorted(map(bytes, got)) == sorted(map(bytes, X))


# --------------------------------------------------------------------------- fingerprint, folder


def test_fingerprint_depends_on_bytes_and_names_not_on_order():
    files = idx_files(X, Y, XT, YT)
    first = load_upload(files).dataset.fingerprint
    assert len(first) == 12 and set(first) <= set("0123456789abcdef")
    assert load_upload(files[::-1]).dataset.fingerprint == first
    changed = X.copy()
    changed[0, 0, 0] ^= 1
    assert load_upload(idx_files(changed, Y, XT, YT)).dataset.fingerprint != first
    renamed = [(f"copy-{name}", data) for name, data in files]
    assert load_upload(renamed).dataset.fingerprint != first


@pytest.mark.parametrize("kind", ["idx", "npz"])
def test_load_folder_matches_the_upload_of_the_same_files(tmp_path, kind):
    files = idx_files(X, Y, XT, YT) if kind == "idx" else [("d.npz", npz(x_train=X, y_train=Y))]
    for name, data in files:
        (tmp_path / name).write_bytes(data)
    (tmp_path / "README.txt").write_text("ignored")
    from_folder, uploaded = load_folder(tmp_path, name="mine"), load_upload(files)
    assert from_folder.dataset.fingerprint == uploaded.dataset.fingerprint
    np.testing.assert_array_equal(from_folder.dataset.x_test, uploaded.dataset.x_test)
    # Viewers read the source: the folder goes by its name, never by its server path.
    assert from_folder.dataset.source.startswith("From the server's data folder 'mine': ")
    assert str(tmp_path) not in from_folder.dataset.source


def test_load_folder_refuses_a_missing_or_empty_folder(tmp_path):
    with pytest.raises(UploadError, match="is not a folder"):
        load_folder(tmp_path / "nowhere")
    with pytest.raises(UploadError, match="holds no IDX files"):
        load_folder(tmp_path)


def test_describe_limits_states_each_limit():
    text = describe_limits(UploadLimits(max_bytes=3 * 2**20, max_images=1234, max_side=32,
                                        max_classes=7))
    for part in ("3.0 MB", "1,234 images", "32 x 32 pixels", "7 classes", ".npz", ".zip", "IDX"):
        assert part in text
    assert text.endswith(".") and ". " not in text  # one sentence
    assert "50.0 MB" in describe_limits() and describe_limits() == describe_limits(LIMITS)


def test_nothing_is_written_to_disk(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a file was opened: {args[:1]}")

    inputs = [
        [("m.npz", npz(x_train=X, y_train=Y))],
        idx_files(X, Y),
        [("p.zip", zipped(class_folders(X, Y, prefix="train/")))],
    ]
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as patch:
        for target, name in ((builtins, "open"), (io, "open"), (os, "open"),
                             (zipfile.ZipFile, "extract"), (zipfile.ZipFile, "extractall")):
            patch.setattr(target, name, refuse)
        results = [load_upload(files) for files in inputs]
    assert all(len(r.dataset.y_train) for r in results)
    assert list(tmp_path.iterdir()) == []


def test_an_uploaded_dataset_trains():
    from core.trainer import TrainConfig, train

    x, y = labelled((30, 30, 30), seed=2, shape=(8, 8))
    ds = load_upload([("t.npz", npz(x_train=x, y_train=y))]).dataset
    run = train(ds, TrainConfig(n_train=40, iterations=5, n_val=10))
    assert run.fingerprint == ds.fingerprint


# --------------------------------------------------------------------------- bad inputs

SMALL = UploadLimits(max_bytes=2**20, max_images=20, max_side=8, max_classes=2, max_members=5)
GOOD_LABELS = ("train-labels-idx1-ubyte", idx(Y))


def with_train_images(images: bytes):
    return [("train-images-idx3-ubyte", images), GOOD_LABELS]


def in_zip(members, dirs=()):
    return [("pics.zip", zipped(members, dirs))]


def two_classes(extra=None):
    """A valid class-folder zip's members, plus `extra`."""
    return {"cat/1.png": X[0], "cat/2.png": X[1], "dog/1.png": X[2], "dog/2.png": X[3],
            **(extra or {})}


def pickled():
    return npz(x_train=np.array([{"a": 1}] * 15, dtype=object), y_train=Y)


def structured_objects():
    return npz(x_train=X, y_train=np.array([(1,)] * 15, dtype=[("a", "O")]))


def forged_npz(**members: bytes) -> bytes:
    return zipped({f"{key}.npy": data for key, data in members.items()})


BAD = [
    # general
    ([], LIMITS, ["No file was uploaded"]),
    ([("big.npz", bytes(2**20 + 1))], SMALL, ["big.npz", "allowed per file"]),
    ([("notes.csv", b"a,b\n1,2\n")], LIMITS, ["notes.csv", "is not a .npz, .zip or IDX file"]),
    ([("x.npy", b"\x93NUMPY rest")], LIMITS, ["x.npy", "single .npy", "np.savez"]),
    ([("one.png", png(X[0]))], LIMITS, ["one.png", "single PNG", "folder per class"]),
    ([("a.npz", npz(x_train=X, y_train=Y)), ("b.npz", b"PK\x03\x04")], LIMITS,
     ["2 files were uploaded", "a.npz (zip)"]),
    ([("../../etc/passwd.npz", b"plain")], LIMITS, ["passwd.npz is not", "upload one .npz"]),
    # IDX
    (with_train_images(b"\x01\x02\x08\x03" + bytes(40)), LIMITS,
     ["train-images-idx3-ubyte", "not an IDX file"]),
    (with_train_images(idx(X, code=0x0D)), LIMITS,
     ["train-images-idx3-ubyte", "data type code 0x0D"]),
    (with_train_images(idx(X)[:-7]), LIMITS, ["train-images-idx3-ubyte", "is truncated"]),
    (with_train_images(idx(X)[:9]), LIMITS, ["train-images-idx3-ubyte", "ends inside its header"]),
    (with_train_images(idx(X) + b"\0"), LIMITS, ["train-images-idx3-ubyte", "more bytes than"]),
    (with_train_images(b"\x1f\x8b" + bytes(30)), LIMITS,
     ["train-images-idx3-ubyte", "gzip"]),
    (with_train_images(idx_header(10, 9, 4) + bytes(360)), SMALL,
     ["train-images-idx3-ubyte", "4 x 9 pixels", "at most 8 x 8"]),
    (with_train_images(idx_header(25, 4, 4) + bytes(400)), SMALL,
     ["train-images-idx3-ubyte", "25 items", "20 images allowed"]),
    ([("train-images-idx3-ubyte", idx(X)), ("train-labels-idx1-ubyte", idx(Y[:-1]))], LIMITS,
     ["15 images", "train-labels-idx1-ubyte has 14 labels", "same split"]),
    ([("train-images-idx3-ubyte", idx(X)), ("train-labels-idx1-ubyte", idx(Y * 100))], LIMITS,
     ["train-labels-idx1-ubyte has label 200", "below 100"]),
    ([("train-images-idx3-ubyte", idx(X))], LIMITS, ["train-images-idx3-ubyte", "single IDX file"]),
    (idx_files(X, Y, XT, YT)[:3], LIMITS, ["3 files were uploaded"]),
    ([("dir/a", idx(X)), ("other/a", idx(Y))], LIMITS, ["Two files are named a", "by split"]),
    ([("train-images-a", idx(X)), ("train-images-b", idx(X))], LIMITS,
     ["2 images files and 0 labels files"]),
    ([("train-images", idx(X.reshape(15, 30))), GOOD_LABELS], LIMITS,
     ["train-images holds an array of shape 15 x 30", "expected images"]),
    ([("train-labels-x", idx(X)), ("train-images-y", idx(Y))], LIMITS,
     ["train-labels-x is named like the other kind", "which file is which"]),
    ([("train-images-1", idx(X)), ("train-labels-1", idx(Y)), ("train-images-2", idx(X)),
      ("train-labels-2", idx(Y))], LIMITS, ["Could not tell which", "t10k"]),
    # npz
    ([("p.npz", pickled())], LIMITS,
     ["x_train in p.npz", "contains Python objects; save plain arrays"]),
    ([("o.npz", structured_objects())], LIMITS, ["y_train in o.npz contains Python objects"]),
    ([("m.npz", npz(x_train=X))], LIMITS, ["m.npz lacks y_train", "np.savez"]),
    ([("m.npz", npz(y_test=Y))], LIMITS, ["m.npz lacks x_train and y_train"]),
    ([("m.npz", npz(x_train=X, y_train=Y, x_test=XT))], LIMITS, ["m.npz has x_test but no y_test"]),
    ([("m.npz", npz(x_train=X, y_train=Y[:-2]))], LIMITS,
     ["x_train in m.npz has 15 images but y_train has 13 labels"]),
    ([("m.npz", npz(x_train=X, y_train=Y, x_test=XT, y_test=YT[:1]))], LIMITS,
     ["x_test in m.npz has 6 images but y_test has 1 labels"]),
    ([("m.npz", npz(x_train=X, y_train=Y, x_test=labelled(shape=(5, 6))[0][:6], y_test=YT))],
     LIMITS, ["x_train and x_test in m.npz differ in image size"]),
    ([("m.npz", npz(x_train=X.astype(complex), y_train=Y))], LIMITS,
     ["x_train in m.npz has dtype complex128", "uint8"]),
    ([("m.npz", npz(x_train=X.reshape(15, 30), y_train=Y))], LIMITS,
     ["x_train in m.npz has shape (15, 30)", "(n, height, width)"]),
    ([("m.npz", npz(x_train=X / 100.0, y_train=Y))], LIMITS,
     ["x_train in m.npz holds values from 0.0", "between 0 and 1"]),
    ([("m.npz", npz(x_train=np.where(X > 9, np.nan, 0.5), y_train=Y))], LIMITS,
     ["x_train in m.npz holds values", "nan", "between 0 and 1"]),
    ([("m.npz", npz(x_train=X.astype(np.int16) * 2, y_train=Y))], LIMITS,
     ["x_train in m.npz holds values from", "between 0 and 255"]),
    ([("m.npz", npz(x_train=X, y_train=Y.astype(float)))], LIMITS,
     ["y_train in m.npz has dtype float64", "integers"]),
    ([("m.npz", npz(x_train=X, y_train=np.r_[Y[:-1].astype(np.uint64), np.uint64(2**64 - 1)]))],
     LIMITS,
     ["y_train in m.npz holds labels too large"]),
    ([("m.npz", npz(x_train=X, y_train=Y, class_names=np.array([b"a", b"b", b"c"])))], LIMITS,
     ["class_names in m.npz has dtype |S1", "unicode"]),
    ([("m.npz", npz(x_train=X, y_train=Y, class_names=np.array(["a", "b"])))], LIMITS,
     ["y_train in m.npz has label 2, but class_names has 2 names"]),
    ([("m.npz", npz(x_train=X, y_train=Y))], SMALL, ["m.npz", "more than the 2 allowed"]),
    ([("m.npz", npz(x_train=labelled(shape=(9, 4))[0], y_train=Y))], SMALL,
     ["x_train in m.npz has images of 4 x 9 pixels"]),
    ([("m.npz", npz(x_train=labelled((15, 15), shape=(2, 2))[0], y_train=np.arange(30) % 2))],
     SMALL, ["m.npz holds 30 images, more than the 20 allowed"]),
    ([("m.npz", npz(x_train=X, y_train=np.zeros(15, int)))], LIMITS,
     ["y_train in m.npz has only one class ('0')", "at least 2"]),
    ([("m.npz", npz(x_train=X, y_train=np.r_[Y[:-1], 3]))], LIMITS,
     ["y_train in m.npz: class '3' has 1 training image", "at least 2"]),
    ([("m.npz", npz(x_train=X, y_train=Y, x_test=XT, y_test=YT + 1))], LIMITS,
     ["class '3' has test images but no training images"]),
    ([("m.npz", npz(x_train=X, y_train=Y)[:-22] + bytes(22))], LIMITS,
     ["m.npz could not be unpacked"]),
    ([("m.npz", forged_npz(x_train=b"not an array", y_train=idx(Y)))], LIMITS,
     ["x_train in m.npz is not a readable .npy array"]),
    ([("m.npz", zipped({"x_train.npy": npy_header_only((15, 6, 5)),
                        "y_train.npy": npy_header_only((15,), "<i8"), "notes.txt": b"hi"}))],
     LIMITS, ["notes.txt in m.npz is not a .npy array"]),
    ([("m.npz", forged_npz(x_train=npy_header_only((15, 6, 5)),
                           y_train=npy_header_only((15,), "<i8")))], LIMITS,
     ["x_train in m.npz could not be read", "EOF"]),
    # zip of PNG folders
    (in_zip(two_classes({"../x.png": X[0]})), LIMITS, ["../x.png in pics.zip", "outside"]),
    (in_zip(two_classes({"/abs.png": X[0]})), LIMITS, ["/abs.png in pics.zip", "outside"]),
    (in_zip(two_classes({"cat\\..\\..\\x.png": X[0]})), LIMITS, ["outside the archive"]),
    (in_zip(two_classes({symlink_entry("cat/link.png"): b"/etc/passwd"})), LIMITS,
     ["cat/link.png in pics.zip is a symbolic link"]),
    (in_zip(two_classes({"cat/inner.zip": zipped({"a.png": X[0]})})), LIMITS,
     ["cat/inner.zip in pics.zip is an archive inside the archive"]),
    (in_zip(two_classes({"cat/inner.npz": npz(x_train=X)})), LIMITS,
     ["cat/inner.npz", "archive inside"]),
    (in_zip(two_classes({"cat/inner.gz": gz(b"x")})), LIMITS, ["cat/inner.gz", "archive inside"]),
    (in_zip(two_classes({"cat/notes.txt": b"hello"})), LIMITS,
     ["cat/notes.txt in pics.zip is not a PNG image"]),
    (in_zip(two_classes({"cat/fake.png": b"hello"})), LIMITS,
     ["cat/fake.png in pics.zip is not a PNG image", "signature"]),
    (in_zip(two_classes({"cat/cut.png": png(X[4])[:60]})), LIMITS,
     ["cat/cut.png in pics.zip could not be decoded"]),
    (in_zip(two_classes({"cat/big.png": np.zeros((9, 3), np.uint8)})), SMALL,
     ["cat/big.png in pics.zip has images of 3 x 9 pixels"]),
    (in_zip(two_classes({"cat/wide.png": np.zeros((6, 7), np.uint8)})), LIMITS,
     ["pics.zip holds images of different sizes", "5 x 6 (4 images",
      "7 x 6 (1 image, e.g. cat/wide.png)"]),
    (in_zip({"cat/1.png": X[0], "cat/2.png": X[1]}), LIMITS,
     ["pics.zip has only one class ('cat')"]),
    (in_zip(two_classes(), dirs=["emu/"]), LIMITS, ["Folder emu/ in pics.zip holds no images"]),
    (in_zip(class_folders(X, Y, prefix="train/"), dirs=["train/", "test/", "test/emu/"]), LIMITS,
     ["Folder test/emu/ in pics.zip holds no images"]),
    (in_zip({**class_folders(X[:9], Y[:9] % 2, prefix="train/"), "test/emu/1.png": X[9]}), LIMITS,
     ["pics.zip: class 'emu' has test images but no training images"]),
    (in_zip(class_folders(X, Y, prefix="test/")), LIMITS,
     ["pics.zip has a test/ folder but no train/"]),
    (in_zip({**class_folders(X, Y, prefix="train/"), "dog/9.png": X[0]}), LIMITS,
     ["pics.zip mixes train/ or test/ folders with class folders (dog)"]),
    (in_zip(two_classes({"loose.png": X[0]})), LIMITS,
     ["loose.png in pics.zip is not directly inside a class folder"]),
    (in_zip([*two_classes().items(), ("cat/1.png", X[0])]), LIMITS,
     ["cat/1.png in pics.zip appears twice"]),
    (in_zip(two_classes({"emu/1.png": X[5]})), LIMITS,
     ["pics.zip: class 'emu' has 1 training image", "at least 2"]),
    (in_zip(two_classes({"emu/1.png": X[5], "emu/2.png": X[6]})), SMALL,
     ["pics.zip declares 6 entries, more than the 5 allowed"]),
    (in_zip(class_folders(X[:12], Y[:12] % 2)), UploadLimits(max_images=10),
     ["pics.zip holds 12 images, more than the 10 allowed"]),
    (in_zip({}), LIMITS, ["pics.zip holds no PNG images"]),
    ([("pics.zip", b"PK\x03\x04" + bytes(100))], LIMITS, ["pics.zip could not be unpacked"]),
]


@pytest.mark.parametrize("files, limits, phrases", BAD, ids=[case[2][-1][:48] for case in BAD])
def test_bad_input_is_refused_with_a_message_saying_why(files, limits, phrases):
    with pytest.raises(UploadError) as caught:
        load_upload(files, limits)
    for phrase in phrases:
        assert phrase in str(caught.value)


# --------------------------------------------------------------------------- huge and bombs

MB = 2**20


def zeros_zip(member: str, size: int, count: int = 1) -> bytes:
    """A zip of `count` members of `size` zero bytes (deflated about 1000:1)."""
    return zipped({f"{member}{i}.png": bytes(size) for i in range(count)})


HUGE = [
    ("idx-dims", with_train_images(idx_header(4_000_000_000, 4_000_000_000, 1) + bytes(10)),
     ["train-images-idx3-ubyte", "more than Weightscope reads"]),
    ("idx-images", with_train_images(idx_header(200_000, 8, 8) + bytes(10)),
     ["train-images-idx3-ubyte declares 200,000 items", "100,000 images allowed"]),
    ("idx-side", with_train_images(idx_header(10, 4000, 4000) + bytes(10)),
     ["train-images-idx3-ubyte has images of 4000 x 4000 pixels"]),
    ("idx-bytes", with_train_images(idx_header(90_000, 30, 30) + bytes(10)),
     ["train-images-idx3-ubyte declares 90000 x 30 x 30", "50.0 MB allowed"]),
    ("gzip-bomb-trailing", with_train_images(gzip_bomb(idx(X), 100 * MB)),
     ["train-images-idx3-ubyte", "more bytes than"]),
    ("gzip-bomb-declared", with_train_images(gzip_bomb(idx_header(13_000, 64, 64), 100 * MB)),
     ["train-images-idx3-ubyte declares 13000 x 64 x 64 = 53,248,000 bytes"]),
    ("npz-shape", [("h.npz", forged_npz(x_train=npy_header_only((10**6, 64, 64)),
                                        y_train=npy_header_only((10**6,), "<i8")))],
     ["x_train in h.npz declares shape (1000000, 64, 64)", "50.0 MB"]),
    ("npz-float-shape", [("h.npz", forged_npz(x_train=npy_header_only((9000, 28, 28), "<f8"),
                                              y_train=npy_header_only((9000,), "<i8")))],
     ["x_train in h.npz declares shape (9000, 28, 28) of float64 = 56,448,000 bytes"]),
    ("npz-unpacked", [("z.npz", npz(compressed=True, x_train=np.zeros((60, 1024, 1024), np.uint8),
                                    y_train=np.zeros(60, np.uint8)))],
     ["z.npz unpacks to 60.0 MB", "50.0 MB allowed"]),
    ("zip-ratio", [("b.zip", zeros_zip("cat/", 40 * MB))],
     ["cat/0.png in b.zip unpacks", "decompression bomb"]),
    ("zip-total", [("b.zip", zeros_zip("cat/", MB, count=60))], ["b.zip unpacks to 60.0 MB"]),
    ("png-size", in_zip(two_classes({"cat/huge.png": png_declaring(30_000, 30_000)})),
     ["cat/huge.png in pics.zip has images of 30000 x 30000 pixels"]),
    ("zip-members", [("m.zip", zipped({f"c/{i}.png": b"" for i in range(2_001)}))],
     ["m.zip declares 2,001 entries, more than the 2,000 allowed"]),
]


@pytest.mark.parametrize("files, phrases", [pytest.param(f, p, id=i) for i, f, p in HUGE])
def test_huge_declarations_and_bombs_are_refused_without_a_large_allocation(files, phrases):
    limits = UploadLimits(max_members=2_000)  # otherwise the defaults
    tracemalloc.start()
    try:
        with pytest.raises(UploadError) as caught:
            load_upload(files, limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for phrase in phrases:
        assert phrase in str(caught.value)
    assert peak < 10 * MB, f"peak {peak / MB:.1f} MB"


# --------------------------------------------------------------------------- accepted means trainable


def trains(ds, **cfg):
    """Train ``ds`` briefly on every image the data set admits; the Run."""
    from core.config import n_train_range
    from core.trainer import TrainConfig, train

    return train(ds, TrainConfig(n_train=n_train_range(ds)[1], iterations=3, **cfg))


@pytest.mark.parametrize("counts", [(2, 2, 2), (4, 4, 4), (2, 9)])
@pytest.mark.parametrize("cfg", [{}, {"model": "ovr"}, {"optimizer": "lbfgs", "dtype": "float64"}],
                         ids=["softmax", "ovr", "lbfgs"])
def test_too_few_images_for_a_validation_hold_out_train_without_one(counts, cfg):
    """Fewer than 5 training images per class leave no validation hold-out: the run trains
    on what there is and records no validation numbers (NaN), instead of failing."""
    x, y = labelled(counts)
    ds = load_upload([("small.npz", npz(x_train=x, y_train=y))]).dataset
    run = trains(ds, **cfg)
    assert len(run.val_indices) == 0 and len(run.train_indices) == len(ds.y_train)
    assert run.iterations_done == 3 and not run.diverged
    assert np.isnan(run.snapshot_history["val_loss"]).all()
    assert np.isnan(run.snapshot_history["val_acc"]).all()
    assert run.records["val"].loss.shape == (len(run.snapshot_iterations), 0)
    assert np.isfinite(run.history["train_loss"]).all()
    assert np.isfinite(run.snapshot_history["test_acc"][-1])


def zero_side(shape):
    return np.zeros(shape, np.uint8)


def bad_directory_offset(archive: bytes) -> bytes:
    """``archive`` with the central directory's offset in its end record (bytes -6 to -2 of
    an archive without comment) pointing past the end of the file."""
    return archive[:-6] + b"\xff\xff\xff\x7f" + archive[-2:]


# Files the loader used to accept (or fail on with a plain ValueError) that cannot train.
REFUSED_UP_FRONT = [
    ([("m.npz", npz(x_train=zero_side((15, 0, 5)), y_train=Y))],
     ["x_train in m.npz has images of 5 x 0 pixels", "no pixels", "at least 1 x 1"]),
    ([("m.npz", npz(x_train=zero_side((15, 6, 0)), y_train=Y))],
     ["x_train in m.npz has images of 0 x 6 pixels", "no pixels"]),
    ([("m.npz", npz(x_train=zero_side((15, 0, 0, 3)), y_train=Y))],
     ["x_train in m.npz has images of 0 x 0 pixels"]),
    ([("m.npz", npz(x_train=X, y_train=Y, x_test=zero_side((6, 0, 5)), y_test=YT))],
     ["x_test in m.npz has images of 5 x 0 pixels"]),
    (idx_files(X, Y, labelled((2, 2, 2), shape=(4, 4))[0], YT),
     ["t10k-images-idx3-ubyte.gz holds images of 4 x 4 pixels",
      "train-images-idx3-ubyte.gz holds 5 x 6", "same size"]),
    ([("m.npz", npz(x_train=X, y_train=Y, x_test=labelled(shape=(6, 5, 2))[0][:6], y_test=YT))],
     ["x_test in m.npz has shape (6, 6, 5, 2)"]),
    # A damaged central-directory offset made zipfile raise "negative seek value".
    ([("m.npz", bad_directory_offset(npz(x_train=X, y_train=Y)))],
     ["m.npz could not be unpacked", "create the archive again"]),
]


@pytest.mark.parametrize("files, phrases", REFUSED_UP_FRONT,
                         ids=[case[1][0][:48] for case in REFUSED_UP_FRONT])
def test_files_that_could_not_train_are_refused_up_front(files, phrases):
    with pytest.raises(UploadError) as caught:
        load_upload(files)
    for phrase in phrases:
        assert phrase in str(caught.value)


def damaged(files, rng):
    """``files`` with one of them damaged: a few bytes changed, cut short, or bytes inserted."""
    which = int(rng.integers(len(files)))
    name, data = files[which]
    data = bytearray(data)
    how = int(rng.integers(3))
    if how == 0:
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
    elif how == 1:
        del data[int(rng.integers(len(data))):]
    else:
        at = int(rng.integers(len(data)))
        data[at:at] = rng.integers(0, 256, int(rng.integers(1, 8)), dtype=np.uint8).tobytes()
    return [*files[:which], (name, bytes(data)), *files[which + 1:]]


def good_uploads():
    x, y = labelled((6, 6, 6))
    xt, yt = labelled((2, 2, 2), seed=1)
    return {
        "npz": [("m.npz", npz(x_train=x, y_train=y, x_test=xt, y_test=yt,
                              class_names=np.array(["a", "b", "c"])))],
        "npz-compressed": [("m.npz", npz(compressed=True, x_train=x, y_train=y))],
        "idx": idx_files(x, y, xt, yt, pack=bytes, suffix=""),
        "idx-gz": idx_files(x, y, xt, yt),
        "zip": [("p.zip", zipped({**class_folders(x, y, prefix="train/"),
                                  **class_folders(xt, yt, prefix="test/")}))],
    }


@pytest.mark.parametrize("kind", list(good_uploads()))
def test_a_damaged_file_is_refused_with_a_message_or_trains(kind):
    """Hundreds of damaged copies of good uploads (seeded): each is refused with an
    UploadError naming a file, or is a data set that trains. Nothing else escapes."""
    files = good_uploads()[kind]
    names = {name for name, _ in files}
    rng = np.random.default_rng(sum(map(ord, kind)))
    refused = trained = 0
    for _ in range(300):
        case = damaged(files, rng)
        try:
            up = load_upload(case)
        except UploadError as err:
            assert any(name in str(err) for name in names), str(err)
            refused += 1
            continue
        run = trains(up.dataset)
        assert run.iterations_done == 3
        trained += 1
    assert refused and trained  # the damage is varied enough to reach both outcomes


@pytest.mark.parametrize("error", [IndexError("index 7 is out of bounds"), MemoryError(),
                                   ValueError("something numpy said")])
def test_an_unforeseen_failure_inside_the_loader_is_still_a_refusal(monkeypatch, tmp_path, error):
    """Every way a file can fail that no check foresaw becomes an UploadError naming the
    files, so the app can say so and keep the data in use (the contract of load_upload)."""
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(uploads, "_pixels", fail)
    with pytest.raises(UploadError) as caught:
        load_upload([("m.npz", npz(x_train=X, y_train=Y))])
    assert "m.npz could not be read" in str(caught.value)
    assert type(error).__name__ in str(caught.value)
    (tmp_path / "m.npz").write_bytes(npz(x_train=X, y_train=Y))
    with pytest.raises(UploadError) as caught:
        load_folder(tmp_path)
    assert "m.npz could not be read" in str(caught.value)


def test_the_summary_of_a_run_without_validation_says_so_instead_of_nan():
    import re

    from core import analysis, report

    x, y = labelled((2, 2, 2))
    ds = load_upload([("small.npz", npz(x_train=x, y_train=y))]).dataset
    run = trains(ds)
    page = report.summary_html(run, ds, analysis.trajectory(run, ds),
                               claims={"spectrum": analysis.spectrum(run, ds)})
    text = re.sub(r"src=\"data:[^\"]*\"", "", page)  # the pictures' base64 may spell nan
    assert not re.findall(r"\bnan\b", text)
    assert "validation accuracy</th><td>none (too few training images" in page
    assert "validation minimum" not in page
