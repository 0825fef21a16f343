"""Multi-channel PDE networks (issue 11) and their free-convolution control.

- `pdenet`: stages of `PDESystemBlock`s (reaction-diffusion-advection systems) at decreasing
  resolution;
- `convresnet`: the same macro-architecture with `ResidualConvBlock`s (a free 3x3 convolution
  C -> C in each residual block), the control, as c_ResNet is for the thesis models.

The macro-architecture (`staged_network`), for a 28 x 28 input and `stages=3`:

    stem     Conv2D 3x3 -> C, GroupNorm, ReLU                       28 x 28 x C
    stage 1  n_1 blocks (a StencilStack "stage_1")                  28 x 28 x C
    trans 1  Conv2D 3x3 stride 2 -> 2C, GroupNorm, ReLU             14 x 14 x 2C
    stage 2  n_2 blocks ("stage_2")                                 14 x 14 x 2C
    trans 2  Conv2D 3x3 stride 2 -> 4C, GroupNorm, ReLU              7 x 7 x 4C
    stage 3  n_3 blocks ("stage_3")                                  7 x 7 x 4C
    head     global average pooling, Dense softmax

`depth` = n_1 + ... + n_S, by default split evenly (the first stages take the remainder:
depth 8 -> 3, 3, 2). The convolutions have no bias (the norm's β is one).

Normalization: GroupNorm (gcd(C, 8) groups; per image, so training and inference compute
the same function; with BatchNorm the inference statistics lagged the fast-moving weights
of short runs and test accuracy trailed training accuracy far behind), in the stem and the
transitions only, never inside a block: each block stays exactly the Euler step of its
stated field, so the von Neumann analysis of a block (and the 1-Lipschitz guarantee of
`stable=True`) is the block's own, and every stage starts from normalised features, the
ReLU output of its transition (≥ 0, where a block starting near the identity is the
identity).
"""

import math

import keras

from pde_zoo.layers import GroupNormalization, PDESystemBlock, ResidualConvBlock, StencilStack
from pde_zoo.models.thesis import INPUT_SHAPE, NUM_CLASSES
from pde_zoo.registry import register_model, run_name

DEFAULT_CHANNELS = 12  # the widest base width with pdenet-200 under 0.25M parameters (a test checks it)
DEFAULT_STAGES = 3
NORM_GROUPS = 8  # GroupNorm groups: gcd(channels, 8)


def stage_layout(depth, stages=DEFAULT_STAGES, stage_blocks=None):
    """Blocks per stage: `stage_blocks` checked against `depth` and `stages`, or the even split.

    Raises:
        ValueError: stages < 1, or stage_blocks not `stages` non-negative ints summing to depth.
    """
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise ValueError(f"stages must be a positive integer. Received: stages={stages!r}")
    if stage_blocks is None:
        return tuple(depth // stages + (1 if k < depth % stages else 0) for k in range(stages))
    blocks = tuple(stage_blocks)
    if (
        len(blocks) != stages
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in blocks)
        or sum(blocks) != depth
    ):
        raise ValueError(
            f"stage_blocks must hold {stages} non-negative integers (one per stage) summing to depth={depth}. "
            f"Received: stage_blocks={stage_blocks!r}"
        )
    return blocks


def _conv_norm_relu(x, filters, strides, name):
    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = GroupNormalization(groups=math.gcd(filters, NORM_GROUPS), epsilon=1e-5, name=f"{name}_norm")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def staged_network(
    make_block, depth, *, name, channels=DEFAULT_CHANNELS, stages=DEFAULT_STAGES, stage_blocks=None,
    num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE,
):
    """The staged macro-architecture of this module's docstring around any residual block.

    Args:
        make_block: `name -> ResidualBlock` (a new block per call).
        depth: total number of blocks.
        name: model name.
        channels: width C of the first stage; stage k has C * 2^(k-1) channels.
        stages: number of resolutions (each transition halves height and width).
        stage_blocks: blocks per stage (default: `stage_layout`'s even split).
        num_classes: classifier outputs; input_shape: (H, W, C) of the images.

    Returns:
        A keras.Model (uncompiled) with one `StencilStack` "stage_k" per non-empty stage,
        blocks "stage_k_block_t".
    """
    layout = stage_layout(depth, stages, stage_blocks)
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be >= 1. Received: channels={channels!r}")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels). Received: input_shape={input_shape}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _conv_norm_relu(inputs, channels, 1, "stem")
    for k, blocks in enumerate(layout, start=1):
        if k > 1:
            x = _conv_norm_relu(x, channels * 2 ** (k - 1), 2, f"transition_{k - 1}")
        if blocks:
            x = StencilStack([make_block(f"stage_{k}_block_{t + 1}") for t in range(blocks)], name=f"stage_{k}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("pdenet", sweep_depths=(), default_depth=8)
def pdenet(
    depth, channels=DEFAULT_CHANNELS, stages=DEFAULT_STAGES, stage_blocks=None, stable=False, drift_scale=1.0,
    time_step=1.0, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE,
):
    """Multi-channel PDE network: stages of reaction-diffusion-advection system blocks, pooled head.

    Every block is a `PDESystemBlock` (ψ ← relu(ψ + Aψ + b): a five-point PDE stencil per
    channel and a 1x1 channel mixing Γ); `stable=True` parametrizes every block so that
    max_p ‖G(p)‖₂ ≤ 1 for any weights; `time_step` is every block's Δt (e.g. 50/depth keeps the
    integration time of depth 50 at any depth). Macro-architecture: module docstring.
    Not in the thesis sweep (`sweep_depths` empty): its runs are scripts/train_pdenet.sh, with
    the `pdenet` recipe (`pde_zoo.recipes`).
    """
    return staged_network(
        lambda name: PDESystemBlock(drift_scale=drift_scale, stable=stable, time_step=time_step, name=name), depth,
        name=run_name("pdenet", depth),
        channels=channels, stages=stages, stage_blocks=stage_blocks, num_classes=num_classes, input_shape=input_shape,
    )


@register_model("convresnet", sweep_depths=(), default_depth=8)
def convresnet(
    depth, channels=DEFAULT_CHANNELS, stages=DEFAULT_STAGES, stage_blocks=None, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE,
):
    """pdenet's control: the same stages with a free 3x3 convolution in every residual block.

    Every block is a `ResidualConvBlock` (ψ ← relu(ψ + K * ψ + b), K: 3x3, C -> C), 9C² + C
    parameters against pdenet's C² + 5C; macro-architecture: module docstring.
    """
    return staged_network(
        lambda name: ResidualConvBlock(name=name), depth, name=run_name("convresnet", depth), channels=channels, stages=stages,
        stage_blocks=stage_blocks, num_classes=num_classes, input_shape=input_shape,
    )
