"""Data by name (`pde_zoo.sources`): every source form offline, round-trips, and one clear error per bad input."""

import gzip
import hashlib
import time

import numpy as np
import pytest
from PIL import Image

from pde_zoo import data
from pde_zoo.cache import cache_dir
from pde_zoo.data import DataNotFoundError
from pde_zoo.sources import load_source

MNIST_CARD_SHA256 = "62545024ea21d2616ea5a64b4d7c78e3de1bd9f7067e9dcdd70946339324f4dd"


def write_npz(path, rng, shape=(28, 28), n=(12, 5), classes=3, **overrides):
    """An npz of random uint8 images and int labels (every class in train); returns the arrays written."""
    arrays = {
        "x_train": rng.integers(0, 256, (n[0], *shape), dtype=np.uint8),
        "y_train": (np.arange(n[0]) % classes).astype(np.int16),
        "x_test": rng.integers(0, 256, (n[1], *shape), dtype=np.uint8),
        "y_test": (np.arange(n[1]) % classes).astype(np.uint8),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def write_folder(root, images_by_split, suffix=".png"):
    """root/<split>/<class>/<i>.png from {split: [(class name, uint8 array), ...]}."""
    for split, items in images_by_split.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for i, (name, array) in enumerate(items):
            (root / split / name).mkdir(exist_ok=True)
            Image.fromarray(array).save(root / split / name / f"{i:03d}{suffix}")


def write_idx(path, array, gz=False):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    (gzip.open if gz else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


def test_mnist_default_is_todays_path():
    idx_dir = data.find_idx_dir(download=False)
    if idx_dir is None:
        pytest.skip("MNIST is not prepared on this machine (run `pde-zoo data`)")
    source = load_source()
    images, labels, digest = data.load_arrays("train")
    assert source.name == "mnist" and source.sha256 == digest and source.num_classes == 10
    if idx_dir == cache_dir() / "mnist":  # the sha256-verified MNIST: the digest the pretrained cards record
        assert source.sha256 == MNIST_CARD_SHA256
    assert source.input_shape == (28, 28, 1) and source.x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(source.x_train, images)
    np.testing.assert_array_equal(source.y_train, labels)


def test_idx_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("PDE_ZOO_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "idx"
    root.mkdir()
    for split, n, gz in [("train", 20, False), ("t10k", 8, True)]:
        labels = np.arange(n) % 4
        images = (labels[:, None, None] * 50 + np.arange(n)[:, None, None]) * np.ones((1, 6, 7))
        suffix = ".gz" if gz else ""
        write_idx(root / f"{split}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", labels, gz)
    data.load_arrays.cache_clear()
    try:
        source = load_source(str(root))
        again = load_source(f"idx:{root}")
    finally:
        data.load_arrays.cache_clear()
    assert source.name == again.name == f"idx:{root.resolve()}" and source.sha256 == again.sha256 == data.source_fingerprint(root)
    assert source.input_shape == (6, 7, 1) and source.num_classes == 4 and source.y_train.dtype == np.int64
    # TFDS may reorder examples; each (image, label) pair must survive.
    np.testing.assert_array_equal(source.x_train[:, 3, 3, 0] // 50, source.y_train)
    np.testing.assert_array_equal(sorted(source.x_test[:, 0, 0, 0]), [0, 4, 51, 55, 102, 106, 153, 157])


def test_npz_grayscale_round_trip(tmp_path, rng, monkeypatch):
    arrays = write_npz(tmp_path / "digits.npz", rng)
    monkeypatch.chdir(tmp_path)
    source = load_source("digits.npz")
    assert source.name == f"npz:{tmp_path.resolve() / 'digits.npz'}" and load_source(source.name).sha256 == source.sha256
    assert source.sha256 == hashlib.sha256((tmp_path / "digits.npz").read_bytes()).hexdigest()
    assert source.input_shape == (28, 28, 1) and source.num_classes == 3
    np.testing.assert_array_equal(source.x_train[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(source.x_test[..., 0], arrays["x_test"])
    assert source.y_train.dtype == source.y_test.dtype == np.int64
    np.testing.assert_array_equal(source.y_test, arrays["y_test"])


def test_npz_cifar100_like(tmp_path, rng):
    y_train = rng.permutation(np.arange(300) % 100)
    arrays = write_npz(tmp_path / "c100.npz", rng, shape=(32, 32, 3), n=(300, 50), y_train=y_train, y_test=rng.integers(0, 100, (50, 1)))
    source = load_source(str(tmp_path / "c100.npz"))
    assert source.input_shape == (32, 32, 3) and source.num_classes == 100
    np.testing.assert_array_equal(source.x_train, arrays["x_train"])
    np.testing.assert_array_equal(source.y_train, y_train)
    np.testing.assert_array_equal(source.y_test, arrays["y_test"][:, 0])


@pytest.mark.parametrize("color", [False, True])
def test_image_folder(tmp_path, rng, color):
    shape = (9, 11, 3) if color else (9, 11)
    pics = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(7)]
    # class names sort as ant < bee < cat, whatever order they are written in
    write_folder(tmp_path / "pets", {"train": [("cat", pics[0]), ("ant", pics[1]), ("cat", pics[2]), ("bee", pics[3])], "test": [("bee", pics[4]), ("ant", pics[5]), ("cat", pics[6])]})
    (tmp_path / "pets" / "train" / "ant" / "notes.txt").write_text("not an image")
    source = load_source(str(tmp_path / "pets"))
    assert source.name == f"folder:{(tmp_path / 'pets').resolve()}" and source.num_classes == 3
    assert source.input_shape == (9, 11, 3 if color else 1)
    expected = np.stack([pics[1], pics[3], pics[0], pics[2]])
    np.testing.assert_array_equal(source.x_train, expected if color else expected[..., None])
    np.testing.assert_array_equal(source.y_train, [0, 1, 2, 2])
    np.testing.assert_array_equal(source.y_test, [0, 1, 2])
    np.testing.assert_array_equal(source.x_test[:, :, :, 0], np.stack([pics[5], pics[4], pics[6]])[..., 0] if color else np.stack([pics[5], pics[4], pics[6]]))
    lines = sorted(f"{p.relative_to(tmp_path / 'pets').as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()}" for p in (tmp_path / "pets").rglob("*.png"))
    assert source.sha256 == hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert load_source(source.name).sha256 == source.sha256


def test_image_folder_modes(tmp_path, rng):
    """RGBA and palette images become RGB; grayscale beside colour is repeated over 3 channels; BMP reads."""
    rgb = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (5, 5), dtype=np.uint8)
    root = tmp_path / "mixed"
    write_folder(root, {"train": [("a", gray), ("b", rgb)], "test": [("a", gray)]}, suffix=".bmp")
    Image.fromarray(np.dstack([rgb, np.full((5, 5), 255, np.uint8)])).save(root / "train" / "b" / "rgba.png")
    (root / "test" / "b").mkdir()
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "test" / "b" / "palette.png")
    palette_rgb = np.asarray(Image.open(root / "test" / "b" / "palette.png").convert("RGB"))
    source = load_source(f"folder:{root}")
    assert source.input_shape == (5, 5, 3)
    np.testing.assert_array_equal(source.x_train, np.stack([np.repeat(gray[..., None], 3, -1), rgb, rgb]))
    np.testing.assert_array_equal(source.x_test, np.stack([np.repeat(gray[..., None], 3, -1), palette_rgb]))
    np.testing.assert_array_equal(source.y_train, [0, 1, 1])


def test_tfds_mock(tmp_path, rng):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = tfds.builder("cifar10", data_dir=str(tmp_path))
    (tmp_path / "cifar10" / str(builder.version)).mkdir(parents=True)
    builder.info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0, filename_template=None) for s, n in [("train", 6), ("test", 4)]]))
    builder.info.write_to_directory(builder.data_dir)
    known = {
        "train": (rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), np.array([0, 1, 2, 3, 4, 5])),
        "test": (rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), np.array([9, 0, 1, 2])),
    }

    def as_dataset(self, split, **kwargs):
        images, labels = known[str(split)]
        return tf.data.Dataset.from_tensor_slices({"id": np.array([b"x"] * len(labels)), "image": images, "label": labels})

    with tfds.testing.mock_data(data_dir=str(tmp_path), as_dataset_fn=as_dataset):
        source = load_source("cifar10")
        prefixed = load_source("tfds:cifar10")
    assert source.name == prefixed.name == "tfds:cifar10" and source.sha256 == prefixed.sha256
    assert source.num_classes == 10 and source.input_shape == (32, 32, 3)
    np.testing.assert_array_equal(source.x_train, known["train"][0])
    np.testing.assert_array_equal(source.y_test, known["test"][1])
    digest = hashlib.sha256(b"".join(known[s][0].tobytes() + known[s][1].astype(np.int64).tobytes() for s in ("train", "test")))
    assert source.sha256 == digest.hexdigest()


def test_tfds_not_prepared_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(DataNotFoundError, match=r"TFDS dataset 'cifar10' is not prepared in .*tfds.load\('cifar10'\).*TFDS_DATA_DIR"):
        load_source("tfds:cifar10")
    assert time.monotonic() - start < 10
    with pytest.raises(DataNotFoundError, match=r"'no_such_dataset' is neither an existing file or directory nor a TFDS dataset"):
        load_source("no_such_dataset")


def bad_npz(tmp_path, rng, **overrides):
    write_npz(tmp_path / "bad.npz", rng, **overrides)
    return str(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"y_test": None}, r"bad.npz lacks y_test: it has x_test, x_train, y_train; needed: x_train, y_train, x_test, y_test"),
        ({"y_train": np.zeros(11, np.int64)}, r"bad.npz: the train split has 12 images but 11 labels"),
        ({"x_test": np.zeros((5, 28), np.uint8)}, r"bad.npz: test images must be 3-D \(N, H, W\) or 4-D \(N, H, W, C\). Received: shape \(5, 28\)"),
        ({"x_train": np.zeros((12, 28, 28), np.float32)}, r"bad.npz: train images have dtype float32; store uint8 pixels 0-255 \(e.g. np.round\(x \* 255\)"),
        ({"x_test": np.zeros((5, 28, 27), np.uint8)}, r"train images are \(28, 28, 1\) but test images are \(28, 27, 1\)"),
        ({"y_train": np.full(12, -1)}, r"bad.npz: train labels must be >= 0. Received: a label -1"),
        ({"y_test": np.array([0, 1, 2, 3, 0])}, r"bad.npz: test label 3 >= num_classes 3 \(max train label \+ 1\)"),
        ({"x_test": np.zeros((0, 28, 28), np.uint8), "y_test": np.zeros(0, np.int64)}, r"bad.npz: the test split is empty"),
        ({"y_train": np.zeros(12, np.float32)}, r"bad.npz: train labels must be a 1-D integer array. Received: dtype float32"),
    ],
)
def test_bad_npz(tmp_path, rng, overrides, match):
    with pytest.raises(ValueError, match=match):
        load_source(bad_npz(tmp_path, rng, **overrides))


def test_not_an_npz(tmp_path, rng):
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match=r"text.npz is not a readable .npz archive"):
        load_source(str(tmp_path / "text.npz"))
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"one.npy holds a single array, not a .npz archive"):
        load_source(str(tmp_path / "one.npy"))


@pytest.mark.parametrize("name", ["missing.npz", "no/such/dir", "npz:/no/such/file.npz", "folder:/no/such/dir"])
def test_path_not_found(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError, match=r"Data source '.*': .* does not exist"):
        load_source(name)


def test_data_dir_only_with_mnist(tmp_path, rng):
    with pytest.raises(ValueError, match=r"data_dir applies only to source='mnist'"):
        load_source(bad_npz(tmp_path, rng), data_dir=str(tmp_path))


def test_bad_folders(tmp_path, rng):
    pic = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataNotFoundError, match=r"plain is neither an image folder \(it has no train/ and test/ sub-directories\) nor an IDX directory"):
        load_source(str(tmp_path / "plain"))
    write_folder(tmp_path / "half", {"train": [("a", pic)]})
    with pytest.raises(DataNotFoundError, match=r"half is not an image folder: it lacks test/"):
        load_source(str(tmp_path / "half"))
    write_folder(tmp_path / "classes", {"train": [("a", pic), ("b", pic)], "test": [("a", pic), ("c", pic)]})
    with pytest.raises(ValueError, match=r"classes: train/ and test/ must hold the same class folders. Received: train \['a', 'b'\], test \['a', 'c'\]"):
        load_source(str(tmp_path / "classes"))
    write_folder(tmp_path / "empty", {"train": [("a", pic)], "test": []})
    (tmp_path / "empty" / "test" / "a").mkdir()
    with pytest.raises(ValueError, match=r"empty: the test split is empty"):
        load_source(str(tmp_path / "empty"))
    write_folder(tmp_path / "broken", {"train": [("a", pic)], "test": [("a", pic)]})
    (tmp_path / "broken" / "test" / "a" / "zz.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"Cannot read image .*broken/test/a/zz.png"):
        load_source(str(tmp_path / "broken"))
    write_folder(tmp_path / "sizes", {"train": [("a", pic), ("a", np.zeros((4, 5), np.uint8))], "test": [("a", pic)]})
    with pytest.raises(ValueError, match=r"sizes/train/a/001.png is 4x5 \(HxW\) but .*sizes/train/a/000.png is 4x4; all images must share one size"):
        load_source(str(tmp_path / "sizes"))
