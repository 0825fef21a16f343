"""pde_zoo.ode's methods as data: Butcher tableaus validated when registered, one Runge–Kutta
for all of them, the step-size controller, and the two methods added as tableaus only —
`bosh3` (Bogacki–Shampine 3(2)) and `adaptive_heun` (Heun–Euler 2(1)) — against exact
solutions at their tolerances and for their observed orders."""

import dataclasses

import numpy as np
import pytest
from keras import ops

from pde_zoo.ode import METHODS, ButcherTableau, IController, RungeKutta, odeint, register_tableau
from pde_zoo.ode import _tableaus

ADAPTIVE = {"dopri5": 5, "bosh3": 3, "adaptive_heun": 2}  # method -> order p (embedded: p - 1)


def np_(x):
    return ops.convert_to_numpy(x)


def rotation(t, y):
    """y'' = -y as the 2-vector (y, y'): exact solution (cos t, -sin t) from (1, 0)."""
    return ops.stack([y[1], -y[0]])


# --------------------------------------------------------------------------- tableaus


def test_registered_methods_are_the_tableaus():
    assert list(METHODS) == ["euler", "midpoint", "rk4", "dopri5", "bosh3", "adaptive_heun"]
    for tableau in _tableaus.TABLEAUS:
        solver = METHODS[tableau.name]
        assert isinstance(solver, RungeKutta) and solver.tableau is tableau
        assert (solver.order, solver.stages, solver.adaptive) == (tableau.order, len(tableau.c), tableau.b_embedded is not None)
    assert [m for m in METHODS if METHODS[m].fsal] == ["dopri5", "bosh3"]  # last stage = f(t + h, y1)
    assert {m: METHODS[m].evaluations_per_attempt for m in ADAPTIVE} == {"dopri5": 6, "bosh3": 3, "adaptive_heun": 2}
    assert all(isinstance(METHODS[m].controller, IController) for m in ADAPTIVE)
    assert all(METHODS[m].controller is None for m in ("euler", "midpoint", "rk4"))


@pytest.mark.parametrize("tableau", _tableaus.TABLEAUS, ids=lambda t: t.name)
def test_tableaus_satisfy_their_rules_exactly_in_rationals(tableau):
    """Σ_j a_ij = c_i, Σ b_i = Σ b̂_i = 1, and the quadrature conditions of their orders, with
    the coefficients read back as fractions (the floats are the nearest to the rationals)."""
    from fractions import Fraction

    def q(x):
        return Fraction(x).limit_denominator(10**6)

    for ci, row in zip(tableau.c, tableau.a):
        assert sum(map(q, row)) == q(ci)
    for weights, order in ((tableau.b, tableau.order), (tableau.b_embedded, tableau.order - 1)):
        if weights is None:
            continue
        for k in range(1, order + 1):
            assert sum(q(w) * q(ci) ** (k - 1) for w, ci in zip(weights, tableau.c)) == Fraction(1, k)


BOSH3 = _tableaus.BOSH3


@pytest.mark.parametrize(
    "change, rule",
    [
        (dict(a=((), (0.5,), (0.0, 0.7), (2 / 9, 1 / 3, 4 / 9))), r"Σ_j a_ij = c_i broken at row 2"),
        (dict(b=(2 / 9, 1 / 3, 4 / 9, 0.1)), r"Σ_i b_i = 1 broken"),
        (dict(b_embedded=(7 / 24, 1 / 4, 1 / 3, 1 / 4)), r"Σ_i b_embedded_i = 1 broken"),
        (dict(order=4), r"Σ_i b_i c_i\^3 = 1/4 \(needed for order 4\) broken"),
        (dict(c=(0.1, 0.5, 0.75, 1.0), a=((), (0.4,), (0.0, 0.65), (2 / 9, 1 / 3, 4 / 9 - 0.1))), r"c_1 = 0"),
        (dict(a=((), (0.5,), (0.75,), (2 / 9, 1 / 3, 4 / 9))), r"strictly lower-triangular A, row 2"),
        (dict(b=(2 / 9, 1 / 3, 4 / 9)), r"one entry per stage"),
        (dict(b_embedded=(7 / 24, 1 / 4, 11 / 24)), r"b_embedded needs one entry per stage"),
        (dict(order=0), r"`order` must be a positive int"),
        (dict(name=""), r"non-empty str name"),
        (dict(b=(2 / 9, 1 / 3, float("nan"), 0.0)), r"finite number"),
    ],
)
def test_inconsistent_tableau_is_refused_when_registered(change, rule):
    bad = dataclasses.replace(BOSH3, **{"name": "bosh3_broken", **change})
    with pytest.raises(ValueError, match=rule):
        register_tableau(bad)
    assert "bosh3_broken" not in METHODS


def test_register_tableau_adds_a_method_and_refuses_a_taken_name():
    with pytest.raises(ValueError, match="registered already"):
        register_tableau(BOSH3)
    with pytest.raises(TypeError, match="ButcherTableau"):
        register_tableau({"name": "x"})
    cautious = IController(safety=0.5, ifactor=2.0, dfactor=0.5)
    solver = register_tableau(dataclasses.replace(BOSH3, name="bosh3_cautious"), cautious)
    try:
        assert METHODS["bosh3_cautious"] is solver and solver.controller == cautious
        y0, t = np.array([1.0, 0.0]), [0.0, 3.0]
        ys, stats = odeint(rotation, y0, t, method="bosh3_cautious", rtol=1e-6, atol=1e-8, return_stats=True)
        ys_default, stats_default = odeint(rotation, y0, t, method="bosh3", rtol=1e-6, atol=1e-8, return_stats=True)
        np.testing.assert_allclose(np_(ys)[-1], [np.cos(3.0), -np.sin(3.0)], atol=1e-5)
        assert int(stats["steps"]) > int(stats_default["steps"])  # a lower safety factor takes smaller steps
    finally:
        del METHODS["bosh3_cautious"]


@pytest.mark.parametrize(
    "kwargs, field", [(dict(safety=0.0), "safety"), (dict(safety=1.5), "safety"), (dict(ifactor=0.5), "ifactor"),
                      (dict(dfactor=0.0), "dfactor"), (dict(dfactor=2.0), "dfactor"), (dict(safety=float("nan")), "safety")],
)
def test_controller_factors_are_checked(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}` must lie in"):
        IController(**kwargs)
    assert IController() == IController(safety=0.9, ifactor=10.0, dfactor=0.2)  # torchdiffeq's factors


# --------------------------------------------------------------------------- the new methods


@pytest.mark.parametrize("method, tolerances", [("bosh3", (1e-3, 1e-6, 1e-9)), ("adaptive_heun", (1e-3, 1e-5))])
def test_new_adaptive_methods_meet_their_tolerance_on_rotation(method, tolerances):
    t = np.linspace(0.0, 6.0, 7)
    exact = np.stack([np.cos(t), -np.sin(t)], axis=1)
    for rtol in tolerances:
        atol = rtol * 1e-2
        ys, stats = odeint(rotation, np.array([1.0, 0.0]), t, method=method, rtol=rtol, atol=atol, max_steps=50_000, return_stats=True)
        err = np.abs(np_(ys) - exact)
        assert np.all(err <= 10 * (atol + rtol * np.abs(exact)) + 10 * rtol), (rtol, err.max())
        assert err.max() > 1e-3 * rtol  # not trivially exact: the tolerance is what bounds it
        attempts = int(stats["steps"]) + int(stats["rejected"])
        assert int(stats["nfe"]) == 2 + METHODS[method].evaluations_per_attempt * attempts


@pytest.mark.parametrize("method", ["bosh3", "adaptive_heun"])
def test_new_methods_solve_exponential_decay(method):
    lam, t = -0.8, np.array([0.0, 0.3, 1.1, 2.0])
    y0 = np.array([1.0, -2.0, 0.5])
    ys = np_(odeint(lambda t, y: lam * y, y0, t, method=method, rtol=1e-8, atol=1e-10, max_steps=100_000))
    np.testing.assert_allclose(ys, np.exp(lam * t)[:, None] * y0, rtol=0, atol={"bosh3": 1e-7, "adaptive_heun": 1e-7}[method])


@pytest.mark.parametrize("method", sorted(ADAPTIVE))
def test_observed_order_with_fixed_steps(method):
    """Slope of log(error) against log(h) of the tableau's solution weights b on equal steps
    (the generic step of `RungeKutta`), on the rotation over [0, 2]."""
    solver = METHODS[method]
    hs = np.array([0.4, 0.2, 0.1, 0.05]) if method == "dopri5" else np.array([0.2, 0.1, 0.05, 0.025])
    exact = np.array([np.cos(2.0), -np.sin(2.0)])
    errors = []
    for h in hs:
        (y,), _ = solver.fixed_interval(lambda t, y: (rotation(t, y[0]),), (ops.convert_to_tensor([1.0, 0.0], "float64"),), 0.0, 2.0, h, "float64", True)
        errors.append(np.abs(np_(y) - exact).max())
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert abs(slope - ADAPTIVE[method]) <= 0.3, (slope, errors)


@pytest.mark.parametrize("method", sorted(ADAPTIVE))
def test_embedded_error_estimate_has_the_order_of_the_method(method):
    """err = y1 - ŷ1 = O(h^p) for one step: the controller's h ratio^(-1/p) rests on it."""
    solver = METHODS[method]
    hs = np.array([0.4, 0.2, 0.1, 0.05])
    norms = []
    for h in hs:
        y = (ops.convert_to_tensor([1.0, 0.3], "float64"),)
        f = lambda t, y: (ops.stack([ops.sin(y[0][1]) + t, -y[0][0] * (1.0 + t)]),)  # noqa: E731
        k1 = f(ops.convert_to_tensor(0.2, "float64"), y)
        _, _, err = solver.embedded_step(f, ops.convert_to_tensor(0.2, "float64"), ops.convert_to_tensor(h, "float64"), y, k1)
        norms.append(np.abs(np_(err[0])).max())
    slope = np.polyfit(np.log(hs), np.log(norms), 1)[0]
    assert abs(slope - ADAPTIVE[method]) <= 0.35, (slope, norms)


@pytest.mark.parametrize("method", sorted(ADAPTIVE))
def test_observed_order_of_the_adaptive_solve(method):
    """With err = O(h^p) held at the tolerance, h ∝ tol^(1/p): the accepted steps grow as
    tol^(-1/p) (slope of log(steps) against log(tol))."""
    tolerances = np.array([1e-4, 1e-5, 1e-6, 1e-7]) if method != "adaptive_heun" else np.array([1e-3, 1e-4, 1e-5, 1e-6])
    steps = []
    for tol in tolerances:
        _, stats = odeint(rotation, np.array([1.0, 0.0]), [0.0, 6.0], method=method, rtol=tol, atol=tol * 1e-2, max_steps=50_000, return_stats=True)
        steps.append(int(stats["steps"]))
    slope = np.polyfit(np.log(tolerances), np.log(steps), 1)[0]
    assert abs(slope + 1 / ADAPTIVE[method]) <= 0.06, (slope, steps)


def test_new_methods_refuse_as_dopri5_does():
    f = lambda t, y: -1000.0 * y  # noqa: E731
    for method in ("bosh3", "adaptive_heun"):
        with pytest.raises(RuntimeError, match=rf"{method} exceeded max_steps=25 .*raise max_steps or loosen rtol/atol"):
            odeint(f, np.ones(3), [0.0, 10.0], method=method, max_steps=25)
    with pytest.raises(ValueError, match="rtol"):
        odeint(f, np.ones(3), [0.0, 1.0], method="bosh3", rtol=0.0)


def test_tableau_properties():
    assert _tableaus.DOPRI5.fsal and BOSH3.fsal and not _tableaus.ADAPTIVE_HEUN.fsal and not _tableaus.RK4.fsal
    assert _tableaus.ADAPTIVE_HEUN.b_error == (-0.5, 0.5) and _tableaus.RK4.b_error is None
    assert isinstance(BOSH3, ButcherTableau) and BOSH3.stages == 4 and BOSH3.validate() is BOSH3
