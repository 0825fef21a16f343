"""A layer's output and gradients in one traced training (or inference) call, for the fused-kernel tests."""

import numpy as np
import tensorflow as tf


def values_gradients_and_op_types(layer, x, training):
    """([y, dL/dx, dL/d(every trainable weight)...] as NumPy arrays, the op types of the traced graph) for
    L = Σ y·u with a fixed random u (any upstream gradient), y = layer(x, training=training)."""
    upstream = tf.constant(np.random.default_rng(1).normal(size=x.shape).astype(x.dtype.as_numpy_dtype))

    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * upstream)
        return [y] + tape.gradient(loss, [x] + layer.trainable_weights)

    types = {op.type for op in run.get_concrete_function(x).graph.get_operations()}
    return [t.numpy() for t in run(x)], types
