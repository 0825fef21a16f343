"""`pde_zoo.load(spec)`: a pretrained name ("pde2-50"), a `.keras` file, a run directory or a SavedModel."""

import re
import zipfile
import zlib
from pathlib import Path

import keras

from pde_zoo.cards import card_path, read_card
from pde_zoo.pretrained import list_pretrained
from pde_zoo.pretrained import resolve as _pretrained_path


def spec_name(spec):
    """The model name a spec stands for: a pretrained name as it is, a run directory's name, a
    .keras file's stem (its directory's name for a run's model.keras)."""
    path = Path(str(spec))
    if path.suffix == ".keras":
        return path.parent.name if path.stem == "model" else path.stem
    if path.is_dir():
        return path.resolve().name
    return str(spec)


def spec_card(spec):
    """The card (`pde_zoo.cards.read_card`) of a pretrained name, a run directory or a .keras
    file beside one; None when there is none."""
    path = Path(str(spec))
    if path.exists() and not card_path(path).is_file():
        return None
    if not path.exists() and str(spec) not in list_pretrained():
        return None
    return read_card(spec)


def load_with_card(model_or_spec, compile=False):
    """(model, name, card): a keras Model as it is (no card), or what `load` loads from a
    pretrained name, a .keras file or a run directory, with `spec_name` and `spec_card`."""
    if hasattr(model_or_spec, "get_layer"):
        return model_or_spec, model_or_spec.name, None
    return load(str(model_or_spec), compile=compile), spec_name(model_or_spec), spec_card(model_or_spec)


def load_keras_file(path, compile=True):
    """`keras.saving.load_model`, with a ValueError naming the cause: the file is missing, is not a
    complete .keras (zip) archive, or uses a custom class that is not registered."""
    import pde_zoo.layers  # noqa: F401  (registers the custom layers)
    import pde_zoo.optimizers  # noqa: F401  (registers the Adam a compiled model is saved with)

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} not found: pass the path of an existing .keras file.")
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()  # reads every member, checking its CRC
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as err:
        bad_member = f"{type(err).__name__}: {err}"
    if bad_member is not None:
        raise ValueError(f"{path} is not a valid .keras archive (truncated or corrupt): {bad_member}. Copy or download it again, re-export it (`pde-zoo export`) or retrain it.")
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as err:
        unregistered = re.search(r"Could not locate class '([^']+)'", str(err))
        if unregistered:
            raise ValueError(f"{path} uses the custom class {unregistered[1]!r}, which is not registered with Keras: import the module that defines it (decorated with `@keras.saving.register_keras_serializable()`) before loading.") from err
        raise ValueError(f"Could not load {path} as a .keras model ({type(err).__name__}: {err}).") from err


def load_saved_model(path):
    """A SavedModel directory wrapped as an inference-only keras.Model (`keras.layers.TFSMLayer`)."""
    try:
        layer = keras.layers.TFSMLayer(str(path), call_endpoint="serve")
    except Exception as err:
        raise ValueError(f"Could not load {path} as a SavedModel ({type(err).__name__}: {err}). It may be corrupt; re-export it with `pde-zoo export`.") from err
    import tensorflow as tf

    (spec,) = tf.saved_model.load(str(path)).signatures["serving_default"].structured_input_signature[1].values()
    inputs = keras.Input(shape=tuple(spec.shape[1:]), name="image")
    return keras.Model(inputs, layer(inputs), name=Path(path).name)


def load(spec, compile=True):
    """Load a model from `spec`:

    - a pretrained name (`list_pretrained()`), e.g. "pde2-50": from `$PDE_ZOO_MODELS`, the source
      checkout's saved_models/ or the download cache (`pde_zoo.pretrained`);
    - a `.keras` file;
    - a run directory (holding model.keras);
    - a SavedModel directory (returned as an inference-only model around `TFSMLayer`).

    Raises:
        ValueError: unknown name (listing the available ones) or an unreadable/corrupt file.
    """
    path = Path(spec)
    if path.is_dir():
        if (path / "model.keras").is_file():
            return load_keras_file(path / "model.keras", compile)
        if (path / "saved_model.pb").is_file():
            return load_saved_model(path)
        raise ValueError(f"{path} holds neither model.keras nor saved_model.pb; pass a .keras file, a run directory or a SavedModel directory.")
    if path.is_file() or path.suffix == ".keras":  # a missing .keras file: "not found"
        if path.suffix != ".keras":
            raise ValueError(f"{path} is not a .keras file; pass a .keras file, a run directory or a SavedModel directory.")
        return load_keras_file(path, compile)
    return load_keras_file(_pretrained_path(str(spec)) / "model.keras", compile)
