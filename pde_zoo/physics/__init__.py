"""Chapter III of the thesis as code: residual blocks as PDE stencils, their symbols
("Hamiltonians"), propagators and path sums, the Gaussian limit and the action, and von
Neumann stability (eq 21-38).

Conventions (docs/conventions.md): x = width = column j, y = height = row i, Δt = Δx = Δy = 1,
zero padding, and a block's linear update is the cross-correlation

    pre-activation[i, j] = sum_{dy, dx} K[dy + 1, dx + 1] * ψ[i + dy, j + dx].

All maths is float64 NumPy. Functions take a block layer (anything with `taps()`), a stencil
array (3, 3) / (3, 3, C), a channel-mixing block or (3, 3, C, C) array (the stability
functions), or, for stacks, a model with a "blocks" layer or one stack per stage, a
`StencilStack` or a sequence of blocks.

- `stencil`, `pde_stencil`, `symbol`, `hamiltonian`, `continuum_hamiltonian`, `kernel_to_pde`,
  `layer_to_pde`, `continuum_coefficients`; for blocks that mix channels `system_stencil`,
  `system_symbol` (the C x C matrix symbol), `mixes_channels` (stencils.py)
- `propagator`, `path_sum`, `gated_propagator`, `blocks_of`, `stencils_of` (paths.py)
- `stencil_moments`, `pde_step_moments`, `gaussian_limit`, `gaussian_on_grid`, `path_action`,
  `classical_action` (gaussian.py)
- `amplification_map`, `max_amplification`, `von_neumann`, `amplification_profile` (stability.py)
- one solver step on a linear PDE field (continuous depth): `stability_polynomial`,
  `stability_function` (R(z) = 1 + z bᵀ(I - zA)⁻¹1 of a Butcher tableau), `step_amplification`
  (R(h λ(p))), `step_stencil` (R(hL) as a stencil), `max_over_p` (rk_stability.py)

What is read from a layer is the physics protocol (`pde_zoo.layers.physics_protocol`): `taps()`,
`system_taps()`, `coefficients()` with `drift_scale`, for fields `operator_taps()`; the symbol
is `physics_protocol.symbol_of_taps` of those taps. A layer without them is refused with a
TypeError naming the missing method.
"""

from pde_zoo.physics.gaussian import (
    classical_action,
    gaussian_limit,
    gaussian_on_grid,
    path_action,
    pde_step_moments,
    stencil_moments,
)
from pde_zoo.physics.paths import (
    GatedPropagator,
    blocks_of,
    correlate,
    gated_propagator,
    path_sum,
    propagator,
    stencils_of,
)
from pde_zoo.physics.rk_stability import (
    max_over_p,
    stability_function,
    stability_polynomial,
    step_amplification,
    step_stencil,
)
from pde_zoo.physics.stability import (
    amplification_map,
    amplification_profile,
    max_amplification,
    von_neumann,
)
from pde_zoo.physics.stencils import (
    IDENTITY,
    OPERATORS,
    PDE_TERMS,
    channel_stencil,
    continuum_coefficients,
    continuum_hamiltonian,
    hamiltonian,
    kernel_to_pde,
    layer_to_pde,
    mixes_channels,
    pde_stencil,
    stencil,
    symbol,
    system_stencil,
    system_symbol,
)

__all__ = [
    "IDENTITY",
    "OPERATORS",
    "PDE_TERMS",
    "GatedPropagator",
    "amplification_map",
    "amplification_profile",
    "blocks_of",
    "channel_stencil",
    "classical_action",
    "continuum_coefficients",
    "continuum_hamiltonian",
    "correlate",
    "gated_propagator",
    "gaussian_limit",
    "gaussian_on_grid",
    "hamiltonian",
    "kernel_to_pde",
    "layer_to_pde",
    "max_amplification",
    "max_over_p",
    "mixes_channels",
    "path_action",
    "path_sum",
    "pde_stencil",
    "pde_step_moments",
    "propagator",
    "stability_function",
    "stability_polynomial",
    "stencil",
    "stencil_moments",
    "stencils_of",
    "step_amplification",
    "step_stencil",
    "symbol",
    "system_stencil",
    "system_symbol",
    "von_neumann",
]
