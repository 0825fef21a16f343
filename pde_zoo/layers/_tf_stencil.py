"""Fast TensorFlow kernel for a stack of depthwise 3x3 stencil blocks  ψ ← relu(K ⋆ ψ + b).

Measured on a 2-core CPU (scripts/bench.py): a depthwise convolution over one channel is
dominated by per-image overhead. Moving the batch into the channel axis, (N, H, W, C) ->
(1, H, W, N*C), and sharing the kernel across the batch (tiled N times) makes each
convolution one large depthwise op; the transpose is paid once per stack, not per block.
The gradient is written by hand (ReLU mask, flipped-kernel correlation for the input,
backprop-filter summed over the batch for the kernel), which avoids autodiff's per-block
bookkeeping. Numerics equal the `keras.ops` path of each block (tests hold them equal).
"""

import tensorflow as tf

_STRIDES = [1, 1, 1, 1]


def _stencil_relu(psi, batch, *params):
    """relu(corr(psi, K) + b) on the (1, H, W, N*C) layout; params = (taps,) or (taps, offset)."""

    @tf.custom_gradient
    def forward(psi, *params):
        taps = params[0]
        kernel = tf.tile(taps[..., None], [1, 1, batch, 1])  # (3, 3, N*C, 1), index n*C + c
        pre = tf.nn.depthwise_conv2d(psi, kernel, _STRIDES, "SAME")
        if len(params) == 2:
            pre = pre + tf.tile(params[1], [batch])
        out = tf.nn.relu(pre)

        def grad(upstream):
            g = tf.raw_ops.ReluGrad(gradients=upstream, features=out)
            d_psi = tf.nn.depthwise_conv2d(g, tf.reverse(kernel, [0, 1]), _STRIDES, "SAME")
            d_kernel = tf.nn.depthwise_conv2d_backprop_filter(psi, tf.shape(kernel), g, _STRIDES, "SAME")
            channels = tf.shape(taps)[-1]
            grads = [d_psi, tf.reduce_sum(tf.reshape(d_kernel, [3, 3, batch, channels]), axis=2)]
            if len(params) == 2:
                grads.append(tf.reduce_sum(tf.reshape(g, [-1, channels]), axis=0))
            return grads

        return out, grad

    return forward(psi, *params)


def stencil_stack(inputs, blocks):
    """Apply depthwise stencil blocks in sequence to NHWC `inputs` on the batch-as-channels layout."""
    shape = tf.shape(inputs)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    psi = tf.reshape(tf.transpose(inputs, [1, 2, 0, 3]), [1, height, width, batch * channels])
    for block in blocks:
        offset = block.offset()
        params = (block.taps(),) if offset is None else (block.taps(), tf.convert_to_tensor(offset))
        psi = _stencil_relu(psi, batch, *params)
    return tf.transpose(tf.reshape(psi, [height, width, batch, channels]), [2, 0, 1, 3])
