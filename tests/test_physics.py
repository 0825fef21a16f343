"""pde_zoo.physics (thesis chapter III, eq 21-38) against independent references: analytic
symbols, the term-by-term NumPy PDE step (numpy_reference.py), explicit plane waves and Fourier
sums, brute-force path enumeration, the Keras forward pass on a real MNIST image, and closed
forms derived by hand."""

import itertools
import json

import keras
import numpy as np
import pytest

import pde_zoo
from conftest import randomize_weights
from numpy_reference import pde_step, shift
from pde_zoo import analysis, cli, physics
from pde_zoo.layers import COEFFICIENT_NAMES, PDE1Block, PDE2Block, ResidualConvBlock, StencilStack

DRIFT = {PDE1Block: 1.0, PDE2Block: -0.125}
PDE_CLASSES = [PDE1Block, PDE2Block]

# The eq-22 stencils written out from docs/conventions.md (rows dy = -1, 0, 1; columns dx = -1, 0, 1).
DXX = np.array([[0, 0, 0], [1, -2, 1], [0, 0, 0]], dtype=float)
DX = np.array([[0, 0, 0], [-0.5, 0, 0.5], [0, 0, 0]])
DYY = DXX.T.copy()
DY = DX.T.copy()
EYE = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=float)


def random_coefficients(rng, shape=()):
    """Coefficients of both signs with a real diffusion (|α|, |σ| >= 0.3)."""
    values = {
        "alpha": rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.3, 0.9, shape), "beta": rng.normal(0, 0.4, shape),
        "sigma": rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.3, 0.9, shape), "rho": rng.normal(0, 0.4, shape),
        "gamma": rng.normal(0, 0.1, shape),
    }
    return {k: float(v) for k, v in values.items()} if shape == () else values


def pde_block(block_class, coefficients, channels=1):
    block = block_class()
    block.build((None, 8, 8, channels))
    block.set_coefficients(**coefficients)
    return block


def resnet_block(rng, bias=0.0):
    block = ResidualConvBlock()
    block.build((None, 8, 8, 1))
    block.kernel.assign(rng.normal(0, 0.3, (3, 3, 1, 1)).astype("float32"))
    block.bias.assign(np.full(1, bias, "float32"))
    return block


def linear_reference(psi, layer):
    """One block with ReLU removed, from numpy_reference (term by term, zero padding)."""
    if isinstance(layer, np.ndarray):
        return sum(layer[r, c] * shift(psi, r - 1, c - 1) for r in range(3) for c in range(3))
    if isinstance(layer, ResidualConvBlock):
        kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
        return psi + sum(np.einsum("nhwi,io->nhwo", shift(psi, r - 1, c - 1), kernel[r, c]) for r in range(3) for c in range(3))
    coeffs = {n: np.asarray(v, np.float64) for n, v in layer.coefficients().items()}
    return pde_step(psi, *(coeffs[n] for n in COEFFICIENT_NAMES), drift=DRIFT[type(layer)], relu=False)


def correlate_with(stencil, psi):
    """Σ K[dy+1, dx+1] ψ[i+dy, j+dx] with numpy_reference.shift (NHWC, K (3, 3[, C]))."""
    return sum(stencil[r, c] * shift(psi, r - 1, c - 1) for r in range(3) for c in range(3))


# --- 1. stencils -------------------------------------------------------------------------------


@pytest.mark.parametrize("block_class", PDE_CLASSES)
@pytest.mark.parametrize("channels", [1, 3])
def test_pde_stencil_is_the_linear_update(block_class, channels, rng):
    block = block_class()
    block.build((None, 9, 11, channels))
    randomize_weights(block, rng)
    k = physics.stencil(block)
    assert k.shape == ((3, 3) if channels == 1 else (3, 3, channels)) and k.dtype == np.float64
    psi = rng.normal(size=(2, 9, 11, channels))
    np.testing.assert_allclose(correlate_with(k, psi), linear_reference(psi, block), atol=1e-12)  # boundary included
    taps = keras.ops.convert_to_numpy(block.taps())
    np.testing.assert_allclose(k, taps[..., 0] if channels == 1 else taps, atol=1e-6)
    coeffs = block.coefficients()
    np.testing.assert_allclose(physics.pde_stencil(**coeffs, drift_scale=DRIFT[block_class]), k, atol=1e-15)


def test_resnet_stencil_is_kernel_plus_identity(rng):
    block = resnet_block(rng)
    psi = rng.normal(size=(2, 7, 6, 1))
    k = physics.stencil(block)
    assert k.shape == (3, 3)
    np.testing.assert_allclose(correlate_with(k, psi)[..., 0], linear_reference(psi, block)[..., 0], atol=1e-6)
    wide = ResidualConvBlock()
    wide.build((None, 8, 8, 2))
    with pytest.raises(ValueError, match="mixes"):
        physics.stencil(wide)
    with pytest.raises(ValueError, match="not built"):
        physics.stencil(PDE1Block())
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        physics.stencil(np.zeros((5, 5)))


# --- 2. symbols --------------------------------------------------------------------------------


def test_symbol_analytic_values():
    for name, ref in {"Dxx": DXX, "Dx": DX, "Dyy": DYY, "Dy": DY, "I": EYE}.items():
        np.testing.assert_array_equal(physics.OPERATORS[name], ref)
    assert physics.symbol(DXX, np.pi, 0.0) == pytest.approx(-4.0)
    assert physics.symbol(DX, np.pi / 2, 0.0) == pytest.approx(1j)
    assert physics.symbol(DYY, 0.0, np.pi) == pytest.approx(-4.0)
    assert physics.symbol(DY, 0.0, np.pi / 2) == pytest.approx(1j)
    assert physics.symbol(DX, 0.0, np.pi / 2) == pytest.approx(0.0)  # Dx does not see py
    assert physics.symbol(EYE, 1.3, -0.4) == pytest.approx(1.0)


@pytest.mark.parametrize("block_class", PDE_CLASSES)
def test_symbol_formula_and_plane_wave_eigenvalue(block_class, rng):
    c = random_coefficients(rng)
    block = pde_block(block_class, c)
    s = DRIFT[block_class]
    px, py = rng.uniform(-np.pi, np.pi, (2, 4, 5))
    g = physics.symbol(block, px, py)
    assert g.shape == (4, 5)
    expected = (1 + c["gamma"] - 2 * c["alpha"] ** 2 * np.sin(px / 2) ** 2 - 2 * c["sigma"] ** 2 * np.sin(py / 2) ** 2
                + 1j * s * (c["beta"] * np.sin(px) + c["rho"] * np.sin(py)))
    np.testing.assert_allclose(g, expected, atol=1e-6)  # float32 weights
    np.testing.assert_allclose(physics.hamiltonian(block, px, py), expected - 1, atol=1e-6)
    # The eigenvalue on the plane wave ψ[i, j] = exp(i (px j + py i)), via the real reference step.
    qx, qy = 0.9, -2.1
    i, j = np.mgrid[0:12, 0:12]
    theta = (qx * j + qy * i)[None, ..., None]
    coeffs = [np.float64(block.coefficients()[n]) for n in COEFFICIENT_NAMES]
    out = pde_step(np.cos(theta), *coeffs, drift=s, relu=False) + 1j * pde_step(np.sin(theta), *coeffs, drift=s, relu=False)
    interior = (slice(None), slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(out[interior], physics.symbol(block, qx, qy) * np.exp(1j * theta)[interior], atol=1e-12)


def test_symbol_vectorised_per_channel(rng):
    block = pde_block(PDE2Block, random_coefficients(rng, (3,)), channels=3)
    px = np.linspace(-3, 3, 7)
    g = physics.symbol(block, px[:, None], 0.5)
    assert g.shape == (7, 1, 3)
    for ch in range(3):
        np.testing.assert_allclose(g[..., ch], physics.symbol(physics.stencil(block)[..., ch], px[:, None], 0.5))


def test_inverse_fourier_of_symbol_is_the_stencil(rng):
    """Eq 28-29: K[d] = (1/M²) Σ_k G(2πk/M) exp(-i 2π k·d/M) on an M x M momentum grid."""
    k = rng.normal(size=(3, 3))
    m = 8
    grid = 2 * np.pi * np.arange(m) / m
    g = physics.symbol(k, grid[None, :], grid[:, None])  # rows ky, columns kx
    rebuilt = np.zeros((3, 3))
    for dy, dx in itertools.product((-1, 0, 1), repeat=2):
        phase = np.exp(-1j * (grid[:, None] * dy + grid[None, :] * dx))
        rebuilt[dy + 1, dx + 1] = np.real((g * phase).sum()) / m**2
    np.testing.assert_allclose(rebuilt, k, atol=1e-12)


def test_continuum_hamiltonian_is_the_small_p_limit(rng):
    c = random_coefficients(rng)
    block = pde_block(PDE2Block, c)
    px, py = 0.7, -0.3
    coeffs = {n: float(v) for n, v in block.coefficients().items()}
    expected = (-coeffs["alpha"] ** 2 / 2 * px**2 - coeffs["sigma"] ** 2 / 2 * py**2 + coeffs["gamma"]
                - 0.125j * (coeffs["beta"] * px + coeffs["rho"] * py))
    assert physics.continuum_hamiltonian(block, px, py) == pytest.approx(expected, abs=1e-12)
    error = [abs(physics.hamiltonian(block, q, -q) - physics.continuum_hamiltonian(block, q, -q)) for q in (1e-2, 2e-2)]
    assert 6 < error[1] / error[0] < 10  # O(p³)


# --- 3. kernel_to_pde --------------------------------------------------------------------------


@pytest.mark.parametrize("block_class", PDE_CLASSES)
def test_kernel_to_pde_recovers_pde_coefficients(block_class, rng):
    c = random_coefficients(rng)
    fit, residual = physics.kernel_to_pde(physics.pde_stencil(**c, drift_scale=DRIFT[block_class]) - EYE)
    s = DRIFT[block_class]
    expected = {"Dxx": c["alpha"] ** 2 / 2, "Dx": s * c["beta"], "Dyy": c["sigma"] ** 2 / 2, "Dy": s * c["rho"], "I": c["gamma"]}
    assert fit == pytest.approx(expected, abs=1e-12)
    assert residual < 1e-12
    block = pde_block(block_class, c)
    assert physics.layer_to_pde(block)[0] == pytest.approx(expected, abs=1e-6)


def test_kernel_to_pde_residual_is_the_corner_share(rng):
    corners = np.zeros((3, 3))
    corners[::2, ::2] = rng.normal(size=(2, 2))
    f = 0.3 * DXX - 0.2 * DX + 0.1 * DYY + 0.4 * DY - 0.05 * EYE + corners
    fit, residual = physics.kernel_to_pde(f)
    assert fit == pytest.approx({"Dxx": 0.3, "Dx": -0.2, "Dyy": 0.1, "Dy": 0.4, "I": -0.05}, abs=1e-12)
    assert residual == pytest.approx(np.linalg.norm(corners) / np.linalg.norm(f), rel=1e-12)
    assert physics.kernel_to_pde(np.zeros((3, 3))) == ({"Dxx": 0.0, "Dx": 0.0, "Dyy": 0.0, "Dy": 0.0, "I": 0.0}, 0.0)
    with pytest.raises(ValueError, match="3, 3"):
        physics.kernel_to_pde(np.zeros(9))


# --- 4. propagator and path sums ---------------------------------------------------------------


def mixed_stack(rng):
    return [
        pde_block(PDE1Block, random_coefficients(rng)),
        resnet_block(rng),
        pde_block(PDE2Block, random_coefficients(rng)),
        rng.normal(0, 0.4, (3, 3)),
    ]


def test_propagator_equals_path_sum_and_linear_forward(rng):
    layers = mixed_stack(rng)
    n = len(layers)
    p = physics.propagator(layers)
    assert p.shape == (2 * n + 1, 2 * n + 1)
    for dy, dx in itertools.product(range(-n, n + 1), repeat=2):
        assert physics.path_sum(layers, dy, dx) == pytest.approx(p[n + dy, n + dx], abs=1e-13)
    psi = rng.normal(size=(1, 17, 19, 1))
    out = psi
    for layer in layers:
        out = linear_reference(out, layer)
    for i in range(n, 17 - n):
        for j in range(n, 19 - n):
            window = psi[0, i - n : i + n + 1, j - n : j + n + 1, 0]
            assert (p * window).sum() == pytest.approx(out[0, i, j, 0], abs=1e-6)
    np.testing.assert_allclose(physics.propagator(layers[:1]), physics.stencil(layers[0]))
    np.testing.assert_array_equal(physics.propagator([]), [[1.0]])


def test_propagator_of_a_model_and_per_channel(rng):
    model = pde_zoo.build("pde2", depth=3)
    blocks = model.get_layer("blocks").blocks
    for block in blocks:
        block.set_coefficients(**random_coefficients(rng))
    np.testing.assert_allclose(physics.propagator(model), physics.propagator(blocks))
    np.testing.assert_allclose(physics.propagator(StencilStack(blocks)), physics.propagator(blocks))
    wide = [pde_block(PDE1Block, random_coefficients(rng, (3,)), channels=3) for _ in range(3)]
    p = physics.propagator(wide)
    assert p.shape == (7, 7, 3)
    for ch in range(3):
        np.testing.assert_allclose(p[..., ch], physics.propagator([physics.stencil(b)[..., ch] for b in wide]), atol=1e-15)
    np.testing.assert_allclose(physics.path_sum(wide, 1, -2), p[3 + 1, 3 - 2], atol=1e-14)
    with pytest.raises(ValueError, match="paths"):
        physics.path_sum([EYE] * 9, 0, 0)


# --- 5. Gaussian limit and action --------------------------------------------------------------


@pytest.mark.parametrize("block_class", PDE_CLASSES)
def test_cumulants_of_the_propagator(block_class, rng):
    s = DRIFT[block_class]
    c = random_coefficients(rng)
    one = physics.pde_step_moments(**c, drift_scale=s)
    numeric = physics.stencil_moments(physics.pde_stencil(**c, drift_scale=s))
    np.testing.assert_allclose(numeric["mean"], one["mean"], atol=1e-13)
    np.testing.assert_allclose(numeric["cov"], one["cov"], atol=1e-13)
    n = 7
    moments = physics.stencil_moments(physics.propagator([physics.pde_stencil(**c, drift_scale=s)] * n))
    assert moments["mass"] == pytest.approx((1 + c["gamma"]) ** n, rel=1e-12)
    np.testing.assert_allclose(moments["mean"], n * one["mean"], atol=1e-11)
    np.testing.assert_allclose(moments["cov"], n * one["cov"], atol=1e-11)
    # Varying coefficients: the exact cumulant sums (and the thesis continuum values).
    layers = [pde_block(block_class, random_coefficients(rng)) for _ in range(5)]
    limit = physics.gaussian_limit(layers)
    measured = physics.stencil_moments(physics.propagator(layers))
    assert limit["discrete"]["mass"] == pytest.approx(measured["mass"], rel=1e-12)
    np.testing.assert_allclose(limit["discrete"]["mean"], measured["mean"], atol=1e-12)
    np.testing.assert_allclose(limit["discrete"]["cov"], measured["cov"], atol=1e-12)
    coeffs = [{k: float(v) for k, v in b.coefficients().items()} for b in layers]
    np.testing.assert_allclose(limit["continuum"]["mean"], [s * sum(x["rho"] for x in coeffs), s * sum(x["beta"] for x in coeffs)], atol=1e-12)
    np.testing.assert_allclose(np.diag(limit["continuum"]["cov"]), [sum(x["sigma"] ** 2 for x in coeffs), sum(x["alpha"] ** 2 for x in coeffs)], atol=1e-12)


@pytest.mark.parametrize("block_class", PDE_CLASSES)
def test_features_drift_by_minus_the_mean_offset(block_class):
    """A delta moved by the reference step: its centre of mass goes by -N sβ/(1+γ) in x, -N sρ/(1+γ) in y."""
    c = {"alpha": 0.8, "beta": 0.5, "sigma": 0.7, "rho": -0.3, "gamma": -0.2}
    s, n = DRIFT[block_class], 10
    psi = np.zeros((1, 41, 41, 1))
    psi[0, 20, 20, 0] = 1.0
    for _ in range(n):
        psi = pde_step(psi, *(c[k] for k in COEFFICIENT_NAMES), drift=s, relu=False)
    i, j = np.mgrid[0:41, 0:41]
    mass = psi[0, ..., 0].sum()
    assert mass == pytest.approx(0.8**n)
    assert (psi[0, ..., 0] * j).sum() / mass - 20 == pytest.approx(-n * s * 0.5 / 0.8)
    assert (psi[0, ..., 0] * i).sum() / mass - 20 == pytest.approx(n * s * 0.3 / 0.8)


def test_normalised_propagator_tends_to_the_exact_gaussian():
    """CLT with non-negative weights (L1 error ~ N^-1/2); the thesis continuum misses the 1/(1+γ) factors."""
    c = {"alpha": 0.6, "beta": 0.2, "sigma": 0.5, "rho": 0.1, "gamma": -0.3}
    errors = {}
    for n in (15, 60):
        layers = [physics.pde_stencil(**c)] * n
        p = physics.propagator(layers)
        p = p / p.sum()
        limit = physics.gaussian_limit(layers)
        exact = physics.gaussian_on_grid(limit["discrete"]["mean"], limit["discrete"]["cov"], n)
        continuum = physics.gaussian_on_grid(limit["continuum"]["mean"], limit["continuum"]["cov"], n)
        errors[n] = np.abs(p - exact).sum(), np.abs(p - continuum).sum()
    assert errors[60][0] < 0.05 and errors[60][0] < 0.6 * errors[15][0]
    assert errors[60][1] > 10 * errors[60][0]


def test_classical_action_is_the_least_action(rng):
    layers = [pde_block(PDE1Block, random_coefficients(rng)) for _ in range(5)]
    coeffs = [{k: float(v) for k, v in b.coefficients().items()} for b in layers]
    a = np.array([x["alpha"] ** 2 for x in coeffs])
    b = np.array([x["sigma"] ** 2 for x in coeffs])
    beta = np.array([x["beta"] for x in coeffs])
    rho = np.array([x["rho"] for x in coeffs])
    dy, dx = 2.0, -3.0
    lam_x, lam_y = (beta.sum() - dx) / a.sum(), (rho.sum() - dy) / b.sum()
    velocity = np.stack([lam_y * b - rho, lam_x * a - beta], axis=1)  # Lagrange: ẋ_t + β_t ∝ α_t²
    path = np.concatenate([np.zeros((1, 2)), np.cumsum(velocity, axis=0)]) + [dy, dx]  # x_0 = x_N + d, x_N = 0
    np.testing.assert_allclose(path[-1], [0.0, 0.0], atol=1e-12)
    s_cl = physics.classical_action(layers, dy, dx)
    assert physics.path_action(layers, path) == pytest.approx(float(s_cl), rel=1e-12)
    for _ in range(20):
        bump = np.concatenate([np.zeros((1, 2)), rng.normal(size=(4, 2)), np.zeros((1, 2))])
        assert physics.path_action(layers, path + bump) > s_cl
    # exp(-S_cl) is the continuum Gaussian up to a constant factor.
    d = np.arange(-5, 6)
    ratio = np.exp(-physics.classical_action(layers, d[:, None], d[None, :]))
    limit = physics.gaussian_limit(layers)["continuum"]
    ratio = ratio / physics.gaussian_on_grid(limit["mean"], limit["cov"], 5)
    np.testing.assert_allclose(ratio, ratio[0, 0], rtol=1e-10)


# --- 6. ReLU gates on a real image -------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_image():
    from pde_zoo import data

    assert data.find_idx_dir(download=False) is not None, "run `pde-zoo data` first (scripts/test.sh does)"
    images, _, _ = data.load_arrays("test", download=False)
    return images[:1].astype("float32") / 255.0


@pytest.mark.parametrize("name", ["pde1", "resnet"])
def test_gated_path_sum_is_the_forward_pass_on_mnist(name, mnist_image):
    rng = np.random.default_rng(7)
    model = pde_zoo.build(name, depth=6)
    blocks = model.get_layer("blocks").blocks
    for block in blocks:
        if name == "pde1":
            block.set_coefficients(**random_coefficients(rng))
        else:
            block.kernel.assign(rng.normal(0, 0.3, (3, 3, 1, 1)).astype("float32"))
            block.bias.assign(rng.normal(0, 0.05, 1).astype("float32"))
    out = keras.ops.convert_to_numpy(model.get_layer("blocks")(mnist_image))[0, ..., 0]
    linear = physics.propagator(model)
    cut = 0
    for i, j in [(14, 14), (10, 16), (0, 0), (3, 26), (27, 12)]:
        gated = physics.gated_propagator(model, mnist_image, i, j)
        assert gated.weights.shape == (13, 13)
        total = (gated.weights * gated.window).sum() + gated.bias
        assert total == pytest.approx(out[i, j], abs=1e-5)
        assert gated.value == pytest.approx(out[i, j], abs=1e-5)
        cut += not np.allclose(gated.weights, linear)
    assert out[14, 14] > 0 and cut >= 3, "the test image must close some gates on the way to the tested pixels"
    if name == "resnet":
        assert gated.bias != 0
    open_gates = physics.gated_propagator(model, mnist_image, 14, 14, relu=False)
    np.testing.assert_allclose(open_gates.weights, linear, atol=1e-12)


# --- 7. stability -------------------------------------------------------------------------------


def brute_force_max(k, n=1001):
    """max |Σ K e^{i(px dx + py dy)}| on a dense grid, by direct exponentials."""
    p = np.linspace(-np.pi, np.pi, n)
    px, py = np.meshgrid(p, p)
    g = sum(k[dy + 1, dx + 1] * np.exp(1j * (px * dx + py * dy)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    return np.abs(g).max()


@pytest.mark.parametrize("seed", range(4))
def test_max_amplification_against_brute_force_and_closed_form(seed):
    rng = np.random.default_rng(seed)
    for block_class in PDE_CLASSES:
        c = random_coefficients(rng)
        c["beta"] *= 3  # reach the drift-dominated region too
        block = pde_block(block_class, c)
        coeffs = {k: float(v) for k, v in block.coefficients().items()}
        grid = physics.max_amplification(block)
        closed = physics.von_neumann(**coeffs, drift_scale=DRIFT[block_class])["max_abs_G"]
        assert grid == pytest.approx(closed, abs=1e-9)
        assert brute_force_max(physics.stencil(block)) <= grid + 1e-12
        assert brute_force_max(physics.stencil(block)) == pytest.approx(grid, abs=1e-4)
    k = rng.normal(size=(3, 3))
    assert physics.max_amplification(k) == pytest.approx(brute_force_max(k), abs=1e-4)
    assert brute_force_max(k) <= physics.max_amplification(k) + 1e-12


def test_von_neumann_conditions():
    rng = np.random.default_rng(3)
    # No drift: max|G| = max(|1+γ|, |1+γ-2α²-2σ²|).
    for _ in range(20):
        a, s, g = rng.uniform(0, 1.2), rng.uniform(0, 1.2), rng.uniform(-2.5, 0.5)
        vn = physics.von_neumann(a, 0.0, s, 0.0, g)
        assert vn["max_abs_G"] == pytest.approx(max(abs(1 + g), abs(1 + g - 2 * a * a - 2 * s * s)), abs=1e-12)
        assert vn["stable"] == (abs(1 + g) <= 1 and abs(1 + g - 2 * a * a - 2 * s * s) <= 1)
    # With drift: max|G| = 1+γ exactly inside the scaled Hindmarsh-Gresho-Griffiths region.
    checked = 0
    for _ in range(300):
        c = {"alpha": rng.uniform(0.05, 1), "beta": rng.normal(0, 0.5), "sigma": rng.uniform(0.05, 1), "rho": rng.normal(0, 0.5), "gamma": rng.uniform(-0.6, 0.6)}
        vn = physics.von_neumann(**c)
        margins = [abs(vn["diffusion_number"] - 1), abs(vn["drift_number"] - 1)]
        if min(margins) < 1e-2:
            continue
        checked += 1
        assert vn["zero_mode_dominates"] == (abs(brute_force_max(physics.pde_stencil(**c), 201) - (1 + c["gamma"])) < 1e-9)
    assert checked > 200
    # γ = 0: PDE1 with |β| > |α| amplifies; PDE2 (drift β/8) does not.
    c = {"alpha": 0.4, "beta": 0.5, "sigma": 0.4, "rho": 0.0, "gamma": 0.0}
    assert not physics.von_neumann(**c, drift_scale=1.0)["stable"]
    assert physics.von_neumann(**c, drift_scale=-0.125)["stable"]
    assert physics.von_neumann(0.0, 0.1, 0.5, 0.0, 0.0)["drift_number"] == float("inf")


def test_amplification_product_bounds_the_relu_stack(rng):
    model = pde_zoo.build("pde1", depth=5)
    stack = model.get_layer("blocks")
    for block in stack.blocks:
        block.set_coefficients(**random_coefficients(rng))
    profile = physics.amplification_profile(model)
    expected = [physics.max_amplification(b) for b in stack.blocks]
    np.testing.assert_allclose(profile["layer_max"], expected)
    np.testing.assert_allclose(profile["log10_cumulative"], np.cumsum(np.log10(expected)))
    assert profile["log10_bound"] > 0
    x = rng.random((8, 28, 28, 1)).astype("float32")
    y = (x + 0.1 * rng.normal(size=x.shape)).astype("float32")
    fx, fy = (keras.ops.convert_to_numpy(stack(v)).astype(np.float64) for v in (x, y))
    ratio = np.linalg.norm((fx - fy).reshape(8, -1), axis=1) / np.linalg.norm((x - y).reshape(8, -1).astype(np.float64), axis=1)
    assert np.all(ratio <= 10 ** profile["log10_bound"] * (1 + 1e-5))


# --- 8. the report ------------------------------------------------------------------------------


@pytest.mark.slow  # heavy: CI runs it (-m "slow or not slow"); the default run stays under 5 min
def test_analyze_writes_the_reports_and_the_stability_table(tmp_path, rng, mnist_image):
    runs = []
    for name in ["pde1", "resnet"]:
        model = pde_zoo.build(name, depth=3)
        for block in model.get_layer("blocks").blocks:
            if name == "pde1":
                block.set_coefficients(**random_coefficients(rng))
            else:
                block.kernel.assign(rng.normal(0, 0.2, (3, 3, 1, 1)).astype("float32"))
        run = tmp_path / f"{name}-3"
        run.mkdir()
        model.save(run / "model.keras")
        (run / "card.json").write_text(json.dumps({"card_version": pde_zoo.cards.CARD_VERSION, "test_accuracy": 0.91}))
        runs.append((run, model))
    assert cli.main(["analyze", *(str(run) for run, _ in runs), "--out", str(tmp_path / "reports")]) == 0
    for run, model in runs:
        out = tmp_path / "reports" / run.name
        report = json.loads((out / "report.json").read_text())
        blocks = model.get_layer("blocks").blocks
        assert report["model"] == run.name and report["test_accuracy"] == 0.91 and report["depth"] == 3
        assert report["gated"]["max_abs_difference"] < 1e-5
        assert report["stability"]["max_abs_G"] == pytest.approx(max(physics.max_amplification(b) for b in blocks))
        kernels = [physics.stencil(b) - EYE for b in blocks]
        corner_share = np.sqrt(sum((f[::2, ::2] ** 2).sum() for f in kernels) / sum((f**2).sum() for f in kernels))
        assert report["pde_residual"]["pooled"] == pytest.approx(corner_share, abs=1e-12)
        for name in ["report.md", *report["figures"]]:
            assert (out / name).stat().st_size > 0
        assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left behind"
    table = json.loads((tmp_path / "reports" / "stability.json").read_text())
    assert [row["model"] for row in table] == ["pde1-3", "resnet-3"]
    assert "| pde1-3 |" in (tmp_path / "reports" / "stability.md").read_text()
    identity, head = analysis.compare_stability([pde_zoo.build("resnet", depth=2), pde_zoo.build("mlp", depth=0)])
    assert identity["test_accuracy"] is None and identity["max_abs_G"] == pytest.approx(1.0) and identity["n_amplifying"] == 0  # zero kernels
    assert head["depth"] == 0 and head["max_abs_G"] is None
    with pytest.raises(ValueError, match="blocks"):
        analysis.analyze(pde_zoo.build("mlp", depth=0), tmp_path / "mlp")
