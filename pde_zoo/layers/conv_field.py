"""The convolutional vector field of the MNIST ODE-Net (Chen et al. 2018)."""

import keras
from keras import ops

from pde_zoo.layers.group_norm import GroupNormalization
from pde_zoo.layers.vector_field import VectorField, nhwc_channels


def group_norm(channels, name):
    """GroupNorm with min(32, C) groups (Chen et al.'s `norm`)."""
    return GroupNormalization(groups=min(32, channels), epsilon=1e-5, name=name)


@keras.saving.register_keras_serializable(package="pde_zoo")
class ConvField(VectorField):
    """dψ/dt = f(t, ψ), the ODE-Net field of Chen et al. 2018 (torchdiffeq's `ODEfunc`):

        h = conv_1([t, relu(norm_1(ψ))]),   f = norm_3(conv_2([t, relu(norm_2(h))]))

    where [t, ·] appends a channel filled with t (so the field depends on time) and each
    conv is a free 3x3 convolution C+1 -> C with bias, zero "same" padding; norms are
    GroupNorm with min(32, C) groups.

    Args:
        **kwargs: `keras.layers.Layer` arguments. The channel count comes from the input.
    """

    def build(self, input_shape):
        channels = nhwc_channels(self, input_shape)
        conv_shape = tuple(input_shape[:-1]) + (channels + 1,)
        self.norm_1, self.norm_2, self.norm_3 = (group_norm(channels, f"norm_{i}") for i in (1, 2, 3))
        self.conv_1, self.conv_2 = (keras.layers.Conv2D(channels, 3, padding="same", name=f"conv_{i}") for i in (1, 2))
        for norm in (self.norm_1, self.norm_2, self.norm_3):
            norm.build(input_shape)
        self.conv_1.build(conv_shape)
        self.conv_2.build(conv_shape)

    @staticmethod
    def _with_time(t, x):
        time = ops.ones_like(x[..., :1]) * ops.cast(t, x.dtype)
        return ops.concatenate([x, time], axis=-1)

    def call(self, psi, t):
        h = self.conv_1(self._with_time(t, ops.relu(self.norm_1(psi))))
        h = self.conv_2(self._with_time(t, ops.relu(self.norm_2(h))))
        return self.norm_3(h)
