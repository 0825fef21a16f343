"""Fast TensorFlow kernels for a stack of depthwise 3x3 stencil blocks  ψ_{t+1} = relu(K_t ⋆ ψ_t + b_t),
and for a stack of multi-channel PDE-system steps  ψ ← relu(K ⋆ ψ + Γψ + b)  (`system_stack`).

Two implementations, same numbers (tests hold both equal to the `keras.ops` path):
- native: the C++ ops of `stencil_op.cc` (built on first use, `_native.py`), one op for the
  forward pass of the whole stack and one for its backward pass, each vectorized over the
  batch and split over the inter-op threads, reading and writing NHWC tensors directly (the
  weight gradients come back summed over the batch). Used for float32 on CPU;
- standard TF ops (below), used when the native library cannot be built, for other dtypes,
  with a GPU, under XLA (`jit_compile=True` cannot compile a custom op), and whenever the
  caller does not ask for the native op (`native=False`: `StencilStack` asks only for training
  steps, so inference graphs, and every SavedModel, hold nothing but standard TF ops).

How the standard-op path is made fast (docs/performance.md has the numbers,
from scripts/bench.py and scripts/profile_pde.py):
- a oneDNN depthwise convolution has a fixed cost per call, whatever its size, that dwarfs one
  small image's work, so one call per image is slow. Moving the batch into the channel axis,
  (N, H, W, C) -> (1, H, W, N*C), and sharing the kernel across the batch (tiled N times) makes each convolution one large
  depthwise op; the transpose is paid once per stack, not per block;
- the whole stack is one `tf.custom_gradient`: the backward pass is written by hand (ReLU
  mask, flipped-kernel correlation for the input, backprop-filter summed over the batch for
  the kernel) and returns the gradients of all D kernels as one (D, 3, 3, C) tensor, so the
  per-block variable plumbing is a single op;
- the batch is split into `chains` independent slices (one per inter-op thread), each its
  own sequence of ops, so TF's executor runs them on separate cores. Ops stay single-threaded
  (intra-op splitting of these small ops costs more than it gains);
- the convolution, a zero-or-learned BiasAdd and the ReLU are written in the pattern TF's
  grappler fuses into one oneDNN op.
Numerics equal the `keras.ops` path of each block (tests hold them equal).
"""

import os

import tensorflow as tf

from pde_zoo.layers._native import stencil_ops

_STRIDES = [1, 1, 1, 1]


MAX_CHAINS = 4


def worker_threads():
    """TF's inter-op thread count (0 means all cores)."""
    return tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count() or 1


def parallel_chains():
    """Independent batch slices to run side by side: TF's inter-op thread count (0 = all cores).

    One chain per inter-op thread was the fastest on 2 cores (docs/performance.md, the
    standard-op fallback); more cores are untested, and the cap keeps >= 32 images per chain
    at batch 128.
    """
    return max(1, min(worker_threads(), MAX_CHAINS))


def _in_xla_compilation():
    """Whether ops traced now will be compiled by XLA (`tf.function(jit_compile=True)`)."""
    from tensorflow.python.ops import control_flow_util  # TF-internal; no public equivalent

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _in_save_context():
    """Whether `tf.saved_model.save` is tracing functions now."""
    from tensorflow.python.saved_model import save_context  # TF-internal; no public equivalent

    return save_context.in_save_context()


def native_ops(dtype):
    """The native op module when it applies: float32, no GPU, no XLA, no SavedModel being written."""
    if dtype != tf.float32 or tf.config.list_logical_devices("GPU") or _in_xla_compilation() or _in_save_context():
        return None
    return stencil_ops()


def stencil_stack(inputs, taps, offsets=None, five_point=False, chains=None, native=False):
    """Apply D depthwise stencil blocks in sequence to NHWC `inputs`.

    Args:
        inputs: (N, H, W, C) float tensor.
        taps: (D, 3, 3, C) correlation kernels, identity included, one per block.
        offsets: None (zeros), or (D, C) constants added before each ReLU.
        five_point: the corner taps are zero and do not depend on anything trained (PDE blocks):
            the native op skips them, and reports their gradient as zero.
        chains: standard-op path only: batch slices run as independent op sequences;
            default `parallel_chains()`.
        native: use the C++ ops where they apply (see `native_ops`). Only for graphs that are
            never serialized: a graph holding them loads only where the op library is loaded.

    Returns:
        ψ_D, shape (N, H, W, C), where ψ_0 = inputs and ψ_{t+1} = relu(taps[t] ⋆ ψ_t + offsets[t])
        with zero ("same") padding.
    """
    if offsets is None:
        offsets = tf.zeros(tf.shape(taps)[::3], dtype=taps.dtype)  # (D, C)
    native = native_ops(inputs.dtype) if native else None
    if native is not None:
        return _native_stack(native, inputs, taps, offsets, five_point)
    return _standard_stack(inputs, taps, offsets, chains or parallel_chains())


def _native_stack(native, inputs, taps, offsets, five_point):
    """`stencil_stack` with the C++ ops (NHWC in and out; the op groups images x channels into SIMD lanes).

    Where a gradient tape records (a training step), the forward op also saves every S-th state for the
    backward op, which then recomputes only the states between them; otherwise (inference, or
    `tf.gradients` without a tape) it saves none and the backward op runs the blocks forward once more.
    """
    attrs = {"threads": worker_threads(), "corners": not five_point}
    keep_checkpoints = _gradient_may_be_taken()

    @tf.custom_gradient
    def run(inputs, taps, offsets):
        flat_taps = tf.reshape(taps, [taps.shape[0], 9, -1])
        outputs, checkpoints = native.pde_zoo_stencil_stack(inputs, flat_taps, offsets, keep_checkpoints=keep_checkpoints, **attrs)

        def grad(upstream):
            d_x, d_taps, d_offsets = native.pde_zoo_stencil_stack_grad(inputs, flat_taps, offsets, upstream, checkpoints, **attrs)
            return d_x, tf.reshape(d_taps, tf.shape(taps)), d_offsets

        return outputs, grad

    return run(inputs, taps, offsets)


def _gradient_may_be_taken():
    """Whether a gradient tape records the ops made now."""
    from tensorflow.python.eager import record  # TF-internal; no public equivalent

    return record.could_possibly_record()


def system_stack(native, inputs, taps, mixing, bias):
    """ψ_D of D multi-channel PDE-system steps ψ_{d+1} = relu(taps[d] ⋆ ψ_d + Γ_d ψ_d + bias[d]), ψ_0 =
    `inputs`, by the fused C++ ops of `system_step_op.cc` (forward and backward: each chunk of images
    goes through all D blocks while it is in cache), for five-point stencils.

    Args:
        native: the op module (`native_ops(dtype)`; callers fall back to standard ops when None).
        inputs: (N, H, W, C) float32.
        taps: (D, 3, 3, C) correlation taps, identity included; the corner taps zero (never read, and
            their gradient is reported as zero).
        mixing: Γ (D, C, C), indexed [block, output, input].
        bias: (D, C).
    """
    attrs = {"threads": worker_threads(), "corners": False}

    @tf.custom_gradient
    def run(inputs, taps, mixing, bias):
        flat_taps = tf.reshape(taps, [tf.shape(taps)[0], 9, -1])
        outputs, states = native.pde_zoo_system_stack(inputs, flat_taps, mixing, bias, **attrs)

        def grad(upstream):
            d_x, d_taps, d_mixing, d_bias = native.pde_zoo_system_stack_grad(inputs, flat_taps, mixing, outputs, states, upstream, **attrs)
            return d_x, tf.reshape(d_taps, tf.shape(taps)), d_mixing, d_bias

        return outputs, grad

    return run(inputs, taps, mixing, bias)


def _standard_stack(inputs, taps, offsets, chains):
    """`stencil_stack` with standard TF ops: the batch split into `chains` op sequences."""

    @tf.custom_gradient
    def run(inputs, taps, offsets):
        shape = tf.shape(inputs)
        batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
        depth = taps.shape[0]
        # Each chain gets n images; the batch is padded with `extra` zero images to chains * n
        # (their outputs are dropped, so their upstream gradient, and all they add to the
        # gradients, is exactly zero).
        n = (batch + chains - 1) // chains
        extra = chains * n - batch

        def to_chains(x):
            """(N, H, W, C) -> `chains` tensors (1, H, W, n*C), channel index i*C + c."""
            x = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, height, width, batch * channels])
            return tf.split(tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra * channels]]), chains, axis=3)

        def from_chains(parts):
            x = tf.concat(parts, axis=3)[..., : batch * channels]
            return tf.transpose(tf.reshape(x, [height, width, batch, channels]), [2, 0, 1, 3])

        kernels = tf.unstack(tf.tile(taps[..., None], [1, 1, 1, n, 1]))  # per block: (3, 3, n*C, 1)
        biases = tf.unstack(tf.tile(offsets, [1, n]))  # per block: (n*C,)
        states = [[psi] for psi in to_chains(inputs)]
        for t in range(depth):
            for k in range(chains):
                pre = tf.nn.depthwise_conv2d(states[k][t], kernels[t], _STRIDES, "SAME")
                states[k].append(tf.nn.relu(tf.nn.bias_add(pre, biases[t])))
        outputs = from_chains([s[-1] for s in states])

        def grad(upstream):
            g_psi = to_chains(upstream)
            d_taps, d_offsets = [], []
            for t in reversed(range(depth)):
                for k in range(chains):
                    g = tf.raw_ops.ReluGrad(gradients=g_psi[k], features=states[k][t + 1])
                    d_kernel = tf.nn.depthwise_conv2d_backprop_filter(states[k][t], tf.shape(kernels[t]), g, _STRIDES, "SAME")
                    d_taps.append(tf.reduce_sum(tf.reshape(d_kernel, [3, 3, n, channels]), axis=2))
                    d_offsets.append(tf.reduce_sum(tf.reshape(g, [-1, channels]), axis=0))
                    g_psi[k] = tf.nn.depthwise_conv2d(g, tf.reverse(kernels[t], [0, 1]), _STRIDES, "SAME")
            d_inputs = from_chains(g_psi)  # TF prunes it when nothing upstream needs it (the images)
            # Entry (D-1-t)*chains + k of the lists is block t, chain k: reverse, then sum the chains.
            d_taps = tf.reduce_sum(tf.reshape(tf.stack(d_taps[::-1]), [depth, chains, 3, 3, channels]), axis=1)
            d_offsets = tf.reduce_sum(tf.reshape(tf.stack(d_offsets[::-1]), [depth, chains, channels]), axis=1)
            return d_inputs, d_taps, d_offsets

        return outputs, grad

    return run(inputs, taps, offsets)
