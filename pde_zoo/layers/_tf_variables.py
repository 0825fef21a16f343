"""Adam on a list of float32 variables with one C++ op (`variable_list_op.cc`).

A depth-50 thesis network has 250 scalar weights. Keras's Adam on TensorFlow updates each with its own
`ResourceApplyAdam`, and each of its 500 moment variables is one more captured input of the training
step's graph; on CPU those per-variable costs, a few microseconds each per step, were as large as
the 50 blocks' arithmetic (docs/performance.md). `apply_adam` updates all variables with one op, the
same arithmetic as TF's `ResourceApplyAdam`, the moments' handles packed into one tensor
(`pack_handles`).

`list_ops(variables)` says whether it applies: TensorFlow, float32 variables on CPU, no
tf.distribute strategy in scope (distributed variables keep TF's per-variable ops, which know how
to update each replica), and the library built (`_native.stencil_ops`). The op lives only in
training steps, never in a saved graph.
"""

import tensorflow as tf

from pde_zoo.layers._tf_stencil import native_ops, worker_threads


def _tf_variable(variable):
    """The tf.Variable behind a Keras variable (a tf.Variable as it is)."""
    return variable if isinstance(variable, tf.Variable) else variable.value


def list_ops(variables):
    """The op module when one op may update all of `variables` (see the module doc), else None."""
    if not variables or tf.distribute.has_strategy():
        return None
    variables = [_tf_variable(v) for v in variables]
    if any(not isinstance(v, tf.Variable) or v.dtype != tf.float32 for v in variables):
        return None
    return native_ops(tf.float32)


def pack_handles(variables):
    """The handles of `variables` as one (N,) resource tensor, made eagerly (also when called while a
    graph is traced): a graph that captures it has one input for all N, where each variable would be
    its own (every captured input costs a few microseconds per call of a step function)."""
    with tf.init_scope():
        return tf.stack([_tf_variable(v).handle for v in variables])


def apply_adam(native, variables, slots, gradients, beta_1_power, beta_2_power, lr, beta_1, beta_2, epsilon):
    """One Adam step on every variable (`ResourceApplyAdam`'s arithmetic), as one op.

    Args:
        variables: N float32 variables; gradients: their N gradients.
        slots: `pack_handles(m_1..m_N, v_1..v_N)`, the first and second moments in the same order.
        beta_1_power, ...: float32 scalars, as `ResourceApplyAdam`'s.
    """
    return native.pde_zoo_apply_adam(
        [_tf_variable(v).handle for v in variables], slots, gradients, beta_1_power, beta_2_power, lr, beta_1, beta_2,
        epsilon, threads=worker_threads(),
    )
