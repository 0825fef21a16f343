"""Residual blocks of the zoo (all registered with `keras.saving`, package "pde_zoo")."""

from pde_zoo.layers.pde1_block import PDE1Block
from pde_zoo.layers.pde2_block import PDE2Block
from pde_zoo.layers.pde_block import COEFFICIENT_NAMES, PDEBlock
from pde_zoo.layers.residual_conv_block import ResidualConvBlock
from pde_zoo.layers.stencil_stack import StencilStack

__all__ = ["COEFFICIENT_NAMES", "PDE1Block", "PDE2Block", "PDEBlock", "ResidualConvBlock", "StencilStack"]
