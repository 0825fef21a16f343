"""The numbers `pde-zoo explore` shows, each computed by pde_zoo's own code (no maths here).

- ψ through depth: `StencilStack.trajectory` (the thesis models' "blocks"; pdenet / convresnet
  one stack per stage, each stage's input from the model's own layers), or, for continuous
  models, `pde_zoo.ode.odeint` on the `ODEBlock`'s own field, method and tolerances, segment by
  segment as `ODEBlock.call` integrates it, at output times inside each segment;
- prediction: the model's own forward pass;
- physics of a block: `pde_zoo.analysis.layer_table` (coefficients, PDE fit, max|G|, von
  Neumann), `physics.amplification_map` / `max_amplification` (|G(p)| heat map and maximum),
  `physics.propagator` (the path-integral kernel of blocks 1..k), `physics.amplification_profile`
  (max|G| per block and the product over the stack), `PDESystemBlock.mixing_matrix`.

`Explorer` caches loaded models and their per-block physics for the life of the process;
everything it returns is plain JSON (arrays of float32 states as base64, exact).
"""

import base64
import collections
import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np

MAP_GRID = 65  # |G(p)| heat map grid (odd: holds 0 and ±π)
MAX_PROPAGATOR_STEPS = 60  # propagator of blocks 1..k shown up to this many blocks
ODE_SUBSTEPS = {"pde1ode": 4, "pde2ode": 4}  # output times per unit segment (others: 8 per block)
DEFAULT_ODE_SUBSTEPS = 8
IMAGE_SHAPE = (28, 28)


class ExploreError(ValueError):
    """A request the explorer refuses, with the HTTP status to answer and a message for people."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def encode(array):
    """float32 little-endian bytes of `array`, base64 (exact, ~4/3 bytes per value)."""
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def _floats(values):
    """NumPy -> JSON-ready lists, non-finite values -> None."""
    from pde_zoo.analysis import jsonable

    return jsonable(values)


def test_images():
    """(images uint8 (N, 28, 28), labels (N,)) of the MNIST test set, loaded once."""
    global _TEST
    with _TEST_LOCK:
        if _TEST is None:
            from pde_zoo import data

            images, labels, _ = data.load_arrays("test")
            _TEST = (np.asarray(images).reshape(-1, *IMAGE_SHAPE), np.asarray(labels))
    return _TEST


_TEST = None
_TEST_LOCK = threading.Lock()


def input_image(image_index=None, pixels=None):
    """The (1, 28, 28, 1) float32 input in [0, 1] and its description.

    Args:
        image_index: index of an MNIST test image; or
        pixels: 784 numbers in [0, 1] drawn by the user (row-major 28 x 28).

    Raises:
        ExploreError: neither or both given, an index out of range, pixels of the wrong size,
            not finite or out of [0, 1], or an empty drawing.
    """
    if (image_index is None) == (pixels is None):
        raise ExploreError("Give one input: 'index' (an MNIST test image) or 'pixels' (784 values in [0, 1], a drawing).")
    if image_index is not None:
        images, labels = test_images()
        try:
            index = int(image_index)
        except (TypeError, ValueError):
            raise ExploreError(f"'index' must be an integer in [0, {len(images) - 1}]. Received: {image_index!r}") from None
        if not 0 <= index < len(images):
            raise ExploreError(f"'index' must be in [0, {len(images) - 1}]. Received: {index}")
        image = images[index].astype("float32") / 255.0
        return image[None, ..., None], {"source": "test", "index": index, "label": int(labels[index])}
    try:
        values = np.asarray(pixels, dtype="float64")
    except (TypeError, ValueError):
        raise ExploreError("'pixels' must be a list of 784 numbers in [0, 1].") from None
    if values.size != IMAGE_SHAPE[0] * IMAGE_SHAPE[1]:
        raise ExploreError(f"'pixels' must hold 28 x 28 = 784 values. Received: {values.size}")
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        raise ExploreError("'pixels' must be finite values in [0, 1].")
    if values.max() == 0:
        raise ExploreError("The drawn image is empty: draw a digit on the canvas first (or pick a test image).")
    image = values.reshape(IMAGE_SHAPE).astype("float32")
    digest = hashlib.sha256(image.tobytes()).hexdigest()[:12]
    return image[None, ..., None], {"source": "drawing", "sha256": digest, "label": None}


def _numpy(x):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x))


class ModelView:
    """One loaded model: its kind, its states through depth, and the physics of its blocks."""

    def __init__(self, name):
        from pde_zoo import physics
        from pde_zoo.loading import load_with_card

        started = time.perf_counter()
        self.name = name
        self.model, _, self.card = load_with_card(name)
        self.lock = threading.Lock()
        self._physics = {}
        self._forward = collections.OrderedDict()
        from pde_zoo.layers import ODEBlock, StencilStack

        layers = {layer.name: layer for layer in self.model.layers}
        self.ode_blocks = [layer for layer in self.model.layers if isinstance(layer, ODEBlock)]
        self.stacks = [layer for layer in self.model.layers if isinstance(layer, StencilStack)]
        if self.ode_blocks:
            self.kind = "continuous"
        elif "blocks" in layers:
            self.kind = "thesis"
        elif self.stacks:
            self.kind = "staged"
        else:
            self.kind = "head"  # mlp: no blocks
        self.blocks = physics.blocks_of(self.model) if self.kind in ("thesis", "staged") else []
        body = self.ode_blocks or self.stacks
        self._prefix = None
        if body:
            import keras

            # The inputs of every stage / ODE block, from the model's own layers (stem, lift, transitions).
            self._prefix = keras.Model(self.model.input, [layer.input for layer in body])
        self._graph = self._states_graph() if self.kind in ("thesis", "staged") else None
        self._profile, self._profile_note = None, None
        if self.blocks:
            self._start_profile()
        self._warm()
        self.load_seconds = time.perf_counter() - started

    def _states_graph(self):
        """One Keras model over the model's own layers: image -> [each stage's input and every
        block's output, in order (the blocks called one by one, as `StencilStack.trajectory`
        does), the model's probabilities]; run with `predict_on_batch` (a compiled graph), so an
        interaction costs one graph call instead of one eager call per block."""
        import keras

        image = keras.Input(shape=self.model.input_shape[1:], name="image")
        stage_inputs = self._prefix(image)
        stage_inputs = stage_inputs if isinstance(stage_inputs, (list, tuple)) else [stage_inputs]
        outputs = []
        for stack, psi in zip(self.stacks, stage_inputs):
            outputs.append(psi)
            for block in stack.blocks:
                outputs.append(block(outputs[-1]))
        return keras.Model(image, [*outputs, self.model(image)], name=f"{self.model.name}_explore")

    def _start_profile(self):
        """max|G| per block and the product over the stack (`physics.amplification_profile`).

        One-channel and depthwise blocks: computed now (well under a second). Blocks that mix
        channels need max_p ‖G(p)‖₂ of a C x C matrix symbol (an SVD per wave number: minutes for
        C = 128 on a 2-core CPU), so they are read from the model's `pde-zoo analyze` report
        (reports/NAME/report.json of a checkout) when one exists and its block 1 is recomputed
        equal, else computed in a background thread; the page shows "pending" until then."""
        from pde_zoo import physics

        if not any(physics.mixes_channels(b) for b in self.blocks):
            self._profile = physics.amplification_profile(self.blocks)
            self._profile_note = "physics.amplification_profile"
            return
        report = Path(__file__).resolve().parents[2] / "reports" / self.name / "report.json"
        try:
            rows = json.loads(report.read_text())
            layers = rows["layers"]
            if [r["name"] for r in layers] == [b.name for b in self.blocks] and abs(
                    physics.max_amplification(self.blocks[0]) - layers[0]["max_abs_G"]) < 1e-9:
                st = rows["stability"]
                self._profile = {k: np.asarray(v, dtype="float64") if isinstance(v, list) else v for k, v in {
                    "layer_max": [r["max_abs_G"] for r in layers], "log10_cumulative": st["log10_cumulative"],
                    "log10_bound": st["log10_bound"], "relative_max": st["relative_max"],
                    "log10_relative_bound": st["log10_relative_bound"]}.items()}
                self._profile_note = (f"{report.parent.name}/report.json of `pde-zoo analyze` (pde_zoo.analysis), "
                                      "its block 1 recomputed equal by physics.max_amplification")
                return
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self._profile_note = ("physics.amplification_profile, computing in a background thread "
                              "(max_p ‖G(p)‖₂ of C×C matrix symbols: minutes on a CPU; `pde-zoo analyze` caches it)")

        def work():
            profile = physics.amplification_profile(self.blocks)
            self._profile = profile
            self._profile_note = "physics.amplification_profile (computed in the background)"

        threading.Thread(target=work, name=f"profile-{self.name}", daemon=True).start()

    def profile(self):
        return self._profile

    def _warm(self):
        """One forward pass on a blank image so that the first interaction does not pay tracing."""
        self.compute(np.zeros((1, *IMAGE_SHAPE, 1), "float32"))

    # ------------------------------------------------------------------ ψ through depth

    def _stage_inputs(self, image):
        outs = self._prefix(image, training=False)
        return [_numpy(o) for o in (outs if isinstance(outs, (list, tuple)) else [outs])]

    def compute(self, image):
        """States, their labels and the prediction of one (1, 28, 28, 1) image (NumPy)."""
        import keras

        states, labels, extra = [], [], {}
        if self.kind == "head":
            states, labels = [image[0]], [{"label": "input ψ₀ (no blocks: the head alone)", "block": None}]
        elif self.kind in ("thesis", "staged"):
            block = 0
            *flat, probabilities = [np.asarray(o) for o in self._graph.predict_on_batch(image)]
            for stage, stack in enumerate(self.stacks, start=1):
                trajectory, flat = flat[: len(stack.blocks) + 1], flat[len(stack.blocks) + 1 :]
                for t, psi in enumerate(trajectory):
                    if t:
                        block += 1
                    where = f"stage {stage} ({stack.name}) " if self.kind == "staged" else ""
                    text = f"{where}input ψ₀" if t == 0 else f"{where}after block {t}" + (f" (#{block})" if self.kind == "staged" else "")
                    # the block whose physics goes with this state: the one that made it, or for a
                    # stage's input the one about to act on it
                    labels.append({"label": text, "block": block if t else block + 1, "stage": stage, "step": t,
                                   "is_block_output": bool(t)})
                    states.append(psi[0])
        else:
            extra["ode"] = []
            for k, (ode, psi) in enumerate(zip(self.ode_blocks, self._stage_inputs(image)), start=1):
                ode_states, ode_labels, info = self._ode_states(ode, psi)
                for s, lab in zip(ode_states, ode_labels):
                    lab["ode_block"] = k
                    states.append(s)
                    labels.append(lab)
                extra["ode"].append(info)
        if self.kind not in ("thesis", "staged"):
            probabilities = _numpy(self.model(image, training=False))
        probabilities = probabilities[0]
        for ode, info in zip(self.ode_blocks, extra.get("ode", [])):
            info["model_forward_stats"] = ode.last_stats  # NFE / accepted / rejected steps of the model's own solve
        return states, labels, probabilities, extra

    def _ode_states(self, ode, psi):
        """ψ at output times of one ODEBlock: `odeint` on its field, segment by segment between the
        field's breakpoints as `ODEBlock.call` does, with its method, step size and tolerances;
        the segment ends are also passed through the model's own ODEBlock for comparison. The
        model's own solve of each segment (no output times in between), step by step
        (`pde_zoo.ode.solve_steps`): its accepted step sizes and the sizes it rejected."""
        from pde_zoo.ode import odeint, solve_steps

        substeps = ODE_SUBSTEPS.get(self.card.get("model") if self.card else None, DEFAULT_ODE_SUBSTEPS)
        bounds = [ode.t0, *ode.field.breakpoints(ode.t0, ode.t1), ode.t1]
        states, labels = [psi[0]], [{"label": f"t = {ode.t0:g} (input ψ₀)", "time": ode.t0, "block": 1}]
        info = {"name": ode.name, "method": ode.method, "rtol": ode.rtol, "atol": ode.atol, "step_size": ode.step_size,
                "segments": []}
        current, own = psi, psi
        for a, b in zip(bounds[:-1], bounds[1:]):
            steps = solve_steps(ode.field.on_segment(a, b), own, [a, b], method=ode.method, rtol=ode.rtol, atol=ode.atol,
                                step_size=ode.step_size, max_steps=ode.max_steps)
            own = _numpy(steps.ys[-1])
            times = np.linspace(a, b, substeps + 1)
            ys, stats = odeint(ode.field.on_segment(a, b), current, times, method=ode.method, rtol=ode.rtol, atol=ode.atol,
                               step_size=ode.step_size, max_steps=ode.max_steps, return_stats=True)
            ys = _numpy(ys)
            for t, y in zip(times[1:], ys[1:]):
                states.append(y[0])
                labels.append({"label": f"t = {t:.4g}", "time": float(t), "block": len(info["segments"]) + 1})
            info["segments"].append({"t0": float(a), "t1": float(b), **{k: int(_numpy(v)) for k, v in stats.items()},
                                     "own_steps": {"starts": steps.times.tolist(), "sizes": steps.sizes.tolist(),
                                                   "rejected_sizes": steps.rejected_sizes.tolist()}})
            current = ys[-1]
        info["nfe"] = sum(s["nfe"] for s in info["segments"])
        info["steps"] = sum(s["steps"] for s in info["segments"])
        info["rejected"] = sum(s.get("rejected", 0) for s in info["segments"])
        info["output_times_per_segment"] = substeps
        own = _numpy(ode(psi))
        info["max_abs_diff_vs_model_forward"] = float(np.max(np.abs(own - current)))
        return states, labels, info

    def forward(self, image, meta, channel=0):
        """The page's data for one input: every state (one channel, base64 float32), labels,
        prediction, probabilities. Cached per input."""
        key = hashlib.sha256(image.tobytes()).hexdigest()
        with self.lock:
            started = time.perf_counter()
            cached = key in self._forward
            if not cached:
                self._forward[key] = self.compute(image)
                while len(self._forward) > 32:
                    self._forward.popitem(last=False)
            self._forward.move_to_end(key)
            states, labels, probabilities, extra = self._forward[key]
            compute_ms = (time.perf_counter() - started) * 1e3
        widths = sorted({s.shape[-1] for s in states})
        out_states = []
        for psi, label in zip(states, labels):
            c = channel if channel == "all" else int(channel) % psi.shape[-1]
            data = np.moveaxis(psi, -1, 0) if c == "all" else psi[..., c]
            out_states.append({**label, "shape": list(data.shape), "channels": int(psi.shape[-1]), "channel": c,
                               "data": encode(data), "min": float(psi.min()), "max": float(psi.max())})
        return {
            "model": self.name, "input": meta, "image": encode(image[0, ..., 0]), "channel": channel, "widths": widths, "states": out_states,
            "probabilities": _floats(probabilities), "prediction": int(np.argmax(probabilities)),
            "ode": _floats(extra.get("ode")), "cached": cached, "compute_ms": round(compute_ms, 2),
        }

    # ------------------------------------------------------------------ physics

    def summary(self):
        """What the page needs to know about the model before any input."""
        from pde_zoo import pretrained_config

        info = {"name": self.name, "kind": self.kind, "params": int(self.model.count_params()),
                "load_seconds": round(self.load_seconds, 2), "n_blocks": len(self.blocks),
                "block_types": sorted({type(b).__name__ for b in self.blocks}) or [type(o.field).__name__ for o in self.ode_blocks]}
        try:
            cfg = pretrained_config(self.name)
            info.update(model=cfg["model"], depth=cfg["depth"], options=cfg["options"], metrics=cfg["metrics"])
        except Exception:  # noqa: BLE001  a run directory or file without a preset: no card numbers
            info.update(model=None, depth=len(self.blocks), options={}, metrics={})
        if self.blocks and self._profile is None:
            info["stability"] = {"pending": True, "source": self._profile_note}
        if self._profile is not None:
            p = self._profile
            info["stability"] = {"source": self._profile_note,
                "layer_max": _floats(p["layer_max"]), "log10_cumulative": _floats(p["log10_cumulative"]),
                "log10_bound": _floats(p["log10_bound"]), "relative_max": _floats(p["relative_max"]),
                "log10_relative_bound": _floats(p["log10_relative_bound"]),
                "product": _floats(10.0 ** p["log10_bound"]),
            }
        pieces = self._pieces()
        if pieces is not None:
            info["pieces"] = len(pieces[0])
            info["stability"] = self._piece_profile()
        if self.kind == "staged":
            info["stages"] = [{"name": s.name, "blocks": len(s.blocks)} for s in self.stacks]
        return _floats(info)

    def _pieces(self):
        """Per-piece stencils of a continuous PDE model (the physics protocol's `PiecewiseFieldLayer`,
        `PDEField`): one Euler step of Δt = 1 of piece k is PDE block k (`physics.pde_stencil` of the
        piece's coefficients); None otherwise."""
        from pde_zoo.layers.physics_protocol import is_piecewise_field

        if not self.ode_blocks or not is_piecewise_field(self.ode_blocks[0].field):
            return None
        if "pieces" not in self._physics:
            from pde_zoo import physics

            field = self.ode_blocks[0].field
            coefficients = field.coefficients()
            names = ("alpha", "beta", "sigma", "rho", "gamma")
            per_piece = [{n: np.reshape(coefficients[n], (field.pieces, -1))[k] for n in names} for k in range(field.pieces)]
            stencils = [physics.pde_stencil(*(c[n] for n in names), drift_scale=field.drift_scale) for c in per_piece]
            self._physics["pieces"] = (per_piece, stencils, field.drift_scale)
        return self._physics["pieces"]

    def _piece_profile(self):
        from pde_zoo import physics

        _, stencils, _ = self._pieces()
        p = physics.amplification_profile(stencils)
        return _floats({"layer_max": p["layer_max"], "log10_cumulative": p["log10_cumulative"], "log10_bound": p["log10_bound"],
                        "relative_max": p["relative_max"], "log10_relative_bound": p["log10_relative_bound"],
                        "product": 10.0 ** p["log10_bound"], "note": "each piece as one Euler step of Δt = 1 (PDE block k)"})

    def block_physics(self, index, channel=0):
        """The physics panel of block `index` (1-based; for a continuous PDE model, piece `index`)."""
        pieces = self._pieces()
        n = len(self.blocks) if pieces is None else len(pieces[0])
        if n == 0:
            raise ExploreError(f"Model {self.name!r} has no blocks with a stencil ({self.kind} model): no block physics to show.", 404)
        try:
            index = int(index)
        except (TypeError, ValueError):
            raise ExploreError(f"'block' must be an integer in [1, {n}]. Received: {index!r}") from None
        if not 1 <= index <= n:
            raise ExploreError(f"Model {self.name!r} has blocks 1..{n}. Received: block={index}", 404)
        key = (index, int(channel))
        with self.lock:
            if key not in self._physics:
                self._physics[key] = self._block_physics(index, int(channel)) if pieces is None else self._piece_physics(index)
            return self._physics[key]

    def _heat_map(self, stencil_or_block, channel):
        from pde_zoo import physics

        p, mag = physics.amplification_map(stencil_or_block, n=MAP_GRID)
        if mag.ndim == 3:
            mag = mag[..., channel % mag.shape[-1]]
        row, col = np.unravel_index(int(np.argmax(mag)), mag.shape)
        return {"p": _floats(p), "shape": list(mag.shape), "data": encode(mag), "min": float(mag.min()), "max": float(mag.max()),
                "argmax": {"px": float(p[col]), "py": float(p[row]), "row": int(row), "col": int(col)}}

    def _propagator(self, stencils_or_blocks):
        from pde_zoo import physics

        if len(stencils_or_blocks) > MAX_PROPAGATOR_STEPS:
            return {"skipped": f"more than {MAX_PROPAGATOR_STEPS} blocks"}
        prop = physics.propagator(stencils_or_blocks)
        return {"steps": len(stencils_or_blocks), "shape": list(prop.shape), "data": encode(prop), "min": float(prop.min()),
                "max": float(prop.max()), "sum": float(prop.sum())}

    def _block_physics(self, index, channel):
        from pde_zoo import physics
        from pde_zoo.analysis import channel_stencils, layer_table
        from pde_zoo.layers.physics_protocol import is_coefficient_layer, provides

        started = time.perf_counter()
        block = self.blocks[index - 1]
        mixing = physics.mixes_channels(block)
        stencils = channel_stencils(block)  # (3, 3, C): a mixing block's diagonal K[:, :, c, c]
        width = stencils.shape[-1]
        c = channel % width
        stencil = stencils[..., c]
        if width == 1:
            entry = layer_table([block])[0]["channels"][0]
        else:
            # The channel's own stencil through the same table `pde-zoo analyze` writes (its
            # fit, residual, max|G|); the coefficients and von Neumann numbers of channel c.
            fit, residual = physics.kernel_to_pde(stencil - physics.IDENTITY)
            entry = {"channel": c, "fit": fit, "residual": residual, "max_abs_G": physics.max_amplification(stencil)}
            if is_coefficient_layer(block):
                values = {n: float(np.reshape(v, -1)[c]) for n, v in block.coefficients().items()}
                entry.update(coefficients=values, drift_scale=block.drift_scale,
                             von_neumann=physics.von_neumann(**values, drift_scale=block.drift_scale))
        out = {
            "model": self.name, "block": index, "name": block.name, "type": type(block).__name__, "mixes_channels": mixing,
            "channels": width, "channel": c, "channel_entry": entry, "stencil": stencil,
            "symbol": self._heat_map(stencil, 0),
            "symbol_kind": (f"|G_cc(p)| of channel {c}'s own stencil (the diagonal of the C×C matrix symbol)" if mixing
                            else "|G(p)|"),
            "stability": self._block_stability(index),
        }
        if provides(block, "mixing_matrix"):  # a PDE system's channel mixing Γ (PDESystemField, read through)
            gamma = block.mixing_matrix()
            out["mixing"] = {"shape": list(gamma.shape), "data": encode(gamma), "min": float(gamma.min()), "max": float(gamma.max())}
        if self.kind == "thesis" and not mixing:
            out["propagator"] = self._propagator(self.blocks[:index])
        else:
            out["propagator"] = {"skipped": "the path sum follows one channel through one stack at one resolution; "
                                            "these blocks mix channels and span stages (as in `pde-zoo analyze`)"}
        out["compute_ms"] = round((time.perf_counter() - started) * 1e3, 2)
        return _floats(out)

    def _block_stability(self, index):
        profile = self.profile()
        if profile is None:
            return {"pending": True, "note": self._profile_note}
        return {"block_max_abs_G": float(profile["layer_max"][index - 1]),
                "log10_cumulative": float(profile["log10_cumulative"][index - 1]),
                "log10_bound": float(profile["log10_bound"]), "source": self._profile_note}

    def _piece_physics(self, index):
        from pde_zoo import physics

        started = time.perf_counter()
        coefficients, stencils, drift_scale = self._pieces()
        values = {n: float(np.ravel(v)[0]) for n, v in coefficients[index - 1].items()}
        stencil = np.reshape(stencils[index - 1], (3, 3, -1))[..., 0]
        fit, residual = physics.kernel_to_pde(stencil - physics.IDENTITY)
        profile = self._piece_profile()
        field = self.ode_blocks[0].field
        t0, t1 = (index - 1) * field.horizon / field.pieces, index * field.horizon / field.pieces
        out = {
            "model": self.name, "block": index, "name": f"{field.name} piece {index} (t in [{t0:g}, {t1:g}])",
            "type": type(field).__name__ + " piece", "mixes_channels": False, "channels": 1, "channel": 0,
            "max_abs_G": physics.max_amplification(stencil),
            "channel_entry": {"coefficients": values, "fit": fit, "residual": residual, "drift_scale": drift_scale,
                              "max_abs_G": physics.max_amplification(stencil),
                              "von_neumann": physics.von_neumann(**values, drift_scale=drift_scale)},
            "stencil": stencil, "symbol": self._heat_map(stencil, 0), "symbol_kind": "|G(p)| of one Euler step of Δt = 1",
            "stability": {"block_max_abs_G": profile["layer_max"][index - 1], "log10_cumulative": profile["log10_cumulative"][index - 1],
                          "log10_bound": profile["log10_bound"]},
            "propagator": self._propagator([np.reshape(s, (3, 3, -1))[..., 0] for s in stencils[:index]]),
        }
        out["compute_ms"] = round((time.perf_counter() - started) * 1e3, 2)
        return _floats(out)


class Explorer:
    """The models a server offers (default: every pretrained preset), loaded on first use and kept."""

    def __init__(self, names=None):
        from pde_zoo.loading import list_pretrained

        available = list_pretrained()
        if names:
            unknown = [n for n in names if n not in available and not Path(n).exists()]
            if unknown:
                raise ExploreError(
                    f"Unknown model(s) {unknown}: pass pretrained names ({', '.join(available)}) or paths of "
                    ".keras files / run directories (`pde-zoo list --pretrained`)."
                )
            self.names = list(dict.fromkeys(names))
            self.default = self.names[0]
        else:
            self.names = available
            # a quick, telling first view (a thesis PDE model), not whichever name sorts first
            self.default = next((n for n in ("pde2-50", "pde1-27") if n in available), available[0] if available else None)
        self._views = {}
        self._locks = collections.defaultdict(threading.Lock)
        self._lock = threading.Lock()

    def view(self, name):
        """The `ModelView` of `name` (loaded once per process). ExploreError 404 for a name not offered."""
        if name not in self.names:
            raise ExploreError(f"Unknown model {name!r}. This server offers: {', '.join(self.names)}.", 404)
        with self._lock:
            lock = self._locks[name]
        with lock:
            if name not in self._views:
                self._views[name] = ModelView(name)
            return self._views[name]

    def loaded(self):
        return sorted(self._views)

    def counterpart(self, name):
        """The offered preset that is `name` with the other `stable` (same registry model, depth and
        every other builder option): pdenet with free coefficients against its provably stable
        parametrization, shown side by side. None when there is none."""
        from pde_zoo import pretrained_config

        def key(preset):
            try:
                cfg = pretrained_config(preset)
            except Exception:  # noqa: BLE001  a path, or a preset not on this machine: no counterpart
                return None
            options = dict(cfg["options"])
            stable = bool(options.pop("stable", False))
            return (cfg["model"], cfg["depth"], json.dumps(options, sort_keys=True)), stable

        mine = key(name)
        if mine is None:
            return None
        for other in self.names:
            theirs = key(other) if other != name else None
            if theirs is not None and theirs[0] == mine[0] and theirs[1] != mine[1]:
                return other
        return None

    def models(self):
        """The picker's entries: name, registry model, depth and accuracies from the presets' manifest/cards."""
        from pde_zoo import pretrained_config

        out = []
        for name in self.names:
            entry = {"name": name, "loaded": name in self._views}
            try:
                cfg = pretrained_config(name)
                entry.update(model=cfg["model"], depth=cfg["depth"], test_accuracy=cfg["metrics"]["test_accuracy"])
            except Exception as err:  # noqa: BLE001  a path, or a preset not on this machine
                entry.update(model=None, depth=None, test_accuracy=None, note=str(err).splitlines()[0][:200])
            out.append(entry)
        return _floats(out)
