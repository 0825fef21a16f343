"""Serving is not training: `predict`, `evaluate` and the SavedModel export of any model."""

import keras
import numpy as np

from pde_zoo import data as data_lib
from pde_zoo.io_utils import atomic_save
from pde_zoo.loading import load

EVAL_BATCH = 1024


def export_saved_model(model, path):
    """Export `model` as a SavedModel (endpoint `serve`) at `path`, atomically.

    Inference graphs hold standard TF ops only (the zoo's C++ ops run in training
    steps alone), so TF-Serving and GPU machines load it with nothing but TensorFlow.
    """

    def export(tmp):
        model.export(str(tmp), format="tf_saved_model", verbose=False)

    atomic_save(path, export)


def evaluate_arrays(model, images, labels, batch_size=EVAL_BATCH):
    """(mean cross-entropy, accuracy) of `model` on uint8 `images` (scaled by 1/255) and
    integer `labels`; the model compiled or not (a SavedModel wrapper too)."""
    ds = data_lib.make_dataset(images, labels, batch_size).map(lambda x, y: x)
    probs = np.asarray(model.predict(ds, verbose=0))
    labels = np.asarray(labels)
    loss = float(np.mean(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0))))
    return loss, float(np.mean(probs.argmax(-1) == labels))


def evaluate(model, data=None, limit=None, data_dir=None):
    """Test-set (loss, accuracy) of a model on a data source (`pde_zoo.sources.load_source`,
    default MNIST), optionally its first `limit` test images. ValueError when the model's input
    shape is not the data's."""
    from pde_zoo.sources import load_source

    source = load_source(data, data_dir)
    if tuple(model.input_shape[1:]) != tuple(source.input_shape):
        raise ValueError(f"{model.name} takes images of shape {tuple(model.input_shape[1:])}, but {source.name} has {tuple(source.input_shape)}; evaluate it on the data it was trained on.")
    return evaluate_arrays(model, source.x_test[:limit], source.y_test[:limit])


def predict(model_or_spec, images):
    """Class probabilities (N, num_classes) for float32 images in [0, 1] of the model's input shape.

    `model_or_spec` is a keras.Model or anything `pde_zoo.load` accepts. Bad images (wrong
    shape or dtype, values outside [0, 1], NaN or Inf) raise one ValueError naming the problem
    and the fix (see `pde_zoo.data.validate_images`). An empty batch (N = 0) gives an empty
    float32 array of shape (0, num_classes).
    """
    model = model_or_spec if isinstance(model_or_spec, keras.Model) else load(model_or_spec, compile=False)
    images = data_lib.validate_images(images, tuple(model.input_shape[1:]))
    if not len(images):  # keras's predict fails on an empty batch
        return np.zeros((0, *model.output_shape[1:]), "float32")
    return np.asarray(model.predict(images, verbose=0))
