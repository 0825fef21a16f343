"""Adam with the per-step scalars computed once per step instead of once per variable.

The zoo's models have five scalar weights per block (250 at depth 50); Keras's Adam
recomputes lr·sqrt(1-β₂ᵗ)/(1-β₁ᵗ) (about ten scalar ops) for every variable, which on CPU
costs more than the blocks' own maths. The update is exactly Adam (Kingma & Ba, Alg. 1):

    m ← m + (1-β₁)(g - m),   v ← v + (1-β₂)(g² - v),   θ ← θ - α_t m / (√v + ε),
    α_t = lr √(1-β₂ᵗ) / (1-β₁ᵗ)

with α_t shared by all variables of the step. Tests hold it equal to `keras.optimizers.Adam`.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="pde_zoo")
class Adam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` (same arguments, same numbers, no amsgrad) with α_t hoisted out of the per-variable loop."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("pde_zoo.optimizers.Adam does not implement amsgrad; use keras.optimizers.Adam.")

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        step = ops.cast(self.iterations + 1, "float32")
        self._alpha_t = ops.cast(learning_rate, "float32") * ops.sqrt(1 - ops.power(self.beta_2, step)) / (1 - ops.power(self.beta_1, step))
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            del self._alpha_t

    def update_step(self, gradient, variable, learning_rate):
        alpha = ops.cast(self._alpha_t, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), self.epsilon)))
