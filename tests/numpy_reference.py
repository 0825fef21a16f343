"""Independent NumPy references for the tests: the PDE update written term by term from
docs/conventions.md (eq 22, 39, 40), with explicit zero padding, no convolution routine."""

import numpy as np


def shift(psi, dy, dx):
    """out[n, i, j, c] = psi[n, i + dy, j + dx, c], zero outside the image."""
    n, h, w, c = psi.shape
    padded = np.zeros((n, h + 2, w + 2, c), dtype=np.float64)
    padded[:, 1:-1, 1:-1] = psi
    return padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def dxx(psi):
    return shift(psi, 0, 1) - 2 * psi + shift(psi, 0, -1)


def dx(psi):
    return (shift(psi, 0, 1) - shift(psi, 0, -1)) / 2


def dyy(psi):
    return shift(psi, 1, 0) - 2 * psi + shift(psi, -1, 0)


def dy(psi):
    return (shift(psi, 1, 0) - shift(psi, -1, 0)) / 2


def pde_step(psi, alpha, beta, sigma, rho, gamma, drift=1.0, relu=True):
    """ψ + α²/2 Dxx ψ + drift β Dx ψ + σ²/2 Dyy ψ + drift ρ Dy ψ + γ ψ, then ReLU (eq 39; eq 40 with drift=-1/8)."""
    psi = np.asarray(psi, dtype=np.float64)
    pre = psi + alpha**2 / 2 * dxx(psi) + drift * beta * dx(psi) + sigma**2 / 2 * dyy(psi) + drift * rho * dy(psi) + gamma * psi
    return np.maximum(pre, 0.0) if relu else pre


def conv_step(psi, kernel, bias):
    """relu(ψ + K ⋆ ψ + b): cross-correlation with kernel (3, 3, Cin, Cout), zero padding, by loops over taps."""
    psi = np.asarray(psi, dtype=np.float64)
    out = psi + bias
    for r in range(3):
        for c in range(3):
            out = out + np.einsum("nhwi,io->nhwo", shift(psi, r - 1, c - 1), kernel[r, c])
    return np.maximum(out, 0.0)


def adam(w0, grads, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Kingma & Ba, Alg. 1 in float32 (Keras's ε placement): the weights after each step."""
    f = np.float32
    w, m, v, out = w0.astype(f), np.zeros_like(w0, f), np.zeros_like(w0, f), []
    for t, g in enumerate(grads, 1):
        m = m + (g - m) * f(1 - beta_1)
        v = v + (g * g - v) * f(1 - beta_2)
        alpha = f(lr) * np.sqrt(f(1) - f(beta_2) ** t) / (f(1) - f(beta_1) ** t)
        w = w - m * alpha / (np.sqrt(v) + f(epsilon))
        out.append(w)
    return np.stack(out)


def expm(matrix):
    """exp(matrix) in float64 by scaling and squaring a degree-20 Taylor polynomial."""
    norm = np.linalg.norm(matrix, 1)
    squarings = max(0, int(np.ceil(np.log2(norm))) + 1) if norm > 0 else 0
    scaled = matrix / 2**squarings
    result, term = np.eye(len(matrix)), np.eye(len(matrix))
    for k in range(1, 21):
        term = term @ scaled / k
        result = result + term
    for _ in range(squarings):
        result = result @ result
    return result
