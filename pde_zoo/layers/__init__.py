"""Layers of the zoo (all registered with `keras.saving`, package "pde_zoo").

- Vector fields (`VectorField`: f(t, ψ) = dψ/dt), the one source of each equation's weights,
  operator, stencils and symbol: `PDEField` (eq 39 / 40), `PDESystemField` (a PDE per channel
  plus a channel mixing), `LinearConvField` (a free convolution), `ConvField` (the ODE-Net's).
- Residual blocks (`ResidualBlock`: ψ ← ψ + f(ψ)): `EulerStep(field, time_step)`, one explicit
  Euler step of a field then ReLU, and the named EulerSteps `PDE1Block`, `PDE2Block`, `PDEBlock`,
  `PDESystemBlock`, `ResidualConvBlock`. `StencilStack` runs a sequence of blocks (fused when
  every field is depthwise linear).
- `ODEBlock` integrates a field with a solver of `pde_zoo.ode` (continuous depth).
- `GroupNormalization`: Keras's, with a fused C++ kernel for TensorFlow training steps.
"""

from pde_zoo.layers._stencil_math import COEFFICIENT_NAMES
from pde_zoo.layers.blocks import PDE1Block, PDE2Block, PDEBlock, PDESystemBlock, ResidualConvBlock
from pde_zoo.layers.conv_field import ConvField
from pde_zoo.layers.euler_step import EulerStep
from pde_zoo.layers.group_norm import GroupNormalization
from pde_zoo.layers.linear_conv_field import LinearConvField
from pde_zoo.layers.ode_block import ODEBlock
from pde_zoo.layers.pde_field import PDEField
from pde_zoo.layers.pde_system_field import PDESystemField
from pde_zoo.layers.residual_block import ResidualBlock
from pde_zoo.layers.stencil_stack import StencilStack
from pde_zoo.layers.vector_field import VectorField

__all__ = [
    "COEFFICIENT_NAMES", "ConvField", "EulerStep", "GroupNormalization", "LinearConvField", "ODEBlock", "PDE1Block", "PDE2Block", "PDEBlock",
    "PDEField", "PDESystemBlock", "PDESystemField", "ResidualBlock", "ResidualConvBlock", "StencilStack", "VectorField",
]
