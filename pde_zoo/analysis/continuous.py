"""The physics report of a continuous-depth model (pde1ode, pde2ode): per time segment of each
`ODEBlock` whose field is a PDE (`physics_protocol.PiecewiseFieldLayer`, e.g. `PDEField`), the
coefficients of the segment's piece, the symbol of one solver step over the steps the solver
actually took on a test image, and stability.

Segment k of a field with K pieces on [0, T] is [k T/K, (k+1) T/K], where the coefficients are
those of piece k and `ODEBlock` solves it on its own (it never steps across a jump). Its linear
part L_k has the symbol λ_k(p) (`physics_protocol.symbol_of_taps` of its taps, `piece_operator`); an
explicit Runge–Kutta step of size h multiplies the mode p by R(h λ_k(p)), R the method's
stability function (`pde_zoo.physics.rk_stability`, which states the maths). The step sizes
come from a real solve: the model's input pipeline up to the ODE block on MNIST test image
`image_index`, then `pde_zoo.ode.solve_steps` (the solver run step by step, its counts checked
equal to the `ODEBlock`'s own `last_stats` of the same input). Per segment:

- max_abs_G: max over its steps of max_p |R(h_j λ_k(p))| (> 1: the step amplifies some mode);
- log10_product: Σ_j log10 max_p |R(h_j λ_k(p))|, the product bound of the segment's solve;
- log10_composite: log10 max_p |Π_j R(h_j λ_k(p))|, the segment solve's own amplification;
- log10_exact: log10 max_p |exp(T_k λ_k(p))| = T_k max_p Re λ_k(p)/ln 10, the exact flow's;
- relative_max: max_p |Π_j R(h_j λ_k(p))| / |Π_j R(h_j λ_k(0))|, the growth beyond the mean mode;
- euler_block_max_abs_G: max_p |1 + λ_k(p)|, the discrete thesis block of the same piece
  (one Euler step of Δt = 1).

For the ReLU field f = relu(ψ + Lψ) − ψ these are the numbers of its linear part (gates open).
"""

import math

import numpy as np

from pde_zoo import physics
from pde_zoo.layers.physics_protocol import (
    PiecewiseFieldLayer,
    is_piecewise_field,
    missing,
    symbol_of_taps,
)
from pde_zoo.physics import rk_stability

AMPLIFYING = 1.0 + 1e-9
COEFFICIENTS = ("alpha", "beta", "sigma", "rho", "gamma")


def ode_blocks_of(model):
    """The `ODEBlock` layers of a model, in model order."""
    from pde_zoo.layers import ODEBlock

    return [layer for layer in getattr(model, "layers", []) if isinstance(layer, ODEBlock)]


def pde_fields_of(model):
    """[(ode_block, field)] for the ODE blocks of `model` whose field is a piecewise PDE field.

    Raises:
        ValueError: the model has ODE blocks but none with a PDE field (e.g. odenet's `ConvField`):
            the message names the fields and the protocol methods they lack.
    """
    blocks = ode_blocks_of(model)
    pairs = [(b, b.field) for b in blocks if is_piecewise_field(b.field)]
    if blocks and not pairs:
        kinds = sorted({type(b.field).__name__ for b in blocks})
        lacks = list(dict.fromkeys(name for b in blocks for name in missing(b.field, PiecewiseFieldLayer)))
        raise ValueError(
            f"Model {model.name!r} has no PDE fields to analyse: its ODE block(s) {[b.name for b in blocks]} integrate "
            f"{', '.join(kinds)}, a free vector field, not a PDE (it has no {', '.join(n + '()' if n in ('operator_taps', 'coefficients') else n for n in lacks)} "
            "of the physics protocol, pde_zoo.layers.physics_protocol.PiecewiseFieldLayer), so it has no stencil, "
            "symbol or von Neumann stability. `pde-zoo analyze` covers the discrete models and the continuous PDE "
            "models (pde1ode, pde2ode)."
        )
    return pairs


def _numpy(x):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x))


def _image(model, image_index, data_dir):
    """(image (1, H, W, C) float32, {"image_index", "label"} or a note): MNIST test image
    `image_index`, or, without MNIST, a fixed synthetic stroke (said in the note)."""
    from pde_zoo import data
    from pde_zoo.data import DataNotFoundError

    shape = tuple(model.input_shape[1:])
    try:
        images, labels, _ = data.load_arrays("test", data_dir)
        image = images[image_index : image_index + 1].astype("float32") / 255.0
        image = image.reshape((1,) + shape)
        return image, {"image": f"MNIST test image {image_index}", "image_index": int(image_index), "label": int(labels[image_index])}
    except DataNotFoundError as err:
        h, w = shape[0], shape[1]
        yy, xx = np.mgrid[0:h, 0:w]
        ring = np.exp(-((np.hypot(yy - h / 2, xx - w / 2) - h / 4) ** 2) / 2.0)
        image = np.broadcast_to(ring[..., None], (h, w, shape[2]))[None].astype("float32")
        return image, {"image": f"a synthetic ring (MNIST not available: {err})", "image_index": None, "label": None}


def piece_operator(field, piece):
    """(coefficients of piece k {name: (C,)}, taps of L_k (3, 3, C) in float64). The taps come
    from the coefficients (`physics.pde_stencil` minus the identity, as the physics reads a PDE
    block), and agree with the field's own `operator_taps()[k]` to float32 rounding."""
    coefficients = field.coefficients()
    values = {n: np.reshape(coefficients[n], (field.pieces, -1))[piece].astype(np.float64) for n in COEFFICIENTS}
    stencil = physics.pde_stencil(*(values[n] for n in COEFFICIENTS), drift_scale=field.drift_scale)  # (3, 3, C)
    return values, stencil - physics.IDENTITY[..., None]


def _piece_numbers(field, piece, steps_h, t0, t1, n_grid):
    """The numbers of one segment (module docstring) from its piece and its step sizes."""
    values, operator = piece_operator(field, piece)
    channels = operator.shape[-1]
    lam = lambda px, py: symbol_of_taps(operator, px, py)
    method = steps_h["method"]
    hs = steps_h["sizes"]
    per_step = [rk_stability.max_over_p(lambda px, py, h=h: np.abs(rk_stability.step_amplification(method, h, lam(px, py))), n_grid)[0] for h in hs]
    per_step = np.array(per_step).reshape(len(hs), channels)  # (n, C)

    def composite(px, py):
        g = np.ones(np.broadcast(px, py).shape + (channels,), dtype=np.complex128)
        lp = lam(px, py)
        for h in hs:
            g = g * rk_stability.step_amplification(method, h, lp)
        return np.abs(g)

    comp, comp_at = rk_stability.max_over_p(composite, n_grid)
    zero = composite(np.zeros(()), np.zeros(()))  # (C,)
    real_max, _ = rk_stability.max_over_p(lambda px, py: lam(px, py).real, n_grid)
    euler, _ = rk_stability.max_over_p(lambda px, py: np.abs(1.0 + lam(px, py)), n_grid)
    length = t1 - t0
    with np.errstate(divide="ignore"):
        log_product = np.log10(per_step).sum(axis=0) if len(hs) else np.zeros(channels)
        relative = comp / zero
    channel_rows = []
    for c in range(channels):
        vals = {n: float(values[n][c]) for n in COEFFICIENTS}
        channel_rows.append({
            "channel": c, "coefficients": vals, "drift_scale": field.drift_scale,
            "von_neumann": physics.von_neumann(**vals, drift_scale=field.drift_scale),
            "max_abs_G": float(per_step[:, c].max()) if len(hs) else None,
            "log10_product": float(log_product[c]),
            "log10_composite": float(np.log10(comp[c])) if comp[c] > 0 else -math.inf,
            "composite_argmax_p": comp_at[c].tolist(),
            "log10_exact": float(length * real_max[c] / math.log(10)),
            "lambda_zero": float(lam(np.zeros(()), np.zeros(())).real[c]),
            "relative_max": float(relative[c]),
            "euler_block_max_abs_G": float(euler[c]),
        })
    return channel_rows, per_step.max(axis=1) if len(hs) else np.zeros(0)


def continuous_numbers(model, pairs, image_index=0, data_dir=None, n_grid=129):
    """Everything the report of a continuous PDE model says (module docstring).

    Args:
        model: the Keras model; pairs: `pde_fields_of(model)`.
        image_index, data_dir: the MNIST test image whose solve gives the step sizes.
        n_grid: odd p-grid size of the maxima (each refined to ~1e-12).

    Returns:
        dict: "solve" (the image, the solver and its counts against the ODEBlock's), "segments"
        (one row per segment, in time order, over all PDE ODE blocks), "stability" (summary).
    """
    import keras

    from pde_zoo.ode import solve_steps

    image, source = _image(model, image_index, data_dir)
    ode_blocks = [b for b, _ in pairs]
    prefix = keras.Model(model.input, [b.input for b in ode_blocks])
    inputs = prefix(image)
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    segments, solves = [], []
    index = 0
    for (block, field), psi in zip(pairs, inputs):
        out = block(psi)  # the layer's own solve: its counts are the reference
        reference = dict(block.last_stats or {})
        bounds = [block.t0, *field.breakpoints(block.t0, block.t1), block.t1]
        counts = {"nfe": 0, "steps": 0, "rejected": 0}
        for a, b in zip(bounds[:-1], bounds[1:]):
            record = solve_steps(
                field.on_segment(a, b), psi, [a, b], method=block.method, rtol=block.rtol, atol=block.atol,
                step_size=block.step_size, max_steps=block.max_steps,
            )
            psi = record.ys[-1]
            for k in counts:
                counts[k] += record.stats[k]
            piece = int(_numpy(field.piece((a + b) / 2)))
            rows, step_max = _piece_numbers(field, piece, {"method": block.method, "sizes": record.sizes}, a, b, n_grid)
            index += 1
            segments.append({
                "index": index, "ode_block": block.name, "field": field.name, "piece": piece, "t0": float(a), "t1": float(b),
                "n_steps": len(record.sizes), "rejected": int(record.stats["rejected"]),
                "step_times": record.times, "step_sizes": record.sizes, "step_max_abs_G": step_max,
                "h_min": float(record.sizes.min()) if len(record.sizes) else None,
                "h_max": float(record.sizes.max()) if len(record.sizes) else None,
                "channels": rows,
                "max_abs_G": max(r["max_abs_G"] for r in rows) if len(record.sizes) else None,
                "log10_product": max(r["log10_product"] for r in rows),
                "log10_composite": max(r["log10_composite"] for r in rows),
                "log10_exact": max(r["log10_exact"] for r in rows),
                "relative_max": max(r["relative_max"] for r in rows),
                "euler_block_max_abs_G": max(r["euler_block_max_abs_G"] for r in rows),
            })
        difference = float(np.max(np.abs(_numpy(psi) - _numpy(out))))
        solves.append({
            "ode_block": block.name, "field": type(field).__name__, "method": block.method, "rtol": block.rtol,
            "atol": block.atol, "step_size": block.step_size, "t0": block.t0, "t1": block.t1, "segments": len(bounds) - 1,
            "recorded": counts, "ode_block_stats": reference or None,
            "counts_equal": (counts == reference) if reference else None,
            "max_abs_state_difference": difference,
        })
    gmax = np.array([s["max_abs_G"] for s in segments if s["max_abs_G"] is not None])
    relative = np.array([s["relative_max"] for s in segments])
    n_steps_amplifying = int(sum((np.asarray(s["step_max_abs_G"]) > AMPLIFYING).sum() for s in segments))
    stability = {
        "max_abs_G": float(gmax.max()) if gmax.size else None,
        "n_amplifying": int((gmax > AMPLIFYING).sum()),
        "n_segments": len(segments),
        "n_steps": int(sum(s["n_steps"] for s in segments)),
        "n_amplifying_steps": n_steps_amplifying,
        "log10_bound": float(sum(s["log10_product"] for s in segments)),
        "log10_cumulative": np.cumsum([s["log10_product"] for s in segments]),
        "log10_composite": float(sum(s["log10_composite"] for s in segments)),
        "log10_exact": float(sum(s["log10_exact"] for s in segments)),
        "max_relative_G": float(relative.max()) if relative.size else None,
        "n_excess": int((relative > AMPLIFYING).sum()),
        "log10_relative_bound": float(np.log10(relative).sum()) if relative.size else 0.0,
        "max_euler_block_G": max(s["euler_block_max_abs_G"] for s in segments) if segments else None,
    }
    return {"solve": {**source, "solves": solves}, "segments": segments, "stability": stability}
