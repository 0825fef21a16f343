"""Continuous depth (thesis chapter V): ψ(t1) = ODESolve(ψ(t0), f, t0, t1, θ) as a layer."""

import keras

from pde_zoo.layers.vector_field import vector_field_argument
from pde_zoo.ode import METHODS, odeint


def _concrete(stats):
    """The stats as Python ints when they hold values (eager), else None (graph / jit tracing)."""
    try:
        return {k: int(keras.ops.convert_to_numpy(v)) for k, v in stats.items()}
    except Exception:  # noqa: BLE001  symbolic tensors of any backend refuse conversion
        return None


@keras.saving.register_keras_serializable(package="pde_zoo")
class ODEBlock(keras.layers.Layer):
    """The state at t1 of dψ/dt = field(t, ψ), ψ(t0) = inputs (thesis eq 41-44; Chen et al. 2018).

    A residual stack ψ_{n+1} = ψ_n + f(t_n, ψ_n) is the explicit Euler method of this ODE at
    Δt = 1; here a solver of `pde_zoo.ode` owns the method and the step. Gradients are by the
    adjoint method by default (memory independent of the number of steps), or by autodiff
    through the solver (`adjoint=False`).

    Args:
        field: a `VectorField` layer (e.g. `PDEField`, `ConvField`) or its serialized config.
        t0, t1: the integration interval, t0 < t1.
        method: a key of `pde_zoo.ode.METHODS` (fixed step: "euler", "midpoint", "rk4";
            adaptive: "dopri5", "bosh3", "adaptive_heun").
        step_size: step of a fixed method (required there); for an adaptive one an optional first step.
        rtol, atol: tolerances of the adaptive methods. Defaults 1e-3, those of the MNIST ODE-Net of Chen et al.
            (the `odeint` defaults, 1e-6 / 1e-8, are for accuracy studies, not training).
        adjoint: gradients by the adjoint method (True) or through the solver (False).
        max_steps: most step attempts of an adaptive solve.
        **kwargs: `keras.layers.Layer` arguments.

    An eager call runs each segment's solve compiled (`odeint`'s eager path: `tf.function` /
    `jax.jit`, cached per signature); inside a traced function (`fit`, `predict`, export) the
    solver's ops join that trace.

    Attributes:
        last_stats: forward solver statistics of the latest call, summed over the segments
            (dict of Python ints: nfe, steps, rejected) when it ran eagerly, else None. The adjoint
            pass's own counts: `pde_zoo.ode.record_backward_stats()` around the gradient.

    Example:
    >>> block = ODEBlock(PDEField(drift_scale=-0.125), t1=1.0, method="rk4", step_size=0.25)
    >>> y = block(np.random.rand(2, 28, 28, 1).astype("float32"))
    """

    def __init__(
        self, field, t0=0.0, t1=1.0, method="dopri5", step_size=None, rtol=1e-3, atol=1e-3, adjoint=True,
        max_steps=1000, **kwargs,
    ):
        super().__init__(**kwargs)
        field = vector_field_argument(field, "ODEBlock", "PDEField, ConvField; for a residual block use odeint(block.vector_field, ...)")
        if not float(t1) > float(t0):
            raise ValueError(f"ODEBlock needs t1 > t0. Received: t0={t0}, t1={t1}")
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; choose one of {sorted(METHODS)}.")
        if step_size is None and not METHODS[method].adaptive:
            raise ValueError(f"method={method!r} is a fixed-step method and needs step_size. Received: step_size=None")
        self.field = field
        self.t0, self.t1 = float(t0), float(t1)
        self.method, self.step_size = method, None if step_size is None else float(step_size)
        self.rtol, self.atol, self.adjoint, self.max_steps = float(rtol), float(atol), bool(adjoint), int(max_steps)
        self.last_stats = None

    def build(self, input_shape):
        if not self.field.built:
            self.field.build(input_shape)

    def call(self, inputs):
        """Solve segment by segment between the field's `breakpoints` (one solve when it has none)."""
        bounds = [self.t0, *self.field.breakpoints(self.t0, self.t1), self.t1]
        psi, totals = inputs, None
        for a, b in zip(bounds[:-1], bounds[1:]):
            ys, stats = odeint(
                self.field.on_segment(a, b), psi, [a, b], method=self.method, rtol=self.rtol, atol=self.atol,
                step_size=self.step_size, adjoint=self.adjoint, adjoint_params=self.field.trainable_variables,
                max_steps=self.max_steps, return_stats=True,
            )
            psi = ys[-1]
            totals = stats if totals is None else {k: totals[k] + v for k, v in stats.items()}
        self.last_stats = _concrete(totals)
        return psi

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "field": keras.saving.serialize_keras_object(self.field),
                "t0": self.t0, "t1": self.t1, "method": self.method, "step_size": self.step_size,
                "rtol": self.rtol, "atol": self.atol, "adjoint": self.adjoint, "max_steps": self.max_steps,
            }
        )
        return config
