"""The step-size controller of the adaptive methods (an integral controller, as torchdiffeq's).

For a step of size h from y to y1 with local error estimate err (`_tableaus`), the error is
measured relative to the tolerances by

    ratio = max over state tensors of RMS( err / (atol + rtol max(|y|, |y1|)) )

(the RMS norm for a single tensor; torchdiffeq's mixed norm for a tuple). The step is accepted
when ratio <= 1. With err = O(h^p) (p the method's order, the embedded solution's plus one) the
step that would have given ratio = 1 is h ratio^(-1/p), so the next step is

    h_next = h · clip(safety · ratio^(-1/p), dfactor, ifactor)

never smaller than h after an accepted step, and dfactor · h when the ratio is NaN. After an
accepted step that was clipped to land on an output time, h_next is at least the step proposed
before the clip. The first step follows Hairer, Nørsett & Wanner (Solving ODEs I, II.4), as
torchdiffeq's `_select_initial_step`.

Step sizes and ratios are computed from stop-gradient values: differentiating through the
solver differentiates the discrete solution on the steps it chose, as torchdiffeq does.
"""

import math
from dataclasses import dataclass

from keras import ops

__all__ = ["IController", "mean_square_max"]


def mean_square_max(tensors):
    """max over tensors of mean(x²): the squared mixed RMS norm."""
    result = None
    for x in tensors:
        ms = ops.mean(ops.square(x))
        result = ms if result is None else ops.maximum(result, ms)
    return result


def _norm(tensors):
    return ops.sqrt(mean_square_max(tensors))


@dataclass(frozen=True)
class IController:
    """Integral step-size controller: h_next = h · clip(safety · ratio^(-1/p), dfactor, ifactor).

    Args:
        safety: factor below 1 that aims under the step the error estimate allows.
        ifactor: most a step may grow (>= 1).
        dfactor: most a step may shrink, in (0, 1].

    Raises:
        ValueError: a factor out of its range.
    """

    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2

    def __post_init__(self):
        rules = {  # field -> (test, the range in words)
            "safety": (lambda v: 0.0 < v <= 1.0, "(0, 1]"),
            "ifactor": (lambda v: 1.0 <= v < math.inf, "[1, inf)"),
            "dfactor": (lambda v: 0.0 < v <= 1.0, "(0, 1]"),
        }
        for field, (test, words) in rules.items():
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not test(value):
                raise ValueError(f"IController: `{field}` must lie in {words}. Received: {field}={value!r}")

    def initial_step(self, func, t0, y, f0, rtol, atol, order):
        """Hairer's heuristic for the first step (one evaluation of f):

            d0 = ‖y0 / s‖, d1 = ‖f0 / s‖ with s = atol + rtol |y0|;  h0 = 0.01 d0 / d1
            d2 = ‖(f(t0 + h0, y0 + h0 f0) - f0) / s‖ / h0;  h1 = (0.01 / max(d1, d2))^(1/p)
            h = min(100 h0, h1)    (h0 = 1e-6 when d0 or d1 < 1e-5; h1 = max(1e-6, 1e-3 h0) when d1, d2 <= 1e-15)
        """
        y = tuple(ops.stop_gradient(x) for x in y)
        f0 = tuple(ops.stop_gradient(x) for x in f0)
        scale = tuple(ops.add(atol, ops.multiply(ops.abs(x), rtol)) for x in y)
        d0 = _norm([ops.divide(x, s) for x, s in zip(y, scale)])
        d1 = _norm([ops.divide(x, s) for x, s in zip(f0, scale)])
        small = ops.logical_or(ops.less(d0, 1e-5), ops.less(d1, 1e-5))
        h0 = ops.where(small, 1e-6, ops.divide(ops.multiply(d0, 0.01), ops.where(small, 1.0, d1)))
        y1 = tuple(ops.add(x, ops.multiply(f, h0)) for x, f in zip(y, f0))
        f1 = tuple(ops.stop_gradient(x) for x in func(ops.add(t0, h0), y1))
        d2 = ops.divide(_norm([ops.divide(ops.subtract(a, b), s) for a, b, s in zip(f1, f0, scale)]), h0)
        tiny = ops.logical_and(ops.less_equal(d1, 1e-15), ops.less_equal(d2, 1e-15))
        dmax = ops.where(tiny, 1.0, ops.maximum(d1, d2))
        h1 = ops.where(tiny, ops.maximum(1e-6, ops.multiply(h0, 1e-3)), ops.power(ops.divide(0.01, dmax), 1.0 / order))
        return ops.minimum(ops.multiply(h0, 100.0), h1)

    def error_ratio_squared(self, err, y, y1, rtol, atol):
        """ratio² (module docstring), from stop-gradient values."""
        stop = ops.stop_gradient
        return mean_square_max(
            [
                ops.divide(e, ops.add(atol, ops.multiply(ops.maximum(ops.abs(a), ops.abs(b)), rtol)))
                for e, a, b in zip((stop(x) for x in err), (stop(x) for x in y), (stop(x) for x in y1))
            ]
        )

    def adapt(self, ratio_squared, dt, h, clipped, order):
        """(accept, h_next) for a step of size dt (h before clipping to an output time)."""
        accept = ops.less_equal(ratio_squared, 1.0)  # ratio <= 1  <=>  ratio² <= 1
        # safety · ratio^(-1/p) with ratio^(-1/p) = (ratio²)^(-1/(2p))
        factor = ops.clip(ops.multiply(ops.power(ratio_squared, -0.5 / order), self.safety), self.dfactor, self.ifactor)
        factor = ops.where(accept, ops.maximum(factor, 1.0), ops.where(ops.isnan(ratio_squared), self.dfactor, factor))
        h_next = ops.multiply(ops.stop_gradient(dt), factor)
        h_next = ops.where(ops.logical_and(accept, clipped), ops.maximum(h_next, h), h_next)
        return accept, h_next
