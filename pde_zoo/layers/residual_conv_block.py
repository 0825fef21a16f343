"""c_ResNet: a skip connection around one free 3x3 convolution."""

import keras
from keras import ops

from pde_zoo.layers.residual_block import ResidualBlock

@keras.saving.register_keras_serializable(package="pde_zoo")
class ResidualConvBlock(ResidualBlock):
    """The thesis control block (c_ResNet):

        ψ ← relu( ψ + K * ψ + b ),   one Euler step (Δt = 1) of  f(ψ) = relu(ψ + K * ψ + b) − ψ

    with K a learned 3x3 convolution (C -> C channels, cross-correlation, zero "same"
    padding) and b a learned bias. By eq 25 any such block is the Euler step of *some*
    linear PDE; `pde_zoo.physics.kernel_to_pde` measures how close K is to the PDE family.

    Args:
        kernel_initializer: initializer of K, default "zeros": each block starts as the
            exact identity on non-negative inputs (a zero-initialised residual branch, as in
            Goyal et al. 2017 / Fixup); the gradient with respect to K is not zero there.
        bias_initializer: initializer of b, default "zeros".
        **kwargs: `keras.layers.Layer` arguments.

    Weights: `kernel` (3, 3, C, C) and `bias` (C,).

    Call arguments:
        inputs: float tensor `(N, H, W, C)`, NHWC.

    Example:
    >>> y = pde_zoo.layers.ResidualConvBlock()(np.zeros((1, 28, 28, 1), "float32"))
    """

    def __init__(self, kernel_initializer="zeros", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "ResidualConvBlock expects NHWC input (N, H, W, C) with a known channel count, "
                f"e.g. (N, 28, 28, 1). Received: input_shape={tuple(input_shape)}"
            )
        self.channels = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(3, 3, self.channels, self.channels), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(self.channels,), initializer=self.bias_initializer)

    @property
    def fusable(self):
        """True for one channel, where the step is relu(taps ⋆ ψ + b) with a depthwise kernel."""
        return self.channels == 1

    def taps(self):
        """The 3x3 correlation kernel of the linear update, identity included, shape (3, 3, C).

        Only defined when `fusable` (a single channel); with C > 1 the convolution mixes
        channels and has no per-channel stencil.
        """
        if not self.fusable:
            raise ValueError(
                f"taps() needs a single-channel ResidualConvBlock; this one has {self.channels} "
                "channels and mixes them. Use `kernel` directly."
            )
        identity = ops.reshape(ops.convert_to_tensor([0, 0, 0, 0, 1, 0, 0, 0, 0], dtype=self.kernel.dtype), (3, 3, 1))
        return self.kernel[:, :, :, 0] + identity

    def offset(self):
        """The per-channel constant added before the ReLU: the bias b, shape (C,)."""
        return self.bias

    def system_taps(self):
        """The full correlation kernel of ψ ↦ ψ + K * ψ, identity included, shape (3, 3, C, C)
        (Keras conv layout [dy + 1, dx + 1, c_in, c_out]; `pde_zoo.physics.system_symbol`)."""
        identity = ops.eye(self.channels, dtype=self.kernel.dtype)
        centre = ops.reshape(ops.convert_to_tensor([0, 0, 0, 0, 1, 0, 0, 0, 0], dtype=self.kernel.dtype), (3, 3, 1, 1))
        return self.kernel + centre * identity

    def call(self, inputs):
        update = ops.conv(inputs, self.kernel, strides=1, padding="same")
        return ops.relu(inputs + update + self.bias)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
