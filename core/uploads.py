"""Reading data sets that people bring: one .npz, one .zip of PNG class folders, or IDX files.

:func:`load_upload` takes uploaded files as ``(name, bytes)`` pairs and tells
their format by content (magic bytes), not by name; :func:`load_folder` does
the same for a server-side folder named by the operator. Both return an
:class:`Upload`: a :class:`core.data.Dataset` (images ``(n, H, W)`` uint8,
labels ``(n,)`` int64, read-only) and the notices the UI should show about
what was changed on the way (colour to grayscale, a held-out test split).

Nothing is written to disk and no name inside an archive is used as a path:
members are read from memory by their ``ZipInfo``. Every size that could cost
memory (archive members, .npy shapes, IDX dimensions, PNG sizes) is checked
against :class:`UploadLimits` before the data behind it is read. Every
refusal is an :class:`UploadError` that names the file (and member) and says
what to do.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.lib import format as npy
from PIL import Image

# core.data's own IDX header checks and fingerprint, reused so both speak alike.
from core.data import (GZIP_MAGIC, Dataset, content_fingerprint, gunzip, gzip_errors,
                       parse_idx_dims, parse_idx_header, read_idx_bytes, stratified_split)

log = logging.getLogger("weightscope")

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_ARCHIVES = (".zip", ".npz", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".7z", ".rar")
_LITTER = {".DS_Store", "Thumbs.db", "desktop.ini"}  # files operating systems add to zips
_SPLITS = {"train", "test"}
_MAX_RATIO = 200           # a member unpacking to more than this many times its size ...
_RATIO_FLOOR = 2**20       # ... and to more than this many bytes is treated as a bomb
_HOLDOUT = 0.2
_GRAY = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2 luma, as Pillow's convert("L")
_CHUNK_VALUES = 2**22      # pixel values converted at a time, bounding float temporaries
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "class_names")
_FORMATS = ("upload one .npz (x_train, y_train, optionally x_test and y_test), one .zip of PNG "
            "images in one folder per class, or 2 or 4 IDX files (images and labels)")


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may cost; everything is checked before the data it describes is read.

    Attributes
    ----------
    max_bytes : int
        Bytes per uploaded file, and uncompressed bytes read from any archive
        (a zip, an npz, one gzipped IDX file).
    max_images : int
        Images in all, training and test.
    max_side : int
        Pixels per image side; no larger image is decoded.
    max_classes : int
        Classes; for IDX labels, the bound every label must stay under.
    max_members : int
        Entries in a zip or npz archive.
    """

    max_bytes: int = 50 * 2**20
    max_images: int = 100_000
    max_side: int = 64
    max_classes: int = 100
    max_members: int = 120_000


LIMITS = UploadLimits()


class UploadError(ValueError):
    """Uploaded data cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Upload:
    """A data set read from uploaded files.

    Attributes
    ----------
    dataset : Dataset
        Name ``"upload"``, ``is_fallback=False``; fingerprint from the uploaded bytes.
    notices : tuple of str
        Sentences saying what was changed on the way, e.g. colour converted to
        grayscale or a test split held out.
    """

    dataset: Dataset
    notices: tuple[str, ...]


class _Parsed(NamedTuple):
    x_train: np.ndarray              # (n, H, W) uint8
    y_train: np.ndarray              # (n,) integers
    x_test: np.ndarray | None        # None: hold out part of the training images
    y_test: np.ndarray | None
    class_names: tuple[str, ...] | None  # None: the distinct label values name the classes
    where: str                       # what to name in errors about classes and counts
    notices: tuple[str, ...]


# --------------------------------------------------------------------------- public API


def describe_limits(limits: UploadLimits = LIMITS) -> str:
    """One sentence for the UI: the formats accepted and the limits that apply."""
    side = limits.max_side
    return (f"{_FORMATS[0].upper()}{_FORMATS[1:]}; at most {_mb(limits.max_bytes)} per file, "
            f"{limits.max_images:,} images of up to {side} x {side} pixels and "
            f"{limits.max_classes} classes.")


def load_upload(files: list[tuple[str, bytes]], limits: UploadLimits = LIMITS) -> Upload:
    """Read uploaded files into a data set.

    Parameters
    ----------
    files : list of (str, bytes)
        Each file's name (shown to the user and used to pair IDX files, never
        as a path) and content. Accepted: one .npz with ``x_train`` ``(n, H, W)``
        or ``(n, H, W, 3)``, ``y_train`` ``(n,)``, optionally ``x_test`` and
        ``y_test`` and ``class_names`` (unicode); one .zip of PNG images in one
        folder per class, optionally under ``train/`` and ``test/``; or 2 or 4
        IDX files, gzipped or not.
    limits : UploadLimits

    Returns
    -------
    Upload
        Its fingerprint is the first 12 hex digits of SHA-256 over the files
        sorted by name, names included, so the same files always give the
        same fingerprint.

    Raises
    ------
    UploadError
        Naming the file (and member) and saying what to do.
    """
    if not files:
        raise UploadError(f"No file was uploaded; {_FORMATS}.")
    for name, data in files:
        _check_file_size(_file(name), len(data), limits)
    shown = ", ".join(_file(name) for name, _ in sorted(files, key=lambda f: f[0]))
    with _unforeseen(shown):
        return _finish(_parse(files, limits), f"Uploaded by you: {shown}",
                       _upload_fingerprint(files), limits)


def load_folder(path, limits: UploadLimits = LIMITS, *, name: str | None = None) -> Upload:
    """Read a server-side folder named by the operator, as :func:`load_upload` reads uploads.

    Parameters
    ----------
    path : str or path-like
        A folder holding IDX files (any names containing train, t10k or test
        and images or labels, gzipped or plain) or, failing those, one .npz
        (or .zip). Other files are ignored.
    limits : UploadLimits
    name : str, optional
        What viewers call the folder. The data set's source names the folder by it, never
        by its path, which viewers must not see (error messages do name the path: they
        are for the operator's log).

    Returns
    -------
    Upload
        With the fingerprint the same files would have as an upload.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise UploadError(f"{folder} is not a folder; name a folder holding IDX files or one .npz.")
    entries = sorted(p for p in folder.iterdir() if p.is_file())
    chosen = ([p for p in entries if _looks_like_idx_name(p.name)]
              or [p for p in entries if p.suffix.lower() in (".npz", ".zip")])
    if not chosen:
        raise UploadError(f"{folder} holds no IDX files (names with train, t10k or test and images "
                          "or labels) and no .npz; put the data set's files there.")
    files = []
    for p in chosen:
        try:
            _check_file_size(str(p), p.stat().st_size, limits)
            files.append((p.name, p.read_bytes()))
        except OSError as err:
            raise UploadError(f"{p} cannot be read ({err.strerror or err}); check its "
                              "permissions.") from None
    shown = ", ".join(_file(p.name) for p in chosen)
    with _unforeseen(shown):
        where = f"the server's data folder {name!r}" if name else "a data folder on the server"
        return _finish(_parse(files, limits), f"From {where}: {shown}",
                       _upload_fingerprint(files), limits)


# --------------------------------------------------------------------------- telling formats apart


def _parse(files: list[tuple[str, bytes]], limits: UploadLimits) -> _Parsed:
    kinds = [_kind(data) for _, data in files]
    if len(files) == 1:
        (name, data), kind = files[0], kinds[0]
        name = _file(name)
        if kind == "zip":
            return _read_zip(data, name, limits)
        raise UploadError({
            "idx": f"{name} is a single IDX file; upload the images and the labels file "
                   "(2 files, or 4 with a test split).",
            "npy": f"{name} is a single .npy array; save x_train and y_train (and optionally "
                   "x_test, y_test) together with np.savez into one .npz.",
            "png": f"{name} is a single PNG image; zip your images in one folder per class "
                   "and upload the .zip.",
        }.get(kind, f"{name} is not a .npz, .zip or IDX file (it starts with bytes "
                    f"{data[:4].hex() or 'none'}); {_FORMATS}."))
    if len(files) in (2, 4) and not {"zip", "npy", "png"} & set(kinds):
        return _read_idx_files([(_file(name), data) for name, data in files], limits)
    listed = ", ".join(f"{_file(name)} ({kind})" for (name, _), kind in zip(files, kinds))
    raise UploadError(f"{len(files)} files were uploaded together ({listed}); {_FORMATS}.")


def _kind(data: bytes) -> str:
    """Format told by magic bytes; unrecognised files are tried as IDX, whose checks word it."""
    if data.startswith(_ZIP_MAGICS):
        return "zip"
    if data.startswith(_NPY_MAGIC):
        return "npy"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(GZIP_MAGIC) or data.startswith(b"\0\0"):
        return "idx"
    return "unknown"


# --------------------------------------------------------------------------- IDX files


def _read_idx_files(files: list[tuple[str, bytes]], limits: UploadLimits) -> _Parsed:
    if repeated := [name for name, count in Counter(n for n, _ in files).items() if count > 1]:
        raise UploadError(f"Two files are named {repeated[0]}; name them by split (train or "
                          "t10k) and kind (images or labels).")
    dims = {name: _idx_dims(data, name, limits) for name, data in files}
    pairs, notices = _pair_idx(dims, len(files))
    n_images = sum(dims[images][0] for images, _ in pairs.values())
    if n_images > limits.max_images:
        raise UploadError(f"{' and '.join(images for images, _ in pairs.values())} hold "
                          f"{n_images:,} images, more than the {limits.max_images:,} allowed; "
                          "upload fewer images.")
    if "test" in pairs:
        (train, _), (test, _) = pairs["train"], pairs["test"]
        if dims[test][1:] != dims[train][1:]:
            raise UploadError(f"{test} holds images of {_size(dims[test])} pixels but {train} "
                              f"holds {_size(dims[train])}; give both splits the same size.")
    content = dict(files)
    arrays = {}
    for split, (images, labels) in pairs.items():
        if dims[images][0] != dims[labels][0]:
            raise UploadError(f"{images} has {dims[images][0]:,} images but {labels} has "
                              f"{dims[labels][0]:,} labels; they must come from the same split.")
        with _reworded():
            x, y = read_idx_bytes(content[images], images), read_idx_bytes(content[labels], labels)
        if y.max() >= limits.max_classes:
            raise UploadError(f"{labels} has label {y.max()}; labels must be below "
                              f"{limits.max_classes} (at most {limits.max_classes} classes).")
        arrays[split] = (x, y)
    test = arrays.get("test", (None, None))
    return _Parsed(*arrays["train"], *test, None, pairs["train"][1], notices)


def _idx_dims(data: bytes, name: str, limits: UploadLimits) -> tuple[int, ...]:
    """Dimensions an IDX header declares, checked against `limits`; only the header is read."""
    stream = gunzip(io.BytesIO(data), name) if data.startswith(GZIP_MAGIC) else io.BytesIO(data)
    with _reworded():
        with gzip_errors(name, "upload an undamaged copy."):
            head = stream.read(4 + 4 * 4)  # magic and at most four dimensions
        dims = parse_idx_dims(head[4:], parse_idx_header(head, name), name)
    shown = " x ".join(map(str, dims))
    if len(dims) not in (1, 3):
        raise UploadError(f"{name} holds an array of shape {shown}; expected images "
                          "(n x height x width) or labels (n).")
    if len(dims) == 3:
        _check_side(name, dims[1], dims[2], limits.max_side)
    if dims[0] > limits.max_images:
        raise UploadError(f"{name} declares {dims[0]:,} items, more than the "
                          f"{limits.max_images:,} images allowed; upload fewer images.")
    if math.prod(dims) > limits.max_bytes:
        raise UploadError(f"{name} declares {shown} = {math.prod(dims):,} bytes, more than the "
                          f"{_mb(limits.max_bytes)} allowed; upload fewer or smaller images.")
    return dims


def _looks_like_idx_name(name: str) -> bool:
    lower = name.lower()
    return _idx_split(name) is not None and ("image" in lower or "label" in lower)


def _idx_split(name: str) -> str | None:
    lower = name.lower()
    test, train = "t10k" in lower or "test" in lower, "train" in lower
    return "train" if train and not test else "test" if test and not train else None


def _pair_idx(dims: dict[str, tuple[int, ...]], n_files: int):
    """``{split: (images file, labels file)}`` from names and shapes, and notices."""
    for name, shape in dims.items():
        lower, kind = name.lower(), "images" if len(shape) == 3 else "labels"
        if "label" in lower and kind == "images" or "image" in lower and kind == "labels":
            raise UploadError(f"{name} is named like the other kind of file but holds {kind} "
                              f"of shape {' x '.join(map(str, shape))}; check which file is which.")
    images = [name for name, shape in dims.items() if len(shape) == 3]
    labels = [name for name, shape in dims.items() if len(shape) == 1]
    if len(images) != len(labels):
        raise UploadError(f"{' and '.join(dims)} hold {len(images)} images files and "
                          f"{len(labels)} labels files; upload one of each per split.")
    if n_files == 2:
        return {"train": (images[0], labels[0])}, ()
    named = {split: ([n for n in images if _idx_split(n) == split],
                     [n for n in labels if _idx_split(n) == split]) for split in ("train", "test")}
    if all(len(i) == len(m) == 1 for i, m in named.values()):
        return {split: (i[0], m[0]) for split, (i, m) in named.items()}, ()
    # Names do not tell; image counts can, when each count is shared by one images file
    # and one labels file and the two counts differ.
    by_count = sorted(images, key=lambda n: -dims[n][0])
    match = {n: [m for m in labels if dims[m][0] == dims[n][0]] for n in images}
    if dims[by_count[0]][0] == dims[by_count[1]][0] or not all(match.values()):
        raise UploadError(f"Could not tell which of {', '.join(dims)} belong together; put "
                          "train or t10k (or test) and images or labels in their names.")
    return ({"train": (by_count[0], match[by_count[0]][0]),
             "test": (by_count[1], match[by_count[1]][0])},
            ("The file names do not say which split is which, so the larger pair of IDX "
             "files is the training split.",))


# --------------------------------------------------------------------------- zip archives


def _read_zip(data: bytes, name: str, limits: UploadLimits) -> _Parsed:
    with _zip_errors(name):
        _check_declared_entries(data, name, limits)
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = _checked_members(zf, name, limits)
            names = {info.filename for info in infos}
            is_npz = names and all(n.endswith(".npy") for n in names)
            if is_npz or {"x_train.npy", "y_train.npy"} & names:
                return _read_npz(zf, infos, name, limits)
            return _read_image_zip(zf, infos, name, limits)


def _check_declared_entries(data: bytes, name: str, limits: UploadLimits) -> None:
    """Refuse too many entries from the end record, before zipfile builds a ZipInfo for each."""
    end = getattr(zipfile, "_EndRecData", lambda _: None)(io.BytesIO(data))
    if end is not None and end[zipfile._ECD_ENTRIES_TOTAL] > limits.max_members:
        raise UploadError(f"{name} declares {end[zipfile._ECD_ENTRIES_TOTAL]:,} entries, more "
                          f"than the {limits.max_members:,} allowed; upload fewer files.")


def _checked_members(zf: zipfile.ZipFile, name: str, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """The archive's entries, after every check that needs no member to be unpacked."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise UploadError(f"{name} holds {len(infos):,} entries, more than the "
                          f"{limits.max_members:,} allowed; upload fewer files.")
    total = sum(info.file_size for info in infos)
    if total > limits.max_bytes:
        raise UploadError(f"{name} unpacks to {_mb(total)}, more than the "
                          f"{_mb(limits.max_bytes)} allowed; upload fewer or smaller images.")
    seen = set()
    for info in infos:
        where = f"{_show(info.filename)} in {name}"
        parts = re.split(r"[\\/]", info.filename)
        if parts[0] == "" or ".." in parts or re.fullmatch(r"[A-Za-z]:", parts[0]):
            raise UploadError(f"{where} points outside the archive (an absolute path or ..); "
                              "zip the folder itself with relative names.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadError(f"{where} is a symbolic link; zip the files themselves.")
        if info.file_size > _RATIO_FLOOR and info.file_size > _MAX_RATIO * info.compress_size:
            raise UploadError(f"{where} unpacks {info.compress_size:,} bytes into "
                              f"{info.file_size:,}, more than {_MAX_RATIO} times its size; this "
                              "looks like a decompression bomb, upload the images themselves.")
        if info.filename in seen:
            raise UploadError(f"{where} appears twice; zip each file once.")
        seen.add(info.filename)
    return infos


@contextlib.contextmanager
def _zip_errors(name: str) -> Iterator[None]:
    try:
        yield
    except UploadError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, ValueError, OSError,
            struct.error) as err:
        # RuntimeError: encrypted members; NotImplementedError (a subclass): unsupported
        # compression. A damaged directory whose offsets point outside the archive makes
        # zipfile seek before the start ("negative seek value") or unpack a short header;
        # the same errors raised outside zipfile are not about the archive.
        if isinstance(err, (ValueError, OSError, struct.error)) \
                and not _raised_in(err, zipfile.__file__):
            raise
        raise UploadError(f"{name} could not be unpacked ({err}); create the archive again with "
                          "an ordinary zip tool, without a password.") from None


# --------------------------------------------------------------------------- npz


def _read_npz(zf: zipfile.ZipFile, infos, name: str, limits: UploadLimits) -> _Parsed:
    members = {}
    for info in infos:
        if info.is_dir() or not info.filename.endswith(".npy"):
            raise UploadError(f"{_show(info.filename)} in {name} is not a .npy array; "
                              "save the arrays with np.savez and nothing else.")
        members[info.filename[:-4]] = info
    missing = [key for key in ("x_train", "y_train") if key not in members]
    if missing:
        raise UploadError(f"{name} lacks {' and '.join(missing)}; save it with np.savez(file, "
                          "x_train=images, y_train=labels), adding x_test and y_test if you "
                          "have them.")
    if ("x_test" in members) != ("y_test" in members):
        have, lack = ("x_test", "y_test") if "x_test" in members else ("y_test", "x_test")
        raise UploadError(f"{name} has {have} but no {lack}; save both or neither.")
    notices = []
    if ignored := sorted(set(members) - set(_NPZ_KEYS)):
        notices.append(f"Arrays {', '.join(map(_show, ignored))} in {name} were ignored.")
    keys = [key for key in _NPZ_KEYS if key in members]
    headers = {key: _npy_header(zf, members[key], f"{key} in {name}") for key in keys}
    _check_npz_headers(headers, name, limits)
    arrays = {key: _npy_load(zf, members[key], f"{key} in {name}") for key in keys}
    class_names = None
    if "class_names" in arrays:
        class_names = tuple(_show(str(c)) for c in arrays["class_names"])
    splits = ("train", "test") if "x_test" in arrays else ("train",)
    parsed = {}
    for split in splits:
        x = _pixels(arrays[f"x_{split}"], f"x_{split} in {name}", notices)
        parsed[split] = (x, _int_labels(arrays[f"y_{split}"], f"y_{split} in {name}"))
    test = parsed.get("test", (None, None))
    return _Parsed(*parsed["train"], *test, class_names, f"y_train in {name}", tuple(notices))


def _npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str):
    """Shape and dtype from a member's .npy header, reading nothing after the header."""
    with zf.open(info) as stream:
        try:
            version = npy.read_magic(stream)
            reader = {(1, 0): npy.read_array_header_1_0,
                      (2, 0): npy.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f".npy format version {version[0]}.{version[1]} is not read here")
            shape, _, dtype = reader(stream)
        except ValueError as err:
            raise UploadError(f"{where} is not a readable .npy array ({err}); save it again "
                              "with np.savez.") from None
    return shape, dtype


def _check_npz_headers(headers: dict, name: str, limits: UploadLimits) -> None:
    """Refuse by declared shape and dtype, before any array is loaded."""
    total = 0
    for key, (shape, dtype) in headers.items():
        where = f"{key} in {name}"
        if dtype.hasobject:
            raise UploadError(f"{where} contains Python objects; save plain arrays (numbers, and "
                              "unicode strings for class_names).")
        nbytes = math.prod(shape) * dtype.itemsize
        total += nbytes
        if nbytes > limits.max_bytes or total > limits.max_bytes:
            raise UploadError(f"{where} declares shape {shape} of {dtype} = {nbytes:,} bytes; "
                              f"the arrays may hold {_mb(limits.max_bytes)} in all, upload fewer "
                              "or smaller images.")
    splits = ("train", "test") if "x_test" in headers else ("train",)
    for split in splits:
        (x_shape, x_dtype), (y_shape, y_dtype) = headers[f"x_{split}"], headers[f"y_{split}"]
        where = f"x_{split} in {name}"
        if x_dtype.kind not in "uif":
            raise UploadError(f"{where} has dtype {x_dtype}; save images as uint8 (0 to 255) "
                              "or float (0 to 1).")
        if not (len(x_shape) == 3 or len(x_shape) == 4 and x_shape[3] in (1, 3, 4)):
            raise UploadError(f"{where} has shape {x_shape}; expected images (n, height, width) "
                              "or colour images (n, height, width, 3).")
        if y_dtype.kind not in "ui" or len(y_shape) != 1:
            raise UploadError(f"y_{split} in {name} has dtype {y_dtype} and shape {y_shape}; "
                              "save labels as integers of shape (n,).")
        if x_shape[0] != y_shape[0]:
            raise UploadError(f"x_{split} in {name} has {x_shape[0]:,} images but y_{split} has "
                              f"{y_shape[0]:,} labels; give one label per image.")
        if x_shape[0] == 0:
            raise UploadError(f"{where} holds no images; add some.")
        _check_side(where, x_shape[1], x_shape[2], limits.max_side)
    if "x_test" in headers and headers["x_test"][0][1:3] != headers["x_train"][0][1:3]:
        raise UploadError(f"x_train and x_test in {name} differ in image size "
                          f"({headers['x_train'][0][1:3]} and {headers['x_test'][0][1:3]}); "
                          "give both splits the same size.")
    n_images = sum(headers[f"x_{split}"][0][0] for split in splits)
    if n_images > limits.max_images:
        raise UploadError(f"{name} holds {n_images:,} images, more than the "
                          f"{limits.max_images:,} allowed; upload fewer images.")
    if "class_names" in headers:
        shape, dtype = headers["class_names"]
        if dtype.kind != "U" or len(shape) != 1:
            raise UploadError(f"class_names in {name} has dtype {dtype} and shape {shape}; save "
                              "the names as a list of str (unicode), one per class.")


def _npy_load(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    with zf.open(info) as stream:
        try:
            return npy.read_array(stream, allow_pickle=False)
        except ValueError as err:  # object arrays were refused by their header already
            raise UploadError(f"{where} could not be read ({err}); save it again with "
                              "np.savez.") from None


def _int_labels(y: np.ndarray, where: str) -> np.ndarray:
    if y.dtype == np.uint64 and y.max() > np.iinfo(np.int64).max:
        raise UploadError(f"{where} holds labels too large to count with; number the classes "
                          "0, 1, 2, ...")
    return y.astype(np.int64)


def _pixels(x: np.ndarray, where: str, notices: list[str]) -> np.ndarray:
    """Images ``(n, H, W[, C])`` of uint8 0..255, integers or floats 0..1 -> ``(n, H, W)`` uint8."""
    low, high = x.min(), x.max()
    is_float = x.dtype.kind == "f"
    top = 1 if is_float else 255
    if not 0 <= low <= high <= top:  # also false for NaN
        hint = ("float images must lie between 0 and 1" if is_float
                else "integer images must lie between 0 and 255")
        raise UploadError(f"{where} holds values from {low} to {high}; {hint}.")
    colour = x.ndim == 4 and x.shape[3] > 1
    if x.ndim == 4 and not colour:
        x = x[..., 0]
    if is_float:
        notices.append("Float images in 0..1 were scaled to 0..255.")
    if colour:
        notices.append("Colour images were converted to grayscale.")
    if not (is_float or colour):
        return x.astype(np.uint8)
    out = np.empty(x.shape[:3], dtype=np.uint8)
    step = max(1, _CHUNK_VALUES // math.prod(x.shape[1:]))
    for start in range(0, len(x), step):
        part = x[start:start + step].astype(np.float64) * (255 if is_float else 1)
        if colour:
            part = part[..., :3] @ _GRAY  # an alpha channel, if any, is dropped
        out[start:start + step] = np.rint(part)
    return out


# --------------------------------------------------------------------------- zip of PNG folders


def _read_image_zip(zf: zipfile.ZipFile, infos, name: str, limits: UploadLimits) -> _Parsed:
    files, dirs, ignored = _png_members(infos, name)
    layout = _image_layout(files, dirs, name)
    if len(layout) > limits.max_images:
        raise UploadError(f"{name} holds {len(layout):,} images, more than the "
                          f"{limits.max_images:,} allowed; upload fewer images.")
    classes = sorted({cls for _, cls, _ in layout}, key=_natural)
    label = {cls: k for k, cls in enumerate(classes)}
    images, labels = {"train": [], "test": []}, {"train": [], "test": []}
    sizes: Counter = Counter()
    examples = {}
    colour = False
    for split, cls, info in layout:
        where = f"{_show(info.filename)} in {name}"
        pixels, converted = _decode_png(zf.read(info), where, limits.max_side)
        colour |= converted
        sizes[pixels.shape] += 1
        examples.setdefault(pixels.shape, _show(info.filename))
        images[split].append(pixels)
        labels[split].append(label[cls])
    if len(sizes) > 1:
        listed = ", ".join(f"{w} x {h} ({count:,} image{'s' if count > 1 else ''}, "
                           f"e.g. {examples[(h, w)]})"
                           for (h, w), count in sizes.most_common())
        raise UploadError(f"{name} holds images of different sizes: {listed}; resize them all "
                          "to one size.")
    notices = []
    if colour:
        notices.append("Colour images were converted to grayscale.")
    if ignored:
        notices.append(f"{ignored} system file{'s' if ignored > 1 else ''} (such as __MACOSX or "
                       f".DS_Store) in {name} {'were' if ignored > 1 else 'was'} ignored.")
    x_test = np.stack(images["test"]) if images["test"] else None
    y_test = np.array(labels["test"], dtype=np.int64) if images["test"] else None
    return _Parsed(np.stack(images["train"]), np.array(labels["train"], dtype=np.int64), x_test,
                   y_test, tuple(_show(c) for c in classes), name, tuple(notices))


def _png_members(infos, name: str):
    """Split entries into PNG files and folders (as tuples of name parts); count litter."""
    files, dirs, ignored = [], [], 0
    for info in infos:
        parts = tuple(p for p in re.split(r"[\\/]", info.filename) if p)
        if not parts or parts[0] == "__MACOSX" or parts[-1] in _LITTER:
            ignored += 1
            continue
        if info.is_dir():
            dirs.append(parts)
            continue
        where = f"{_show(info.filename)} in {name}"
        lower = parts[-1].lower()
        if lower.endswith(_ARCHIVES):
            raise UploadError(f"{where} is an archive inside the archive; unpack it and zip "
                              "the images themselves.")
        if not lower.endswith(".png"):
            raise UploadError(f"{where} is not a PNG image; the zip may hold only PNG images in "
                              "class folders, so convert or remove it.")
        files.append((parts, info))
    if not files:
        raise UploadError(f"{name} holds no PNG images; zip one folder per class with PNG images "
                          "inside.")
    return files, dirs, ignored


def _image_layout(files, dirs, name: str) -> list[tuple[str, str, zipfile.ZipInfo]]:
    """``(split, class folder, member)`` for every image, sorted by member name."""
    tops = {parts[0] for parts, _ in files} | {parts[0] for parts in dirs}
    # One folder wrapping everything (zipping "my-images/" itself) is not a class.
    if len(tops) == 1 and not tops & _SPLITS and min(len(p) for p, _ in files) >= 3:
        files = [(parts[1:], info) for parts, info in files]
        dirs = [parts[1:] for parts in dirs if len(parts) > 1]
    tops = {parts[0] for parts, _ in files}
    split_layout = bool(tops & _SPLITS)
    if split_layout and not tops <= _SPLITS:
        raise UploadError(f"{name} mixes train/ or test/ folders with class folders "
                          f"({', '.join(sorted(map(_show, tops - _SPLITS)))}); put every class "
                          "folder under train/ (and test/) or none.")
    if split_layout and "train" not in tops:
        raise UploadError(f"{name} has a test/ folder but no train/ folder; add train/ with one "
                          "folder per class.")
    depth = 3 if split_layout else 2
    layout = []
    for parts, info in sorted(files, key=lambda f: f[1].filename):
        if len(parts) != depth:
            raise UploadError(f"{_show(info.filename)} in {name} is not directly "
                              "inside a class folder; arrange the images as <class>/<image>.png "
                              "or train/<class>/<image>.png and test/<class>/<image>.png.")
        layout.append((parts[0] if split_layout else "train", parts[-2], info))
    filled = {(split, cls) for split, cls, _ in layout}
    for parts in dirs:
        if len(parts) == depth - 1:
            split = parts[0] if split_layout else "train"
            if (split, parts[-1]) not in filled:
                raise UploadError(f"Folder {_show('/'.join(parts))}/ in {name} holds "
                                  "no images; add at least 2 PNG images or remove the folder.")
    return layout


def _decode_png(raw: bytes, where: str, max_side: int) -> tuple[np.ndarray, bool]:
    """Pixels ``(H, W)`` uint8 of one PNG, and whether colour was converted to grayscale."""
    if not raw.startswith(_PNG_MAGIC):
        raise UploadError(f"{where} is not a PNG image (its bytes do not start with the PNG "
                          "signature); convert it to PNG or remove it.")
    if len(raw) >= 24 and raw[12:16] == b"IHDR":  # the first chunk, as the PNG standard requires
        # Checked here, before Pillow, whose own bomb check raises a less helpful error.
        width, height = struct.unpack(">II", raw[16:24])
        _check_side(where, height, width, max_side)
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as image:
            _check_side(where, image.height, image.width, max_side)
            image.load()  # decoded only now that its size is known to be small
            if image.mode.startswith("I"):  # 16-bit grayscale: keep the top 8 bits
                return (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8), False
            colour = image.mode not in ("L", "LA", "1")
            return np.asarray(image.convert("L")), colour
    except UploadError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise UploadError(f"{where} could not be decoded as a PNG ({err}); save it again or "
                          "remove it.") from None


# --------------------------------------------------------------------------- classes and splits


def _finish(parsed: _Parsed, source: str, fingerprint: str, limits: UploadLimits) -> Upload:
    """Number the classes, check them, hold out a test split if none came, build the Dataset."""
    notices = list(parsed.notices)
    y_train, y_test, where = parsed.y_train, parsed.y_test, parsed.where
    every = y_train if y_test is None else np.concatenate([y_train, y_test])
    names = parsed.class_names
    if names is None:
        values = np.unique(every)
        names = tuple(str(v) for v in values)
        if not np.array_equal(values, np.arange(len(values))):
            notices.append(f"Labels {_listing(names)} were renumbered 0 to {len(names) - 1}; "
                           "the original labels are the class names.")
            y_train = np.searchsorted(values, y_train)
            y_test = None if y_test is None else np.searchsorted(values, y_test)
    elif every.min() < 0 or every.max() >= len(names):
        bad = every.min() if every.min() < 0 else every.max()
        raise UploadError(f"{where} has label {bad}, but class_names has {len(names)} names; "
                          f"labels must be 0 to {len(names) - 1}.")
    if len(names) < 2:
        raise UploadError(f"{where} has only one class ({names[0]!r}); a classifier needs at "
                          "least 2, so add images of another class.")
    if len(names) > limits.max_classes:
        raise UploadError(f"{where} has {len(names)} classes, more than the "
                          f"{limits.max_classes} allowed; merge or drop some.")
    counts = np.bincount(y_train, minlength=len(names))
    if y_test is not None and (unseen := sorted(set(y_test.tolist()) - set(y_train.tolist()))):
        raise UploadError(f"{where}: class {names[unseen[0]]!r} has test images but no training "
                          "images; add training images of it or drop it from the test split.")
    # At least 2 per class also makes at least twice as many training images as classes.
    if counts.min() < 2:
        k = int(counts.argmin())
        raise UploadError(f"{where}: class {names[k]!r} has {counts[k]} training "
                          f"image{'' if counts[k] == 1 else 's'}; every class needs at least 2, "
                          "so add images or remove the class.")
    x_train, x_test = parsed.x_train, parsed.x_test
    if x_test is None:
        n_holdout = max(round(_HOLDOUT * len(y_train)), len(names))
        keep, held = stratified_split(y_train, n_holdout, seed=0)
        x_train, y_train, x_test, y_test = (x_train[keep], y_train[keep],
                                            x_train[held], y_train[held])
        notices.append(f"No test split: 20 % of the training images (stratified, at least one "
                       f"per class: {n_holdout:,} of {len(keep) + n_holdout:,}) are held out as "
                       "the test split.")
    dataset = Dataset(
        name="upload", x_train=x_train, y_train=y_train.astype(np.int64), x_test=x_test,
        y_test=y_test.astype(np.int64), class_names=names, source=source,
        fingerprint=fingerprint, is_fallback=False,
    )
    return Upload(dataset, tuple(dict.fromkeys(notices)))


# --------------------------------------------------------------------------- small helpers


def _upload_fingerprint(files: list[tuple[str, bytes]]) -> str:
    """12 hex digits of SHA-256 over the files sorted by name, each name and length included."""
    return content_fingerprint(part for name, data in sorted(files)
                        for part in (f"{_base(name)}\0{len(data)}\0".encode("utf-8", "replace"),
                                     data))


def _check_file_size(name: str, size: int, limits: UploadLimits) -> None:
    if size > limits.max_bytes:
        raise UploadError(f"{name} is {_mb(size)}, more than the {_mb(limits.max_bytes)} allowed "
                          "per file; upload fewer or smaller images.")


def _check_side(where: str, height: int, width: int, max_side: int) -> None:
    if min(height, width) < 1:
        raise UploadError(f"{where} has images of {width} x {height} pixels, which hold no "
                          "pixels; save images of at least 1 x 1 pixels.")
    if max(height, width) > max_side:
        raise UploadError(f"{where} has images of {width} x {height} pixels; at most "
                          f"{max_side} x {max_side} are read, so shrink them.")


@contextlib.contextmanager
def _unforeseen(shown: str) -> Iterator[None]:
    """Any other failure while reading ``shown`` (file names) as an UploadError.

    The checks above word every failure they foresee; a file that fails some other way
    (a library's error on damaged bytes, memory) is still a refusal the viewer is told
    about, with the data in use kept, rather than an error page. The traceback goes to
    the server log, where the unforeseen case can be found and given its own check.
    """
    try:
        yield
    except UploadError:
        raise
    except Exception as err:  # noqa: BLE001 - the contract: every refusal is an UploadError
        log.warning("upload %s refused on an unforeseen %s", shown, type(err).__name__,
                    exc_info=True)
        said = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise UploadError(f"{shown} could not be read ({said}); check that the files are "
                          f"undamaged and {_FORMATS}.") from None


@contextlib.contextmanager
def _reworded() -> Iterator[None]:
    """core.data's ValueErrors, which already name the file, as UploadErrors."""
    try:
        yield
    except UploadError:
        raise
    except ValueError as err:
        raise UploadError(str(err)) from None


def _raised_in(err: BaseException, filename: str) -> bool:
    """Whether the innermost Python frame of ``err``'s traceback is in ``filename``."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename == filename


def _base(name: str) -> str:
    """The last part of a name, split at / and \\ as text (the name is never used as a path)."""
    return re.split(r"[\\/]", name)[-1]


def _file(name: str) -> str:
    """A file name to show: its last part only, as :func:`_show` makes it safe."""
    return _show(_base(name))


def _show(text: str, width: int = 60) -> str:
    """Text safe to show: control characters replaced, long text shortened in the middle."""
    text = "".join("?" if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    text = text or "(unnamed)"
    return text if len(text) <= width else f"{text[:width - 16]}…{text[-15:]}"


def _natural(name: str):
    """Sort key putting "2" before "10" and numbers before words."""
    return (0, int(name), "") if name.isascii() and name.isdigit() else (1, 0, name.casefold())


def _listing(names: tuple[str, ...], most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def _size(dims: tuple[int, ...]) -> str:
    """Width x height of IDX images ``(n, height, width)``."""
    return f"{dims[2]} x {dims[1]}"


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"
