"""Stencils, symbols and the PDE projection of a residual block (thesis eq 21-25, 28-29, 34).

Convention (docs/conventions.md): a block's linear update is the cross-correlation

    pre[i, j] = sum_{dy, dx in {-1, 0, 1}} K[dy + 1, dx + 1] * ψ[i + dy, j + dx]

with x = column j (width, axis 2), y = row i (height, axis 1), Δt = Δx = Δy = 1 and zero
padding. K is the *stencil* (identity included); f = K - I is the residual kernel of eq 25.
"""

import numpy as np

from pde_zoo.layers._stencil_math import (  # noqa: F401  OPERATORS, PDE_TERMS, IDENTITY, pde_stencil: public here too
    COEFFICIENT_NAMES, IDENTITY, OPERATORS, PDE_TERMS, expand_channel, pde_stencil, squeeze_channel,
)
from pde_zoo.layers.physics_protocol import (  # noqa: F401  OFFSETS: public here too
    OFFSETS, is_coefficient_layer, is_system_stencil_layer, provides, require, symbol_of_taps,
)


def _stencil3(layer):
    """stencil(layer) with a channel axis always: (3, 3, C)."""
    return expand_channel(stencil(layer), 2)


def stencil(layer):
    """The 3x3 correlation kernel K of a block's linear update, identity included:

        pre-activation[i, j] = sum_{dy, dx} K[dy + 1, dx + 1] * ψ[i + dy, j + dx].

    PDE blocks: from their coefficients in float64 (`pde_stencil`, eq 24 in 2-D).
    `ResidualConvBlock` (one channel): its kernel plus the identity. A NumPy array of shape
    (3, 3) or (3, 3, C) is taken as a stencil already and returned as float64.

    Args:
        layer: a built block (anything with `taps()`), or a stencil array.

    Returns:
        float64 array (3, 3) for one channel, (3, 3, C) for a depthwise block with C > 1
        channels (channel c is the stencil of channel c).

    Raises:
        ValueError: unbuilt layer, a multi-channel `ResidualConvBlock` (its convolution
            mixes channels and has no per-channel stencil), or an array of the wrong shape.
        TypeError: not an array and not a layer of the physics protocol
            (`pde_zoo.layers.physics_protocol`: `coefficients()` and `drift_scale`, or `taps()`);
            the message names the missing method.
    """
    if isinstance(layer, np.ndarray):
        k = np.asarray(layer, dtype=np.float64)
        if k.ndim not in (2, 3) or k.shape[:2] != (3, 3):
            raise ValueError(f"A stencil array must have shape (3, 3) or (3, 3, C). Received: shape={k.shape}")
        return k
    if not is_coefficient_layer(layer):
        require(layer, "taps", reader="pde_zoo.physics.stencil() (a block, or a (3, 3[, C]) array)")
    if not layer.built:
        raise ValueError(f"Layer {layer.name!r} is not built; call it on an input (or build it) before taking its stencil.")
    if is_coefficient_layer(layer):
        coefficients = layer.coefficients()
        time_step = getattr(layer, "time_step", 1.0)  # an Euler step's Δt (fields: their step of Δt = 1)
        return pde_stencil(*(coefficients[n] for n in COEFFICIENT_NAMES), drift_scale=layer.drift_scale, time_step=time_step)
    import keras

    try:
        taps = layer.taps()
    except ValueError as err:
        raise ValueError(f"stencil({layer.name!r}): {err}") from err
    return squeeze_channel(np.asarray(keras.ops.convert_to_numpy(taps), dtype=np.float64))


def channel_stencil(layer, channel=None):
    """The (3, 3) stencil of one channel.

    Args:
        layer: block or stencil array (see `stencil`).
        channel: channel index; may be omitted for a single-channel block.

    Raises:
        ValueError: a multi-channel block without `channel`, or `channel` out of range.
    """
    k = _stencil3(layer)
    return k[..., _check_channel(k.shape[-1], channel)]


def _check_channel(channels, channel):
    """The channel index to use among `channels`; None is allowed for a single channel."""
    if channel is None:
        if channels != 1:
            raise ValueError(f"This block has {channels} channels; pass channel=0..{channels - 1}.")
        return 0
    if not 0 <= channel < channels:
        raise ValueError(f"channel must be in 0..{channels - 1}. Received: channel={channel}")
    return channel


def symbol(layer, px, py):
    """The eigenvalue G(p) of the linear update on the plane wave ψ[i, j] = exp(i(px j + py i)):

        G(px, py) = sum_{dy, dx} K[dy + 1, dx + 1] exp(i (px dx + py dy)),

    since K ⋆ ψ = G(p) ψ for that wave. For a PDE block (s = drift_scale)

        G = 1 + γ - 2α² sin²(px/2) - 2σ² sin²(py/2) + i s (β sin px + ρ sin py).

    G(p) = exp(H(p)) defines the exact per-step "Hamiltonian" of eq 31-33; the thesis's
    H = Ω̃ = G - 1 (`hamiltonian`) is its first-order form (1 + Ω̃ ≈ exp(Ω̃), eq 31).

    Args:
        layer: block or stencil array (see `stencil`).
        px, py: wave numbers (radians per pixel), arrays broadcast against each other.

    Returns:
        complex128 array of the broadcast shape of px, py, with a trailing channel axis when
        the block has C > 1 channels.
    """
    k = _stencil3(layer)
    return squeeze_channel(symbol_of_taps(k, px, py))


def hamiltonian(layer, px, py):
    """The thesis's Hamiltonian of one block, H(p) = G(p) - 1 = Ω̃(p) (eq 29-31): the symbol of
    the residual kernel f = K - I. Same arguments and shapes as `symbol`."""
    return symbol(layer, px, py) - 1.0


def kernel_to_pde(f):
    """Least-squares projection of a 3x3 residual kernel f (identity removed, eq 25) onto
    span{Dxx, Dx, Dyy, Dy, I} (the eq-22 stencils, docs/conventions.md):

        f ≈ c_xx Dxx + c_x Dx + c_yy Dyy + c_y Dy + c_I I.

    For the kernel of a PDE block, f = α²/2 Dxx + sβ Dx + σ²/2 Dyy + sρ Dy + γ I exactly:
    Dxx = α²/2, Dx = sβ, Dyy = σ²/2, Dy = sρ, I = γ (s = 1 for PDE1, -1/8 for PDE2), residual 0.
    The five operators span exactly the kernels supported on the five-point cross, so the fit
    reproduces the cross and the residual is the share of the four corner taps:
    ||f - fit|| / ||f|| = ||corners of f|| / ||f||.

    Args:
        f: array-like (3, 3), a correlation kernel without the identity.

    Returns:
        (coefficients, residual): dict with keys "Dxx", "Dx", "Dyy", "Dy", "I" (floats) and the
        relative residual ||f - fit||_F / ||f||_F (0 for f = 0).

    Raises:
        ValueError: f is not 3x3.
    """
    f = np.asarray(f, dtype=np.float64)
    if f.shape != (3, 3):
        raise ValueError(f"kernel_to_pde expects a (3, 3) kernel. Received: shape={f.shape}")
    basis = np.stack([OPERATORS[n].ravel() for n in PDE_TERMS], axis=1)
    coef = np.linalg.lstsq(basis, f.ravel(), rcond=None)[0]
    norm = np.linalg.norm(f)
    residual = float(np.linalg.norm(f.ravel() - basis @ coef) / norm) if norm > 0 else 0.0
    return {n: float(c) for n, c in zip(PDE_TERMS, coef)}, residual


def layer_to_pde(layer, channel=None):
    """`kernel_to_pde` of a block's residual kernel f = stencil - I (one channel)."""
    return kernel_to_pde(channel_stencil(layer, channel) - IDENTITY)


def continuum_coefficients(layer, channel=None):
    """The coefficients of the continuum PDE (eq 21 in 2-D) that a block discretises:

        ∂ψ/∂t = a/2 ∂²ψ/∂x² + bx ∂ψ/∂x + b/2 ∂²ψ/∂y² + by ∂ψ/∂y + γ ψ,

    returned as {"alpha2": a, "sigma2": b, "drift_x": bx, "drift_y": by, "gamma": γ}. For a PDE
    block these are exactly α², σ², sβ, sρ, γ; for any other block they come from the
    `kernel_to_pde` projection (alpha2 = 2 Dxx, drift_x = Dx, ...), which drops the corners.
    """
    if is_coefficient_layer(layer):
        c = {n: np.asarray(v, dtype=np.float64) for n, v in layer.coefficients().items()}
        index = _check_channel(c["alpha"].shape[0] if c["alpha"].ndim else 1, channel)
        c = {n: v.reshape(-1)[index] for n, v in c.items()}
        s = layer.drift_scale
        return {
            "alpha2": float(c["alpha"] ** 2), "sigma2": float(c["sigma"] ** 2),
            "drift_x": float(s * c["beta"]), "drift_y": float(s * c["rho"]), "gamma": float(c["gamma"]),
        }
    fit, _ = layer_to_pde(layer, channel)
    return {"alpha2": 2 * fit["Dxx"], "sigma2": 2 * fit["Dyy"], "drift_x": fit["Dx"], "drift_y": fit["Dy"], "gamma": fit["I"]}


def continuum_hamiltonian(layer, px, py, channel=None):
    """The continuum Hamiltonian of eq 34 in 2-D, the small-p limit of `hamiltonian`:

        H_c(p) = -α²/2 px² - σ²/2 py² + i s (β px + ρ py) + γ

    (Dxx → -px², Dx → i px; coefficients from `continuum_coefficients`). The lattice form
    differs at O(p³): -2α² sin²(px/2) = -α²px²/2 + O(px⁴), sβ sin px = sβ px + O(px³).

    Args:
        layer: block or stencil array; channel: as in `channel_stencil`.
        px, py: wave numbers, broadcast against each other.

    Returns:
        complex128 array of the broadcast shape.
    """
    c = continuum_coefficients(layer, channel)
    px, py = np.broadcast_arrays(np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64))
    return (-0.5 * c["alpha2"] * px**2 - 0.5 * c["sigma2"] * py**2 + c["gamma"]) + 1j * (c["drift_x"] * px + c["drift_y"] * py)


def mixes_channels(layer):
    """Whether a block (or array) couples its channels: a (3, 3, C, C) array with C > 1, or a
    built layer with `system_taps()` (PDESystemBlock, ResidualConvBlock) and more than one
    channel. Such a block has a C x C matrix symbol (`system_symbol`), not one per channel."""
    if isinstance(layer, np.ndarray):
        return layer.ndim == 4 and layer.shape[-1] > 1
    return is_system_stencil_layer(layer) and getattr(layer, "channels", 1) > 1


def system_stencil(layer):
    """The full 3x3 correlation kernel of a block's linear update, identity included, in Keras
    conv layout (3, 3, C_in, C_out):

        pre-activation[i, j, c] = sum_{dy, dx, c'} K[dy + 1, dx + 1, c', c] ψ[i + dy, j + dx, c'].

    For a channel-mixing block (`system_taps()`: `PDESystemBlock`: its per-channel stencils on
    the diagonal and Γ[c, c'] at the centre; `ResidualConvBlock`: kernel + identity) the
    layer's kernel; for a depthwise block or a (3, 3[, C]) array, the per-channel stencils
    (`stencil`) on the diagonal. A (3, 3, C, C) array is returned as float64.

    Raises:
        ValueError: unbuilt layer or an array of the wrong shape.
    """
    if isinstance(layer, np.ndarray) and layer.ndim == 4:
        if layer.shape[:2] != (3, 3) or layer.shape[2] != layer.shape[3]:
            raise ValueError(f"A system stencil must have shape (3, 3, C, C). Received: shape={layer.shape}")
        return np.asarray(layer, dtype=np.float64)
    if not isinstance(layer, np.ndarray) and provides(layer, "system_taps"):
        if not layer.built:
            raise ValueError(f"Layer {layer.name!r} is not built; call it on an input (or build it) before taking its stencil.")
        import keras

        return np.asarray(keras.ops.convert_to_numpy(layer.system_taps()), dtype=np.float64)
    k = _stencil3(layer)
    return np.einsum("rsc,cd->rscd", k, np.eye(k.shape[-1]))


def system_symbol(layer, px, py):
    """The matrix symbol G(p) (C x C) of a block's linear update: on ψ[i, j] = v exp(i(px j + py i)),
    v in C^C, the update gives G(p) v exp(i(px j + py i)), with

        G(p)[c, c'] = sum_{dy, dx} K[dy + 1, dx + 1, c', c] exp(i (px dx + py dy))

    (K = `system_stencil`). For a `PDESystemBlock` G(p) = I + diag(ℓ_c(p)) + Γ, ℓ_c the
    per-channel `symbol` minus 1; for a depthwise block the diagonal matrix of the per-channel
    symbols. Von Neumann stability of a system is max_p ‖G(p)‖₂ ≤ 1
    (`pde_zoo.physics.max_amplification`).

    Args:
        layer: block or stencil array (see `system_stencil`).
        px, py: wave numbers, arrays broadcast against each other.

    Returns:
        complex128 array of the broadcast shape of px, py plus (C, C), indexed [..., c, c'].
    """
    return symbol_of_taps(system_stencil(layer), px, py)
