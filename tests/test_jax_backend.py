"""The blocks run on the Keras JAX backend (keras.ops path) and give the TF fast path's numbers;
the zoo's Adam runs there too (its keras.ops path) and matches a NumPy Adam."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import pde_zoo
from conftest import randomize_weights
from numpy_reference import adam as numpy_adam
from test_optimizers import adam_case

pytest.importorskip("jax")

JAX_SCRIPT = """
import json, sys, numpy as np, jax, jax.numpy as jnp, keras, pde_zoo
assert keras.backend.backend() == "jax"
d = np.load(sys.argv[1])
out = {}
for name in ("pde1", "pde2", "resnet"):
    model = pde_zoo.build(name, depth=4)
    stack = model.get_layer("blocks")
    assert not stack.uses_fast_path
    stack.set_weights([d[f"{name}_w{i}"] for i in range(len(stack.weights))])
    y = stack(d["x"])
    grad = jax.grad(lambda x: jnp.sum(jnp.sin(3 * stack(x))))(jnp.asarray(d["x"]))
    out[name] = [np.asarray(y).tolist(), np.asarray(grad).tolist()]
    pde_zoo.compile_model(model).fit(d["images"], d["labels"], epochs=1, verbose=0)  # trains on JAX
from pde_zoo.optimizers import Adam
optimizer, variable = Adam(learning_rate=3e-3), keras.Variable(d["adam_w0"])
optimizer.build([variable])
for g in d["adam_grads"]:
    optimizer.apply([jnp.asarray(g)], [variable])
out["adam"] = np.asarray(variable).tolist()
print(json.dumps(out))
"""


@pytest.mark.slow  # a JAX subprocess (~20 s)
def test_jax_backend_matches_tensorflow_fast_path(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {"x": rng.random((3, 28, 28, 1)).astype("float32"), "images": rng.random((8, 28, 28, 1)).astype("float32"), "labels": rng.integers(0, 10, 8)}
    expected = {}
    for name in ("pde1", "pde2", "resnet"):
        stack = pde_zoo.build(name, depth=4).get_layer("blocks")
        assert stack.uses_fast_path
        for block in stack.blocks:
            randomize_weights(block, rng, 0.3)
        arrays.update({f"{name}_w{i}": np.asarray(w) for i, w in enumerate(stack.get_weights())})
        x = tf.constant(arrays["x"])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = stack(x)
            loss = tf.reduce_sum(tf.sin(3 * y))
        expected[name] = (y.numpy(), tape.gradient(loss, x).numpy())
    arrays["adam_w0"], grads = adam_case()
    arrays["adam_grads"] = np.stack(grads)
    np.savez(tmp_path / "case.npz", **arrays)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "case.npz")], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    for name, (y, grad) in expected.items():
        np.testing.assert_allclose(np.array(got[name][0]), y, atol=1e-5)
        np.testing.assert_allclose(np.array(got[name][1]), grad, atol=1e-4)
    # pde_zoo.optimizers.Adam's keras.ops path (non-TF backends) is Adam too
    np.testing.assert_allclose(got["adam"], numpy_adam(arrays["adam_w0"], grads, lr=3e-3)[-1], rtol=0, atol=2e-6)
