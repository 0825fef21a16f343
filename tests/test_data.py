"""The IDX -> TFDS data layer on synthetic directories, sha256 checks and image validation."""

import gzip

import numpy as np
import pytest

from pde_zoo import data


def write_idx(path, array, gz=False):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


@pytest.fixture
def synthetic_idx(tmp_path, monkeypatch):
    """A tiny MNIST-format directory: 12x12 images of 3 classes, image value = label * 40 + index."""
    monkeypatch.setenv("PDE_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PDE_ZOO_DATA", raising=False)
    root = tmp_path / "idx"
    root.mkdir()
    for split, n, gz in [("train", 30, False), ("t10k", 9, True)]:
        labels = np.arange(n) % 3
        images = (labels[:, None, None] * 40 + np.arange(n)[:, None, None]) * np.ones((1, 12, 12))
        suffix = ".gz" if gz else ""
        write_idx(root / f"{split}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", labels, gz)
    data.load_arrays.cache_clear()
    yield root
    data.load_arrays.cache_clear()


def test_idx_directory_through_tfds(synthetic_idx):
    images, labels, digest = data.load_arrays("train", str(synthetic_idx))
    assert images.shape == (30, 12, 12, 1) and images.dtype == np.uint8
    # TFDS may reorder examples; the (image, label) pairs must survive intact.
    np.testing.assert_array_equal(sorted(labels), sorted(np.arange(30) % 3))
    np.testing.assert_array_equal(images[:, 0, 0, 0] // 40, labels)
    test_images, test_labels, test_digest = data.load_arrays("test", str(synthetic_idx))
    assert test_images.shape == (9, 12, 12, 1) and digest == test_digest == data.source_fingerprint(synthetic_idx)
    batches = list(data.make_dataset(images, labels, batch_size=8, shuffle=True, seed=3))
    x, y = batches[0]
    assert x.dtype.name == "float32" and float(x.numpy().max()) <= 1.0 and len(batches) == 4
    again = next(iter(data.make_dataset(images, labels, batch_size=8, shuffle=True, seed=3)))[1]
    np.testing.assert_array_equal(y.numpy(), again.numpy())


def test_data_dir_from_environment(synthetic_idx, monkeypatch):
    monkeypatch.setenv("PDE_ZOO_DATA", str(synthetic_idx))
    assert data.find_idx_dir() == synthetic_idx


def test_missing_files_say_what_to_run(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(data.DataNotFoundError, match=r"lacks train-labels-idx1-ubyte.*pde-zoo data"):
        data.find_idx_dir(str(tmp_path))
    with pytest.raises(data.DataNotFoundError, match="does not exist"):
        data.find_idx_dir(str(tmp_path / "nope"))


def test_no_data_and_no_way_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PDE_ZOO_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("PDE_ZOO_DATA", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm
    monkeypatch.setattr("tensorflow_datasets.load", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    data.load_arrays.cache_clear()
    with pytest.raises(data.DataNotFoundError, match=r"TFDS could not download it.*pde-zoo data"):
        data.load_arrays("train")
    data.load_arrays.cache_clear()


def test_sha256_mismatch(synthetic_idx):
    # The synthetic files are not MNIST: verification must name the file and the fix.
    with pytest.raises(ValueError, match=r"sha256 mismatch for .*train-images-idx3-ubyte.*pde-zoo data"):
        data.verify_mnist(synthetic_idx)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "short")
    write_idx(tmp_path / "ok", np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "ok"), np.arange(6).reshape(2, 3))


def test_real_mnist_is_verified_and_canonical():
    """The cached MNIST (fetched by `pde-zoo data`) matches the canonical statistics."""
    directory = data.find_idx_dir(download=True)
    assert directory is not None, "run `pde-zoo data` first (scripts/test.sh does)"
    data.verify_mnist(directory)
    images, labels, _ = data.load_arrays("train")
    assert images.shape == (60000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(labels), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    pixels = images.astype(np.float64) / 255
    assert abs(pixels.mean() - 0.1307) < 1e-4 and abs(pixels.std() - 0.3081) < 1e-4


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((2, 28, 28), np.float32), r"shape \(N, 28, 28, 1\)"),
        (np.zeros((2, 28, 28, 1), np.uint8), r"float32.*uint8 pixels: use images.astype\('float32'\) / 255"),
        (np.zeros((2, 28, 28, 1), np.float64), r"float32.*float64"),
        (np.full((2, 28, 28, 1), 255.0, np.float32), r"\[0, 1\].*divide"),
    ],
)
def test_validate_images(images, message):
    with pytest.raises(ValueError, match=message):
        data.validate_images(images)
    data.validate_images(np.zeros((1, 28, 28, 1), np.float32))
