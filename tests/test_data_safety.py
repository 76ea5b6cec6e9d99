"""Safe by default: received data files never run code, malformed files and labels give a
DataError naming the file, NodeData checks its counts, and topology constructors refuse
graphs too large to build before allocating anything."""

from __future__ import annotations

import builtins
import gzip
import os
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecl_jax import datasets as D
from ecl_jax import engine as eng
from ecl_jax import partition as P
from ecl_jax import topology as tp
from ecl_jax.algorithms import local_sgd
from ecl_jax.errors import DataError, UserError

sys.path.insert(0, os.path.dirname(__file__))
from test_datasets import (
    _check_cifar,
    _cifar_batch,
    _cifar_record_bytes,
    _write_idx_dir,
)

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No user data anywhere: empty HOME, TFDS dir and cache."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_home"))
    monkeypatch.setenv("ECL_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ECL_JAX_DATA_DIR", raising=False)
    D._load_cifar_cached.cache_clear()
    D._load_idx_cached.cache_clear()
    yield tmp_path
    D._load_cifar_cached.cache_clear()
    D._load_idx_cached.cache_clear()


# --------------------------------------------------------------------------- CIFAR-10 pickles
def _py3_batch(x, y, protocol):
    data = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
    return pickle.dumps({b"batch_label": b"batch", b"labels": [int(v) for v in y], b"data": data,
                         b"filenames": [b"img%d.png" % i for i in range(len(x))]}, protocol=protocol)


def _py2_batch(x, y) -> bytes:
    """A batch byte for byte as Python 2's cPickle (protocol 2) wrote the official files:
    str as SHORT_BINSTRING / BINSTRING, the array via numpy.core.multiarray._reconstruct."""

    def s(b):
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    def i(v):
        return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)

    data = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
    dtype = (b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
             + b"(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b") + b"\x87R"
             + b"(" + i(1) + i(data.shape[0]) + i(data.shape[1]) + b"\x86" + dtype + b"\x89" + s(data.tobytes())
             + b"tb")
    labels = b"](" + b"".join(i(int(v)) for v in y) + b"e"
    return (b"\x80\x02}(" + s(b"batch_label") + s(b"training batch") + s(b"labels") + labels
            + s(b"data") + array + b"u.")


def _write_batches(root: Path, kind: str, n=3, make=None):
    """Batches of random images in ``root``: kind 'bin' or 'py' (make(x, y) -> bytes)."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, name in enumerate(BATCHES):
        x, y = _cifar_batch(n, k)
        out[name] = (x, y)
        if kind == "bin":
            (root / f"{name}.bin").write_bytes(_cifar_record_bytes(x, y))
        else:
            (root / name).write_bytes(make(x, y))
    x_train = np.concatenate([out[f"data_batch_{i}"][0] for i in range(1, 6)])
    y_train = np.concatenate([out[f"data_batch_{i}"][1] for i in range(1, 6)])
    return x_train, y_train, *out["test_batch"]


def _tarball(path: Path, folder: Path, arcname: str):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=arcname)


@pytest.mark.parametrize("make", [
    lambda x, y: _py3_batch(x, y, 2),
    lambda x, y: _py3_batch(x, y, pickle.DEFAULT_PROTOCOL),
    lambda x, y: _py3_batch(x, y, 5),
    _py2_batch,
], ids=["py3-protocol2", "py3-default", "py3-protocol5", "py2-cpickle"])
def test_legitimate_python_batches_load_like_the_binary_ones(isolated, make):
    truth = _write_batches(isolated / "bin" / "cifar-10-batches-bin", "bin")
    _write_batches(isolated / "py" / "cifar-10-batches-py", "py", make=make)
    binary = D.load_dataset("cifar10", data_dir=isolated / "bin")
    python = D.load_dataset("cifar10", data_dir=isolated / "py")
    _check_cifar(python, *truth)
    for f in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(python, f), getattr(binary, f))
    assert python.source.startswith("cifar10-py:")
    # ... and from the downloaded tarball
    dl = isolated / "dl"
    dl.mkdir()
    _tarball(dl / "cifar-10-python.tar.gz", isolated / "py" / "cifar-10-batches-py", "cifar-10-batches-py")
    tarred = D.load_dataset("cifar10", data_dir=dl)
    assert np.array_equal(tarred.x_train, binary.x_train) and np.array_equal(tarred.y_test, binary.y_test)


class _System:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


class _Call(_System):
    def __reduce__(self):
        return subprocess.call, (["touch", str(self.path)],)


class _Eval(_System):
    def __reduce__(self):
        return builtins.eval, (f"open({str(self.path)!r}, 'w').close()",)


class _Exec(_System):
    def __reduce__(self):
        return builtins.exec, (f"open({str(self.path)!r}, 'w').close()",)


PAYLOADS = {
    "os.system": (lambda p: pickle.dumps(_System(p), protocol=2), os.system.__module__ + ".system"),
    "os.system-proto5": (lambda p: pickle.dumps(_System(p), protocol=5), os.system.__module__ + ".system"),
    "subprocess.call": (lambda p: pickle.dumps(_Call(p)), "subprocess.call"),
    "builtins.eval": (lambda p: pickle.dumps(_Eval(p)), "builtins.eval"),
    "builtins.exec-proto2": (lambda p: pickle.dumps(_Exec(p), protocol=2), "__builtin__.exec"),
    # the payload hidden inside an otherwise well-formed batch dict
    "nested": (lambda p: pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [_System(p)]}, protocol=2),
               os.system.__module__ + ".system"),
    # numpy globals other than the array constructors are refused too
    "numpy.load": (lambda p: b"\x80\x02cnumpy\nload\nX" + struct.pack("<I", len(str(p))) + str(p).encode()
                   + b"\x85R.", "numpy.load"),
}


def _assert_refused(err, refused, where):
    msg = str(err.value)
    assert refused in msg and where in msg, msg
    assert "not a CIFAR-10 python batch" in msg and "malicious" in msg and "cifar-10-batches-bin" in msg, msg


@pytest.mark.parametrize("payload", list(PAYLOADS))
@pytest.mark.parametrize("victim", ["data_batch_1", "test_batch"])
def test_malicious_pickle_in_folder_never_runs(isolated, payload, victim):
    make, refused = PAYLOADS[payload]
    pwned = isolated / "pwned"
    folder = isolated / "data" / "cifar-10-batches-py"
    _write_batches(folder, "py", make=lambda x, y: _py3_batch(x, y, 2))
    (folder / victim).write_bytes(make(pwned))
    with pytest.raises(DataError) as err:
        D.load_dataset("cifar10", data_dir=isolated / "data")
    _assert_refused(err, refused, f"cifar-10-batches-py/{victim}")
    assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)
    assert not pwned.exists()


@pytest.mark.parametrize("payload", ["os.system", "subprocess.call", "builtins.eval", "builtins.exec-proto2"])
def test_malicious_pickle_in_tarball_never_runs(isolated, payload):
    make, refused = PAYLOADS[payload]
    pwned = isolated / "pwned"
    src = isolated / "src" / "cifar-10-batches-py"
    _write_batches(src, "py", make=lambda x, y: _py3_batch(x, y, 2))
    (src / "data_batch_3").write_bytes(make(pwned))
    dl = isolated / "downloads"
    dl.mkdir()
    _tarball(dl / "cifar-10-python.tar.gz", src, "cifar-10-batches-py")
    with pytest.raises(DataError) as err:
        D.load_dataset("cifar10", data_dir=dl)
    _assert_refused(err, refused, "cifar-10-python.tar.gz/data_batch_3")
    assert not pwned.exists()
    with pytest.raises(DataError):  # the direct entry point too
        D.load_cifar10_dir(dl / "cifar-10-python.tar.gz")
    assert not pwned.exists()


def test_malformed_python_batches(isolated):
    folder = isolated / "data" / "cifar-10-batches-py"
    truth = _write_batches(folder, "py", make=lambda x, y: _py3_batch(x, y, 2))
    good = (folder / "data_batch_2").read_bytes()
    cases = {
        "truncated": (good[: len(good) // 2], "truncated or corrupted"),
        "not a dict": (pickle.dumps([1, 2, 3], protocol=2), "a pickled list, not a dict"),
        "no labels": (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}, protocol=2), "no 'data' / 'labels'"),
        "bad label": (_py3_batch(truth[0][:3], np.array([1, 11, 2]), 2), r"label 11 at index 1"),
        "label count": (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, protocol=2),
                        "2 images but 1 labels"),
        "bad data": (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}, protocol=2),
                     "3072-byte images"),
        "object array": (pickle.dumps({b"data": np.array([1, "a"], dtype=object), b"labels": [1]}, protocol=2),
                         "Python objects"),
    }
    for case, (raw, pattern) in cases.items():
        (folder / "data_batch_2").write_bytes(raw)
        D._load_cifar_cached.cache_clear()
        with pytest.raises(DataError, match=pattern) as err:
            D.load_dataset("cifar10", data_dir=isolated / "data")
        assert "data_batch_2" in str(err.value), case


def test_tarball_members_are_never_extracted(isolated, monkeypatch):
    """Members named ../x or /abs/x are read in memory only; links are ignored."""
    src = isolated / "src"
    truth = _write_batches(src, "bin")
    dl = isolated / "dl"
    dl.mkdir()
    with tarfile.open(dl / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for k, name in enumerate(BATCHES):
            arc = ("../escaped/" if k % 2 else str(isolated / "abs") + "/") + f"{name}.bin"
            tar.add(src / f"{name}.bin", arcname=arc)
    monkeypatch.chdir(dl)
    _check_cifar(D.load_dataset("cifar10", data_dir=dl), *truth)
    assert not (isolated / "escaped").exists() and not (isolated / "abs").exists()
    assert sorted(p.name for p in dl.iterdir()) == ["cifar-10-binary.tar.gz"]
    # a symlink member standing in for a batch is not read
    with tarfile.open(dl / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for name in BATCHES:
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}.bin")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    D._load_cifar_cached.cache_clear()
    with pytest.raises(D.DatasetNotFoundError):
        D.load_cifar10_dir(dl / "cifar-10-binary.tar.gz")


def test_corrupted_cifar_files(isolated):
    src = isolated / "src" / "cifar-10-batches-bin"
    _write_batches(src, "bin")
    dl = isolated / "dl"
    dl.mkdir()
    _tarball(dl / "cifar-10-binary.tar.gz", src, "cifar-10-batches-bin")
    raw = (dl / "cifar-10-binary.tar.gz").read_bytes()
    (dl / "cifar-10-binary.tar.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cifar-10-binary\.tar\.gz: truncated or corrupted tarball.*re-download"):
        D.load_dataset("cifar10", data_dir=dl)
    (dl / "cifar-10-binary.tar.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError, match="truncated or corrupted tarball"):
        D.load_dataset("cifar10", data_dir=dl)
    # a binary batch cut mid-record, and a label byte outside 0..9
    (src / "data_batch_4.bin").write_bytes((src / "data_batch_4.bin").read_bytes()[:-10])
    with pytest.raises(DataError, match=r"data_batch_4\.bin: .*3073-byte CIFAR-10 records.*re-download"):
        D.load_dataset("cifar10", data_dir=src.parent)
    x, _ = _cifar_batch(3, 0)
    (src / "data_batch_4.bin").write_bytes(_cifar_record_bytes(x, np.array([3, 200, 1])))
    D._load_cifar_cached.cache_clear()
    with pytest.raises(DataError, match=r"data_batch_4\.bin.*label 200 at index 1 .*10 classes 0\.\.9"):
        D.load_dataset("cifar10", data_dir=src.parent)


# --------------------------------------------------------------------------- IDX, mnist5k, cache
def test_truncated_and_corrupted_idx_files(isolated):
    d = isolated / "data" / "mnist"
    _write_idx_dir(d, gz=True)
    f = d / "train-images-idx3-ubyte.gz"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated or corrupted gzip.*re-download"):
        D.load_dataset("mnist", data_dir=isolated / "data")
    f.write_bytes(b"\x1f\x8b" + b"\x00" * 30)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated or corrupted gzip"):
        D.read_idx(f)
    f.write_bytes(gzip.compress(struct.pack(">BBBB", 0, 0, 8, 3) + b"\x00\x00\x00\x05"))
    with pytest.raises(DataError, match=r"truncated IDX file \(8 bytes, the header alone needs 16\)"):
        D.read_idx(f)


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("gz", [True, False])
def test_a_header_declaring_more_than_the_cap_is_refused_before_reading(isolated, gz):
    """The issue's bomb, scaled: 1.9 M images declared (1.49 GB) over a payload of a few bytes,
    refused from the header alone (no allocation, no decompression), naming file, size and cap."""
    d = isolated / "data" / "mnist"
    _write_idx_dir(d, gz=gz)
    f = next(d.glob("train-images*"))
    raw = struct.pack(">BBBBIII", 0, 0, 8, 3, 1_900_000, 28, 28) + b"\x00" * 64
    f.write_bytes(gzip.compress(raw) if gz else raw)
    before = _snapshot(isolated)
    with pytest.raises(DataError) as err:
        D.load_dataset("mnist", data_dir=isolated / "data")
    msg = str(err.value)
    assert msg.startswith(str(f)) and "(1900000, 28, 28) (1,489,600,000 bytes unpacked)" in msg, msg
    assert f"more than the {D.MAX_FILE_BYTES:,} bytes" in msg and "ECL_JAX_MAX_DATA_BYTES=1489600000" in msg
    assert _snapshot(isolated) == before


def test_a_gzip_that_inflates_past_its_header_or_short_of_it_is_refused(isolated):
    f = isolated / "x-idx1-ubyte.gz"
    header = struct.pack(">BBBBI", 0, 0, 8, 1, 1000)
    f.write_bytes(gzip.compress(header + b"\x00" * 50_000_000))  # 50 MB of zeros where 1,000 bytes are declared
    with pytest.raises(DataError, match=r"x-idx1-ubyte\.gz: IDX header says \(1000,\) \(1000 bytes\) but 1000 and more "
                                        r"data bytes follow"):
        D.read_idx(f)
    f.write_bytes(gzip.compress(header + b"\x07" * 999))
    with pytest.raises(DataError, match=r"says \(1000,\) \(1000 bytes\) but 999 data bytes follow"):
        D.read_idx(f)


def test_the_cap_can_be_raised_or_lowered_and_a_bad_cap_is_named(isolated, monkeypatch):
    d = isolated / "data" / "mnist"
    _write_idx_dir(d, gz=True)
    f = next(d.glob("train-images*"))
    monkeypatch.setenv("ECL_JAX_MAX_DATA_BYTES", "1000")  # below the 12 x 28 x 28 = 9,408 bytes declared
    with pytest.raises(DataError, match=r"9,408 bytes unpacked\), more than the 1,000 bytes"):
        D.read_idx(f)
    monkeypatch.setenv("ECL_JAX_MAX_DATA_BYTES", "9408")
    assert D.read_idx(f).shape == (12, 28, 28)
    monkeypatch.setenv("ECL_JAX_MAX_DATA_BYTES", "1e9")
    with pytest.raises(DataError, match=r"ECL_JAX_MAX_DATA_BYTES='1e9' must be a positive whole number of bytes"):
        D.read_idx(f)


def test_reading_a_gzip_idx_peaks_at_about_the_data_itself(isolated):
    """Chunked decompression into the result: Python-side peak within 1.5x the 24 MB loaded
    (gzip.decompress of the whole file and a copy peaked at about 3x)."""
    import tracemalloc

    n = 24_000_000
    f = isolated / "big-idx1-ubyte.gz"
    f.write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, n) + bytes(range(256)) * (n // 256), 1))
    tracemalloc.start()
    try:
        x = D.read_idx(f)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert x.shape == (n,) and x[257] == 1
    assert peak < 1.5 * n, peak


def _write_labels(path: Path, y: np.ndarray, code: int):
    path.write_bytes(struct.pack(">BBBB", 0, 0, code, 1) + struct.pack(">I", len(y)) + y.tobytes())


def test_idx_labels_outside_the_declared_classes(isolated):
    d = isolated / "data" / "mnist"
    arrays = _write_idx_dir(d, gz=False)
    y = arrays["train"][1].copy()
    y[7] = 200
    _write_labels(d / "train-labels-idx1-ubyte", y, 0x08)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: label 200 at index 7 is outside .*0\.\.9"):
        D.load_dataset("mnist", data_dir=isolated / "data")
    # a generic IDX set infers its classes, unless told how many there are
    assert D.load_idx_dir(d, name="tiny").num_classes == 201
    with pytest.raises(DataError, match=r"label 200 at index 7"):
        D.load_idx_dir(d, name="tiny2", num_classes=10)
    # negative (int8) and non-integer (float32) labels
    _write_labels(d / "train-labels-idx1-ubyte", np.array([1, -3] + [0] * 10, np.int8), 0x09)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: label -3 at index 1 is negative"):
        D.load_idx_dir(d, name="tiny3")
    _write_labels(d / "train-labels-idx1-ubyte", np.array([1, 2, 2.5] + [0] * 9, ">f4"), 0x0D)
    with pytest.raises(DataError, match=r"label 2\.5 at index 2 is not an integer class id"):
        D.load_idx_dir(d, name="tiny4")


def test_dataset_and_partition_refuse_bad_labels():
    x = np.zeros((3, 2, 2, 1), np.float32)
    with pytest.raises(DataError, match=r"Dataset 'toy' train labels: label 10 at index 2 .*0\.\.9"):
        D.Dataset("toy", x, np.array([1, 2, 10], np.int32), x, np.array([0, 1, 2], np.int32), 10, "test")
    with pytest.raises(DataError, match=r"test labels: label -1 at index 0 is negative"):
        D.Dataset("toy", x, np.array([1, 2, 3], np.int32), x, np.array([-1, 1, 2], np.int32), 10, "test")
    with pytest.raises(DataError, match=r"num_classes=10: valid class ids are 0\.\.9"):
        P.count_table(np.array([1, 2, 12]), [np.array([0, 1, 2])], 10)
    with pytest.raises(DataError, match=r"found -2 at index 1"):
        P.iid(np.array([1, -2, 3]), 2)
    with pytest.raises(DataError, match=r"label 1\.5 at index 2"):
        P.iid(np.array([1.0, 2.0, 1.5]), 2)


def _cache(isolated, name="tfds-mnist-0123456789.npz"):
    (isolated / "cache").mkdir(exist_ok=True)
    return isolated / "cache" / name


def _save_cache(path, y_train, num_classes=10, **extra):
    x = np.zeros((len(y_train), 28, 28, 1), np.uint8)
    arrays = {"x_train": x, "y_train": np.asarray(y_train), "x_test": x[:2], "y_test": np.array([0, 1]),
              "num_classes": np.int64(num_classes), "source": np.str_("tfds:mnist@somewhere")}
    arrays.update(extra)
    np.savez(path, **arrays)


def test_corrupted_cache_files(isolated):
    path = _cache(isolated)
    _save_cache(path, [0, 1, 2])
    assert D.load_dataset("mnist").num_classes == 10  # a good cache loads
    raw = path.read_bytes()
    for bad in (raw[: len(raw) // 2], b"garbage" * 20, pickle.dumps({"x_train": 1})):
        path.write_bytes(bad)
        with pytest.raises(DataError, match=r"tfds-mnist-0123456789\.npz: unreadable data set cache file.*Delete it"):
            D.load_dataset("mnist")
    _save_cache(path, [0, 1, 2], x_train=np.array([object()] * 3, dtype=object))  # needs pickle to read
    with pytest.raises(DataError, match=r"unreadable data set cache file \(ValueError.*pickle"):
        D.load_dataset("mnist")
    _save_cache(path, [0, 1, 200], num_classes=201)
    with pytest.raises(DataError, match=r"says 201 classes but mnist has 10.*Delete it"):
        D.load_dataset("mnist")
    _save_cache(path, [0, 1, 200])
    with pytest.raises(DataError, match=r"npz \(y_train\): label 200 at index 2 is outside the data set's 10 classes"):
        D.load_dataset("mnist")


def test_loaders_keep_allow_pickle_false():
    import inspect

    code = inspect.getsource(D).replace(D.__doc__, "")
    assert "allow_pickle=True" not in code and "pickle.load(" not in code and "pickle.loads(" not in code
    calls = [line for line in code.splitlines() if "np.load(" in line and "``" not in line]
    assert calls and all("allow_pickle=False" in line for line in calls)
    assert "extractall" not in code and ".extract(" not in code
    assert "Safe to receive from others" in D.__doc__ and "never loaded: pickled objects other" in D.__doc__.lower()


def test_error_classes():
    assert issubclass(D.DatasetNotFoundError, UserError) and issubclass(D.DatasetNotFoundError, FileNotFoundError)
    assert issubclass(tp.TopologyError, UserError) and issubclass(tp.TopologyError, ValueError)
    err = D.DatasetNotFoundError("data set 'x' not found", ["here"])
    assert str(err) == "data set 'x' not found" and err.searched == ["here"]


# --------------------------------------------------------------------------- NodeData
def _nd(counts=(6, 6, 6, 6), n=4, m=6):
    return eng.NodeData(np.ones((n, m, 2), np.float32), np.zeros((n, m), np.float32), np.asarray(counts, np.int32))


@pytest.mark.parametrize("make,pattern", [
    (lambda: _nd((6, 0, 6, 6)), r"NodeData\.count\[1\] = 0: node 1 must have 1\.\.6 valid rows"),
    (lambda: _nd((6, 6, 9, 6)), r"NodeData\.count\[2\] = 9: node 2 must have 1\.\.6 valid rows"),
    (lambda: _nd((-1, 6, 6, 6)), r"NodeData\.count\[0\] = -1"),
    (lambda: _nd()._replace(count=np.full(4, 6.0)), r"count must hold integers.*float64"),
    (lambda: _nd()._replace(count=np.full(3, 6, np.int32)), r"x has N=4, y has N=4, count has N=3"),
    (lambda: _nd()._replace(y=np.zeros((4, 5))), r"x has M=6 rows per node but y has 5"),
    (lambda: _nd()._replace(count=np.int32(6)), r"count must be node-stacked \[N\], got shape \(\)"),
    (lambda: _nd()._replace(x=np.zeros(4)), r"x must be node-stacked \[N, M, \.\.\.\], got shape \(4,\)"),
])
def test_node_data_validate(make, pattern):
    with pytest.raises(DataError, match=pattern):
        make().validate()
    d = make()
    with pytest.raises(DataError, match=pattern):
        eng.NodeData.checked(*d)


def _loss(w, x, y, rng):
    return 0.5 * (x @ w - y) ** 2


def test_engine_run_and_node_data_entry_points_check_counts():
    engine = eng.Engine(local_sgd(0.1), tp.ring(4), _loss, eval_every=2)
    with pytest.raises(DataError, match=r"NodeData\.count\[3\] = 7: node 3 must have 1\.\.6"):
        engine.run(np.zeros((4, 2), np.float32), _nd((6, 6, 6, 7)), 2, jax.random.PRNGKey(0))
    with pytest.raises(DataError, match=r"NodeData\.count\[1\] = 0"):
        engine.run(np.zeros((4, 2), np.float32), _nd((6, 0, 6, 6)), 2, jax.random.PRNGKey(0))
    carry, _ = engine.run(np.zeros((4, 2), np.float32), _nd((6, 1, 3, 6)), 2, jax.random.PRNGKey(0))
    assert int(carry.step) == 2
    x, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 3
    data = P.node_data(x, y, [np.array([0, 1, 2]), np.array([3]), np.array([4, 5])])
    assert data.count.tolist() == [3, 1, 2] and data.x.shape == (3, 3, 2)
    with pytest.raises(ValueError, match=r"parts\[1\] must be a 1-D array of row indices in 0\.\.9"):
        P.node_data(x, y, [np.array([0, 1]), np.array([3, 10])])
    with pytest.raises(ValueError, match=r"node 1 has no data"):
        P.node_data(x, y, [np.array([0, 1]), np.array([], np.int64)])


def test_node_data_still_a_plain_pytree():
    d = _nd((6, 2, 3, 1))
    # tree_map / unflatten with arbitrary leaves never validates
    odd = jax.tree_util.tree_map(lambda a: object(), d)
    assert type(odd) is eng.NodeData
    zeros = jax.tree_util.tree_map(np.zeros_like, d)  # count 0 everywhere: built, not checked
    assert zeros.count.tolist() == [0, 0, 0, 0]
    _, treedef = jax.tree_util.tree_flatten(d)
    assert jax.tree_util.tree_unflatten(treedef, [None, None, None]).x is None
    shapes = jax.eval_shape(lambda t: t, d)
    assert isinstance(shapes.count, jax.ShapeDtypeStruct)
    shapes.validate()  # shapes checked, values skipped
    with pytest.raises(DataError, match="count has N=3"):
        shapes._replace(count=jax.ShapeDtypeStruct((3,), jnp.int32)).validate()
    # inside jit / vmap / grad the leaves are tracers: validate is a no-op
    assert jax.jit(lambda t: t.validate().count.sum())(d) == 12
    assert jax.vmap(lambda t: t.validate().count)(d).tolist() == [6, 2, 3, 1]
    assert jax.jit(lambda t: eng.NodeData(t.x, t.y, t.count - 99).validate().count)(d).tolist() == [-93, -97, -96, -98]
    # concrete jax arrays are checked like NumPy ones
    jd = eng.NodeData(*(jnp.asarray(a) for a in d)).validate()
    with pytest.raises(DataError, match=r"count\[0\] = 0"):
        jd._replace(count=jnp.zeros(4, jnp.int32)).validate()


# --------------------------------------------------------------------------- topology size
@pytest.mark.parametrize("build,numbers", [
    (lambda: tp.ring(10**8), ["N=100,000,000", "200,000,000 directed edges", "MAX_NODES=10,000,000"]),
    (lambda: tp.complete(10**6), ["N=1,000,000", "999,999,000,000 directed edges", "GiB"]),
    (lambda: tp.complete(10**5), ["9,999,900,000 directed edges", "MAX_DIRECTED_EDGES=100,000,000"]),
    (lambda: tp.erdos_renyi(10**5, 0.001), ["4,999,950,000 candidate pairs"]),
    (lambda: tp.torus(10**4, 10**4), ["N=100,000,000", "400,000,000 directed edges"]),
    (lambda: tp.star(10**8), ["N=100,000,000"]),
    (lambda: tp.multiplex_ring(10**8, 2), ["400,000,000 directed edges"]),
    (lambda: tp.exponential(10**7), ["480,000,000 directed edges"]),
    (lambda: tp.random_regular(10**7, 20), ["200,000,000 directed edges"]),
    (lambda: tp.from_edges(10**8, [(0, 1)]), ["N=100,000,000"]),
])
def test_huge_topologies_refused_before_allocating(build, numbers):
    with pytest.raises(tp.TopologyError) as err:
        build()
    msg = str(err.value)
    for s in numbers + ["ecl_jax.topology.MAX_NODES = ...", "bytes"]:
        assert s in msg, msg


def test_topology_limits_are_read_at_call_time(monkeypatch):
    monkeypatch.setattr(tp, "MAX_DIRECTED_EDGES", 12)
    assert tp.ring(6).n_directed == 12
    with pytest.raises(tp.TopologyError, match=r"ring\(7\): N=7 nodes and about 14 directed edges"):
        tp.ring(7)
    with pytest.raises(tp.TopologyError, match=r"from_adjacency\('adjacency'\)"):
        tp.from_adjacency(np.ones((5, 5)) - np.eye(5))
    monkeypatch.setattr(tp, "MAX_NODES", 5)
    with pytest.raises(tp.TopologyError, match="MAX_NODES=5"):
        tp.star(6)
    assert tp.estimate_size(10, 20) == 24 * 20 + 8 * 10


# --------------------------------------------------------------------------- IDX values
@pytest.mark.parametrize("value, needle", [(2.0, r"float images must lie in \[0, 1\], got \[0\.0, 2\.0\]"),
                                           (np.nan, "images hold NaN or inf")])
@pytest.mark.parametrize("split", ["train", "t10k"])
def test_bad_float_images_are_blamed_on_the_images_file(isolated, value, needle, split):
    """A float32 IDX images file (type 0x0D) out of [0, 1] or non-finite: the error names
    that images file, not the labels file beside it (as it once did)."""
    d = isolated / "idx"
    _write_idx_dir(d)
    x = np.zeros((12 if split == "train" else 5, 28, 28), np.float32)
    x[0, 0, 0] = value
    raw = struct.pack(">BBBB", 0, 0, 0x0D, 3) + struct.pack(">3I", *x.shape) + x.astype(">f4").tobytes()
    (d / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(DataError, match=rf"{split}-images-idx3-ubyte\.gz: {needle}") as err:
        D.load_idx_dir(d)
    assert "labels" not in str(err.value)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_a_tarball_that_unpacks_past_the_cap_is_refused_as_it_is_walked(isolated, monkeypatch):
    """A small .tar.gz whose first member unpacks to more than the cap (lowered here to
    1 MB; the same holds for 1 GiB) is refused at that member's header, before its bytes
    or any later member are unpacked; under the cap the same archive loads."""
    src = isolated / "src"
    truth = _write_batches(src, "bin")
    dl = isolated / "dl"
    dl.mkdir()
    zeros = isolated / "zeros.bin"
    zeros.write_bytes(b"\0" * (3 << 20))
    with tarfile.open(dl / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.add(zeros, arcname="cifar-10-batches-bin/padding.bin")
        for name in BATCHES:
            tar.add(src / f"{name}.bin", arcname=f"cifar-10-batches-bin/{name}.bin")
    assert (dl / "cifar-10-binary.tar.gz").stat().st_size < 100_000
    monkeypatch.setenv("ECL_JAX_MAX_DATA_BYTES", str(1 << 20))
    reads = []
    real_extract = tarfile.TarFile.extractfile
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda self, m: reads.append(m.name) or real_extract(self, m))
    with pytest.raises(DataError, match=r"cifar-10-binary\.tar\.gz: member 'cifar-10-batches-bin/padding\.bin' ends "
                                        r"([\d,]+) bytes into the unpacked archive, past the 1,048,576 bytes.*"
                                        r"ECL_JAX_MAX_DATA_BYTES=(\d+)") as err:
        D.load_cifar10_dir(dl / "cifar-10-binary.tar.gz")
    import re

    said, limit = re.search(r"ends ([\d,]+) bytes.*=(\d+)\)", str(err.value)).groups()
    assert int(said.replace(",", "")) == int(limit) and (3 << 20) < int(limit) < (3 << 20) + 4096  # data + headers
    assert reads == []
    monkeypatch.setenv("ECL_JAX_MAX_DATA_BYTES", str(8 << 20))
    D._load_cifar_cached.cache_clear()
    _check_cifar(D.load_cifar10_dir(dl / "cifar-10-binary.tar.gz"), *truth)
    assert len(reads) == len(BATCHES)  # each batch read once, as the walk passed it
