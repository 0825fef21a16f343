"""Data by name: MNIST, IDX directories, .npz files, image folders and TFDS datasets as arrays.

`load_source(source)` reads a whole dataset (train and test splits) into a `Source`. Forms of
`source`, with the canonical name a model card records (`Source.name`):

- ``"mnist"`` (the default, offline): `pde_zoo.data.load_arrays`, `data_dir` its --data-dir.
- a directory of IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, optionally ``.gz``): ``"idx:/abs/dir"``.
- a ``.npz`` file with arrays ``x_train, y_train, x_test, y_test``: uint8 images (N, H, W) or
  (N, H, W, C), labels of any integer dtype: ``"npz:/abs/file.npz"``.
- an image folder ``DIR/train/<class>/<image>`` and ``DIR/test/<class>/<image>`` (png, jpg, jpeg,
  bmp, gif; other files are skipped), read with Pillow: ``"folder:/abs/dir"``. Class folder names
  sorted alphabetically give labels 0, 1, ... (the `keras.utils.image_dataset_from_directory`
  convention); both splits need the same class folders; examples come in (class, file name)
  order. All images share one size. Grayscale images give C=1, colour ones (RGB, RGBA, palette)
  C=3; a folder that mixes both is read as RGB.
- ``"tfds:NAME"``, or a bare NAME that is not a path: the TFDS dataset NAME, prepared beforehand
  under ``$TFDS_DATA_DIR`` (default ~/tensorflow_datasets). It is never downloaded. A name with a
  "/" (``"tfds:cifar10/3.0.2"``) needs the prefix.

The canonical names are accepted as input too, so a card's source loads again. Images come out
uint8 NHWC, labels int64 in [0, num_classes). num_classes is 10 for "mnist", max train label + 1
for IDX and npz data, the class folder count for folders, and the TFDS label feature's class
count (else max train label + 1) for TFDS. `sha256` identifies the content: the digest
`load_arrays` gives for "mnist" and IDX, the file's sha256 for npz, sha256 over the sorted
"<relative path> <file sha256>" lines for folders, and sha256 over the image bytes and int64
label bytes of train then test for TFDS. Bad data raises one ValueError, and a missing file,
directory or dataset one `pde_zoo.data.DataNotFoundError`, naming the place and the problem.
"""

import dataclasses
import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from pde_zoo.data import DataNotFoundError, SPLIT_FILES, check_idx_dir, load_arrays, sha256_file

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
PREFIXES = ("idx", "npz", "folder", "tfds")
SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """A dataset in memory: uint8 NHWC images and int64 labels of both splits, and its identity."""

    name: str
    x_train: np.ndarray = dataclasses.field(repr=False)
    y_train: np.ndarray = dataclasses.field(repr=False)
    x_test: np.ndarray = dataclasses.field(repr=False)
    y_test: np.ndarray = dataclasses.field(repr=False)
    sha256: str
    num_classes: int

    @property
    def input_shape(self):
        """The shape of one image, (H, W, C)."""
        return tuple(int(n) for n in self.x_train.shape[1:])


def load_source(source=None, data_dir=None):
    """Load the dataset `source` names (see the module docstring for the forms).

    Args:
        source: "mnist" (default when None), a path, a "kind:path" name or a TFDS name.
        data_dir: directory of MNIST IDX files overriding the cache; only with "mnist".

    Returns:
        A `Source`.

    Raises:
        DataNotFoundError: the path, directory or TFDS dataset does not exist or is not prepared.
        ValueError: the data is malformed (the message names the file and the problem).
    """
    source = "mnist" if source is None else os.fspath(source)
    if data_dir is not None and source != "mnist":
        raise ValueError(f"data_dir applies only to source='mnist'. Received: source={source!r}, data_dir={data_dir!r}.")
    if source == "mnist":
        (x_train, y_train, digest), (x_test, y_test, _) = (load_arrays(split, data_dir) for split in SPLITS)
        return _make("mnist", "MNIST", (x_train, y_train, x_test, y_test), digest, num_classes=10)
    kind, sep, rest = source.partition(":")
    if not (sep and kind in PREFIXES):
        kind, rest = None, source
    looks_like_path = "/" in rest or os.sep in rest or rest.endswith(".npz")
    if kind == "tfds" or (kind is None and not looks_like_path and not os.path.exists(rest)):
        return _from_tfds(rest)
    path = Path(rest).expanduser().resolve()
    if not path.exists():
        raise DataNotFoundError(f"Data source {source!r}: {path} does not exist.")
    if kind == "npz" or (kind is None and path.is_file()):
        return _from_npz(path)
    if not path.is_dir():
        raise ValueError(f"Data source {source!r}: {path} is not a directory.")
    if kind == "idx" or (kind is None and not (path / "train").is_dir() and not (path / "test").is_dir()):
        try:
            check_idx_dir(path)
        except DataNotFoundError as err:
            if kind == "idx":
                raise
            idx_files = ", ".join(stem for pair in SPLIT_FILES.values() for stem in pair)
            raise DataNotFoundError(f"{path} is neither an image folder (it has no train/ and test/ sub-directories) nor an IDX directory (it lacks some of {idx_files}).") from err
        arrays = [load_arrays(split, str(path)) for split in SPLITS]
        return _make(f"idx:{path}", path, (*arrays[0][:2], *arrays[1][:2]), arrays[0][2])
    return _from_folder(path)


def _make(name, where, arrays, sha256, num_classes=None):
    """Validate (x_train, y_train, x_test, y_test) and build the `Source` (ValueError naming `where`)."""
    checked = []
    for split, x, y in ((SPLITS[0], *arrays[:2]), (SPLITS[1], *arrays[2:])):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim not in (3, 4):
            raise ValueError(f"{where}: {split} images must be 3-D (N, H, W) or 4-D (N, H, W, C). Received: shape {x.shape}.")
        if x.dtype != np.uint8:
            raise ValueError(f"{where}: {split} images have dtype {x.dtype}; store uint8 pixels 0-255 (e.g. np.round(x * 255).astype('uint8') for floats in [0, 1]).")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{where}: {split} labels must be a 1-D integer array. Received: dtype {y.dtype}, shape {y.shape}.")
        if len(x) == 0 or len(y) == 0:
            raise ValueError(f"{where}: the {split} split is empty ({len(x)} images, {len(y)} labels).")
        if len(x) != len(y):
            raise ValueError(f"{where}: the {split} split has {len(x)} images but {len(y)} labels.")
        if y.min() < 0:
            raise ValueError(f"{where}: {split} labels must be >= 0. Received: a label {y.min()}.")
        checked += [x if x.ndim == 4 else x[..., None], y.astype(np.int64)]
    x_train, y_train, x_test, y_test = checked
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{where}: train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}; both splits need one (H, W, C).")
    rule = "given by the source"
    if num_classes is None:
        num_classes, rule = int(y_train.max()) + 1, "max train label + 1"
    for split, y in (("train", y_train), ("test", y_test)):
        if y.max() >= num_classes:
            raise ValueError(f"{where}: {split} label {y.max()} >= num_classes {num_classes} ({rule}).")
    return Source(name, x_train, y_train, x_test, y_test, sha256, int(num_classes))


def _from_npz(path):
    """A `Source` from a .npz file of x_train, y_train, x_test, y_test (see the module docstring)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz archive: {err}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array, not a .npz archive of {', '.join(NPZ_KEYS)} (write one with np.savez).")
    with archive:
        missing = [key for key in NPZ_KEYS if key not in archive.files]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}: it has {', '.join(sorted(archive.files)) or 'no arrays'}; needed: {', '.join(NPZ_KEYS)}.")
        arrays = [archive[key] for key in NPZ_KEYS]
    return _make(f"npz:{path}", path, arrays, sha256_file(path))


def _from_folder(root):
    """A `Source` from an image folder root/{train,test}/<class>/<image> (see the module docstring)."""
    from PIL import Image

    missing = [f"{split}/" for split in SPLITS if not (root / split).is_dir()]
    if missing:
        raise DataNotFoundError(f"{root} is not an image folder: it lacks {' and '.join(missing)} (expected {root}/train/<class>/<image> and {root}/test/<class>/<image>).")
    classes = {split: sorted(d.name for d in (root / split).iterdir() if d.is_dir()) for split in SPLITS}
    if classes["train"] != classes["test"]:
        raise ValueError(f"{root}: train/ and test/ must hold the same class folders. Received: train {classes['train']}, test {classes['test']}.")
    images, labels, lines, first = {}, {}, [], None
    for split in SPLITS:
        images[split], labels[split] = [], []
        for label, name in enumerate(classes["train"]):
            for file in sorted(p for p in (root / split / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
                try:
                    with Image.open(file) as image:
                        gray = image.getbands()[0] in ("1", "L", "I", "F")
                        array = np.asarray(image.convert("L" if gray else "RGB"))
                except (OSError, ValueError) as err:
                    raise ValueError(f"Cannot read image {file}: {err}") from err
                if first is None:
                    first = (file, array.shape[:2])
                elif array.shape[:2] != first[1]:
                    raise ValueError(f"{file} is {array.shape[0]}x{array.shape[1]} (HxW) but {first[0]} is {first[1][0]}x{first[1][1]}; all images must share one size (resize them first).")
                images[split].append(array)
                labels[split].append(label)
                lines.append(f"{file.relative_to(root).as_posix()} {sha256_file(file)}")
        if not images[split]:
            raise ValueError(f"{root}: the {split} split is empty (no {'/'.join(IMAGE_EXTENSIONS)} files in {root / split}/<class>/).")
    color = any(a.ndim == 3 for split in SPLITS for a in images[split])
    stacked = {split: np.stack([np.repeat(a[..., None], 3, -1) if color and a.ndim == 2 else a for a in images[split]]) for split in SPLITS}
    digest = hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()
    arrays = (stacked["train"], np.array(labels["train"]), stacked["test"], np.array(labels["test"]))
    return _make(f"folder:{root}", root, arrays, digest, num_classes=len(classes["train"]))


def _from_tfds(name):
    """A `Source` from the prepared TFDS dataset `name` (train and test splits), never downloading."""
    import tensorflow_datasets as tfds

    data_dir = os.environ.get("TFDS_DATA_DIR") or None
    where = data_dir or "~/tensorflow_datasets"
    try:
        (train, test), info = tfds.load(name, split=list(SPLITS), as_supervised=True, batch_size=-1, download=False, data_dir=data_dir, with_info=True)
    except tfds.core.DatasetNotFoundError as err:
        raise DataNotFoundError(f"Data source {name!r} is neither an existing file or directory nor a TFDS dataset name (`tfds.list_builders()` lists them).") from err
    except AssertionError as err:  # tfds's "could not find data" when not prepared and download=False
        raise DataNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {where}, and pde_zoo never downloads it. On a machine with internet run "
            f"python -c \"import tensorflow_datasets as tfds; tfds.load('{name}')\", then copy ~/tensorflow_datasets/{name} "
            f"to {where} here, or set TFDS_DATA_DIR to the directory that holds it."
        ) from err
    (x_train, y_train), (x_test, y_test) = tfds.as_numpy(train), tfds.as_numpy(test)
    digest = hashlib.sha256()
    for x, y in ((x_train, y_train), (x_test, y_test)):
        digest.update(np.ascontiguousarray(x).tobytes() + np.asarray(y, np.int64).tobytes())
    try:
        num_classes = info.features["label"].num_classes
    except (KeyError, TypeError, AttributeError):
        num_classes = None
    return _make(f"tfds:{name}", f"TFDS dataset {name!r}", (x_train, y_train, x_test, y_test), digest.hexdigest(), num_classes)
