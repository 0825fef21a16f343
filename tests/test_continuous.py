"""Continuous depth: the vector-field / solver split of the layers, against independent references.

- the thesis blocks are one Euler step of Δt = 1 of their stated field;
- with Euler, Δt = 1 and K = depth pieces, `pde2ode` / `pde1ode` are the discrete models;
- a linear `PDEField` integrated by `ODEBlock` equals exp(T L) ψ0 with L assembled in NumPy;
- the protocol errors, and `.keras` round trips of the ODE models.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import pde_zoo
from conftest import randomize_weights
from numpy_reference import expm
from pde_zoo.layers import (
    COEFFICIENT_NAMES, ConvField, ODEBlock, PDE2Block, PDEField, ResidualConvBlock, StencilStack, VectorField,
)
from pde_zoo.ode import odeint


def _operator_matrix(height, width, a, b, s, r, g, drift_scale):
    """L = a²/2 Dxx + s b Dx + s²/2 Dyy + s r Dy + g on an H x W grid, zero boundary, as a dense
    (HW x HW) matrix built from the docs/conventions.md stencils (x = column j, y = row i)."""
    n = height * width
    matrix = np.zeros((n, n))
    index = lambda i, j: i * width + j  # noqa: E731
    for i in range(height):
        for j in range(width):
            row = index(i, j)
            matrix[row, row] += -a * a - s * s + g
            for di, dj, weight in [
                (0, 1, a * a / 2 + drift_scale * b / 2), (0, -1, a * a / 2 - drift_scale * b / 2),
                (1, 0, s * s / 2 + drift_scale * r / 2), (-1, 0, s * s / 2 - drift_scale * r / 2),
            ]:
                if 0 <= i + di < height and 0 <= j + dj < width:
                    matrix[row, index(i + di, j + dj)] += weight
    return matrix


def test_residual_blocks_are_one_euler_step_of_their_field(rng):
    x = rng.random((2, 9, 7, 1)).astype("float32")
    for block in (PDE2Block(), ResidualConvBlock()):
        block.build(x.shape)
        randomize_weights(block, rng, 0.3)
        stepped = odeint(block.vector_field, x, [0.0, 1.0], method="euler", step_size=1.0)[-1]
        np.testing.assert_allclose(np.asarray(stepped), np.asarray(block(x)), atol=1e-6)


@pytest.mark.parametrize("name", ["pde1", "pde2"])
def test_euler_unit_steps_of_the_ode_model_are_the_discrete_model(name, rng):
    depth = 4
    discrete = pde_zoo.build(name, depth=depth)
    continuous = pde_zoo.build(f"{name}ode", depth=depth, method="euler", step_size=1.0)
    blocks = discrete.get_layer("blocks").blocks
    for block in blocks:
        block.set_coefficients(**{n: rng.normal(scale=0.4) for n in COEFFICIENT_NAMES})
    field = continuous.get_layer("ode").field
    field.set_coefficients(**{n: np.array([b.coefficients()[n] for b in blocks]) for n in COEFFICIENT_NAMES})
    for layer in ("dense_1", "dense_2", "predictions"):
        continuous.get_layer(layer).set_weights(discrete.get_layer(layer).get_weights())
    x = rng.random((3, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(continuous.predict(x, verbose=0), discrete.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("drift_scale", [1.0, -0.125])
def test_linear_pde_field_matches_the_matrix_exponential(drift_scale, rng):
    height, width, horizon = 6, 5, 1.5
    a, b, s, r, g = 0.9, 0.7, 0.6, -0.5, 0.2
    field = PDEField(drift_scale=drift_scale, activation=None, horizon=horizon)
    block = ODEBlock(field, t1=horizon, method="dopri5", rtol=1e-7, atol=1e-9)
    psi0 = rng.random((1, height, width, 1))
    block.build(psi0.shape)
    field.set_coefficients(alpha=a, beta=b, sigma=s, rho=r, gamma=g)
    exact = expm(horizon * _operator_matrix(height, width, a, b, s, r, g, drift_scale)) @ psi0.reshape(-1)
    got = np.asarray(block(psi0.astype("float32"))).reshape(-1)
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5)


def test_pieces_select_coefficients_by_time():
    field = PDEField(pieces=4, horizon=2.0)
    field.build((1, 5, 5, 1))
    assert [int(field.piece(t)) for t in (0.0, 0.49, 0.5, 1.99, 2.0, 7.0, -1.0)] == [0, 0, 1, 3, 3, 3, 0]


def test_conv_field_depends_on_time_and_has_the_odenet_shape(rng):
    field = ConvField()
    psi = rng.random((2, 6, 6, 64)).astype("float32")
    f0, f1 = (np.asarray(field(t, psi)) for t in (0.0, 1.0))
    assert f0.shape == psi.shape and np.abs(f0 - f1).max() > 1e-4
    assert sum(int(np.prod(w.shape)) for w in field.weights) == 2 * (65 * 64 * 9 + 64) + 3 * 2 * 64


def test_adjoint_and_backprop_give_the_same_model_gradients(rng):
    """Fixed small steps: the adjoint's backward reconstruction of ψ(t) then differs from the
    forward trajectory by the (tiny) discretization error only; the ReLU field has kinks, where
    an adaptive solve's backward steps would differ from its forward ones."""
    x = tf.constant(rng.random((2, 28, 28, 1)).astype("float32"))
    grads = {}
    for adjoint in (True, False):
        keras.utils.set_random_seed(0)
        model = pde_zoo.build("pde2ode", depth=2, method="rk4", step_size=0.05, adjoint=adjoint)
        model.get_layer("ode").field.set_coefficients(alpha=[0.5, 0.3], beta=[1.0, -2.0], gamma=[0.1, -0.2])
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x) * tf.range(10, dtype="float32"))
        grads[adjoint] = [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]
    for a, b in zip(grads[True], grads[False]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


def test_protocol_errors():
    with pytest.raises(TypeError, match="ResidualBlock"):
        StencilStack([PDE2Block(), keras.layers.Dense(3)])
    with pytest.raises(TypeError, match="VectorField"):
        ODEBlock(PDE2Block())
    with pytest.raises(ValueError, match="t1 > t0"):
        ODEBlock(PDEField(), t0=1.0, t1=1.0)
    with pytest.raises(ValueError, match="Unknown method"):
        ODEBlock(PDEField(), method="rk45")
    with pytest.raises(ValueError, match="needs step_size"):
        ODEBlock(PDEField(), method="rk4")
    with pytest.raises(ValueError, match="pieces"):
        PDEField(pieces=0)
    with pytest.raises(NotImplementedError, match="call"):
        VectorField()(0.0, np.zeros((1, 3, 3, 1), "float32"))


@pytest.mark.parametrize("name", ["pde2ode", "odenet"])
def test_keras_round_trip_of_ode_models(name, tmp_path, rng):
    model = pde_zoo.build(name, depth=2 if name == "pde2ode" else 1)
    for layer in model.layers:
        if layer.weights and not isinstance(layer, keras.layers.GroupNormalization):
            randomize_weights(layer, rng, 0.05)
    x = rng.random((2, 28, 28, 1)).astype("float32")
    model.save(tmp_path / "m.keras")
    again = pde_zoo.load(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_training_records_nfe_per_epoch(tmp_path):
    from pde_zoo import training

    card = training.train("pde2ode", 2, epochs=2, batch_size=32, out=tmp_path, train_examples=64, validation=32, test_examples=32, verbose=0)
    history = training.read_history(tmp_path / "history.csv")
    assert [int(r["epoch"]) for r in history] == [1, 2]
    for row in history:  # dopri5 from a fresh step-size guess: 2 + 6 per attempt, per segment
        assert int(row["nfe_forward"]) >= 2 * 8 and (int(row["nfe_forward"]) - 4) % 6 == 0
        assert int(row["nfe_backward"]) >= 2 * 8
    assert card["nfe_forward"] == int(history[-1]["nfe_forward"])


def test_cli_passes_solver_options(tmp_path):
    import json

    from pde_zoo import cli

    argv = ["train", "pde2ode", "--depth", "1", "--option", "method=rk4", "--option", "step_size=0.5", "--option", "adjoint=false",
            "--epochs", "1", "--batch-size", "16", "--train-limit", "32", "--set", "validation=16", "--test-limit", "16", "--out", str(tmp_path),
            "--threads", "0"]  # in process: TF is initialized already, its thread pools are fixed
    assert cli.main(argv) == 0
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["options"] == {"method": "rk4", "step_size": 0.5, "adjoint": False}
    assert card["nfe_forward"] == 2 * 4 and card["nfe_backward"] is None  # rk4: 4 stages x 2 steps; no adjoint
    assert cli.main(["train", "pde2", "--depth", "1", "--option", "method=rk4", "--out", str(tmp_path / "x"), "--threads", "0"]) == 2
