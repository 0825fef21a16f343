"""pde_zoo.ode on TensorFlow: exact solutions, convergence orders, dopri5's controller and
limits, gradients (adjoint vs autodiff vs finite differences), tf.function and SavedModel."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from numpy_reference import expm
from pde_zoo.ode import METHODS, last_backward_stats, odeint

FIXED = {"euler": 1, "midpoint": 2, "rk4": 4}  # method -> order (= stages here)


def np_(x):
    return ops.convert_to_numpy(x)


# --------------------------------------------------------------------------- API and validation


def test_methods_and_argument_errors():
    assert {"euler", "midpoint", "rk4", "dopri5"} <= set(METHODS)
    f = lambda t, y: -y  # noqa: E731
    with pytest.raises(ValueError, match="dopri5.*euler|euler.*dopri5"):
        odeint(f, 1.0, [0.0, 1.0], method="rk45")
    with pytest.raises(ValueError, match="step_size"):
        odeint(f, 1.0, [0.0, 1.0], method="rk4")
    with pytest.raises(ValueError, match="increasing"):
        odeint(f, 1.0, [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="increasing"):
        odeint(f, 1.0, [1.0, 0.0])
    with pytest.raises(ValueError, match="1-D"):
        odeint(f, 1.0, [[0.0, 1.0]])
    for bad in (dict(rtol=0.0), dict(atol=-1e-3), dict(step_size=0.0), dict(max_steps=0), dict(rtol=float("nan"))):
        with pytest.raises(ValueError, match=list(bad)[0]):
            odeint(f, 1.0, [0.0, 1.0], **bad)


def test_output_layout_and_single_time():
    y0 = np.random.default_rng(0).random((2, 5, 5, 3)).astype("float32")
    ys, stats = odeint(lambda t, y: -y, y0, np.array([0.0, 0.3, 1.0]), return_stats=True)
    assert ys.shape == (3, 2, 5, 5, 3) and ys.dtype == tf.float32
    np.testing.assert_array_equal(np_(ys[0]), y0)
    assert set(stats) == {"nfe", "steps", "rejected"} and all(v.dtype == tf.int32 and v.shape == () for v in stats.values())
    np.testing.assert_array_equal(np_(odeint(lambda t, y: -y, y0, [0.5])), y0[None])
    # integer initial state -> floatx
    assert odeint(lambda t, y: -y, [1, 2], [0.0, 1.0], method="euler", step_size=0.5).dtype == tf.float32


# --------------------------------------------------------------------------- exact solutions


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4", "dopri5"])
def test_exponential_decay(method):
    lam, t = -0.8, np.array([0.0, 0.3, 1.1, 2.0])
    y0 = np.array([1.0, -2.0, 0.5])
    step_size = {"euler": 1e-3, "midpoint": 1e-2, "rk4": 1e-2}.get(method)
    ys = np_(odeint(lambda t, y: lam * y, y0, t, method=method, step_size=step_size, rtol=1e-8, atol=1e-10))
    exact = np.exp(lam * t)[:, None] * y0
    tol = {"euler": 1e-3, "midpoint": 3e-5, "rk4": 1e-9, "dopri5": 1e-7}[method]
    np.testing.assert_allclose(ys, exact, rtol=0, atol=tol)


@pytest.mark.parametrize("rtol", [1e-3, 1e-6, 1e-9])
def test_dopri5_meets_tolerance_on_rotation(rtol):
    """y'' = -y as the 2-vector (y, y'): exact solution (cos t, -sin t), at several output times."""
    atol = rtol * 1e-2
    t = np.linspace(0.0, 6.0, 7)
    ys, stats = odeint(lambda t, y: ops.stack([y[1], -y[0]]), np.array([1.0, 0.0]), t, rtol=rtol, atol=atol, return_stats=True)
    exact = np.stack([np.cos(t), -np.sin(t)], axis=1)
    err = np.abs(np_(ys) - exact)
    assert np.all(err <= 10 * (atol + rtol * np.abs(exact)) + 10 * rtol), err.max()
    assert err.max() > 1e-3 * rtol  # not trivially exact: the tolerance is what bounds it
    assert int(stats["nfe"]) == 2 + 6 * (int(stats["steps"]) + int(stats["rejected"]))


def _pde_matrix(shape, a, b, s, r, g):
    """L = a²/2 Dxx + b Dx + s²/2 Dyy + r Dy + g on an (H, W) grid, zero Dirichlet boundary,
    as a dense (HW, HW) matrix acting on ψ.ravel() (row-major: index i*W + j)."""
    h, w = shape
    matrix = np.zeros((h * w, h * w))
    for i in range(h):
        for j in range(w):
            row = i * w + j
            matrix[row, row] += -(a**2) - s**2 + g
            for (di, dj), weight in {(0, 1): a**2 / 2 + b / 2, (0, -1): a**2 / 2 - b / 2, (1, 0): s**2 / 2 + r / 2, (-1, 0): s**2 / 2 - r / 2}.items():
                if 0 <= i + di < h and 0 <= j + dj < w:
                    matrix[row, (i + di) * w + (j + dj)] += weight
    return matrix


def _pde_field(a, b, s, r, g):
    """ψ_t = Lψ with keras.ops.conv (cross-correlation, 'same' zero padding), NHWC, 1 channel."""
    kernel = np.zeros((3, 3, 1, 1))
    kernel[1, 1] = -(a**2) - s**2 + g
    kernel[1, 2], kernel[1, 0] = a**2 / 2 + b / 2, a**2 / 2 - b / 2  # ψ[i, j+1], ψ[i, j-1]
    kernel[2, 1], kernel[0, 1] = s**2 / 2 + r / 2, s**2 / 2 - r / 2  # ψ[i+1, j], ψ[i-1, j]
    return lambda t, psi: ops.conv(psi, kernel, padding="same")


@pytest.mark.parametrize("method, options, tol", [("dopri5", dict(rtol=1e-8, atol=1e-10), 1e-6), ("rk4", dict(step_size=0.01), 1e-8)])
def test_linear_pde_matches_matrix_exponential(method, options, tol):
    coeffs = dict(a=0.9, b=0.4, s=0.7, r=-0.3, g=-0.1)
    psi0 = np.random.default_rng(1).random((2, 6, 6, 1))
    t = np.array([0.0, 0.5, 2.0])
    ys = np_(odeint(_pde_field(**coeffs), psi0, t, method=method, **options))
    L = _pde_matrix((6, 6), **coeffs)
    for k, tk in enumerate(t):
        exact = (expm(tk * L) @ psi0.reshape(2, 36).T).T.reshape(psi0.shape)
        np.testing.assert_allclose(ys[k], exact, rtol=0, atol=tol * np.abs(exact).max())
    try:  # cross-check the NumPy exponential when SciPy happens to be installed (not a dependency)
        from scipy.linalg import expm as scipy_expm

        np.testing.assert_allclose(expm(2.0 * L), scipy_expm(2.0 * L), atol=1e-12)
    except ImportError:
        pass


@pytest.mark.parametrize("method", sorted(FIXED))
def test_convergence_order(method):
    """Slope of log(error) against log(h) on the rotation y'' = -y over [0, 2]."""
    hs = np.array([0.2, 0.1, 0.05, 0.025])
    exact = np.array([np.cos(2.0), -np.sin(2.0)])
    errors = []
    for h in hs:
        ys = odeint(lambda t, y: ops.stack([y[1], -y[0]]), np.array([1.0, 0.0]), [0.0, 2.0], method=method, step_size=h)
        errors.append(np.abs(np_(ys[-1]) - exact).max())
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert abs(slope - FIXED[method]) <= 0.3, (slope, errors)


# --------------------------------------------------------------------------- steps and counts


@pytest.mark.parametrize("method", sorted(FIXED))
def test_fixed_grid_lands_on_output_times_and_counts(method):
    """Intervals 0.25 and 0.75 with h = 0.1 take ceil(2.5) = 3 and ceil(7.5) = 8 equal steps."""
    seen = []

    def f(t, y):
        seen.append(float(t))
        return ops.ones_like(y)

    ys, stats = odeint(f, np.zeros(2), [0.0, 0.25, 1.0], method=method, step_size=0.1, return_stats=True)
    np.testing.assert_allclose(np_(ys)[:, 0], [0.0, 0.25, 1.0], atol=1e-14)
    stages = METHODS[method].stages
    assert (int(stats["steps"]), int(stats["nfe"]), int(stats["rejected"])) == (11, 11 * stages, 0)
    assert len(seen) == 11 * stages
    starts = seen[::stages]
    np.testing.assert_allclose(starts, np.r_[np.arange(3) * 0.25 / 3, 0.25 + np.arange(8) * 0.75 / 8], atol=1e-14)
    # h dividing the interval gives exactly steps of h
    stats = odeint(f, np.zeros(2), [0.0, 1.0], method=method, step_size=0.125, return_stats=True)[1]
    assert int(stats["steps"]) == 8


def test_dopri5_rejects_steps_on_stiff_problem_and_counts():
    """y' = -200 (y - cos t): past the transient the step is limited by stability, not accuracy,
    and the controller keeps overshooting it."""
    f = lambda t, y: -200.0 * (y - ops.cos(t))  # noqa: E731
    ys, stats = odeint(f, np.array([0.0]), [0.0, 2.0], rtol=1e-4, atol=1e-7, return_stats=True)
    steps, rejected, nfe = (int(stats[k]) for k in ("steps", "rejected", "nfe"))
    assert rejected > 5 and steps > 50
    assert nfe == 2 + 6 * (steps + rejected)
    exact = 200 * (200 * np.cos(2.0) + np.sin(2.0)) / (200**2 + 1)  # the e^(-200 t) transient is gone
    assert abs(np_(ys)[-1, 0] - exact) < 1e-3 * abs(exact)
    # a given first step replaces the 2-evaluation heuristic by nothing: 1 + 6 per attempt
    stats = odeint(f, np.array([0.0]), [0.0, 2.0], rtol=1e-4, atol=1e-7, step_size=1e-3, return_stats=True)[1]
    assert int(stats["nfe"]) == 1 + 6 * (int(stats["steps"]) + int(stats["rejected"]))


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_dopri5_max_steps_error_eager_and_graph():
    f = lambda t, y: -1000.0 * y  # noqa: E731
    with pytest.raises(RuntimeError, match=r"dopri5 exceeded max_steps=25 .*raise max_steps or loosen rtol/atol"):
        odeint(f, np.ones(3), [0.0, 10.0], max_steps=25)
    graph = tf.function(lambda y: odeint(f, y, [0.0, 10.0], max_steps=25))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"dopri5 exceeded max_steps=25 .*raise max_steps or loosen rtol/atol"):
        graph(tf.ones(3))


# --------------------------------------------------------------------------- gradients


class Field(keras.layers.Layer):
    """A small parametric vector field f(t, y) = tanh(y W + b) (1 + t/2) - 0.1 y."""

    def build(self, t_shape, y_shape):
        self.dense = keras.layers.Dense(y_shape[-1], activation="tanh", dtype=self.dtype_policy)
        self.dense.build(y_shape)

    def call(self, t, y):
        return self.dense(y) * (1.0 + 0.5 * t) - 0.1 * y


def _problem(kind):
    rng = np.random.default_rng(7)
    y0 = tf.constant(rng.normal(size=(3, 2)))
    if kind == "layer":
        field = Field(dtype="float64")
        field(tf.constant(0.0, tf.float64), y0)
        for v in field.trainable_variables:
            v.assign(rng.normal(scale=0.7, size=v.shape))
        return field, list(field.trainable_variables), y0, None
    w = keras.Variable(rng.normal(scale=0.7, size=(2, 2)), dtype="float64")
    s = keras.Variable(0.3, dtype="float64")
    return (lambda t, y: ops.sin(ops.matmul(y, w)) - s * y * t), [w, s], y0, [w, s]


def _loss(ys):
    weights = tf.constant(np.linspace(0.5, 1.5, int(np.prod(ys.shape[1:]))).reshape(ys.shape[1:]))
    return tf.reduce_sum(tf.sin(ys[1:]) * weights)  # every output time except y0 itself


def _gradients(func, params, y0, adjoint_params, **options):
    with tf.GradientTape() as tape:
        tape.watch(y0)
        loss = _loss(odeint(func, y0, [0.0, 0.4, 1.2], adjoint_params=adjoint_params, **options))
    grads = tape.gradient(loss, [y0] + params)
    return [g.numpy() for g in grads]


def _directional_fd(func, params, y0, directions, eps, **options):
    """Central difference of the loss along `directions` (one array per y0 and each param)."""
    originals = [p.numpy() for p in params]

    def loss_at(sign):
        for p, v, d in zip(params, originals, directions[1:]):
            p.assign(v + sign * eps * d)
        return float(_loss(odeint(func, y0 + sign * eps * directions[0], [0.0, 0.4, 1.2], **options)))

    value = (loss_at(1.0) - loss_at(-1.0)) / (2 * eps)
    for p, v in zip(params, originals):
        p.assign(v)
    return value


@pytest.mark.parametrize(
    "method, options, kind",
    [
        ("rk4", dict(step_size=0.02), "variables"),
        ("rk4", dict(step_size=0.02), "layer"),
        ("midpoint", dict(step_size=0.005), "variables"),
        pytest.param("dopri5", dict(rtol=1e-10, atol=1e-12), "variables", marks=pytest.mark.slow),  # heavy (~20 s)
        pytest.param("dopri5", dict(rtol=1e-10, atol=1e-12), "layer", marks=pytest.mark.slow),
    ],
)
def test_adjoint_matches_autodiff_and_finite_differences(method, options, kind):
    func, params, y0, adjoint_params = _problem(kind)
    backprop = _gradients(func, params, y0, adjoint_params, method=method, **options)
    adjoint = _gradients(func, params, y0, adjoint_params, method=method, adjoint=True, **options)
    for g_bp, g_adj in zip(backprop, adjoint):
        assert np.abs(g_adj - g_bp).max() <= 1e-4 * np.abs(g_bp).max(), (g_adj, g_bp)
    stats = last_backward_stats()
    assert stats["method"] == method and stats["nfe"] > 0
    rng = np.random.default_rng(3)
    directions = [rng.normal(size=g.shape) for g in backprop]
    fd_y0 = _directional_fd(func, params, y0, [directions[0]] + [np.zeros_like(d) for d in directions[1:]], 1e-5, method=method, **options)
    fd_params = _directional_fd(func, params, y0, [np.zeros_like(directions[0])] + directions[1:], 1e-5, method=method, **options)
    for grads, rtol in ((backprop, 2e-5), (adjoint, 1e-4)):  # backprop differentiates the discrete solution
        np.testing.assert_allclose(np.sum(grads[0] * directions[0]), fd_y0, rtol=rtol)
        np.testing.assert_allclose(sum(np.sum(g * d) for g, d in zip(grads[1:], directions[1:])), fd_params, rtol=rtol)


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_adjoint_backward_counts():
    func, params, y0, _ = _problem("variables")
    with tf.GradientTape() as tape:
        ys, stats = odeint(func, y0, [0.0, 0.5, 1.0], method="rk4", step_size=0.1, adjoint=True, adjoint_params=params, return_stats=True)
        loss = tf.reduce_sum(ys)
    tape.gradient(loss, params)
    assert int(stats["nfe"]) == 40 and last_backward_stats() == {"nfe": 40, "steps": 10, "rejected": 0, "method": "rk4"}
    with tf.GradientTape() as tape:
        ys, stats = odeint(func, y0, [0.0, 0.5, 1.0], rtol=1e-7, atol=1e-9, adjoint=True, adjoint_params=params, return_stats=True)
        loss = tf.reduce_sum(ys)
    tape.gradient(loss, params)
    back = last_backward_stats()
    # 2 (start) + 1 (f re-evaluated after the cotangent jump at t = 0.5) + 6 per attempt
    assert back["nfe"] == 3 + 6 * (back["steps"] + back["rejected"]) and back["steps"] >= 2


def test_gradient_only_through_listed_params():
    """A trainable variable not in adjoint_params gets no gradient (it is read, not differentiated)."""
    func, params, y0, _ = _problem("variables")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(odeint(func, y0, [0.0, 1.0], method="rk4", step_size=0.1, adjoint=True, adjoint_params=params[:1]))
    grads = tape.gradient(loss, params)
    assert grads[0] is not None and grads[1] is None


# --------------------------------------------------------------------------- graphs and export


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_tf_function_matches_eager_without_retracing():
    field = Field(dtype="float64")
    y0 = tf.constant(np.random.default_rng(2).normal(size=(4, 3)))
    field(tf.constant(0.0, tf.float64), y0)

    def step(y, adjoint):
        with tf.GradientTape() as tape:
            ys, stats = odeint(field, y, [0.0, 1.0], rtol=1e-6, atol=1e-8, adjoint=adjoint, return_stats=True)
            loss = tf.reduce_sum(ys[-1] ** 2)
        return [loss] + tape.gradient(loss, field.trainable_variables), stats["nfe"]

    graph = tf.function(step)
    for adjoint in (False, True):
        eager, nfe = step(y0, adjoint)
        traced, nfe_graph = graph(y0, adjoint)
        graph(y0 + 1.0, adjoint)
        for a, b in zip(eager, traced):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10)
        assert int(nfe) == int(nfe_graph)
    assert graph.experimental_get_tracing_count() == 2  # one per Python value of `adjoint`


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_times_as_graph_tensor():
    """t fed as a tensor to a tf.function: dynamic step counts for fixed methods, same results."""
    f = lambda t, y: -y * (1.0 + t)  # noqa: E731
    t = tf.constant([0.0, 0.25, 1.0], tf.float64)
    y0 = tf.constant([1.0, 2.0], tf.float64)
    for method in ("rk4", "dopri5"):
        graph = tf.function(lambda y, t: odeint(f, y, t, method=method, step_size=0.1, return_stats=True))
        ys, stats = graph(y0, t)
        ys_static, stats_static = odeint(f, y0, [0.0, 0.25, 1.0], method=method, step_size=0.1, return_stats=True)
        np.testing.assert_allclose(ys.numpy(), ys_static.numpy(), rtol=1e-12)
        assert int(stats["nfe"]) == int(stats_static["nfe"])


def test_saved_model_round_trip(tmp_path):
    class ODEModule(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(np.random.default_rng(4).normal(scale=0.3, size=(3, 3, 2, 2)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 5, 5, 2], tf.float32)])
        def __call__(self, x):
            return odeint(lambda t, y: tf.tanh(tf.nn.conv2d(y, self.kernel, 1, "SAME")), x, [0.0, 0.5, 1.0], rtol=1e-5, atol=1e-6)

    module = ODEModule()
    x = tf.constant(np.random.default_rng(5).random((3, 5, 5, 2)).astype("float32"))
    tf.saved_model.save(module, str(tmp_path / "ode"))
    reloaded = tf.saved_model.load(str(tmp_path / "ode"))
    np.testing.assert_array_equal(reloaded(x).numpy(), module(x).numpy())
    assert reloaded(x).shape == (3, 3, 5, 5, 2)


class ODELayer(keras.layers.Layer):
    """y(1) of dy/dt = Field(t, y), y(0) = inputs."""

    def __init__(self, method="dopri5", adjoint=True, **kwargs):
        super().__init__(**kwargs)
        self.method, self.adjoint = method, adjoint
        self.field = Field()

    def build(self, input_shape):
        self.field.build((), input_shape)

    def call(self, x):
        return odeint(self.field, x, [0.0, 1.0], method=self.method, step_size=0.25, rtol=1e-3, atol=1e-3, adjoint=self.adjoint)[-1]


@pytest.mark.parametrize("method, adjoint", [("dopri5", True), ("dopri5", False), ("rk4", True)])
def test_model_fit_with_ode_layer(method, adjoint):
    """Keras's compiled train step (tf.function) through odeint: the loss goes down."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), ODELayer(method, adjoint), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    before = [w.copy() for w in model.layers[0].get_weights()]
    losses = model.fit(x, x[:, :1] ** 2, epochs=3, batch_size=32, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert max(np.abs(a - b).max() for a, b in zip(before, model.layers[0].get_weights())) > 0


def test_export_model_with_adjoint_ode_layer(tmp_path):
    """model.export of an adjoint dopri5 ODE layer serves with plain TF (custom gradient saved too)."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), ODELayer("dopri5", adjoint=True), keras.layers.Dense(1)])
    x = np.random.default_rng(1).normal(size=(8, 4)).astype("float32")
    model.export(str(tmp_path / "ode"), format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "ode"))
    np.testing.assert_array_equal(reloaded.serve(x).numpy(), model.predict(x, verbose=0))
