"""A free linear convolution as a vector field: the field of the thesis's c_ResNet block."""

import keras
from keras import ops

from pde_zoo.layers._stencil_math import IDENTITY
from pde_zoo.layers.vector_field import VectorField, nhwc_channels


@keras.saving.register_keras_serializable(package="pde_zoo")
class LinearConvField(VectorField):
    """dψ/dt = f(ψ) = K ⋆ ψ + b: a learned 3x3 convolution K (C -> C channels, cross-correlation,
    zero "same" padding) and a bias b, autonomous (t unused).

    By thesis eq 25 any such K is *some* linear PDE (`pde_zoo.physics.kernel_to_pde` measures how
    close it is to the eq-22 family); `ResidualConvBlock` (c_ResNet) is its Euler step of Δt = 1
    followed by a ReLU, relu(ψ + K ⋆ ψ + b).

    Args:
        kernel_initializer: initializer of K, default "zeros": the step starts as the identity
            (a zero-initialised residual branch, Goyal et al. 2017 / Fixup); the gradient with
            respect to K is not zero there.
        bias_initializer: initializer of b, default "zeros".
        **kwargs: `keras.layers.Layer` arguments.

    Weights: `kernel` (3, 3, C, C) and `bias` (C,).
    """

    def __init__(self, kernel_initializer="zeros", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self.channels = nhwc_channels(self, input_shape)
        self.kernel = self.add_weight(
            name="kernel", shape=(3, 3, self.channels, self.channels), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(self.channels,), initializer=self.bias_initializer)

    @property
    def is_depthwise_linear(self):
        """True for one channel, where K ⋆ ψ is a depthwise correlation."""
        return self.channels == 1

    def step_taps(self, time_step):
        """The kernel of ψ ↦ ψ + Δt K ⋆ ψ, identity included, shape (3, 3, C); one channel only
        (with C > 1 the convolution mixes channels and has no per-channel stencil)."""
        if not self.is_depthwise_linear:
            raise ValueError(
                f"step taps need a single-channel {type(self).__name__}; this one has {self.channels} channels and "
                "mixes them. Use `kernel` (or step_system_taps) directly."
            )
        identity = ops.convert_to_tensor(IDENTITY[:, :, None], dtype=self.kernel.dtype)
        return identity + time_step * self.kernel[:, :, :, 0]

    def step_offset(self, time_step):
        """The per-channel constant Δt b of the Euler step, shape (C,)."""
        return self.bias if time_step == 1.0 else time_step * self.bias

    def step_system_taps(self, time_step):
        """The full kernel of ψ ↦ ψ + Δt K ⋆ ψ, identity included, shape (3, 3, C, C) (Keras conv
        layout [dy + 1, dx + 1, c_in, c_out]; `pde_zoo.physics.system_symbol`)."""
        identity = ops.convert_to_tensor(IDENTITY[:, :, None, None], dtype=self.kernel.dtype)
        return identity * ops.eye(self.channels, dtype=self.kernel.dtype) + time_step * self.kernel

    def explicit_step(self, psi, time_step, t=0.0):
        """ψ + Δt (K ⋆ ψ + b), one convolution."""
        update = ops.conv(psi, self.kernel, strides=1, padding="same")
        if time_step == 1.0:
            return psi + update + self.bias
        return psi + time_step * (update + self.bias)

    def call(self, psi, t):
        del t  # autonomous
        return ops.conv(psi, self.kernel, strides=1, padding="same") + self.bias

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
