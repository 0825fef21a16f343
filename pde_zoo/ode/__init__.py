"""Neural-ODE solvers in Keras 3 (chapter V, continuous depth): dy/dt = f(t, y).

- `odeint(func, y0, t, method="dopri5", rtol=1e-6, atol=1e-8, step_size=None, adjoint=False,
  adjoint_params=None, max_steps=10_000, return_stats=False, compile=True)`: y at the output
  times `t`, stacked on a new axis 0; gradients by autodiff through the solver or by the adjoint
  method; eager calls run compiled, cached per signature.
- `METHODS`: name -> `RungeKutta` solver: `euler`, `midpoint`, `rk4` (fixed step); `dopri5`,
  `bosh3`, `adaptive_heun` (adaptive). `register_tableau(ButcherTableau(...))` adds a method.
- `ODEStats`: the statistics `odeint(..., return_stats=True)` returns (forward NFE, accepted and
  rejected steps; the adjoint backward solves of gradients through the call).
- `solve_steps(func, y0, t, ...)`: the same solve run step by step, eagerly, returning every
  accepted step's start time and size (`SolveSteps`) with counts equal to `odeint`'s (analysis).
- `record_backward_stats()`: a context collecting every adjoint backward solve inside it;
  `last_backward_stats()`: the latest one.

Layout: `_tableaus` (Butcher tableaus as data, validated), `_rk` (one explicit Runge–Kutta,
fixed-step and adaptive; the registry), `_controller` (step-size control), `_adjoint`,
`_stats`, `_steps` (step-by-step solves for analysis), `_backend` (TensorFlow / JAX loops, checks, compilation), `_compile` (the cache of
compiled eager solves), `_odeint` (arguments and dispatch).
"""

from pde_zoo.ode._controller import IController
from pde_zoo.ode._odeint import odeint
from pde_zoo.ode._rk import METHODS, RungeKutta, register_tableau
from pde_zoo.ode._stats import ODEStats, last_backward_stats, record_backward_stats
from pde_zoo.ode._steps import SolveSteps, solve_steps
from pde_zoo.ode._tableaus import ButcherTableau

__all__ = [
    "METHODS", "ButcherTableau", "IController", "ODEStats", "RungeKutta", "SolveSteps", "last_backward_stats", "odeint",
    "record_backward_stats", "register_tableau", "solve_steps",
]
