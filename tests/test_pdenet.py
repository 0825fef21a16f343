"""The PDE-system block and the pdenet / convresnet models (issue 11): an independent NumPy
reference of the step, the stable parametrization's bound (von Neumann and by brute force),
the ODEBlock equivalence, the JAX backend, round trips, parameter counts and the report."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import pde_zoo
from numpy_reference import dx, dxx, dy, dyy
from pde_zoo import cli, physics
from pde_zoo.layers import ODEBlock, PDESystemBlock, PDESystemField, ResidualConvBlock, StencilStack
from pde_zoo.layers.pde_system_field import spectral_norm_bound
from pde_zoo.models.pdenet import DEFAULT_CHANNELS, stage_layout

LX, LY, LM = 0.25, 0.25, 0.5  # the stable split, restated (PDESystemField)
NAMES = ("alpha", "beta", "sigma", "rho", "mixing", "bias")


def randomize(block, rng, scale):
    for name in NAMES:
        weight = getattr(block, name)
        weight.assign(rng.normal(scale=scale, size=weight.shape).astype("float32"))


def raw(block):
    return {n: keras.ops.convert_to_numpy(getattr(block, n)).astype(np.float64) for n in NAMES}


def effective(w, stable, s):
    """(α, sβ, σ, sρ, Γ, b) from the raw weights, written from the docstring's formulas."""
    if not stable:
        return w["alpha"], s * w["beta"], w["sigma"], s * w["rho"], w["mixing"], w["bias"]
    ta, ts = np.tanh(w["alpha"]), np.tanh(w["sigma"])
    m = np.eye(len(w["bias"])) + w["mixing"]
    nu = min((1 + 1e-5) * np.linalg.norm(m, 2), np.sqrt(np.abs(m).sum(axis=0).max() * np.abs(m).sum(axis=1).max()))
    q = m / max(1.0, nu)
    return np.sqrt(LX) * ta, LX * ta * np.tanh(w["beta"]), np.sqrt(LY) * ts, LY * ts * np.tanh(w["rho"]), LM * (q - np.eye(len(m))), w["bias"]


def system_step(psi, alpha, drift_x, sigma, drift_y, gamma, bias, relu=True):
    """ψ + α²/2 Dxx ψ + sβ Dx ψ + σ²/2 Dyy ψ + sρ Dy ψ + Γψ + b (per channel, zero padding), then ReLU."""
    psi = np.asarray(psi, dtype=np.float64)
    pre = (
        psi + alpha**2 / 2 * dxx(psi) + drift_x * dx(psi) + sigma**2 / 2 * dyy(psi) + drift_y * dy(psi)
        + np.einsum("nhwk,ck->nhwc", psi, gamma) + bias
    )
    return np.maximum(pre, 0.0) if relu else pre


def periodic_linear_step(block, psi):
    """ψ + Aψ on a periodic grid: the block's own operator on a wrap-padded image, cropped, bias removed."""
    padded = np.pad(psi, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
    out = keras.ops.convert_to_numpy(block.field.explicit_step(keras.ops.convert_to_tensor(padded), block.time_step))[:, 1:-1, 1:-1]
    return out - keras.ops.convert_to_numpy(block.bias)


def built_block(channels, stable, rng, scale, drift_scale=1.0):
    block = PDESystemBlock(stable=stable, drift_scale=drift_scale)
    block.build((None, 8, 8, channels))
    randomize(block, rng, scale)
    return block


# --- the step against NumPy ---------------------------------------------------------------------


@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("channels, drift_scale", [(1, 1.0), (3, 1.0), (3, -0.125)])
def test_block_matches_numpy(stable, channels, drift_scale, rng):
    x = (rng.random((2, 9, 11, channels)) - 0.5).astype("float32")
    block = PDESystemBlock(stable=stable, drift_scale=drift_scale)
    block.build(x.shape)
    randomize(block, rng, 2.0 if stable else 0.5)  # stable: saturate tanh and the norm cap
    block.bias.assign(rng.normal(scale=0.1, size=channels).astype("float32"))
    coefficients = effective(raw(block), stable, drift_scale)
    expected = system_step(x, *coefficients)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)), expected, atol=2e-5)
    assert (expected == 0).any() and (expected > 0).any(), "the input must exercise both ReLU branches"
    c = block.coefficients()
    np.testing.assert_allclose(c["alpha"], coefficients[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c["beta"] * drift_scale, coefficients[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c["gamma"], np.diagonal(coefficients[4]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(block.mixing_matrix(), coefficients[4], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("time_step", [0.25, 0.6])
def test_time_step_is_a_shorter_euler_step_and_keeps_the_bound(stable, time_step, rng):
    """relu(ψ + Δt (Aψ + b)) against NumPy (the Δt = 1 coefficients of the same weights), and a
    stable block's max_p ‖G(p)‖₂ ≤ 1 for Δt < 1 with weights that saturate the map."""
    x = (rng.random((2, 9, 11, 4)) - 0.5).astype("float32")
    block = PDESystemBlock(stable=stable, time_step=time_step)
    block.build(x.shape)
    randomize(block, rng, 3.0 if stable else 0.5)
    block.bias.assign(rng.normal(scale=0.1, size=4).astype("float32"))
    increment = system_step(x, *effective(raw(block), stable, 1.0), relu=False) - x  # Aψ + b
    expected = np.maximum(x + time_step * increment, 0.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)), expected, atol=2e-5)
    if stable:
        assert physics.max_amplification(block) <= 1 + 1e-6
    clone = PDESystemBlock.from_config(block.get_config())
    assert clone.time_step == time_step


def test_mixing_direction_and_drift_sign():
    """Γ[c, c'] carries channel c' into channel c; sβ Dx with Dx ψ[i,j] = (ψ[i,j+1] - ψ[i,j-1])/2."""
    block = PDESystemBlock()
    block.build((None, 5, 6, 2))
    for name in NAMES:
        getattr(block, name).assign(np.zeros(getattr(block, name).shape, "float32"))
    block.mixing.assign(np.array([[0.0, 0.5], [0.0, 0.0]], "float32"))  # channel 1 -> channel 0
    block.beta.assign(np.array([0.0, 0.25], "float32"))
    ramp = np.tile(np.arange(6, dtype="float32") + 1.0, (5, 1))
    x = np.stack([np.zeros_like(ramp), ramp], axis=-1)[None]
    out = keras.ops.convert_to_numpy(block(x))[0]
    np.testing.assert_allclose(out[..., 0], 0.5 * ramp)
    np.testing.assert_allclose(out[2, 1:-1, 1], ramp[2, 1:-1] + 0.25)  # interior: Dx ramp = 1


def test_system_taps_are_the_linear_update_and_the_symbol_its_plane_wave_matrix(rng):
    block = built_block(3, True, rng, 1.5)
    k = physics.system_stencil(block)  # (3, 3, Cin, Cout)
    x = rng.normal(size=(1, 6, 7, 3))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = sum(np.einsum("nhwi,io->nhwo", padded[:, r : r + 6, s : s + 7], k[r, s]) for r in range(3) for s in range(3))
    got = keras.ops.convert_to_numpy(block.field.explicit_step(x.astype("float32"), block.time_step)) - keras.ops.convert_to_numpy(block.bias)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # On a periodic 8 x 8 grid ψ = v e^{i(px j + py i)} is mapped to G(p) v e^{i(px j + py i)}.
    n, (ky, kx) = 8, (3, 5)
    py, px = 2 * np.pi * ky / n, 2 * np.pi * kx / n
    v = rng.normal(size=3) + 1j * rng.normal(size=3)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    wave = np.exp(1j * (px * j + py * i))[None, ..., None] * v
    image = periodic_linear_step(block, wave.real.astype("float32")) + 1j * periodic_linear_step(block, wave.imag.astype("float32"))
    g = physics.system_symbol(block, px, py)
    np.testing.assert_allclose(image, np.exp(1j * (px * j + py * i))[None, ..., None] * (g @ v), atol=1e-5)
    # The diagonal of the matrix symbol is the per-channel symbol of the channel's own stencil.
    np.testing.assert_allclose(np.diagonal(g), physics.symbol(physics.stencil(block), px, py), atol=1e-6)


def test_depthwise_blocks_keep_their_per_channel_analysis(rng):
    k = rng.normal(scale=0.3, size=(3, 3, 4))
    full = physics.system_stencil(k)
    assert not physics.mixes_channels(k) and physics.mixes_channels(full)
    assert physics.max_amplification(full) == pytest.approx(physics.max_amplification(k).max(), rel=1e-6)


# --- stable by construction ---------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 5, 16])
@pytest.mark.parametrize("scale", [0.3, 3.0, 100.0])
def test_stable_blocks_satisfy_von_neumann_for_any_weights(channels, scale):
    rng = np.random.default_rng(channels * 1000 + int(scale * 10))
    for drift_scale in (1.0, -0.125):
        block = built_block(channels, True, rng, scale, drift_scale)
        assert physics.max_amplification(block) <= 1 + 1e-6
    free = built_block(channels, False, np.random.default_rng(0), max(scale, 3.0))
    assert physics.max_amplification(free) > 1.5, "the same weights unconstrained amplify (the test has teeth)"


@pytest.mark.parametrize("channels", [1, 3, 12, 48])
def test_spectral_norm_bound_is_tight_and_an_upper_bound(channels, rng):
    """ν(M) ≥ ‖M‖₂ (NumPy's float64 SVD) within 2e-5, for near-identity, large and skewed
    matrices, where Schur's bound alone is loose; ν(I) = 1 exactly."""
    for m in (
        np.eye(channels) + 0.1 * rng.normal(size=(channels, channels)),
        30.0 * rng.normal(size=(channels, channels)),
        np.eye(channels) + np.triu(np.ones((channels, channels)), 1),
    ):
        exact = np.linalg.norm(m, 2)
        nu = float(keras.ops.convert_to_numpy(spectral_norm_bound(keras.ops.convert_to_tensor(m.astype("float32")))))
        assert exact * (1 - 1e-6) <= nu <= exact * (1 + 2e-5)
    eye = keras.ops.convert_to_tensor(np.eye(channels, dtype="float32"))
    assert float(keras.ops.convert_to_numpy(spectral_norm_bound(eye))) == 1.0


def test_stable_pdenet_every_block_bounded(rng):
    model = pde_zoo.build("pdenet", depth=6, channels=4, stable=True)
    blocks = physics.blocks_of(model)
    assert len(blocks) == 6 and all(isinstance(b, PDESystemBlock) and b.stable for b in blocks)
    for block in blocks:
        randomize(block, rng, 10.0)
    profile = physics.amplification_profile(model)
    assert profile["max_abs_G"].shape == (6,)
    assert np.all(profile["layer_max"] <= 1 + 1e-6) and profile["log10_bound"] <= 1e-6


def test_repeated_stable_steps_do_not_grow(rng):
    """Brute force: 200 linear steps ψ ← ψ + Aψ on a periodic grid never increase ‖ψ‖₂."""
    weights = {n: rng.normal(scale=3.0, size=(6, 6) if n == "mixing" else (6,)).astype("float32") for n in NAMES}
    norms = {}
    for stable in (True, False):
        block = PDESystemBlock(stable=stable)
        block.build((None, 16, 16, 6))
        for name, value in weights.items():
            getattr(block, name).assign(value)
        psi = rng.normal(size=(4, 16, 16, 6)).astype("float32")
        history = [np.linalg.norm(psi.reshape(4, -1).astype(np.float64), axis=1)]
        for _ in range(200):
            psi = periodic_linear_step(block, psi).astype("float32")
            history.append(np.linalg.norm(psi.reshape(4, -1).astype(np.float64), axis=1))
            if history[-1].min() > 1e6 * history[0].max():  # the unconstrained run: grown enough
                break
        norms[stable] = np.array(history)
    steps = norms[True]
    assert np.all(steps[1:] <= steps[:-1] * (1 + 1e-5)), "a stable step increased the norm"
    assert np.all(norms[False][-1] > 10 * norms[False][0]), "the unconstrained weights grow (the test has teeth)"


def test_stable_block_is_one_lipschitz_with_zero_padding(rng):
    block = built_block(5, True, rng, 5.0)
    x, y = rng.normal(size=(2, 3, 12, 12, 5)).astype("float32")
    fx, fy = (keras.ops.convert_to_numpy(block(v)).astype(np.float64) for v in (x, y))
    ratio = np.linalg.norm((fx - fy).reshape(3, -1), axis=1) / np.linalg.norm((x - y).reshape(3, -1), axis=1)
    assert np.all(ratio <= 1 + 1e-5)


def test_identity_at_initialisation_of_the_mixing():
    for stable in (False, True):
        block = PDESystemBlock(stable=stable)
        block.build((None, 7, 7, 4))
        np.testing.assert_array_equal(block.mixing_matrix(), np.zeros((4, 4)))


# --- the vector field and ODEBlock --------------------------------------------------------------


@pytest.mark.parametrize("stable", [False, True])
def test_ode_block_euler_unit_step_is_the_block(stable, rng):
    x = rng.random((2, 10, 9, 4)).astype("float32")
    block = built_block(4, stable, rng, 1.0 if stable else 0.3)
    field = PDESystemField(stable=stable)
    field.build(x.shape)
    field.set_weights(block.get_weights())
    ode = ODEBlock(field, t0=0.0, t1=1.0, method="euler", step_size=1.0)
    expected = keras.ops.convert_to_numpy(block(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ode(x)), expected, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(field(0.3, x)), keras.ops.convert_to_numpy(block.vector_field(0.3, x)), atol=1e-6)
    linear = PDESystemField(stable=stable, activation=None)
    linear.build(x.shape)
    linear.set_weights(block.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(linear(0.0, x)), system_step(x, *effective(raw(block), stable, 1.0), relu=False) - x, atol=2e-5
    )


# --- models -------------------------------------------------------------------------------------


def test_stage_layout():
    assert stage_layout(8) == (3, 3, 2) and stage_layout(2) == (1, 1, 0) and stage_layout(200) == (67, 67, 66)
    assert stage_layout(5, stages=2, stage_blocks=(1, 4)) == (1, 4)
    for kwargs in [dict(stage_blocks=(1, 2)), dict(stage_blocks=(4, 4, 1)), dict(stage_blocks=(-1, 5, 4)), dict(stages=0)]:
        with pytest.raises(ValueError, match="stage"):
            stage_layout(8, **kwargs)
    with pytest.raises(ValueError, match="channels must be >= 1"):
        pde_zoo.build("pdenet", depth=2, channels=0)


@pytest.mark.parametrize("name", ["pdenet", "convresnet"])
def test_architecture(name):
    model = pde_zoo.build(name, depth=8, channels=4)
    assert model.name == f"{name}-8" and model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    block_type = PDESystemBlock if name == "pdenet" else ResidualConvBlock
    for k, (blocks, size, width) in enumerate([(3, 28, 4), (3, 14, 8), (2, 7, 16)], start=1):
        stage = model.get_layer(f"stage_{k}")
        assert isinstance(stage, StencilStack) and len(stage.blocks) == blocks
        assert all(isinstance(b, block_type) for b in stage.blocks)
        assert stage.output.shape == (None, size, size, width)
        assert stage.blocks[0].name == f"stage_{k}_block_1"
    assert model.layers[-1].activation.__name__ == "softmax"


def _expected_params(name, layout, c):
    widths = [c * 2**k for k in range(len(layout))]
    total = 9 * widths[0] + 2 * widths[0]  # stem conv (no bias) + GroupNorm (γ, β)
    total += sum(9 * a * b + 2 * b for a, b in zip(widths[:-1], widths[1:]))  # strided transitions
    per_block = (lambda w: w * w + 5 * w) if name == "pdenet" else (lambda w: 9 * w * w + w)
    total += sum(n * per_block(w) for n, w in zip(layout, widths))
    return total + widths[-1] * 10 + 10


@pytest.mark.parametrize("name", ["pdenet", "convresnet"])
@pytest.mark.parametrize("depth, channels", [(0, 4), (8, 6), (13, 5)])
def test_parameter_counts(name, depth, channels):
    model = pde_zoo.build(name, depth=depth, channels=channels)
    assert model.count_params() == _expected_params(name, stage_layout(depth), channels)


def test_default_pdenet_fits_the_budget_at_depth_200():
    assert _expected_params("pdenet", stage_layout(200), DEFAULT_CHANNELS) <= 250_000
    assert _expected_params("pdenet", stage_layout(200), DEFAULT_CHANNELS + 1) > 250_000  # the widest that fits
    assert pde_zoo.build("pdenet", depth=200, stable=True).count_params() == _expected_params("pdenet", stage_layout(200), DEFAULT_CHANNELS)


@pytest.mark.parametrize(
    "name, options",
    [pytest.param("pdenet", {"stable": True}, marks=pytest.mark.slow), ("pdenet", {"drift_scale": -0.125}), ("convresnet", {})],
)
def test_forward_backward_and_keras_round_trip(name, options, tmp_path, rng):
    model = pde_zoo.compile_model(pde_zoo.build(name, depth=4, channels=4, **options))
    x = rng.random((16, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 16)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(not np.array_equal(a, b) for a, b in zip(before, model.get_weights())), "every weight moves"
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), probs, atol=1e-6)
    np.testing.assert_allclose(pde_zoo.predict(loaded, x[:3]), probs[:3], atol=1e-6)
    if name == "pdenet":
        block = loaded.get_layer("stage_2").blocks[0]
        assert block.stable == options.get("stable", False) and block.drift_scale == options.get("drift_scale", 1.0)


@pytest.mark.parametrize("layer", [PDESystemBlock(stable=True, drift_scale=-0.125), PDESystemField(activation=None), PDESystemField(stable=True)])
def test_layer_config_round_trip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_bad_arguments():
    with pytest.raises(ValueError, match="stable must be True or False"):
        PDESystemBlock(stable="yes")
    with pytest.raises(ValueError, match="drift_scale must be non-zero"):
        PDESystemBlock(drift_scale=0)
    with pytest.raises(ValueError, match="activation"):
        PDESystemField(activation="tanh")
    for bad in (0, -0.5, 1.5, True, "1"):
        with pytest.raises(ValueError, match=r"time_step must be a number in \(0, 1\]"):
            PDESystemBlock(time_step=bad)
    with pytest.raises(ValueError, match="NHWC"):
        PDESystemBlock()(np.zeros((2, 5, 5), "float32"))


JAX_SCRIPT = """
import json, sys, numpy as np, keras, pde_zoo
assert keras.backend.backend() == "jax"
d = np.load(sys.argv[1])
out = {}
for name, options in [("pdenet", {"stable": True}), ("convresnet", {})]:
    model = pde_zoo.build(name, depth=3, channels=4, **options)
    model.set_weights([d[f"{name}_w{i}"] for i in range(len(model.weights))])
    out[name] = np.asarray(model.predict(d["x"], verbose=0)).tolist()
    history = pde_zoo.compile_model(model).fit(d["x"], d["y"], epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
print(json.dumps(out))
"""


@pytest.mark.slow  # a JAX subprocess (~25 s)
def test_models_run_on_the_jax_backend(tmp_path, rng):
    pytest.importorskip("jax")
    arrays = {"x": rng.random((8, 28, 28, 1)).astype("float32"), "y": rng.integers(0, 10, 8)}
    expected = {}
    for name, options in [("pdenet", {"stable": True}), ("convresnet", {})]:
        model = pde_zoo.build(name, depth=3, channels=4, **options)
        for block in physics.blocks_of(model):
            for w in block.weights:
                w.assign(rng.normal(scale=0.3, size=w.shape).astype("float32"))
        arrays.update({f"{name}_w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())})
        expected[name] = model.predict(arrays["x"], verbose=0)
    np.savez(tmp_path / "d.npz", **arrays)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "d.npz")], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    for name, value in expected.items():
        np.testing.assert_allclose(np.array(got[name]), value, atol=1e-5)


# --- the physics report -------------------------------------------------------------------------


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_analyze_a_staged_model(tmp_path, rng):
    runs = {}
    for name, options in [("pdenet", {"stable": True}), ("convresnet", {})]:
        model = pde_zoo.build(name, depth=3, channels=3, **options)
        for block in physics.blocks_of(model):
            for w in block.weights:
                w.assign(rng.normal(scale=3.0 if name == "pdenet" else 0.2, size=w.shape).astype("float32"))
        run = tmp_path / f"{name}-3"
        run.mkdir()
        model.save(run / "model.keras")
        runs[name] = (run, model)
    assert cli.main(["analyze", *(str(run) for run, _ in runs.values()), "--out", str(tmp_path / "reports")]) in (0, None)
    for name, (run, model) in runs.items():
        out = tmp_path / "reports" / run.name
        report = json.loads((out / "report.json").read_text())
        assert report["depth"] == 3 and report["channels"] == [3, 6, 12] and "skipped" in report["propagator"]
        blocks = physics.blocks_of(model)
        assert [r["max_abs_G"] for r in report["layers"]] == pytest.approx([physics.max_amplification(b) for b in blocks])
        assert [len(r["channels"]) for r in report["layers"]] == [3, 6, 12]
        if name == "pdenet":
            assert report["stability"]["max_abs_G"] <= 1 + 1e-6 and report["stability"]["n_amplifying"] == 0
            assert "What the blocks learned" in (out / "report.md").read_text()
        for figure in report["figures"]:
            assert (out / figure).stat().st_size > 0
    table = json.loads((tmp_path / "reports" / "stability.json").read_text())
    assert [row["model"] for row in table] == ["pdenet-3", "convresnet-3"]
