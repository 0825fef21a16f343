"""Propagators and path sums of a stack of blocks (thesis eq 26-27, 32-33).

A path is the sequence of one-step offsets d_t = x_{t-1} - x_t (t = 1..N) a feature takes
through the blocks: block t reads ψ_{t-1}[x_t + d_t] into ψ_t[x_t]. By eq 28-29 the momentum
sum of one step is the stencil entry, sum_p e^{ip(x_t - x_{t-1})} G_t(p) = K_t[d_t], so eq 33
reads, for the linear stack (ReLU removed, interior of the image):

    ψ_N[x] = sum_{d_1..d_N} prod_t K_t[d_t] ψ_0[x + d_1 + ... + d_N] = sum_d P[d] ψ_0[x + d].
"""

import collections
import itertools

import numpy as np

from pde_zoo.layers._stencil_math import squeeze_channel
from pde_zoo.layers.physics_protocol import is_coefficient_layer, provides, require
from pde_zoo.physics.stencils import _stencil3


def blocks_of(layers_or_model):
    """The list of blocks of a model, a `StencilStack`, one block, a stencil array or a sequence.

    A keras Model contributes the blocks of its `StencilStack` layers in model order: the one
    named "blocks" of the thesis models, or one per stage (pdenet, convresnet: "stage_1",
    "stage_2", ...). Sequence items may be blocks or stencil arrays. Every block must implement
    the physics protocol (`pde_zoo.layers.physics_protocol`): `coefficients()` and
    `drift_scale`, or `taps()`, or `system_taps()`.

    Raises:
        ValueError: a model without a `StencilStack` (mlp; the continuous models, whose PDE is
            a field inside an `ODEBlock`: `pde_zoo.analysis.continuous`).
        TypeError: a block outside the physics protocol (the message names the missing method).
    """
    from pde_zoo.layers import StencilStack

    if isinstance(layers_or_model, keras_model_type()):
        stacks = [layer for layer in layers_or_model.layers if isinstance(layer, StencilStack)]
        if not stacks:
            raise ValueError(
                f"Model {layers_or_model.name!r} has no stack of residual blocks (a StencilStack layer such as the "
                "thesis models' 'blocks', or one per stage), so no residual blocks to analyse (the mlp model has none; "
                "the continuous models' PDE is the field of their ODEBlock)."
            )
        blocks = [block for stack in stacks for block in stack.blocks]
    elif isinstance(layers_or_model, StencilStack):
        blocks = list(layers_or_model.blocks)
    elif isinstance(layers_or_model, np.ndarray) or is_physics_layer(layers_or_model):
        blocks = [layers_or_model]
    else:
        try:
            blocks = list(layers_or_model)
        except TypeError:
            blocks = [layers_or_model]  # a single layer outside the protocol: refused below, by name
    for block in blocks:
        check_block(block)
    return blocks


def keras_model_type():
    import keras

    return keras.Model


def is_physics_layer(layer):
    """Whether `layer` implements the physics protocol of a block (`pde_zoo.layers.physics_protocol`):
    the PDE coefficients, depthwise taps or system taps."""
    return is_coefficient_layer(layer) or provides(layer, "taps") or provides(layer, "system_taps")


def check_block(block):
    """`block` if it is a stencil array or a layer of the physics protocol, else a TypeError
    naming the missing method (`taps()`, the least a block gives)."""
    if isinstance(block, np.ndarray) or is_physics_layer(block):
        return block
    return require(block, "taps", reader="pde_zoo.physics (blocks_of: a block of the stack)")


def stencils_of(layers_or_model):
    """Stencils (3, 3, C) of every block, in order (see `blocks_of`, `stencil`).

    Raises:
        ValueError: blocks with different channel counts.
    """
    stencils = [_stencil3(layer) for layer in blocks_of(layers_or_model)]
    if len({k.shape[-1] for k in stencils}) > 1:
        raise ValueError(f"All blocks must have the same number of channels. Received: {[k.shape[-1] for k in stencils]}")
    return stencils


def _per_channel(v):
    """A float for one channel, the array (C,) otherwise."""
    v = squeeze_channel(np.asarray(v))
    return float(v) if v.ndim == 0 else v


def _full_conv(p, k):
    """Full 2-D convolution of an offset-indexed kernel p (n, n, C) with a stencil k (3, 3, C)."""
    n = p.shape[0]
    out = np.zeros((n + 2, n + 2, p.shape[-1]))
    for r in range(3):
        for c in range(3):
            out[r : r + n, c : c + n] += k[r, c] * p
    return out


def propagator(layers_or_model):
    """The composite kernel of N blocks with ReLU removed (interior, no boundary):

        P[N + dy, N + dx] = dψ_N[i, j] / dψ_0[i + dy, j + dx],   ψ_N[i, j] = sum P[N+dy, N+dx] ψ_0[i+dy, j+dx]

    for every pixel at least N away from the image edge. With offset-indexed stencils K_t,
    P = K_1 * K_2 * ... * K_N (full 2-D convolutions): P[d] = sum_{d_1+..+d_N = d} prod_t K_t[d_t],
    the path sum of eq 33 (`path_sum`). Biases (c_ResNet) are not part of P.

    Args:
        layers_or_model: model with a "blocks" layer, a StencilStack, a block, or a sequence of
            blocks / stencil arrays (see `blocks_of`).

    Returns:
        float64 array (2N+1, 2N+1), or (2N+1, 2N+1, C) for C > 1 channels; [[1]] for N = 0.
    """
    stencils = stencils_of(layers_or_model)
    p = np.ones((1, 1, stencils[0].shape[-1] if stencils else 1))
    for k in stencils:
        p = _full_conv(p, k)
    return squeeze_channel(p)


def path_sum(layers_or_model, dy, dx, max_paths=10**6):
    """P[N + dy, N + dx] by explicit enumeration of the N-step paths (eq 32-33):

        sum over (d_1, ..., d_N) in {-1, 0, 1}², d_1 + ... + d_N = (dy, dx), of prod_t K_t[d_t].

    The first N-1 steps run over all 9^(N-1) choices and the last one is what reaches (dy, dx);
    the cost is exponential, for small N only. It agrees with `propagator`.

    Args:
        layers_or_model: as in `propagator`.
        dy, dx: the offset of ψ_0 (row, column) relative to the output pixel.
        max_paths: refuse more than this many enumerated paths.

    Returns:
        float, or array (C,) for C > 1 channels.

    Raises:
        ValueError: 9^(N-1) > max_paths.
    """
    stencils = stencils_of(layers_or_model)
    channels = stencils[0].shape[-1] if stencils else 1
    n = len(stencils)
    if n == 0:
        total = np.full(channels, float((dy, dx) == (0, 0)))
        return _per_channel(total)
    if 9 ** (n - 1) > max_paths:
        raise ValueError(f"path_sum over {n} blocks enumerates 9^{n - 1} = {9 ** (n - 1)} paths (> max_paths={max_paths}); use propagator().")
    steps = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]
    total = np.zeros(channels)
    for head in itertools.product(steps, repeat=n - 1):
        last = (dy - sum(s[0] for s in head), dx - sum(s[1] for s in head))
        if abs(last[0]) > 1 or abs(last[1]) > 1:
            continue
        weight = np.ones(channels)
        for k, (sy, sx) in zip(stencils, head + (last,)):
            weight = weight * k[sy + 1, sx + 1]
        total += weight
    return _per_channel(total)


def correlate(psi, k):
    """Zero-padded correlation of an image stack psi (H, W, C) with a stencil k (3, 3, C):
    out[i, j] = sum K[dy+1, dx+1] ψ[i+dy, j+dx], ψ = 0 outside the image."""
    h, w = psi.shape[:2]
    padded = np.pad(psi, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros_like(psi, dtype=np.float64)
    for r in range(3):
        for c in range(3):
            out += k[r, c] * padded[r : r + h, c : c + w]
    return out


def _window(a, i, j, n):
    """a[i-n : i+n+1, j-n : j+n+1] with zeros outside the image."""
    padded = np.pad(a, ((n, n), (n, n), (0, 0)))
    return padded[i : i + 2 * n + 1, j : j + 2 * n + 1]


def _offsets_of(layers, channels):
    """The constant added before each ReLU (c_ResNet bias), as float64 (C,); zeros if none."""
    import keras

    out = []
    for layer in layers:
        offset = layer.offset() if provides(layer, "offset") else None
        out.append(np.zeros(channels) if offset is None else np.asarray(keras.ops.convert_to_numpy(offset), dtype=np.float64).reshape(channels))
    return out


def _as_image(image, channels):
    image = np.asarray(image)
    if image.dtype == np.uint8:
        raise ValueError("image is uint8 pixels; pass floats in [0, 1] (image.astype('float32') / 255), as the model sees them.")
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError(f"Pass one image, (H, W), (H, W, C) or (1, H, W, C). Received: shape={image.shape}")
        image = image[0]
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] != channels:
        raise ValueError(f"image must be (H, W[, C]) with C = {channels} channels, the input of the first block. Received: shape={image.shape}")
    return image.astype(np.float64)


GatedPropagator = collections.namedtuple("GatedPropagator", ["weights", "window", "bias", "value", "masks"])
GatedPropagator.__doc__ = """Result of `gated_propagator`.

weights: (2N+1, 2N+1[, C]) dψ_N[i, j] / dψ_0[i + dy, j + dx] at the data-dependent gates.
window: (2N+1, 2N+1[, C]) ψ_0[i + dy, j + dx], zero outside the image.
bias: float or (C,), the contribution of the biases to ψ_N[i, j].
value: float or (C,), ψ_N[i, j] = sum(weights * window) + bias.
masks: list of N bool arrays (H, W, C), the ReLU gates m_t (pre-activation > 0)."""


def gated_propagator(layers_or_model, image, i, j, relu=True):
    """The path sum of the blocks *with* ReLU at the gates of one input (eq 26-27).

    For a given ψ_0 the ReLU of block t is a fixed 0/1 gate m_t = [pre_t > 0], so
        ψ_t = m_t ⊙ (K_t ⋆ ψ_{t-1} + b_t)
    is linear in ψ_0 and the output is a path sum whose paths are cut where a gate is closed:
        ψ_N[i, j] = sum_{paths} prod_t m_t[x_t] K_t[d_t] ψ_0[x_0] + sum_t (bias paths).
    The weights are computed exactly on the image grid (zero boundary included) by
    back-propagating the unit vector at (i, j) through the gated correlations:
    u_N = e_ij, u_{t-1} = K_t^T (m_t ⊙ u_t), bias = sum_t <m_t ⊙ u_t, b_t>.

    Args:
        layers_or_model: as in `propagator` (blocks of one or more depthwise channels).
        image: ψ_0, the input of the first block (the model image for the thesis models):
            (H, W), (H, W, C) or (1, H, W, C), floats (MNIST pixels / 255).
        i, j: the output pixel (row, column).
        relu: False removes the ReLU (all gates open): the interior weights are `propagator`.

    Returns:
        `GatedPropagator(weights, window, bias, value, masks)`; value = ψ_N[i, j] of the float64
        forward pass, equal to sum(weights * window) + bias.

    Raises:
        ValueError: image of the wrong shape or uint8, pixel outside the image.
    """
    layers = blocks_of(layers_or_model)
    stencils = stencils_of(layers)
    channels = stencils[0].shape[-1] if stencils else 1
    psi0 = _as_image(image, channels)
    h, w = psi0.shape[:2]
    if not (0 <= i < h and 0 <= j < w):
        raise ValueError(f"Pixel ({i}, {j}) is outside the {h}x{w} image.")
    offsets = _offsets_of(layers, channels)
    psi, masks = psi0, []
    for k, b in zip(stencils, offsets):
        pre = correlate(psi, k) + b
        mask = pre > 0 if relu else np.ones(pre.shape, dtype=bool)
        psi = np.where(mask, pre, 0.0)
        masks.append(mask)
    u = np.zeros_like(psi0)
    u[i, j] = 1.0
    bias = np.zeros(channels)
    for k, b, mask in zip(reversed(stencils), reversed(offsets), reversed(masks)):
        gated = u * mask
        bias += (gated * b).sum(axis=(0, 1))
        u = correlate(gated, k[::-1, ::-1])
    n = len(stencils)
    return GatedPropagator(
        weights=squeeze_channel(_window(u, i, j, n)), window=squeeze_channel(_window(psi0, i, j, n)),
        bias=_per_channel(bias), value=_per_channel(psi[i, j]), masks=masks,
    )
