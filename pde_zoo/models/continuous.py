"""Continuous-depth models (thesis chapter V): an `ODEBlock` where the thesis stacks blocks.

- `pde1ode`, `pde2ode`: the thesis network (full resolution, one channel, thesis head) whose
  body is the PDE field of eq 39 / 40 integrated over [0, T], T = depth, with coefficients
  piecewise constant over `depth` unit intervals. With method="euler", step_size=1 this is
  exactly the discrete `pde1` / `pde2` model of that depth.
- `odenet`: the MNIST ODE-Net of Chen et al. 2018 (torchdiffeq's examples/odenet_mnist.py,
  downsampling "conv"): a stem 1 -> 64 channels down to 6x6, `depth` ODE blocks with the
  convolutional field `ConvField` over [0, 1], GroupNorm, ReLU, global average pooling,
  Dense softmax.
"""

import keras

from pde_zoo.layers import ConvField, ODEBlock, PDEField
from pde_zoo.layers.conv_field import group_norm
from pde_zoo.models.thesis import HEAD_UNITS, INPUT_SHAPE, NUM_CLASSES, thesis_network
from pde_zoo.registry import register_model, run_name


def _validate_ode_depth(name, depth):
    if depth < 1:
        raise ValueError(f"{name} integrates over [0, depth]: depth must be >= 1. Received: depth={depth}")


def _pde_ode_builder(key, drift_scale):
    def builder(
        depth, method="dopri5", step_size=None, rtol=1e-3, atol=1e-3, adjoint=True,
        num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE, head_units=HEAD_UNITS,
    ):
        _validate_ode_depth(key, depth)
        field = PDEField(drift_scale=drift_scale, pieces=depth, horizon=float(depth), name="field")
        body = ODEBlock(
            field, t1=float(depth), method=method, step_size=step_size, rtol=rtol, atol=atol, adjoint=adjoint, name="ode"
        )
        return thesis_network(
            body, name=run_name(key, depth), channels=input_shape[-1], num_classes=num_classes,
            input_shape=input_shape, head_units=head_units,
        )

    return builder


for _key, _drift, _description in [
    ("pde1ode", 1.0, "PDE1 field (eq 39) integrated over [0, depth] by an ODE solver + thesis head"),
    ("pde2ode", -0.125, "PDE2 field (eq 40) integrated over [0, depth] by an ODE solver + thesis head"),
]:
    register_model(_key, sweep_depths=(50,), default_depth=5, description=_description)(_pde_ode_builder(_key, _drift))


@register_model("odenet", sweep_depths=(1,), default_depth=1, description="MNIST ODE-Net of Chen et al. 2018 (conv stem, ODE block(s), GroupNorm, pooled head)")
def odenet(
    depth, channels=64, method="dopri5", step_size=None, rtol=1e-3, atol=1e-3, adjoint=True,
    num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE,
):
    _validate_ode_depth("odenet", depth)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(channels, 3, name="stem_conv_1")(inputs)  # 28 -> 26 (no padding)
    for i in (1, 2):  # 26 -> 13 -> 6: kernel 4, stride 2, one pixel of zero padding (as PyTorch)
        x = keras.layers.Activation("relu", name=f"stem_relu_{i}")(group_norm(channels, f"stem_norm_{i}")(x))
        x = keras.layers.ZeroPadding2D(1, name=f"stem_pad_{i}")(x)
        x = keras.layers.Conv2D(channels, 4, strides=2, name=f"stem_conv_{i + 1}")(x)
    for k in range(depth):
        x = ODEBlock(
            ConvField(name=f"field_{k + 1}"), t1=1.0, method=method, step_size=step_size, rtol=rtol, atol=atol,
            adjoint=adjoint, name=f"ode_{k + 1}",
        )(x)
    x = keras.layers.Activation("relu", name="head_relu")(group_norm(channels, "head_norm")(x))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=run_name("odenet", depth))
