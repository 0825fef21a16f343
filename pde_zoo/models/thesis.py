"""The registered architectures: `depth` residual blocks at full resolution, then the
thesis classifier ("3 linear layers + softmax"): Flatten -> Dense 128 relu -> Dense 64 relu
-> Dense num_classes softmax."""

import keras

from pde_zoo.layers import PDE1Block, PDE2Block, ResidualConvBlock, StencilStack
from pde_zoo.registry import register_model, run_name, validate_depth

# The defaults of the thesis network's options, for every builder that takes them.
CHANNELS = 1  # feature channels of the blocks (the thesis uses one)
NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)  # MNIST, NHWC
HEAD_UNITS = (128, 64)  # hidden Dense sizes of the classifier ("3 linear layers + softmax")


def thesis_model(block_class, depth, *, name, **network_options):
    """Input -> [1x1 Conv2D lift, only if channels != input channels] -> `depth` blocks
    (one `StencilStack` named "blocks", blocks "block_1".."block_depth") -> head.

    Args:
        block_class: the residual block layer class, or None for the head alone.
        depth: number of blocks.
        name: model name.
        **network_options: `thesis_network`'s options (channels, num_classes, input_shape,
            head_units), with its defaults.
    """
    validate_depth(depth)
    body = None
    if block_class is not None and depth > 0:
        body = StencilStack([block_class(name=f"block_{t + 1}") for t in range(depth)], name="blocks")
    return thesis_network(body, name=name, **network_options)


def thesis_network(body, *, name, channels=CHANNELS, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE, head_units=HEAD_UNITS):
    """Input -> [1x1 Conv2D "lift", only if channels != input channels] -> `body` (a layer
    NHWC -> NHWC at full resolution, or None) -> Flatten -> Dense relu (`head_units`) -> Dense
    softmax. The thesis network around any body: a `StencilStack`, an `ODEBlock`, ...

    Args:
        body: the layer between the input (or the lift) and the head, or None.
        name: model name.
        channels: feature channels of the body (the thesis uses 1).
        num_classes: classifier outputs.
        input_shape: (H, W, C) of the images.
        head_units: hidden Dense sizes of the classifier.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1. Received: channels={channels}")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels). Received: input_shape={input_shape}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if body is not None:
        if channels != input_shape[-1]:
            x = keras.layers.Conv2D(channels, 1, name="lift")(x)
        x = body(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in enumerate(head_units):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{i + 1}")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def _block_model(key, block_class):
    """The registry builder of `block_class` at any depth, with the thesis head."""

    def builder(depth, channels=CHANNELS, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE, head_units=HEAD_UNITS):
        return thesis_model(
            block_class, depth, name=run_name(key, depth), channels=channels,
            num_classes=num_classes, input_shape=input_shape, head_units=head_units,
        )

    return builder


for _key, _block, _description in [
    ("pde1", PDE1Block, "PDE1 blocks (thesis eq 39) + thesis head"),
    ("pde2", PDE2Block, "PDE2 blocks (thesis eq 40, drift -1/8) + thesis head"),
    ("resnet", ResidualConvBlock, "c_ResNet: skip around one free 3x3 conv + thesis head"),
]:
    register_model(_key, description=_description)(_block_model(_key, _block))


@register_model("mlp", sweep_depths=(0,), default_depth=0, description="the thesis head alone (depth-0 ablation)")
def mlp(depth, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE, head_units=HEAD_UNITS):
    if depth != 0:
        raise ValueError(f"mlp is the head alone; depth 0 is its only valid depth. Received: depth={depth}")
    return thesis_model(None, 0, name=run_name("mlp", 0), num_classes=num_classes, input_shape=input_shape, head_units=head_units)
