"""Layers of the zoo (all registered with `keras.saving`, package "pde_zoo").

- Residual blocks (`ResidualBlock`: one Euler step ψ ← ψ + f(ψ) of Δt = 1): `PDE1Block`,
  `PDE2Block`, `PDEBlock`, `ResidualConvBlock`, `PDESystemBlock`; `StencilStack` runs a
  sequence of them.
- Vector fields (`VectorField`: f(t, ψ) = dψ/dt): `PDEField`, `ConvField`, `PDESystemField`;
  `ODEBlock` integrates one with a solver of `pde_zoo.ode`.
"""

from pde_zoo.layers.conv_field import ConvField
from pde_zoo.layers.ode_block import ODEBlock
from pde_zoo.layers.pde1_block import PDE1Block
from pde_zoo.layers.pde2_block import PDE2Block
from pde_zoo.layers.pde_block import COEFFICIENT_NAMES, PDEBlock
from pde_zoo.layers.pde_field import PDEField
from pde_zoo.layers.pde_system_block import PDESystemBlock
from pde_zoo.layers.pde_system_field import PDESystemField
from pde_zoo.layers.residual_block import ResidualBlock
from pde_zoo.layers.residual_conv_block import ResidualConvBlock
from pde_zoo.layers.stencil_stack import StencilStack
from pde_zoo.layers.vector_field import VectorField

__all__ = [
    "COEFFICIENT_NAMES", "ConvField", "ODEBlock", "PDE1Block", "PDE2Block", "PDEBlock", "PDEField",
    "PDESystemBlock", "PDESystemField", "ResidualBlock", "ResidualConvBlock", "StencilStack", "VectorField",
]
