"""The physics protocol: what `pde_zoo.physics`, `pde-zoo analyze` and the fused `StencilStack`
read from a layer, stated once and checked explicitly.

A layer takes part in the physics by implementing some of these (duck-typed, as
`typing.Protocol` intends: no base class to inherit, no weight or config change):

- `StencilLayer`: `taps()` -> the 3x3 depthwise correlation kernel K of the layer's linear
  update, identity included, shape (3, 3, C):
      pre-activation[i, j, c] = Σ_{dy, dx} K[dy + 1, dx + 1, c] ψ[i + dy, j + dx, c].
  (PDE1Block, PDE2Block, PDEBlock, a one-channel ResidualConvBlock.) A block fused by
  `StencilStack` also gives `offset()` -> the per-channel constant b (C,) or None, and says so
  with `fusable`.
- `SystemStencilLayer`: `system_taps()` -> the full kernel (3, 3, C_in, C_out) of a linear
  update that mixes channels (PDESystemBlock, ResidualConvBlock).
- `CoefficientLayer`: `coefficients()` -> {"alpha", "beta", "sigma", "rho", "gamma"}: NumPy
  arrays, and `drift_scale` s: the layer's linear part is the PDE of thesis eq 39 / 40,
      L ψ = α²/2 Dxx ψ + s β Dx ψ + σ²/2 Dyy ψ + s ρ Dy ψ + γ ψ
  (PDEBlock and subclasses, PDESystemBlock / PDESystemField per channel, PDEField per piece).
- `PiecewiseFieldLayer` (continuous depth): a `CoefficientLayer` vector field with `pieces`
  and `horizon` (coefficients of shape (K,) + channel shape, piece k on
  [k·T/K, (k+1)·T/K]) and `operator_taps()` -> the taps of L alone (no identity) for every
  piece, shape (K, 3, 3, C). (PDEField.)

The symbol is what the physics derives from the taps, one definition for all (`symbol_of_taps`):

    G(p) = Σ_{dy, dx} K[dy + 1, dx + 1] exp(i (px dx + py dy)),

the eigenvalue of the update on the plane wave exp(i(px j + py i)); for operator taps (no
identity) it is the symbol λ(p) of the field's linear operator, the eigenvalue of L.

`provides(layer, name)` is the one test of whether a layer implements a member (a method a base
class declares only to refuse, marked with `not_provided`, does not count); `require(layer,
*names, reader=...)` raises a `TypeError` naming the first missing member. Physics reads nothing
from a layer that these do not name.
"""

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "CoefficientLayer", "PiecewiseFieldLayer", "StencilLayer", "SystemStencilLayer", "is_coefficient_layer",
    "is_piecewise_field", "is_stencil_layer", "is_system_stencil_layer", "missing", "not_provided", "provides",
    "require", "symbol_of_taps",
]

OFFSETS = np.array([-1, 0, 1])
PROTOCOL = "pde_zoo.layers.physics_protocol"


@runtime_checkable
class StencilLayer(Protocol):
    """A layer whose linear update is a depthwise 3x3 correlation (module docstring)."""

    def taps(self):
        """(3, 3, C) correlation kernel of the linear update, identity included."""


@runtime_checkable
class SystemStencilLayer(Protocol):
    """A layer whose linear update is a full 3x3 convolution mixing channels."""

    def system_taps(self):
        """(3, 3, C_in, C_out) correlation kernel of the linear update, identity included."""


@runtime_checkable
class CoefficientLayer(Protocol):
    """A layer whose linear part is the eq-39/40 PDE with coefficients α, β, σ, ρ, γ."""

    drift_scale: float

    def coefficients(self):
        """{'alpha', 'beta', 'sigma', 'rho', 'gamma'}: NumPy arrays, one value per channel."""


@runtime_checkable
class PiecewiseFieldLayer(Protocol):
    """A vector field dψ/dt = f(t, ψ) whose linear part is L_k on piece k of [0, horizon]."""

    drift_scale: float
    pieces: int
    horizon: float

    def coefficients(self):
        """The coefficients of every piece, each of shape (K,) + channel shape."""

    def operator_taps(self):
        """(K, 3, 3, C) correlation taps of L_k alone (no identity), one per piece."""


# What each protocol requires, in the order a missing member is reported.
MEMBERS = {
    StencilLayer: ("taps",),
    SystemStencilLayer: ("system_taps",),
    CoefficientLayer: ("coefficients", "drift_scale"),
    PiecewiseFieldLayer: ("operator_taps", "coefficients", "drift_scale", "pieces", "horizon"),
}
METHODS = {"taps", "system_taps", "coefficients", "operator_taps", "offset", "step_taps", "step_offset", "step_system_taps"}


def not_provided(method):
    """Mark a method a base class declares only to refuse (e.g. `ResidualBlock.taps` of a block that
    is not fusable): `provides` does not count it."""
    method.__physics_not_provided__ = True
    return method


def provides(layer, name):
    """Whether `layer` implements protocol member `name`: a method that is callable and not marked
    `not_provided`, or a data attribute that is set (not None)."""
    if isinstance(layer, (type, np.ndarray)):
        return False
    try:
        value = getattr(layer, name)
    except Exception:  # noqa: BLE001  an attribute a property cannot compute yet (unbuilt) is not provided
        return False
    if value is None:
        return False
    if name in METHODS:
        return callable(value) and not getattr(value, "__physics_not_provided__", False)
    return True


def missing(layer, protocol):
    """The members of `protocol` (a class above) that `layer` lacks, in order."""
    return [name for name in MEMBERS[protocol] if not provides(layer, name)]


def is_stencil_layer(layer):
    return not missing(layer, StencilLayer)


def is_system_stencil_layer(layer):
    return not missing(layer, SystemStencilLayer)


def is_coefficient_layer(layer):
    return not missing(layer, CoefficientLayer)


def is_piecewise_field(layer):
    return not missing(layer, PiecewiseFieldLayer)


def _describe(name):
    return f"{name}()" if name in METHODS else f"`{name}`"


def require(layer, *names, reader="pde_zoo.physics"):
    """Raise a `TypeError` naming the first of `names` that `layer` does not provide.

    Args:
        layer: the layer read.
        *names: protocol members (method or attribute names), or protocol classes (all their
            members); alternatives are not expressed here: check them with `provides` first.
        reader: who reads the layer, for the message.

    Returns:
        `layer`.
    """
    wanted = []
    for name in names:
        wanted += list(MEMBERS[name]) if name in MEMBERS else [name]
    for name in wanted:
        if not provides(layer, name):
            label = getattr(layer, "name", None)
            what = f"{type(layer).__name__}" + (f" {label!r}" if isinstance(label, str) else "")
            raise TypeError(
                f"{reader} reads {_describe(name)} from a layer (the physics protocol, {PROTOCOL}); {what} has no "
                f"{_describe(name)}. Implement it (see {PROTOCOL}'s docstring), or leave this layer out of the physics."
            )
    return layer


def symbol_of_taps(taps, px, py):
    """G(p) = Σ K[dy + 1, dx + 1] exp(i (px dx + py dy)) of correlation taps, the one definition
    of the symbol (module docstring).

    Args:
        taps: array (3, 3), (3, 3, C) (depthwise: one symbol per channel) or (3, 3, C, C) (Keras
            conv layout [dy + 1, dx + 1, c_in, c_out]: the matrix symbol indexed [..., c, c']).
        px, py: wave numbers (radians per pixel), broadcast against each other.

    Returns:
        complex128 array of the broadcast shape of px, py, plus the taps' trailing axes ((C,)
        depthwise; (C, C) for a system, transposed to [c_out, c_in]).
    """
    k = np.asarray(taps, dtype=np.float64)
    if k.ndim < 2 or k.shape[:2] != (3, 3) or k.ndim > 4:
        raise ValueError(f"Correlation taps must have shape (3, 3), (3, 3, C) or (3, 3, C, C). Received: shape={k.shape}")
    px, py = np.broadcast_arrays(np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64))
    phase = np.exp(1j * (py[..., None, None] * OFFSETS[:, None] + px[..., None, None] * OFFSETS))  # (..., 3, 3)
    if k.ndim == 4:
        k = np.swapaxes(k, 2, 3)  # [c_out, c_in]
    return np.tensordot(phase, k, axes=([-2, -1], [0, 1]))
