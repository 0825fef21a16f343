"""A stack of residual blocks run as one layer, with a fast TensorFlow path."""

import keras

from pde_zoo.layers.euler_step import EulerStep
from pde_zoo.layers.pde_field import PDEField, stacked_step_taps
from pde_zoo.layers.pde_system_field import PDESystemField
from pde_zoo.layers.physics_protocol import require
from pde_zoo.layers.residual_block import ResidualBlock

BLOCK_PREFIX = "block"


@keras.saving.register_keras_serializable(package="pde_zoo")
class StencilStack(keras.layers.Layer):
    """`depth` residual blocks applied in sequence: ψ_{t+1} = block_t(ψ_t), t = 0..depth-1.

    The blocks are `ResidualBlock` layers (`PDE1Block`, `PDE2Block`, `ResidualConvBlock`, ...)
    kept in `self.blocks`; this layer only chooses how to run them. On the TensorFlow backend,
    when every block opts in to fusion (`block.fusable`), the whole stack runs as one fused
    kernel with a hand-written gradient (`_tf_stencil.stencil_stack`: a C++ op, or standard TF
    ops where that is unavailable; kernels from `stencils()`), several times faster on CPU
    than block-by-block calls. In TensorFlow training steps a stack of `PDESystemBlock`s (Euler steps of
    `PDESystemField`s) runs as one fused C++ op each way (`PDESystemField.fused_rectified_steps`).
    Otherwise (JAX, c_ResNet, inference of system blocks) each block's own `keras.ops` call is used.
    All give the same numbers (tests hold them equal).

    Args:
        blocks: list of block layers (or their serialized configs).
        **kwargs: `keras.layers.Layer` arguments.

    Example:
    >>> stack = StencilStack([PDE2Block(name=f"block_{t + 1}") for t in range(50)])
    >>> states = stack.trajectory(images)  # ψ_0 .. ψ_50
    """

    def __init__(self, blocks, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [b if isinstance(b, keras.layers.Layer) else keras.saving.deserialize_keras_object(b) for b in blocks]
        for position, block in enumerate(self.blocks):
            if not isinstance(block, ResidualBlock):
                raise TypeError(
                    f"StencilStack runs residual blocks (subclasses of pde_zoo.layers.ResidualBlock: one step "
                    f"ψ -> ψ + f(ψ) and its vector field); block {position} is a {type(block).__name__}. "
                    "Subclass ResidualBlock, or use keras.Sequential for arbitrary layers."
                )

    def build(self, input_shape):
        for block in self.blocks:
            if not block.built:  # deserialized blocks arrive built
                block.build(input_shape)
        self._check_fusable()
        if self.uses_fast_path:  # the C++ op is float32: another dtype says so once (`call` picks the op by dtype)
            from pde_zoo.layers._native import float32_kernel_applies  # (not at import: `python -m` runs _native)

            float32_kernel_applies(self, "stencil stack (StencilStack of PDE / c_ResNet blocks)")

    def _check_fusable(self):
        """A block that opts in to fusion (`fusable`, known once built) must give what the fused
        kernel reads, `taps()` and `offset()` (the physics protocol,
        `pde_zoo.layers.physics_protocol`): else a TypeError naming the missing method."""
        for block in self.blocks:
            if block.fusable:
                require(block, "taps", "offset", reader="StencilStack's fused path (the block says fusable=True)")

    @property
    def uses_fast_path(self):
        """True when `call` runs the fused TensorFlow kernel."""
        return keras.backend.backend() == "tensorflow" and all(b.fusable for b in self.blocks)

    def call(self, inputs, training=None):
        from pde_zoo.layers._native import runs_fused_kernel  # (not at import: `python -m` runs _native)

        # The C++ ops only in training steps (and train()'s own scores, `fused_evaluation`): inference
        # graphs (predict, evaluate, every SavedModel route) hold standard TF ops alone, so any
        # TensorFlow serves them.
        native = runs_fused_kernel(training)
        if self.uses_fast_path and self.blocks:
            from pde_zoo.layers._tf_stencil import stencil_stack

            return stencil_stack(inputs, *self.stencils(), five_point=self._pde_blocks_only, native=native)
        if native and self._system_blocks_only:
            fused = PDESystemField.fused_rectified_steps([b.field for b in self.blocks], [b.time_step for b in self.blocks], inputs)
            if fused is not None:
                return fused
        for block in self.blocks:
            inputs = block(inputs)
        return inputs

    @property
    def _system_blocks_only(self):
        """All blocks are Euler steps of `PDESystemField`s: on TensorFlow they may run as one fused C++ op
        each way (`PDESystemField.fused_rectified_steps`), the step of each block its own."""
        return (
            keras.backend.backend() == "tensorflow" and bool(self.blocks)
            and all(isinstance(b, EulerStep) and isinstance(b.field, PDESystemField) for b in self.blocks)
        )

    @property
    def _pde_blocks_only(self):
        """All blocks are fusable Euler steps of `PDEField`s: five-point kernels (corner taps always
        0), built together by `stacked_step_taps` from their fields."""
        return all(isinstance(b, EulerStep) and isinstance(b.field, PDEField) and b.fusable for b in self.blocks)

    def stencils(self):
        """(taps, offsets) of the depthwise blocks: taps (D, 3, 3, C), offsets (D, C) or None.

        PDE blocks' taps are built together from their fields (`stacked_step_taps`, one matmul); an offset-free block
        in a stack with offsets contributes zeros (adding 0 is exact).

        Raises:
            TypeError: a block without `taps()` or `offset()` (the physics protocol).
        """
        self._check_fusable_members()
        if self._pde_blocks_only:
            taps = stacked_step_taps([b.field for b in self.blocks], [b.time_step for b in self.blocks])
        else:
            taps = keras.ops.stack([b.taps() for b in self.blocks])
        offsets = [b.offset() for b in self.blocks]
        if all(o is None for o in offsets):
            return taps, None
        offsets = [None if o is None else keras.ops.reshape(o, (-1,)) for o in offsets]
        zeros = keras.ops.zeros_like(next(o for o in offsets if o is not None))
        return taps, keras.ops.stack([zeros if o is None else o for o in offsets])

    def _check_fusable_members(self):
        for block in self.blocks:
            require(block, "taps", "offset", reader="StencilStack.stencils()")

    def trajectory(self, inputs):
        """[ψ_0, ψ_1, ..., ψ_depth]: the input and every block's output (NumPy arrays)."""
        states = [keras.ops.convert_to_tensor(inputs)]
        for block in self.blocks:
            states.append(block(states[-1]))
        return [keras.ops.convert_to_numpy(s) for s in states]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["blocks"] = [keras.saving.serialize_keras_object(b) for b in self.blocks]
        return config
