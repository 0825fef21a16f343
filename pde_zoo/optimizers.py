"""Adam with one fused op per variable on TensorFlow, and the per-step scalars computed once.

The zoo's models have five scalar weights per block (250 at depth 50). Keras's Adam spends
about ten small ops per variable per step (recomputing lr·sqrt(1-β₂ᵗ)/(1-β₁ᵗ) each time),
which on CPU costs more than the blocks' own maths. This Adam computes β₁ᵗ, β₂ᵗ once per step
and, on the TensorFlow backend, updates all float32 variables with one C++ op (`PdeZooApplyAdam`,
the arithmetic of TF's `ResourceApplyAdam` for a list of variables), or, where that does not apply
(a tf.distribute strategy, other dtypes, sparse gradients, no compiler), each variable with TF's
fused `ResourceApplyAdam` kernel (one op each); other backends use the same formula in `keras.ops`. The update is exactly
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
        self._slot_handles = {}  # variable indices -> packed handles of their moments (`_packed_slots`)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        constants = self._step_constants(learning_rate)
        if self._apply_all_at_once(grads, trainable_variables, constants):
            return
        # The per-step constants travel to `update_step` in the learning-rate argument, which
        # every backend passes through unchanged; on TensorFlow under a tf.distribute strategy
        # it crosses `merge_call` and `extended.update` per replica like the learning rate
        # itself (nothing is kept on `self`, which the replicas' threads share).
        super()._backend_update_step(grads, trainable_variables, constants)

    def _apply_all_at_once(self, grads, trainable_variables, constants):
        """On TensorFlow, one C++ op updates every variable (`_tf_variables.apply_adam`, the arithmetic of
        `ResourceApplyAdam`) where it applies: float32 variables, dense gradients, no tf.distribute
        strategy, the library built. Returns whether it did."""
        if keras.backend.backend() != "tensorflow":
            return False
        import tensorflow as tf

        from pde_zoo.layers._tf_variables import apply_adam, list_ops

        native = list_ops(trainable_variables)
        if native is None or any(isinstance(g, tf.IndexedSlices) for g in grads):
            return False
        apply_adam(
            native, trainable_variables, self._packed_slots(trainable_variables), [tf.cast(g, tf.float32) for g in grads],
            constants.beta_1_power, constants.beta_2_power, constants.lr, constants.beta_1, constants.beta_2,
            constants.epsilon,
        )
        return True

    def _packed_slots(self, variables):
        """The handles of m_1..m_N, v_1..v_N of `variables`, packed once per variable list (`pack_handles`)."""
        from pde_zoo.layers._tf_variables import pack_handles

        index = [self._get_variable_index(v) for v in variables]
        key = tuple(index)
        if key not in self._slot_handles:
            self._slot_handles[key] = pack_handles([self._momentums[i] for i in index] + [self._velocities[i] for i in index])
        return self._slot_handles[key]

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


def learning_rate_schedule(recipe, steps_per_epoch):
    """The learning rate of `recipe` (a `pde_zoo.recipes.Recipe`) per optimizer step.

    "constant": the float `recipe.learning_rate`. "cosine": with T = (schedule_epochs or
    epochs)·S steps in all (S = `steps_per_epoch`) and W = min(warmup_epochs·S, ⌊T/2⌋) warm-up
    steps (a warm-up never takes more than half the schedule: a one-epoch run of a recipe with
    a one-epoch warm-up warms up, then decays),

        lr(k) = peak · k / W                                      for k < W,
        lr(k) = peak · ½ (1 + cos(π · min(1, (k − W) / (T − W − 1))))   for k ≥ W,

    so the schedule reaches exactly 0 at the last step k = T − 1 of a run that completes it
    (`keras.optimizers.schedules.CosineDecay`, built from the epochs the run will train).
    """
    if recipe.schedule == "constant":
        return recipe.learning_rate
    total = (recipe.schedule_epochs or recipe.epochs) * steps_per_epoch
    warm = min(recipe.warmup_epochs * steps_per_epoch, total // 2)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warm else recipe.learning_rate, decay_steps=max(1, total - warm - 1),
        warmup_target=recipe.learning_rate if warm else None, warmup_steps=warm,
    )


def compile_model(model, learning_rate=None, *, recipe=None, steps_per_epoch=1, steps_per_execution=1):
    """Compile `model` for `recipe` (default the thesis recipe): `Adam` with the recipe's
    learning-rate schedule (`learning_rate_schedule`), sparse categorical cross-entropy, accuracy.
    `learning_rate` replaces the recipe's peak learning rate. `steps_per_execution` is Keras's:
    training steps per call of the compiled step function (the same steps in the same order;
    per-batch callbacks see every k-th batch). Returns the model."""
    from pde_zoo.recipes import RECIPES

    recipe = recipe or RECIPES["thesis"]
    if learning_rate is not None:
        recipe = recipe.replace(learning_rate=learning_rate)
    model.compile(optimizer=Adam(learning_rate_schedule(recipe, steps_per_epoch)), loss=recipe.loss, metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)
    return model
