"""pde_zoo.ode on the Keras JAX backend (a subprocess with KERAS_BACKEND=jax, float64 enabled):
exact solutions, gradients (scan autodiff, adjoint, finite differences, and the TensorFlow
adjoint's numbers), jit, the dopri5 autodiff guard, max_steps under jit, and `model.fit`."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from pde_zoo.ode import odeint

pytest.importorskip("jax")

TIMES = [0.0, 0.4, 1.2]
CASES = {"rk4": dict(method="rk4", step_size=0.02), "dopri5": dict(method="dopri5", rtol=1e-10, atol=1e-12)}

JAX_SCRIPT = r"""
import json, sys, functools
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, keras, numpy as np
from keras import ops
assert keras.backend.backend() == "jax"
from pde_zoo.ode import odeint, last_backward_stats

d = np.load(sys.argv[1])
TIMES, CASES = json.loads(sys.argv[2]), json.loads(sys.argv[3])
out = {}

# exact solutions
t = np.array([0.0, 0.3, 1.1, 2.0]); y0 = np.array([1.0, -2.0, 0.5])
for method, h in (("euler", 1e-3), ("midpoint", 1e-2), ("rk4", 1e-2), ("dopri5", None)):
    ys, stats = odeint(lambda t, y: -0.8 * y, y0, t, method=method, step_size=h, rtol=1e-8, atol=1e-10, return_stats=True)
    out[f"decay_{method}"] = [float(jnp.abs(ys - np.exp(-0.8 * t)[:, None] * y0).max()), {k: int(v) for k, v in stats.items()}]
ys = odeint(lambda t, y: jnp.stack([y[1], -y[0]]), np.array([1.0, 0.0]), np.linspace(0, 6, 7), rtol=1e-7, atol=1e-9)
out["rotation_err"] = float(jnp.abs(ys - jnp.stack([jnp.cos(jnp.linspace(0, 6, 7)), -jnp.sin(jnp.linspace(0, 6, 7))], 1)).max())

# gradients: f(t, y) = sin(y W) - s y t with variables W, s
W = keras.Variable(d["w"], dtype="float64"); s = keras.Variable(d["s"], dtype="float64")
params = [W, s]
# jnp.sin: Keras 3.15's JAX ops.sin/cos/tanh return float32 for float64 input (result_type(x, float))
func = lambda t, y: jnp.sin(ops.matmul(y, W)) - s * y * t
weights = jnp.asarray(np.linspace(0.5, 1.5, 6).reshape(3, 2))

def loss(y0, values, adjoint, case):
    with keras.StatelessScope(list(zip(params, values))):
        ys = odeint(func, y0, TIMES, adjoint=adjoint, adjoint_params=params, **case)
    return jnp.sum(jnp.sin(ys[1:]) * weights)

y0, values = jnp.asarray(d["y0"]), [jnp.asarray(d["w"]), jnp.asarray(d["s"])]
dirs = [d["dir_y0"], d["dir_w"], d["dir_s"]]
for name, case in CASES.items():
    grads = {}
    for adjoint in ((False, True) if name == "rk4" else (True,)):
        g_y0, g_p = jax.grad(loss, argnums=(0, 1))(y0, values, adjoint, case)
        grads[adjoint] = [np.asarray(g_y0).tolist()] + [np.asarray(g).tolist() for g in g_p]
        jitted = jax.jit(jax.grad(functools.partial(loss, adjoint=adjoint, case=case), argnums=(0, 1)))
        j_y0, j_p = jitted(y0, values)
        out[f"{name}_{adjoint}_jit_diff"] = max(float(jnp.abs(a - b).max()) for a, b in zip([j_y0] + list(j_p), [g_y0] + list(g_p)))
    out[f"{name}_grads"] = {str(k): v for k, v in grads.items()}
    out[f"{name}_backward"] = last_backward_stats()
    eps = 1e-5
    forward = jax.jit(functools.partial(loss, adjoint=False, case=case))  # one compilation for the four calls
    def along(sign, dy0, dp):
        return float(forward(y0 + sign * eps * dy0, [v + sign * eps * p for v, p in zip(values, dp)]))
    zeros = [np.zeros_like(x) for x in dirs]
    out[f"{name}_fd_y0"] = (along(1, dirs[0], zeros[1:]) - along(-1, dirs[0], zeros[1:])) / (2 * eps)
    out[f"{name}_fd_params"] = (along(1, zeros[0], dirs[1:]) - along(-1, zeros[0], dirs[1:])) / (2 * eps)

# dopri5 with adjoint=False: a clear error under reverse-mode autodiff, forward values fine
try:
    jax.grad(loss)(y0, values, False, CASES["dopri5"])
    out["guard"] = "no error"
except NotImplementedError as e:
    out["guard"] = str(e)
out["forward_no_adjoint"] = float(loss(y0, values, False, CASES["dopri5"]))

# max_steps inside jit: a host callback raises with the message
try:
    jax.jit(lambda y: odeint(lambda t, y: -1000.0 * y, y, [0.0, 10.0], max_steps=25))(jnp.ones(3)).block_until_ready()
    out["max_steps"] = "no error"
except Exception as e:
    out["max_steps"] = str(e)

# model.fit: an ODE layer (dopri5, adjoint) inside Keras's jitted stateless train step
class Field(keras.layers.Layer):
    def build(self, t_shape, y_shape):
        self.dense = keras.layers.Dense(y_shape[-1], activation="tanh")
        self.dense.build(y_shape)
    def call(self, t, y):
        return self.dense(y) * (1.0 + 0.5 * t) - 0.1 * y

class ODE(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.field = Field()
    def build(self, shape):
        self.field.build((), shape)
    def call(self, x):
        return odeint(self.field, x, [0.0, 1.0], rtol=1e-3, atol=1e-3, adjoint=True)[-1]

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((4,)), ODE(), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32"); y = x[:, :1] ** 2
before = [np.asarray(w).copy() for w in model.layers[0].get_weights()]
history = model.fit(x, y, epochs=3, batch_size=16, verbose=0).history["loss"]
after = model.layers[0].get_weights()
out["fit_loss"] = history
out["fit_field_moved"] = float(max(np.abs(a - b).max() for a, b in zip(before, after)))
print(json.dumps(out))
"""


def _tf_adjoint_gradients(arrays, case):
    w = keras.Variable(arrays["w"], dtype="float64")
    s = keras.Variable(arrays["s"], dtype="float64")
    y0 = tf.constant(arrays["y0"])
    with tf.GradientTape() as tape:
        tape.watch(y0)
        ys = odeint(lambda t, y: keras.ops.sin(keras.ops.matmul(y, w)) - s * y * t, y0, TIMES, adjoint=True, adjoint_params=[w, s], **case)
        loss = tf.reduce_sum(tf.sin(ys[1:]) * np.linspace(0.5, 1.5, 6).reshape(3, 2))
    return [g.numpy() for g in tape.gradient(loss, [y0, w, s])]


@pytest.mark.slow  # a JAX subprocess running the solver suite (~60 s)
def test_ode_on_jax_backend(tmp_path):
    rng = np.random.default_rng(7)
    arrays = {"y0": rng.normal(size=(3, 2)), "w": rng.normal(scale=0.7, size=(2, 2)), "s": np.float64(0.3)}
    arrays.update(dir_y0=rng.normal(size=(3, 2)), dir_w=rng.normal(size=(2, 2)), dir_s=np.float64(rng.normal()))
    np.savez(tmp_path / "case.npz", **arrays)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "case.npz"), json.dumps(TIMES), json.dumps(CASES)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])

    # exact solutions and counts
    for method, tol in (("euler", 1e-3), ("midpoint", 3e-5), ("rk4", 1e-9), ("dopri5", 1e-7)):
        err, stats = got[f"decay_{method}"]
        assert err < tol, (method, err)
        if method == "dopri5":
            assert stats["nfe"] == 2 + 6 * (stats["steps"] + stats["rejected"])
        else:
            steps = {"euler": 2000, "midpoint": 200, "rk4": 200}[method]
            assert stats == {"nfe": steps * {"euler": 1, "midpoint": 2, "rk4": 4}[method], "steps": steps, "rejected": 0}
    assert got["rotation_err"] < 1e-5

    # gradients: scan autodiff == adjoint, adjoint == TF adjoint, both == finite differences
    directions = [arrays["dir_y0"], arrays["dir_w"], arrays["dir_s"]]
    for name, case in CASES.items():
        grads = {k: [np.asarray(g) for g in v] for k, v in got[f"{name}_grads"].items()}
        adjoint = grads["True"]
        for jax_g, tf_g in zip(adjoint, _tf_adjoint_gradients(arrays, case)):
            np.testing.assert_allclose(jax_g, tf_g, rtol=1e-8, atol=1e-12)
        if "False" in grads:
            for g_bp, g_adj in zip(grads["False"], adjoint):
                assert np.abs(g_adj - g_bp).max() <= 1e-4 * np.abs(g_bp).max()
        for g in grads.values():
            np.testing.assert_allclose(np.sum(g[0] * directions[0]), got[f"{name}_fd_y0"], rtol=1e-4)
            np.testing.assert_allclose(sum(np.sum(a * b) for a, b in zip(g[1:], directions[1:])), got[f"{name}_fd_params"], rtol=1e-4)
        for key in [k for k in got if k.startswith(f"{name}_") and k.endswith("_jit_diff")]:
            assert got[key] < 1e-12, (key, got[key])
        back = got[f"{name}_backward"]
        assert back["method"] == name and back["nfe"] > 0
    assert got["rk4_backward"] == {"nfe": 240, "steps": 60, "rejected": 0, "method": "rk4"}  # (0.4 + 0.8) / 0.02 steps
    assert got["dopri5_backward"]["nfe"] == 3 + 6 * (got["dopri5_backward"]["steps"] + got["dopri5_backward"]["rejected"])

    assert "adjoint=True" in got["guard"]
    assert np.isfinite(got["forward_no_adjoint"])
    assert "dopri5 exceeded max_steps=25" in got["max_steps"] and "raise max_steps or loosen rtol/atol" in got["max_steps"]
    assert np.all(np.isfinite(got["fit_loss"])) and got["fit_loss"][-1] < got["fit_loss"][0]
    assert got["fit_field_moved"] > 0
