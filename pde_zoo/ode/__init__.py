"""Neural-ODE solvers in Keras 3 (chapter V, continuous depth): dy/dt = f(t, y).

- `odeint(func, y0, t, method="dopri5", rtol=1e-6, atol=1e-8, step_size=None, adjoint=False,
  adjoint_params=None, max_steps=10_000, return_stats=False)`: y at the output times `t`,
  stacked on a new axis 0; gradients by autodiff through the solver or by the adjoint method.
- `METHODS`: name -> solver (`euler`, `midpoint`, `rk4` fixed step; `dopri5` adaptive).
- `last_backward_stats()`: evaluation counts of the latest adjoint backward pass;
  `record_backward_stats()`: a context collecting every backward pass inside it.

Tableaus and the step-size controller live in `pde_zoo.ode.solvers`.
"""

from pde_zoo.ode.odeint import last_backward_stats, odeint, record_backward_stats
from pde_zoo.ode.solvers import METHODS

__all__ = ["METHODS", "last_backward_stats", "odeint", "record_backward_stats"]
