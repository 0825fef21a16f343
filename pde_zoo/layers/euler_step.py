"""The one residual block: an explicit Euler step of a vector field, then ReLU."""

import inspect

import keras
from keras import ops

from pde_zoo.layers.physics_protocol import provides
from pde_zoo.layers.residual_block import ResidualBlock
from pde_zoo.layers.vector_field import VectorField, vector_field_argument

# What a block reads through to its field (`block.alpha` is `block.field.alpha`): the weights and
# the physics of the equation, which the field alone holds.
READ_THROUGH = frozenset(
    {
        "alpha", "beta", "sigma", "rho", "gamma", "mixing", "bias", "kernel", "channels", "drift_scale", "stable",
        "coefficients", "set_coefficients", "mixing_matrix",
    }
)


def field_arguments(field_class):
    """The constructor arguments of a field class and of its field bases (e.g. `StencilField`'s
    initializers), not those of `keras.layers.Layer`."""
    names = set()
    for cls in field_class.__mro__:
        if issubclass(cls, VectorField) and cls is not VectorField and "__init__" in vars(cls):
            names |= set(inspect.signature(cls.__init__).parameters)
    return names - {"self", "kwargs"}


def _check_time_step(time_step):
    if isinstance(time_step, bool) or not isinstance(time_step, (int, float)) or not 0.0 < time_step <= 1.0:
        raise ValueError(
            f"time_step must be a number in (0, 1] (Δt of the Euler step; 1 is the thesis block). "
            f"Received: time_step={time_step!r}"
        )
    return float(time_step)


@keras.saving.register_keras_serializable(package="pde_zoo")
class EulerStep(ResidualBlock):
    """One explicit Euler step of size Δt of a vector field f, then ReLU:

        ψ ← relu( ψ + Δt f(ψ) )      (f at t = 0; `field.explicit_step`)

    For a linear field f(ψ) = Lψ + b this is the thesis's residual block relu(ψ + Δt(Lψ + b))
    (Euler for the linear PDE ψ_t = Lψ + b, then the pointwise ReLU); at Δt = 1 it is also
    exactly one Euler step of the ReLU field relu(ψ + Lψ + b) − ψ (`vector_field`). The field is
    the one source of the weights, the operator, the stencils and the symbol; the step adds only Δt.

    The named blocks are EulerSteps whose field they build from their own arguments (`FIELD`,
    with the field arguments they fix in `FIXED`): `PDE1Block`, `PDE2Block`, `PDEBlock`
    (`PDEField`), `PDESystemBlock` (`PDESystemField`), `ResidualConvBlock` (`LinearConvField`).
    Their configs and weight files are those the zoo has always written: the field's weights are
    saved as the block's own (`save_own_variables`), and the block reads its field's weights and
    physics through (`READ_THROUGH`: `block.alpha`, `block.coefficients()`, ...).

    The physics protocol (`pde_zoo.layers.physics_protocol`) reads the step's kernels from the
    field: `taps()` = `field.step_taps(Δt)` and `offset()` for a depthwise linear field (then the
    block is `fusable` and a `StencilStack` runs it in the fused kernel), `system_taps()` =
    `field.step_system_taps(Δt)` for a linear field mixing channels; a member the field cannot
    give is None here. In TensorFlow training steps a field may compute the whole step, ReLU included,
    as one fused kernel (`field.fused_rectified_step`; `PDESystemField`: the C++ op of
    system_step_op.cc; a `StencilStack` of them runs as one such op), with the same numbers; inference
    always runs the ops above.

    Args:
        field: a `VectorField` (or its serialized config); only for `EulerStep` itself.
        time_step: Δt in (0, 1] (1: the thesis step).
        **kwargs: the field's arguments (named blocks), and `keras.layers.Layer` arguments.

    Example:
    >>> step = EulerStep(PDESystemField(activation=None, stable=True), time_step=0.5)
    >>> y = step(np.random.rand(2, 14, 14, 8).astype("float32"))
    """

    FIELD = None  # the field class a named block builds from its arguments
    FIXED = {}  # field arguments a named block fixes (refused if given otherwise, left out of its config)

    def __init__(self, field=None, time_step=1.0, **kwargs):
        field_kwargs = {}
        if self.FIELD is not None:
            if field is not None:
                raise TypeError(f"{type(self).__name__} builds its own field from its arguments; pass them, not field=.")
            names = field_arguments(self.FIELD)
            field_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
            for key, fixed in self.FIXED.items():
                given = field_kwargs.pop(key, None)
                if given is not None and given != fixed:
                    free = next((c for c in type(self).__mro__ if key not in getattr(c, "FIXED", {key: 0})), EulerStep)
                    where = f"{free.__name__}({key}=...)" if free is not EulerStep else f"EulerStep({self.FIELD.__name__}({key}=...))"
                    raise ValueError(
                        f"{type(self).__name__} fixes {key} = {fixed!r}; use {where} for another value. Received: {key}={given!r}"
                    )
        super().__init__(**kwargs)
        self.time_step = _check_time_step(time_step)
        if self.FIELD is not None:
            field = self.FIELD(**field_kwargs, **self.FIXED, name="field", dtype=self.dtype_policy)
        field = vector_field_argument(field, "EulerStep", "PDEField(pieces=None, activation=None), PDESystemField, LinearConvField")
        field._weights_saved_by_step = True
        self.field = field

    def __getattr__(self, name):
        """The field's weights and physics read through (`READ_THROUGH`); nothing else."""
        if name in READ_THROUGH and "field" in self.__dict__:
            return getattr(self.__dict__["field"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def build(self, input_shape):
        if not self.field.built:
            self.field.build(input_shape)

    def call(self, inputs, training=None):
        from pde_zoo.layers._native import runs_fused_kernel  # (not at import: `python -m` runs _native)

        # A fused kernel only in training steps (and train()'s own scores, `_native.fused_evaluation`):
        # inference graphs and SavedModels hold standard ops.
        if runs_fused_kernel(training):
            fused = self.field.fused_rectified_step(inputs, self.time_step)
            if fused is not None:
                return fused
        return ops.relu(self.field.explicit_step(inputs, self.time_step))

    @property
    def fusable(self):
        """Whether the field is depthwise linear: the step is relu(taps() ⋆ ψ + offset())."""
        return self.field.is_depthwise_linear

    def _at_time_step(self, member):
        """() -> `field.<member>(Δt)`, or None when the field does not provide `member`."""
        if not provides(self.field, member):
            return None
        return lambda: getattr(self.field, member)(self.time_step)

    @property
    def taps(self):
        """() -> (3, 3, C): the kernel of ψ + Δt Lψ (`field.step_taps`); None when the field has none."""
        return self._at_time_step("step_taps")

    @property
    def offset(self):
        """() -> the per-channel constant Δt b (C,) or None (`field.step_offset`); None when the field has none."""
        return self._at_time_step("step_offset")

    @property
    def system_taps(self):
        """() -> (3, 3, C_in, C_out): the kernel of ψ + Δt Aψ (`field.step_system_taps`); None when
        the field has none (a depthwise field: the physics puts its stencils on the diagonal)."""
        return self._at_time_step("step_system_taps")

    def save_own_variables(self, store):
        """The field's weights, as this block's own (the layout of every block file the zoo wrote)."""
        keras.layers.Layer.save_own_variables(self.field, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self.field, store)

    def get_config(self):
        config = super().get_config()
        if self.FIELD is None:
            config["field"] = keras.saving.serialize_keras_object(self.field)
        else:
            names = field_arguments(self.FIELD) - set(self.FIXED)
            config.update({k: v for k, v in self.field.get_config().items() if k in names})
        config["time_step"] = self.time_step
        return config
