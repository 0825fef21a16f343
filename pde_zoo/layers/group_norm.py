"""Group normalization whose TensorFlow training steps run as one fused C++ op forward and one backward."""

import keras


@keras.saving.register_keras_serializable(package="pde_zoo")
class GroupNormalization(keras.layers.GroupNormalization):
    """`keras.layers.GroupNormalization` with a fused kernel: the same arguments, weights, config and numbers.

    Per image and group g of K = C / G consecutive channels (M = H·W·K values):

        y = (x − μ_g) / sqrt(σ²_g + ε) · γ_c + β_c,   μ_g, σ²_g: the mean and (population) variance.

    Keras computes it as a chain of broadcast ops (moments, rsqrt, multiply, add) whose gradient is a
    longer chain still: several passes over the whole batch each way, ~30% of a pdenet-16 (channels 32)
    training step on CPU. In TensorFlow training steps (`training=True`), on CPU, float32, channels last,
    this layer runs `group_norm_op.cc` instead: the statistics and the output in three sweeps over each
    image while it is in cache (one pass over memory), and the gradient in two, the images shared among
    the inter-op threads. Inference graphs, and so SavedModels, hold Keras's ops; other dtypes warn once
    at build and run Keras's path; JAX runs Keras's path (compiled by XLA). Tests hold values and
    gradients equal to Keras's at 1e-5.

    The class keeps Keras's name, as timm's `GroupNorm` keeps torch's, so a model built with it has the
    architecture (layer classes, weights) of a file written with Keras's layer, and loads either way.
    """

    def build(self, input_shape):
        super().build(input_shape)
        from pde_zoo.layers._native import float32_kernel_applies  # (not at import: `python -m` runs _native)

        # Training steps may run the fused op for the channels-last axis.
        self.fused = self.axis in (-1, len(input_shape) - 1) and float32_kernel_applies(
            self, "group normalization (pde_zoo.layers.GroupNormalization)"
        )

    def call(self, inputs, training=None):
        from pde_zoo.layers._native import runs_fused_kernel

        # A fused kernel only in training steps (and train()'s own scores): SavedModels hold standard ops.
        if self.fused and runs_fused_kernel(training):
            outputs = self._fused_call(inputs)
            if outputs is not None:
                return outputs
        return super().call(inputs)

    def _fused_call(self, inputs):
        """The layer by the C++ ops, or None where they do not run now (no compiler, a GPU, XLA, export)."""
        import tensorflow as tf

        from pde_zoo.layers._tf_stencil import native_ops, worker_threads

        native = native_ops(inputs.dtype)
        if native is None:
            return None
        channels = inputs.shape[-1]
        # Read as tensors outside the custom gradient (the variables' gradients come through the reads).
        gamma = tf.identity(self.gamma.value) if self.scale else tf.ones([channels])
        beta = tf.identity(self.beta.value) if self.center else tf.zeros([channels])
        attrs = {"groups": self.groups, "threads": worker_threads()}

        @tf.custom_gradient
        def run(x, gamma, beta):
            y, mean, rstd = native.pde_zoo_group_norm(x, gamma, beta, epsilon=self.epsilon, **attrs)

            def grad(upstream):
                return native.pde_zoo_group_norm_grad(x, gamma, mean, rstd, upstream, **attrs)

            return y, grad

        shape = tf.shape(inputs)
        flat = tf.reshape(inputs, tf.stack([shape[0], -1, channels]))
        return tf.reshape(run(flat, gamma, beta), shape)
