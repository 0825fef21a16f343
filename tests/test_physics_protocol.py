"""Issue 18 §2: the explicit physics protocol, and `pde-zoo analyze` on the continuous PDE models
(per time segment: coefficients, the symbol R(h λ(p)) of one solver step over the solver's
actual steps, stability), against independent references: Taylor truncations of e^z, a NumPy
brute-force Runge–Kutta step on a random field (periodic, against the FFT multiplier; zero
padded, against the Keras solver), the exact solution of a linear ODE, and an end-to-end report
of the committed pde2ode-5."""

import json
import math

import keras
import numpy as np
import pytest

import pde_zoo
from pde_zoo import analysis, cli, ode, physics
from pde_zoo.layers import (
    ConvField,
    PDE1Block,
    PDE2Block,
    PDEField,
    PDESystemBlock,
    PDESystemField,
    ResidualBlock,
    ResidualConvBlock,
    StencilStack,
)
from pde_zoo.layers import physics_protocol as protocol
from pde_zoo.physics import rk_stability

# The stability polynomials in closed form (Hairer & Wanner II, IV.2): e^z truncated at the order,
# plus DOPRI5's sixth-degree term z^6/600.
TAYLOR = {name: [1 / math.factorial(k) for k in range(order + 1)] for name, order in
          [("euler", 1), ("midpoint", 2), ("rk4", 4), ("bosh3", 3), ("adaptive_heun", 2), ("dopri5", 5)]}
TAYLOR["dopri5"] = TAYLOR["dopri5"] + [1 / 600]


# --------------------------------------------------------------------------- the protocol


def test_each_layer_states_its_part_of_the_protocol():
    x = np.zeros((1, 8, 8, 3), "float32")
    pde, system, conv = PDE2Block(), PDESystemBlock(), ResidualConvBlock()
    field, system_field, conv_field = PDEField(pieces=2, horizon=2.0), PDESystemField(), ConvField()
    for layer in (pde, system, conv):
        layer(x)
    for f in (field, system_field, conv_field):
        f(0.0, x)
    assert protocol.is_stencil_layer(pde) and protocol.is_coefficient_layer(pde) and not protocol.is_system_stencil_layer(pde)
    # ResidualBlock.taps is a refusing stub, marked not_provided: the system block has no depthwise taps.
    assert not protocol.is_stencil_layer(system) and protocol.is_system_stencil_layer(system) and protocol.is_coefficient_layer(system)
    assert protocol.is_system_stencil_layer(conv) and not protocol.is_coefficient_layer(conv)
    assert protocol.is_piecewise_field(field) and not protocol.is_piecewise_field(system_field)
    assert protocol.missing(conv_field, protocol.PiecewiseFieldLayer) == ["operator_taps", "coefficients", "drift_scale", "pieces", "horizon"]
    assert protocol.missing(keras.layers.Dense(2), protocol.StencilLayer) == ["taps"]


def test_symbol_of_taps_is_the_plane_wave_eigenvalue(rng):
    """K ⋆ e^{i(px j + py i)} = G(p) e^{i(px j + py i)} by direct correlation, depthwise and mixing."""
    k = rng.normal(size=(3, 3, 2))
    ks = rng.normal(size=(3, 3, 2, 2))
    px, py = 0.7, -1.9
    i, j = 5, 4
    wave = lambda di, dj: np.exp(1j * (px * (j + dj) + py * (i + di)))
    direct = sum(k[dy + 1, dx + 1] * wave(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / wave(0, 0)
    np.testing.assert_allclose(protocol.symbol_of_taps(k, px, py), direct, rtol=1e-12)
    v = np.array([1.0, -2.0])  # (Σ K[., ., c', c] v_c' wave)_c = (G v)_c
    direct = sum(ks[dy + 1, dx + 1].T @ v * wave(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / wave(0, 0)
    np.testing.assert_allclose(protocol.symbol_of_taps(ks, px, py) @ v, direct, rtol=1e-12)


def test_layers_without_the_protocol_are_refused_by_name(tmp_path):
    class NoTaps(ResidualBlock):  # says it can be fused, gives nothing to fuse
        @property
        def fusable(self):
            return True

        def call(self, inputs):
            return inputs

    stack = StencilStack([PDE2Block(), NoTaps()])
    with pytest.raises(TypeError, match=r"NoTaps .* has no taps\(\)"):
        stack(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(TypeError, match=r"Dense .* has no taps\(\)"):
        analysis.analyze(keras.layers.Dense(3), tmp_path / "dense")
    with pytest.raises(TypeError, match=r"ConvField .* has no operator_taps\(\)"):
        analysis.analyze(ConvField(), tmp_path / "field")
    with pytest.raises(TypeError, match=r"has no taps\(\)"):
        physics.stencil(keras.layers.Dense(3))
    with pytest.raises(TypeError, match=r"Dense .* has no taps\(\)"):
        physics.blocks_of([PDE1Block(), keras.layers.Dense(3)])
    assert not list(tmp_path.iterdir())


def test_a_protocol_layer_is_analysed_alone(tmp_path, rng):
    block = PDE1Block(name="alone")
    block(np.zeros((1, 8, 8, 1), "float32"))
    block.set_coefficients(alpha=0.5, beta=0.2, gamma=-0.1)
    report = analysis.analyze(block, tmp_path / "alone")
    assert report["depth"] == 1 and report["params"] == 5
    assert report["layers"][0]["max_abs_G"] == pytest.approx(physics.max_amplification(block), abs=1e-12)


def test_odenet_has_no_pde_fields(tmp_path):
    model = pde_zoo.build("odenet", depth=1, channels=8, method="rk4", step_size=0.5)
    with pytest.raises(ValueError, match=r"no PDE fields.*ConvField.*operator_taps\(\)"):
        analysis.analyze(model, tmp_path / "odenet")
    assert cli.main(["analyze", "odenet-1", "--out", str(tmp_path / "cli")]) != 0


# --------------------------------------------------------------------------- R(z) and one step


@pytest.mark.parametrize("method", sorted(ode.METHODS))
def test_stability_polynomial_is_the_taylor_truncation(method, rng):
    r = rk_stability.stability_polynomial(method)
    expected = np.zeros(len(r))
    expected[: len(TAYLOR[method])] = TAYLOR[method]
    np.testing.assert_allclose(r, expected, rtol=1e-12, atol=1e-15)
    z = rng.normal(size=20) + 1j * rng.normal(size=20)  # the definition R(z) = 1 + z bᵀ(I - zA)⁻¹1, solved
    np.testing.assert_allclose(rk_stability.stability_function(method, z), np.polyval(expected[::-1], z), rtol=1e-12)
    np.testing.assert_allclose(rk_stability.step_amplification(method, 0.3, z), np.polyval(expected[::-1], 0.3 * z), rtol=1e-12)


def _operator(rng, drift_scale=-0.125):
    """Random PDE coefficients and the taps of L (no identity), (3, 3)."""
    c = dict(alpha=rng.uniform(0.2, 0.9), beta=rng.normal(), sigma=rng.uniform(0.2, 0.9), rho=rng.normal(), gamma=rng.normal(scale=0.3))
    return c, physics.pde_stencil(**c, drift_scale=drift_scale) - physics.IDENTITY


def _brute_rk_step(method, h, psi, apply_l):
    """One explicit Runge–Kutta step of dψ/dt = Lψ in NumPy, stage by stage from the tableau."""
    tab = ode.METHODS[method].tableau
    ks = []
    for row in tab.a:
        ks.append(apply_l(psi + h * sum(a * k for a, k in zip(row, ks))))
    return psi + h * sum(b * k for b, k in zip(tab.b, ks))


def _periodic(taps):
    def apply(psi):
        return sum(taps[dy + 1, dx + 1] * np.roll(psi, (-dy, -dx), axis=(0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    return apply


@pytest.mark.parametrize("method", sorted(ode.METHODS))
def test_one_step_on_a_random_periodic_field_is_R_of_h_lambda(method, rng):
    _, taps = _operator(rng)
    psi = rng.normal(size=(32, 24))
    freq_y, freq_x = 2 * np.pi * np.fft.fftfreq(32), 2 * np.pi * np.fft.fftfreq(24)
    py, px = np.meshgrid(freq_y, freq_x, indexing="ij")
    lam = protocol.symbol_of_taps(taps, px, py)
    for h in (0.1, 0.7, 1.3):
        brute = _brute_rk_step(method, h, psi, _periodic(taps))
        spectral = np.fft.ifft2(rk_stability.step_amplification(method, h, lam) * np.fft.fft2(psi))
        np.testing.assert_allclose(spectral.imag, 0.0, atol=1e-10)
        np.testing.assert_allclose(brute, spectral.real, atol=1e-10)
        # the step as one (2s+1)² stencil R(hL), correlated periodically
        stencil = rk_stability.step_stencil(method, h, taps)
        s = stencil.shape[0] // 2
        via_stencil = sum(stencil[s + dy, s + dx] * np.roll(psi, (-dy, -dx), axis=(0, 1)) for dy in range(-s, s + 1) for dx in range(-s, s + 1))
        np.testing.assert_allclose(via_stencil, brute, atol=1e-10)


@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5", "bosh3"])
def test_the_solver_step_on_the_linear_pde_field_is_the_numpy_step(method, rng):
    """The Keras solver's own step (`RungeKutta.step`) on PDEField(activation=None), zero padding,
    against the NumPy stage-by-stage step with zero-padded correlations."""
    coefficients, taps = _operator(rng)
    field = PDEField(drift_scale=-0.125, activation=None)
    psi = rng.uniform(size=(1, 12, 10, 1)).astype("float32")
    field(0.0, psi)
    field.set_coefficients(**{k: [v] for k, v in coefficients.items()})
    h = 0.6
    (keras_step,) = ode.METHODS[method].step(lambda t, y: (field(t, y[0]),), keras.ops.convert_to_tensor(0.0), keras.ops.convert_to_tensor(h), (psi,))
    brute = _brute_rk_step(method, h, psi[0].astype(np.float64), lambda u: physics.correlate(u, taps[..., None]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras_step)[0], brute, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method,step_size,rtol,tol", [
    ("dopri5", None, 1e-7, 1e-5), ("bosh3", None, 1e-7, 1e-5), ("adaptive_heun", None, 1e-4, 1e-2), ("rk4", 0.3, 1e-7, 1e-2),
])
def test_recorded_steps_are_the_solve_and_follow_the_exact_solution(method, step_size, rtol, tol):
    """y' = Λy, Λ = [[a, -b], [b, a]] (λ = a + ib on C ≅ R²): the recorded steps give
    Π_j R(h_j λ) y0 = the solver's y(T) to rounding, ≈ e^{λT} y0 to the tolerance; their counts
    are `odeint`'s."""
    a, b, T = -0.8, 2.5, 3.0
    lam = complex(a, b)
    mat = keras.ops.convert_to_tensor(np.array([[a, -b], [b, a]]))
    func = lambda t, y: keras.ops.matmul(mat, y)
    y0 = np.array([1.0, 0.5])
    kwargs = dict(method=method, rtol=rtol, atol=rtol / 100, step_size=step_size)
    ys, stats = ode.odeint(func, y0, [0.0, 1.0, T], return_stats=True, **kwargs)
    record = ode.solve_steps(func, y0, [0.0, 1.0, T], **kwargs)
    assert record.stats == stats.numpy()
    assert record.sizes.sum() == pytest.approx(T, abs=1e-12) and np.all(np.diff(record.times) > 0)
    assert list(np.unique(record.interval)) == [0, 1]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(record.ys), keras.ops.convert_to_numpy(ys), rtol=1e-12, atol=1e-14)
    z0 = complex(*y0)
    z = z0 * np.prod(rk_stability.step_amplification(method, record.sizes, lam))
    np.testing.assert_allclose([z.real, z.imag], keras.ops.convert_to_numpy(ys)[-1], rtol=1e-11, atol=1e-13)
    exact = z0 * np.exp(lam * T)
    np.testing.assert_allclose([z.real, z.imag], [exact.real, exact.imag], atol=tol)


# --------------------------------------------------------------------------- analyze, continuous


def test_euler_at_step_one_reads_as_the_discrete_blocks(tmp_path, rng):
    """pde1ode with Euler at h = 1 is the discrete pde1 model: each segment's one step has the
    symbol 1 + λ_k = G_k of PDE block k, so max_p |G_h| is the block's max_amplification."""
    model = pde_zoo.build("pde1ode", depth=3, method="euler", step_size=1.0)
    field = model.get_layer("ode").field
    values = dict(alpha=rng.uniform(0.3, 0.8, 3), beta=rng.normal(0, 0.3, 3), sigma=rng.uniform(0.3, 0.8, 3),
                  rho=rng.normal(0, 0.3, 3), gamma=rng.normal(0, 0.1, 3))
    field.set_coefficients(**values)
    report = analysis.analyze(model, tmp_path / "euler", data_dir=None)
    assert report["kind"] == "continuous" and [s["n_steps"] for s in report["segments"]] == [1, 1, 1]
    for k, segment in enumerate(report["segments"]):
        block = PDE1Block()
        block(np.zeros((1, 4, 4, 1), "float32"))
        block.set_coefficients(**{n: v[k] for n, v in values.items()})
        assert segment["max_abs_G"] == pytest.approx(physics.max_amplification(block), abs=1e-9)
        assert segment["euler_block_max_abs_G"] == pytest.approx(segment["max_abs_G"], abs=1e-9)
        assert segment["channels"][0]["coefficients"]["alpha"] == pytest.approx(values["alpha"][k], rel=1e-6)
    assert report["solve"]["solves"][0]["counts_equal"] is True
    from pde_zoo.analysis.continuous import piece_operator

    taps = keras.ops.convert_to_numpy(field.operator_taps())  # the field's own L_k, as it computes it
    for k in range(3):
        np.testing.assert_allclose(piece_operator(field, k)[1], taps[k], atol=1e-6)


def test_analyze_pde2ode_5_reports_every_segment(tmp_path):
    out = tmp_path / "pde2ode-5"
    assert cli.main(["analyze", "pde2ode-5", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    assert report["kind"] == "continuous" and report["depth"] == 5
    segments = report["segments"]
    assert [(s["t0"], s["t1"], s["piece"]) for s in segments] == [(k, k + 1, k) for k in range(5)]
    assert sum(1 for line in md.splitlines() if line.startswith("| ") and "| [" in line) == 5  # one row per segment
    solve = report["solve"]["solves"][0]
    assert solve["method"] == "dopri5" and solve["counts_equal"] is True and solve["max_abs_state_difference"] < 1e-4
    assert sum(s["n_steps"] for s in segments) == solve["ode_block_stats"]["steps"]
    model = pde_zoo.load("pde2ode-5")
    field = model.get_layer("ode").field
    coefficients = field.coefficients()
    p = np.linspace(-np.pi, np.pi, 401)
    py, px = np.meshgrid(p, p, indexing="ij")
    for k, s in enumerate(segments):
        assert sum(s["step_sizes"]) == pytest.approx(1.0, abs=1e-6)
        c = {n: float(coefficients[n][k]) for n in coefficients}
        assert s["channels"][0]["coefficients"] == pytest.approx(c)
        # independent: the lattice symbol in closed form (docs/conventions.md), R of dopri5 as a Taylor sum
        lam = (c["gamma"] - 2 * c["alpha"] ** 2 * np.sin(px / 2) ** 2 - 2 * c["sigma"] ** 2 * np.sin(py / 2) ** 2
               + 1j * -0.125 * (c["beta"] * np.sin(px) + c["rho"] * np.sin(py)))
        total = np.ones_like(lam)
        for h, g in zip(s["step_sizes"], s["step_max_abs_G"]):
            r = np.polyval(TAYLOR["dopri5"][::-1], h * lam)
            assert g == pytest.approx(np.abs(r).max(), rel=1e-6)
            total = total * r
        assert s["log10_composite"] == pytest.approx(np.log10(np.abs(total).max()), abs=1e-6)
        assert s["log10_exact"] == pytest.approx(np.log10(np.abs(np.exp(lam)).max()), abs=1e-6)
        assert s["max_abs_G"] == pytest.approx(max(s["step_max_abs_G"]))
    st = report["stability"]
    assert st["log10_bound"] == pytest.approx(sum(s["log10_product"] for s in segments))
    assert st["log10_composite"] <= st["log10_bound"] + 1e-12
    assert {"steps.png", "symbol_maps.png"} <= {f.name for f in out.iterdir()}
