"""Adam with one fused op per variable on TensorFlow, and the per-step scalars computed once.

The zoo's models have five scalar weights per block (250 at depth 50). Keras's Adam spends
about ten small ops per variable per step (recomputing lr·sqrt(1-β₂ᵗ)/(1-β₁ᵗ) each time),
which on CPU costs more than the blocks' own maths. This Adam computes β₁ᵗ, β₂ᵗ once per step
and, on the TensorFlow backend, updates each variable with TF's fused `ResourceApplyAdam`
kernel (one op); other backends use the same formula in `keras.ops`. The update is exactly
Adam (Kingma & Ba, Alg. 1), in Keras's order of operations:

    m ← m + (1-β₁)(g - m),   v ← v + (1-β₂)(g² - v),   θ ← θ - α_t m / (√v + ε),
    α_t = lr √(1-β₂ᵗ) / (1-β₁ᵗ)

Slot variables are Keras's own (`_momentums`, `_velocities`), so checkpoints are compatible.
Tests hold it equal to `keras.optimizers.Adam` and to a NumPy Adam, on one device and under
`tf.distribute.MirroredStrategy`.
"""

import collections

import keras
from keras import ops

_StepConstants = collections.namedtuple("_StepConstants", "lr beta_1_power beta_2_power alpha beta_1 beta_2 epsilon")


@keras.saving.register_keras_serializable(package="pde_zoo")
class Adam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` (same arguments, same numbers, no amsgrad), fused per variable on TensorFlow."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("pde_zoo.optimizers.Adam does not implement amsgrad; use keras.optimizers.Adam.")

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # The per-step constants travel to `update_step` in the learning-rate argument, which
        # every backend passes through unchanged; on TensorFlow under a tf.distribute strategy
        # it crosses `merge_call` and `extended.update` per replica like the learning rate
        # itself (nothing is kept on `self`, which the replicas' threads share).
        super()._backend_update_step(grads, trainable_variables, self._step_constants(learning_rate))

    def _step_constants(self, learning_rate):
        step = ops.cast(self.iterations + 1, "float32")
        lr = ops.cast(learning_rate, "float32")
        beta_1_power, beta_2_power = ops.power(self.beta_1, step), ops.power(self.beta_2, step)
        return _StepConstants(
            lr, beta_1_power, beta_2_power, lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power),
            *(ops.convert_to_tensor(c, "float32") for c in (self.beta_1, self.beta_2, self.epsilon)),
        )

    def update_step(self, gradient, variable, learning_rate):
        constants = learning_rate if isinstance(learning_rate, _StepConstants) else self._step_constants(learning_rate)
        lr, beta_1_power, beta_2_power, alpha, beta_1, beta_2, epsilon = (ops.cast(c, variable.dtype) for c in constants)
        gradient = ops.cast(gradient, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power, beta2_power=beta_2_power,
                lr=lr, beta1=beta_1, beta2=beta_2, epsilon=epsilon, grad=gradient,
            )
            return
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - beta_2))
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), epsilon)))
