"""A block is one explicit Euler step of its field (`EulerStep`): against NumPy at any Δt, the named
blocks equal the generic step with the same weights, the field is the one source the physics and
the fused stack read, and a block's weight file keeps the layout every shipped model has."""

import io
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import randomize_weights
from numpy_reference import conv_step, dx, dxx, dy, dyy, pde_step
from pde_zoo import physics
from pde_zoo.layers import (
    COEFFICIENT_NAMES, ConvField, EulerStep, LinearConvField, PDE1Block, PDE2Block, PDEBlock, PDEField, PDESystemBlock,
    PDESystemField, ResidualConvBlock, StencilStack,
)
from pde_zoo.layers.physics_protocol import provides


def _numpy(tensor):
    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float64)


@pytest.mark.parametrize("time_step", [1.0, 0.5, 0.125])
@pytest.mark.parametrize("drift", [1.0, -0.125])
@pytest.mark.parametrize("channels", [1, 3])
def test_pde_step_at_any_time_step_matches_numpy(time_step, drift, channels, rng):
    """relu(ψ + Δt Lψ) with Lψ from the term-by-term NumPy reference."""
    x = rng.normal(size=(2, 7, 9, channels)).astype("float32")
    block = PDEBlock(drift_scale=drift, time_step=time_step)
    block.build(x.shape)
    randomize_weights(block, rng)
    c = block.coefficients()
    l_psi = pde_step(x, *(c[n] for n in COEFFICIENT_NAMES), drift=drift, relu=False) - x
    np.testing.assert_allclose(_numpy(block(x)), np.maximum(x + time_step * l_psi, 0.0), atol=1e-5)


@pytest.mark.parametrize("time_step", [1.0, 0.25])
def test_system_step_matches_numpy(time_step, rng):
    x = rng.normal(size=(2, 6, 7, 4)).astype("float32")
    block = PDESystemBlock(drift_scale=-0.125, time_step=time_step)
    block.build(x.shape)
    randomize_weights(block, rng, scale=0.3)
    c, gamma, bias = block.coefficients(), block.mixing_matrix(), _numpy(block.bias)
    s = block.drift_scale
    a_psi = (
        c["alpha"] ** 2 / 2 * dxx(x) + s * c["beta"] * dx(x) + c["sigma"] ** 2 / 2 * dyy(x) + s * c["rho"] * dy(x)
        + np.einsum("nhwk,ck->nhwc", x, gamma) + bias
    )
    np.testing.assert_allclose(_numpy(block(x)), np.maximum(x + time_step * a_psi, 0.0), atol=1e-5)


@pytest.mark.parametrize("time_step", [1.0, 0.5])
@pytest.mark.parametrize("channels", [1, 2])
def test_conv_step_matches_numpy(time_step, channels, rng):
    x = rng.normal(size=(2, 6, 5, channels)).astype("float32")
    block = ResidualConvBlock(time_step=time_step)
    block.build(x.shape)
    randomize_weights(block, rng, scale=0.3)
    expected = conv_step(x, time_step * _numpy(block.kernel), time_step * _numpy(block.bias))
    np.testing.assert_allclose(_numpy(block(x)), expected, atol=1e-5)


def test_step_of_a_nonlinear_field_is_relu_of_psi_plus_dt_f(rng):
    """Any field steps: relu(ψ + Δt f(0, ψ)) with f the ODE-Net's convolutional field."""
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    field = ConvField()
    step = EulerStep(field, time_step=0.3)
    y = _numpy(step(x))
    np.testing.assert_allclose(y, np.maximum(x + 0.3 * _numpy(field(0.0, x)), 0.0), atol=1e-5)


@pytest.mark.parametrize(
    "block, field",
    [
        (lambda: PDE1Block(), lambda: PDEField(drift_scale=1.0, pieces=None, activation=None)),
        (lambda: PDE2Block(time_step=0.5), lambda: PDEField(drift_scale=-0.125, pieces=None, activation=None)),
        (lambda: PDESystemBlock(stable=True), lambda: PDESystemField(stable=True, activation=None)),
        (lambda: ResidualConvBlock(), lambda: LinearConvField()),
    ],
)
def test_named_block_is_the_generic_step_of_its_field(block, field, rng):
    """Same weights, bit for bit the same outputs: the named block adds nothing to EulerStep."""
    x = rng.random((2, 8, 8, 3)).astype("float32")
    named = block()
    generic = EulerStep(field(), time_step=named.time_step)
    named.build(x.shape)
    generic.build(x.shape)
    randomize_weights(named, rng, scale=0.3)
    generic.set_weights(named.get_weights())
    np.testing.assert_array_equal(_numpy(named(x)), _numpy(generic(x)))
    assert [w.name for w in named.weights] == [w.name for w in named.field.weights]


def test_the_field_holds_the_weights_the_block_reads_through():
    block = PDE2Block()
    block.build((None, 8, 8, 2))
    assert block.alpha is block.field.alpha and block.drift_scale == -0.125 and block.channels == 2
    assert block.trainable_weights == block.field.trainable_weights and len(block.trainable_weights) == 5
    block.set_coefficients(gamma=0.25)
    np.testing.assert_array_equal(block.field.coefficients()["gamma"], [0.25, 0.25])
    with pytest.raises(AttributeError, match="operator_taps"):
        block.operator_taps  # the field's integration API is not a block's  # noqa: B018


def test_physics_reads_the_steps_kernels_from_the_field(rng):
    """The protocol members a block gives are its field's at its Δt: taps for a depthwise field,
    system taps for one that mixes channels, and nothing else."""
    pde, system, conv = PDE2Block(time_step=0.5), PDESystemBlock(), ResidualConvBlock()
    for block, channels in ((pde, 2), (system, 2), (conv, 1)):
        block.build((None, 6, 6, channels))
        randomize_weights(block, rng, scale=0.3)
    assert provides(pde, "taps") and provides(pde, "offset") and not provides(pde, "system_taps") and pde.fusable
    assert provides(system, "system_taps") and not provides(system, "taps") and not system.fusable
    assert provides(conv, "taps") and provides(conv, "system_taps") and conv.fusable
    # The impulse response of the linear step ψ + Δt Lψ is the stencil the physics computes (float64,
    # from the coefficients and Δt): pre[3 - dy, 3 - dx] = K[1 + dy, 1 + dx] for ψ = δ at (3, 3).
    delta = np.zeros((1, 7, 7, 2), "float32")
    delta[0, 3, 3] = 1.0
    response = _numpy(pde.field.explicit_step(delta, pde.time_step))[0, 4:1:-1, 4:1:-1]
    np.testing.assert_allclose(response, physics.stencil(pde), atol=1e-6)
    np.testing.assert_allclose(_numpy(pde.taps()), physics.stencil(pde), atol=1e-6)
    # G(p) of the step at Δt is 1 + Δt (G₁(p) - 1), G₁ the symbol of the same field's Δt = 1 step.
    unit = PDE2Block()
    unit.build((None, 6, 6, 2))
    unit.set_weights(pde.get_weights())
    p = np.linspace(-np.pi, np.pi, 7)
    np.testing.assert_allclose(physics.symbol(pde, p, p[::-1]), 1 + 0.5 * (physics.symbol(unit, p, p[::-1]) - 1), atol=1e-12)


def test_fused_stack_of_steps_at_any_time_step_equals_block_by_block(rng):
    """The fused TF kernel (taps from the fields, `stacked_step_taps`) against each block's own call,
    in values and gradients, with blocks of different Δt."""
    x = rng.random((2, 10, 9, 1)).astype("float32")
    blocks = [PDE1Block(time_step=0.5), PDE2Block(), PDE2Block(time_step=0.25)]
    stack = StencilStack(blocks)
    stack.build(x.shape)
    for block in blocks:
        randomize_weights(block, rng, scale=0.5)
    assert stack.uses_fast_path
    xt = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        fused = stack(xt, training=True)
        sequential = xt
        for block in blocks:
            sequential = block(sequential)
        fused_loss, sequential_loss = tf.reduce_sum(fused**2), tf.reduce_sum(sequential**2)
    np.testing.assert_allclose(fused.numpy(), sequential.numpy(), atol=1e-5)
    for a, b in zip(tape.gradient(fused_loss, stack.trainable_weights), tape.gradient(sequential_loss, stack.trainable_weights)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def _weight_datasets(path):
    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
        names = []
        h5.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        return sorted(names)


def test_block_files_keep_the_shipped_layout(tmp_path, rng):
    """The field's weights are saved as the block's own (vars/0..4 under the block), the layout of every
    committed .keras file, so old and new files load alike; and the round trip gives the same outputs."""
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, PDE2Block(name="pde2")(ResidualConvBlock(name="conv")(inputs)))
    randomize_weights(model, rng, scale=0.3)
    model.save(tmp_path / "m.keras")
    assert _weight_datasets(tmp_path / "m.keras") == sorted(
        [f"layers/residual_conv_block/vars/{i}" for i in range(2)] + [f"layers/pde2_block/vars/{i}" for i in range(5)]
    )
    x = rng.random((2, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(_numpy(keras.saving.load_model(tmp_path / "m.keras")(x)), _numpy(model(x)))


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match=r"PDE1Block fixes drift_scale = 1.0; use PDEBlock\(drift_scale=...\)"):
        PDE1Block(drift_scale=2.0)
    with pytest.raises(ValueError, match=r"PDEBlock fixes pieces = None; use EulerStep\(PDEField\(pieces=...\)\)"):
        PDEBlock(pieces=3)
    with pytest.raises(TypeError, match="builds its own field"):
        PDE2Block(field=PDEField())
    with pytest.raises(TypeError, match="EulerStep takes a vector field.*Received: field=Dense"):
        EulerStep(keras.layers.Dense(3))
    for bad in (0.0, 1.5, True, "1"):
        with pytest.raises(ValueError, match="time_step must be a number in"):
            PDE2Block(time_step=bad)
    with pytest.raises(ValueError, match="expects NHWC input"):
        PDE2Block().build((None, 8, 8))
