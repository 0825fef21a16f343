#!/usr/bin/env python
"""Continuous-depth benchmark (issue 10, "Evidence"; issue 18, eager calls): memory against solver
steps, the ODE-Net against torchdiffeq, and eager `odeint` against torchdiffeq.

1. Memory (`--part memory`): peak memory of one training step (forward, backward, Adam update)
   of the zoo's `odenet` integrated by a fixed-step method with step_size = 1/n, n = 10, 100,
   1000 steps, gradients by the adjoint method and by backprop through the solver, with the
   time of that step. One fresh child process per configuration: it builds the model, runs one
   training step (tracing; its memory is not counted), then measures the next steps as the rise
   of the process's peak resident memory (VmHWM, reset through /proc/self/clear_refs) above the
   resident memory right before them. Two settings make the RSS follow the tensors:
   TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1 (TF's oneDNN CPU allocator is otherwise a BFC pool that keeps
   what the first step reached, growing by doubling, so a later step shows no rise) and glibc's
   mmap threshold fixed at 64 KiB (freed buffers go back to the system at once).
2. Peer (`--part peer`), side by side in one run: the MNIST ODE-Net of Chen et al. 2018 in
   torchdiffeq 0.2.5 (`scripts/peers/torchdiffeq_odenet.py`, run with the benchmark venv's
   Python, `.bench-venv/`, as a child process) against the zoo's `odenet`, batch 128, dopri5
   at rtol = atol = 1e-3, Adam(1e-3): training-step time (our step is Keras's compiled
   `train_on_batch`, the `tf.function` that `fit` runs) and the forward alone, NFE forward and
   backward, backprop and adjoint. Every timed step starts from the initial weights (restored
   between steps, untimed), so all of them run at initialisation on one fixed batch (the first
   128 MNIST training images when the data is on this machine), where the NFE is measured. The
   peer runs twice: with PyTorch's own initialisation (seed 0, the issue's anchor) and with the
   zoo's initial weights converted (the same function: same NFE expected, the per-evaluation
   speed compared). Repeats alternate zoo / peers, reversed every other repeat; medians.

3. Eager (`--part eager`), side by side in one run: `odeint` called eagerly, as in a notebook,
   on a small stiff-ish problem (`EAGER_PROBLEM`: 16 Van der Pol oscillators, μ = 10, dopri5 at
   rtol = 1e-6, atol = 1e-8, float64, 11 output times, ~3,300 evaluations of f) by the zoo on
   TensorFlow (eager: compiled on the first call and cached; op by op with `compile=False`, the
   behaviour before issue 18; inside the caller's `tf.function` for reference) and on JAX (a
   child process: `jax.jit`, cached; op by op), against torchdiffeq 0.2.5 eagerly (a child
   process of the benchmark venv's Python). Also one gradient with respect to y0 and μ by
   autodiff through the solver (an eager `GradientTape` / torch autograd and `backward()`; the
   adjoint's backward solve of this problem runs the limit cycle backwards, where it repels, and
   torchdiffeq's fails with "underflow in dt").
   Rounds alternate the implementations (reversed every other round); medians. The first call
   of each, compilation included, is reported apart.

Writes JSON (`--json`), prints the tables, and with `--readme` regenerates the README block
`ode-bench`; `--render` re-renders it from the JSON without measuring.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import pde_zoo  # noqa: E402
from pde_zoo.threads import add_threads_argument  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PEER_SCRIPT = ROOT / "scripts" / "peers" / "torchdiffeq_odenet.py"
BATCH = 128
# The child's environment for the memory measurement (module docstring).
MEMORY_ENV = {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
MODES = ("backprop", "adjoint")
PEERS = {"torchdiffeq_zoo_weights": "torchdiffeq, zoo's weights", "torchdiffeq_own_init": "torchdiffeq, own init"}


def mnist_batch(n, seed=0):
    """(x, y, source): the first n MNIST training images in [0, 1] when the IDX files are here,
    else uniform noise with random labels (the source says which)."""
    from pde_zoo.data import find_idx_dir, read_idx

    try:
        directory = find_idx_dir(download=False)
    except Exception:  # noqa: BLE001  any data problem: fall back to noise, and say so
        directory = None
    if directory is not None:
        from pde_zoo.data import check_idx_dir

        paths = check_idx_dir(directory)
        x = read_idx(paths["train-images-idx3-ubyte"])[:n].astype("float32")[..., None] / 255.0
        y = read_idx(paths["train-labels-idx1-ubyte"])[:n].astype("int64")
        return x, y, f"the first {n} MNIST training images"
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n), f"{n} uniform-noise images (no MNIST here)"


def build_odenet(seed, **kwargs):
    keras.utils.set_random_seed(seed)
    return pde_zoo.compile_model(pde_zoo.build("odenet", depth=1, **kwargs))


def _status_mib(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak RSS (VmHWM) to the current RSS
        f.write("5")


# --------------------------------------------------------------------------- memory


def memory_child(spec):
    """In a fresh process: build, one tracing step, then measured steps. Prints one JSON line."""
    method, n, mode, batch, seed, budget_s = spec["method"], spec["n"], spec["mode"], spec["batch"], spec["seed"], spec["budget_s"]
    x, y, _ = mnist_batch(batch)
    model = build_odenet(seed, method=method, step_size=1.0 / n, adjoint=mode == "adjoint")
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    peaks, times, cpu = [], [], []
    while len(times) < 3 and (not times or sum(times) + times[-1] < budget_s):
        base = _status_mib("VmRSS")
        _reset_peak()
        start, start_cpu = time.perf_counter(), time.process_time()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        peaks.append(_status_mib("VmHWM") - base)
    print(json.dumps({
        "peak_mib": max(peaks), "peaks_mib": peaks, "step_s": statistics.median(times), "steps_s": times,
        "step_cpu_s": statistics.median(cpu), "steps_cpu_s": cpu, "first_step_s": first, "rss_before_mib": base,
    }))


def run_memory(args):
    rows = []
    env = {**os.environ, **MEMORY_ENV}
    for n in args.memory_steps:
        for mode in MODES:
            spec = {"method": args.memory_method, "n": n, "mode": mode, "batch": args.memory_batch, "seed": args.seed, "budget_s": args.memory_budget}
            cmd = [sys.executable, __file__, "--memory-child", json.dumps(spec), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise RuntimeError(f"memory child {spec} failed:\n{out.stderr[-3000:]}")
            row = {**spec, **json.loads(out.stdout.strip().splitlines()[-1])}
            row["nfe_forward"] = n * pde_zoo.ode.METHODS[args.memory_method].stages
            rows.append(row)
            print(
                f"  memory {args.memory_method} n={n:5d} {mode:8s} peak {row['peak_mib']:8.1f} MiB  {row['step_s']:.3f} s/step "
                f"(CPU {row['step_cpu_s']:.3f} s)  load {os.getloadavg()[0]:.1f}", flush=True,
            )
    return rows


# --------------------------------------------------------------------------- peer


class PeerProcess:
    """A child process answering one JSON line per command line (default: the torchdiffeq
    ODE-Net in the benchmark venv)."""

    def __init__(self, python, threads, rtol, atol, omp_wait_policy, cmd=None, env=None, label=None):
        env = {**os.environ, **(env or {})}
        if omp_wait_policy:
            env["OMP_WAIT_POLICY"] = omp_wait_policy
        if cmd is None:
            cmd = [python, str(PEER_SCRIPT), "--threads", str(threads), "--rtol", str(rtol), "--atol", str(atol)]
        self.label = label or f"the torchdiffeq peer ({PEER_SCRIPT.name})"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.hello = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label} exited with code {self.proc.wait()}")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"{self.label} failed: {out['error']}")
        return out

    def ask(self, *words):
        self.proc.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=60)


class ZooODENet:
    """The zoo's `odenet` in both gradient modes, same initial weights; every timed call starts from them."""

    def __init__(self, seed, rtol, atol, x, y):
        import tensorflow as tf

        self.models = {mode: build_odenet(seed, method="dopri5", rtol=rtol, atol=atol, adjoint=mode == "adjoint") for mode in MODES}
        self.initial = self.models["backprop"].get_weights()
        self.models["adjoint"].set_weights(self.initial)
        self.x, self.y = tf.constant(x), tf.constant(y)
        self.forward = {mode: tf.function(lambda x, m=m: m(x, training=True)) for mode, m in self.models.items()}

    def weights_npz(self, path):
        """The initial weights by variable path (the ODE block's prefix dropped), for the peer's `load`."""
        model = self.models["backprop"]
        arrays = {v.path.split("/", 1)[1] if v.path.startswith("ode_1/") else v.path: w for v, w in zip(model.weights, self.initial)}
        np.savez(path, **arrays)

    def nfe(self, mode):
        """One eager forward + backward at the initial weights: (nfe_forward, nfe_backward, probabilities, loss)."""
        import tensorflow as tf

        model = self.models[mode]
        model.set_weights(self.initial)
        with tf.GradientTape() as tape:
            probs = model(self.x, training=True)
            loss = keras.losses.sparse_categorical_crossentropy(self.y, probs)
        with pde_zoo.ode.record_backward_stats() as solves:  # every adjoint backward solve of the gradient
            tape.gradient(loss, model.trainable_variables)
        forward = model.get_layer("ode_1").last_stats["nfe"]
        backward = sum(s["nfe"] for s in solves) if mode == "adjoint" else None
        return forward, backward, probs.numpy(), float(np.mean(loss))

    def time(self, mode, steps):
        """Wall and CPU seconds (all of this process's threads) of `steps` training steps."""
        model, times, cpu = self.models[mode], [], []
        for _ in range(steps):
            model.set_weights(self.initial)
            start, start_cpu = time.perf_counter(), time.process_time()
            model.train_on_batch(self.x, self.y)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        return times, cpu

    def time_forward(self, mode, calls):
        fn, times = self.forward[mode], []
        for _ in range(calls):
            start = time.perf_counter()
            fn(self.x).numpy()
            times.append(time.perf_counter() - start)
        return times


def run_peer(args):
    x, y, source = mnist_batch(BATCH)
    zoo = ZooODENet(args.seed, args.rtol, args.atol, x, y)
    peer_threads = args.threads or os.cpu_count()
    peers = {}
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/batch.npz", x=x, y=y)
        zoo.weights_npz(f"{tmp}/weights.npz")
        for key in PEERS:
            peers[key] = PeerProcess(args.peer_python, peer_threads, args.rtol, args.atol, args.omp_wait_policy)
            peers[key].ask("data", f"{tmp}/batch.npz")
            if key == "torchdiffeq_own_init":
                peers[key].ask("init", args.seed)
            else:
                peers[key].ask("load", f"{tmp}/weights.npz")
        try:
            results = {key: {mode: {} for mode in MODES} for key in ["zoo", *PEERS]}
            for mode in MODES:
                fwd, bwd, probs, loss = zoo.nfe(mode)
                results["zoo"][mode].update(nfe_forward=fwd, nfe_backward=bwd, loss=loss)
                for key, peer in peers.items():
                    out = peer.ask("nfe", mode, f"{tmp}/probs.npy")
                    row = results[key][mode]
                    row.update(nfe_forward=out["nfe_forward"], nfe_backward=out["nfe_backward"] if mode == "adjoint" else None, loss=out["loss"])
                    if key == "torchdiffeq_zoo_weights":
                        row["max_abs_diff_probs_vs_zoo"] = float(np.abs(np.load(f"{tmp}/probs.npy") - probs).max())
            print("  NFE (forward / backward): " + "; ".join(
                f"{key} {mode} {results[key][mode]['nfe_forward']}/{results[key][mode]['nfe_backward']}" for key in results for mode in MODES), flush=True)
            # warm-up: tracing (zoo), first-call costs (both)
            for mode in MODES:
                zoo.time(mode, 1)
                zoo.time_forward(mode, 1)
                for peer in peers.values():
                    peer.ask("time", mode, 1)
                    peer.ask("forward", mode, 1)
            steps, cpus, fwd = {}, {}, {}
            units = [(key, mode) for mode in MODES for key in ["zoo", *PEERS]]
            for r in range(args.repeats):
                for key, mode in units if r % 2 == 0 else reversed(units):
                    if key == "zoo":
                        (s, c), f = zoo.time(mode, args.steps), zoo.time_forward(mode, args.steps)
                    else:
                        out = peers[key].ask("time", mode, args.steps)
                        s, c, f = out["seconds"], out["cpu_seconds"], peers[key].ask("forward", mode, args.steps)["seconds"]
                    steps.setdefault((key, mode), []).extend(s)
                    cpus.setdefault((key, mode), []).extend(c)
                    fwd.setdefault((key, mode), []).extend(f)
                    print(
                        f"  repeat {r + 1}/{args.repeats} {key:24s} {mode:8s} step {statistics.median(s):.3f} s (CPU {statistics.median(c):.3f} s)  "
                        f"forward {statistics.median(f):.3f} s  load {os.getloadavg()[0]:.1f}", flush=True,
                    )
        finally:
            for peer in peers.values():
                peer.close()
    for (key, mode), s in steps.items():
        row = results[key][mode]
        row.update(
            step_s=statistics.median(s), steps_s=s, step_cpu_s=statistics.median(cpus[key, mode]), steps_cpu_s=cpus[key, mode],
            forward_s=statistics.median(fwd[key, mode]), forwards_s=fwd[key, mode],
        )
    for key in PEERS:
        for mode in MODES:
            results[key][mode]["zoo_speedup"] = results[key][mode]["step_s"] / results["zoo"][mode]["step_s"]
            results[key][mode]["zoo_cpu_ratio"] = results[key][mode]["step_cpu_s"] / results["zoo"][mode]["step_cpu_s"]
    meta_extra = {"data": source, "torch": peers["torchdiffeq_own_init"].hello["torch"], "torch_threads": peer_threads, "omp_wait_policy": args.omp_wait_policy}
    return results, meta_extra


# --------------------------------------------------------------------------- eager

# A small stiff-ish problem: 16 Van der Pol oscillators x'' = μ (1 - x²) x' - x, x(0) in [1.5, 2.5], x'(0) = 0.
EAGER_PROBLEM = {"mu": 10.0, "oscillators": 16, "t1": 10.0, "outputs": 11, "method": "dopri5", "rtol": 1e-6, "atol": 1e-8}
EAGER_UNITS = {  # key -> (implementation, how it runs)
    "torch": ("torchdiffeq 0.2.5", "eager (`torch.no_grad()`)"),
    "tf": ("pde_zoo, TensorFlow", "eager `odeint` (compiled at the first call, cached)"),
    "tf_op": ("pde_zoo, TensorFlow", "eager, op by op (`compile=False`: before issue 18)"),
    "tf_graph": ("pde_zoo, TensorFlow", "inside the caller's `tf.function` (reference)"),
    "jax": ("pde_zoo, JAX", "eager `odeint` (`jax.jit` at the first call, cached)"),
    "jax_op": ("pde_zoo, JAX", "eager, op by op (`compile=False`)"),
    "torch_grad": ("torchdiffeq 0.2.5", "gradient: eager autograd through `odeint`, `backward()`"),
    "tf_grad": ("pde_zoo, TensorFlow", "gradient: eager `GradientTape` through the compiled solve"),
}
EAGER_FAST = ("tf", "tf_graph", "jax", "tf_grad")  # several calls per round
EAGER_ONCE = ("tf_op", "jax_op")  # op by op: one call in all

TORCH_EAGER_PEER = r"""
import importlib.metadata, json, sys, time
import numpy as np, torch
from torchdiffeq import odeint

problem, threads = json.loads(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)


class VanDerPol(torch.nn.Module):
    def __init__(self, mu):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.tensor(mu, dtype=torch.float64))
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, self.mu * (1.0 - x * x) * v - x], dim=-1)


n = problem["oscillators"]
y0 = torch.tensor(np.stack([np.linspace(1.5, 2.5, n), np.zeros(n)], axis=-1))
t = torch.tensor(np.linspace(0.0, problem["t1"], problem["outputs"]))
f = VanDerPol(problem["mu"])
options = dict(method=problem["method"], rtol=problem["rtol"], atol=problem["atol"])
print(json.dumps({"torch": torch.__version__, "torchdiffeq": importlib.metadata.version("torchdiffeq")}), flush=True)
for line in sys.stdin:
    words = line.split()
    if not words or words[0] == "quit":
        break
    try:
        f.nfe = 0
        start = time.perf_counter()
        if words[0] == "forward":
            with torch.no_grad():
                ys = odeint(f, y0, t, **options)
            out = {"seconds": time.perf_counter() - start, "nfe_forward": f.nfe, "ys": ys.numpy().tolist()}
        else:
            y = y0.clone().requires_grad_(True)
            f.zero_grad()
            ys = odeint(f, y, t, **options)
            (ys[-1] ** 2).sum().backward()
            out = {"seconds": time.perf_counter() - start, "nfe_forward": f.nfe, "grads": [y.grad.numpy().tolist(), float(f.mu.grad)]}
    except Exception as err:  # noqa: BLE001  reported to the parent
        out = {"error": repr(err)}
    print(json.dumps(out), flush=True)
"""


class EagerZoo:
    """The zoo's side of the eager part on the active Keras backend: the field written as in a
    notebook, a function reading a Keras variable μ."""

    def __init__(self, problem):
        from keras import ops

        n = problem["oscillators"]
        self.y0 = np.stack([np.linspace(1.5, 2.5, n), np.zeros(n)], axis=-1)
        self.t = np.linspace(0.0, problem["t1"], problem["outputs"])
        self.options = dict(method=problem["method"], rtol=problem["rtol"], atol=problem["atol"])
        mu = self.mu = keras.Variable(problem["mu"], dtype="float64", name="mu")

        def van_der_pol(t, y):
            x, v = y[..., 0], y[..., 1]
            return ops.stack([v, mu * (1.0 - x * x) * v - x], axis=-1)

        self.field, self.graph = van_der_pol, None

    def run(self, unit):
        """One timed call of `unit` ("tf", "tf_op", "tf_graph", "tf_grad"; on JAX "jax", "jax_op")."""
        start = time.perf_counter()
        if unit.endswith("_grad"):
            return self._gradient(start)
        if unit == "tf_graph":
            import tensorflow as tf

            if self.graph is None:
                self.graph = tf.function(lambda y0: pde_zoo.ode.odeint(self.field, y0, self.t, return_stats=True, **self.options))
            ys, stats = self.graph(tf.constant(self.y0))
        else:
            ys, stats = pde_zoo.ode.odeint(self.field, self.y0, self.t, return_stats=True, compile=not unit.endswith("_op"), **self.options)
        ys = np.asarray(keras.ops.convert_to_numpy(ys))
        return {"seconds": time.perf_counter() - start, "nfe_forward": int(stats["nfe"]), "ys": ys.tolist()}

    def _gradient(self, start):
        import tensorflow as tf

        y0 = tf.constant(self.y0)
        with tf.GradientTape() as tape:
            tape.watch(y0)
            ys, stats = pde_zoo.ode.odeint(self.field, y0, self.t, return_stats=True, **self.options)
            loss = tf.reduce_sum(ys[-1] ** 2)
        g_y0, g_mu = tape.gradient(loss, [y0, self.mu])
        grads = [g_y0.numpy().tolist(), float(g_mu.numpy())]
        return {"seconds": time.perf_counter() - start, "nfe_forward": int(stats["nfe"]), "grads": grads}


def eager_child(problem):
    """The JAX side of the eager part (KERAS_BACKEND=jax): answers "run <unit>" lines with JSON."""
    import jax

    zoo = EagerZoo(problem)
    print(json.dumps({"jax": jax.__version__, "backend": keras.backend.backend()}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        try:
            out = zoo.run(words[1])
        except Exception as err:  # noqa: BLE001  reported to the parent
            out = {"error": repr(err)}
        print(json.dumps(out), flush=True)


def run_eager(args):
    problem = EAGER_PROBLEM
    threads = args.threads or os.cpu_count()
    zoo = EagerZoo(problem)
    torch_peer = PeerProcess(
        None, None, None, None, args.omp_wait_policy, label="the torchdiffeq eager peer",
        cmd=[args.peer_python, "-c", TORCH_EAGER_PEER, json.dumps(problem), str(threads)],
    )
    jax_child = PeerProcess(
        None, None, None, None, None, label="the JAX child", cmd=[sys.executable, __file__, "--eager-child", json.dumps(problem)],
        env={"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1"},
    )

    def call(unit):
        if unit.startswith("torch"):
            return torch_peer.ask("forward" if unit == "torch" else "gradient")
        if unit.startswith("jax"):
            return jax_child.ask("run", unit)
        return zoo.run(unit)

    results = {}
    try:
        for unit in EAGER_UNITS:  # first calls (zoo: tracing and compiling), the op-by-op ones once
            out = call(unit)
            results[unit] = {**{k: v for k, v in out.items() if k not in ("seconds",)}, "first_s": out["seconds"], "calls_s": []}
            if unit in EAGER_ONCE:
                results[unit]["calls_s"].append(out["seconds"])
            print(f"  first call {unit:10s} {out['seconds']:8.3f} s  NFE {out['nfe_forward']}  load {os.getloadavg()[0]:.1f}", flush=True)
        units = [u for u in EAGER_UNITS if u not in EAGER_ONCE]
        for r in range(args.eager_rounds):
            for unit in units if r % 2 == 0 else reversed(units):
                for _ in range(args.eager_calls if unit in EAGER_FAST else 1):
                    results[unit]["calls_s"].append(call(unit)["seconds"])
            print(f"  round {r + 1}/{args.eager_rounds}: " + ", ".join(f"{u} {statistics.median(results[u]['calls_s']):.4f} s" for u in units)
                  + f"  load {os.getloadavg()[0]:.1f}", flush=True)
        meta_extra = {"torch": torch_peer.hello["torch"], "torchdiffeq": torch_peer.hello["torchdiffeq"], "jax": jax_child.hello["jax"], "torch_threads": threads}
    finally:
        torch_peer.close()
        jax_child.close()
    torch_ys = np.asarray(results["torch"]["ys"])
    for unit, row in results.items():
        row["s"] = statistics.median(row["calls_s"])
        reference = results["torch_grad" if unit.endswith("_grad") else "torch"]["s"] if "torch" in results else None
        row["torchdiffeq_s_over_this"] = reference / row["s"] if reference else None
        if "ys" in row:
            row["max_abs_diff_vs_torchdiffeq"] = float(np.abs(np.asarray(row.pop("ys")) - torch_ys).max())
    g_zoo, g_torch = results["tf_grad"].pop("grads"), results["torch_grad"].pop("grads")
    results["tf_grad"]["grad_rel_diff_vs_torchdiffeq"] = max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()) for a, b in zip(g_zoo, g_torch)
    )
    return results, meta_extra


# --------------------------------------------------------------------------- report


def load_label(meta):
    """The machine's 1-minute load average at the start and the end of a part (other jobs share it)."""
    load = meta.get("loadavg_1min")
    return f", load average {load[0]:.1f} at the start / {load[1]:.1f} at the end" if load else ""


def threads_label(threads):
    return f"{threads} inter-op x 1 intra-op (TF)" if threads else "TF default (intra-op = inter-op = number of cores)"


def _seconds(row):
    return f"{row['step_s']:.2f}" + (f" ({row['step_cpu_s']:.2f})" if "step_cpu_s" in row else "")


def memory_markdown(rows, m):
    by = {(r["n"], r["mode"]): r for r in rows}
    ns = sorted({r["n"] for r in rows})
    lines = [
        f"Measured by `{m['command']}` on {m['machine']} ({m['cpus']} CPUs), TF {m['tensorflow']}, Keras {m['keras']}, "
        f"threads: {threads_label(m['threads'])}, {m['date_utc'][:10]}{load_label(m)}. The zoo's `odenet` (batch {m['batch']}, {m['method']} with "
        f"step_size = 1/n over [0, 1], Adam): peak memory of one training step = the rise of the process's peak RSS during the step above "
        f"its RSS right before it, in a fresh process per row after one untimed tracing step, with `TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1` and "
        f"glibc's mmap threshold at 64 KiB so that RSS follows the live tensors (the largest of up to 3 steps; times: their median, "
        f"wall and CPU, the CPU time of all the process's threads).",
        "",
        "| solver steps n | NFE forward | backprop: peak MiB | adjoint: peak MiB | backprop: s / step (CPU s) | adjoint: s / step (CPU s) | backprop peak / at n = " + str(ns[0]) + " | adjoint peak / at n = " + str(ns[0]) + " |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in ns:
        bp, adj = by.get((n, "backprop")), by.get((n, "adjoint"))
        lines.append(
            f"| {n} | {(bp or adj)['nfe_forward']} | {bp['peak_mib']:.0f} | {adj['peak_mib']:.0f} | {_seconds(bp)} | {_seconds(adj)} | "
            f"{bp['peak_mib'] / by[ns[0], 'backprop']['peak_mib']:.2f}x | {adj['peak_mib'] / by[ns[0], 'adjoint']['peak_mib']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def _nfe(row):
    return f"{row['nfe_forward']} / {row['nfe_backward'] if row['nfe_backward'] is not None else '–'}"


def torch_label(m):
    """ "(threads: ...) against torchdiffeq ... on PyTorch ... (its threads), date, load" of a part's meta."""
    wait = f", OMP_WAIT_POLICY={m['omp_wait_policy']}" if m["omp_wait_policy"] else ""
    return (
        f"(threads: {threads_label(m['threads'])}) against torchdiffeq {m.get('torchdiffeq', '0.2.5')} on PyTorch {m['torch']} "
        f"(`torch.set_num_threads({m['torch_threads']})`{wait}), {m['date_utc'][:10]}{load_label(m)}"
    )


def peer_markdown(results, p):
    lines = [
        f"Measured by `{p['command']}` on {p['machine']} ({p['cpus']} CPUs), TF {p['tensorflow']}, Keras {p['keras']} "
        f"{torch_label(p)}. MNIST ODE-Net (Chen et al. 2018), batch {BATCH}, dopri5 at rtol = atol = {p['rtol']:g}, Adam(1e-3); "
        f"every timed step starts from the initial weights (seed {p['seed']}) on one batch ({p['data']}), where the NFE is measured; "
        f"medians of {p['repeats']} alternating repeats of {p['steps']} steps. Zoo: Keras's compiled training step (`train_on_batch`, the "
        "`tf.function` that `fit` runs). Forward: the forward pass alone (zoo: a `tf.function` of `model(x, training=True)`; torch: with "
        "autograd on). CPU s: the process's CPU time over the step, all its threads (less sensitive than wall time to other jobs on the machine, but it counts spin-waiting). NFE = evaluations of the field f in the forward solve / of the adjoint's augmented field (f and its "
        "vector-Jacobian product) in the backward solve; backprop has no backward solve. \"zoo's weights\" is the same network with the zoo's "
        "initial weights converted (the same function); \"own init\" is PyTorch's initialisation. Speed-up = peer s / zoo s (wall; CPU in brackets).",
        "",
        "| implementation | gradients | s / training step | CPU s / training step | forward s | NFE fwd / bwd | zoo speed-up: peer s / zoo s (CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        for key, label in [("zoo", "pde_zoo `odenet`"), *PEERS.items()]:
            r = results[key][mode]
            speed = f"{r['zoo_speedup']:.2f}x" + (f" ({r['zoo_cpu_ratio']:.2f}x)" if "zoo_cpu_ratio" in r else "") if "zoo_speedup" in r else "–"
            cpu = f"{r['step_cpu_s']:.3f}" if "step_cpu_s" in r else "–"
            lines.append(f"| {label} | {mode} | {r['step_s']:.3f} | {cpu} | {r['forward_s']:.3f} | {_nfe(r)} | {speed} |")
    diff = results["torchdiffeq_zoo_weights"]["backprop"].get("max_abs_diff_probs_vs_zoo")
    if diff is not None:
        lines += [
            "",
            f"With the zoo's weights the two networks' output probabilities differ by at most {diff:.1e} on this batch: the layers agree "
            "to float32 rounding, the adaptive solves take different steps (torchdiffeq's dopri5 has another embedded error "
            "estimate, and it steps past the end time and interpolates where the zoo lands on it).",
        ]
    return "\n".join(lines) + "\n"


def _num(x):
    """Three significant digits, without an exponent from 100 on."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def eager_markdown(results, e):
    p = e["problem"]
    lines = [
        f"Measured by `{e['command']}` on {e['cpu']} ({e['vector_extensions']}, {e['cpus']} CPUs), TF {e['tensorflow']}, Keras {e['keras']}, "
        f"JAX {e['jax']} {torch_label(e)}. The problem, as a notebook user writes it (a function of `keras.ops` reading a Keras "
        f"variable μ; a `torch.nn.Module` for torchdiffeq): {p['oscillators']} Van der Pol oscillators x'' = μ (1 - x²) x' - x, "
        f"μ = {p['mu']:g}, x(0) evenly in [1.5, 2.5], x'(0) = 0, y at {p['outputs']} times in [0, {p['t1']:g}], {p['method']} at "
        f"rtol = {p['rtol']:g}, atol = {p['atol']:g}, float64; the gradient: of Σ y(t_end)² with respect to y0 and μ by autodiff "
        f"through the solver (backwards in time the limit cycle repels: torchdiffeq's adjoint stops with \"underflow in dt\"). First call: the first of each (zoo: tracing and compiling included); s / call: median of {e['rounds']} rounds that "
        f"alternate the implementations (reversed every other round; {e['calls']} calls per round for the compiled zoo, 1 for "
        "torchdiffeq; the op-by-op runs once). NFE: evaluations of f "
        "(torchdiffeq's dopri5 has another embedded error estimate and interpolates at the output times, hence its other count). "
        "Speed-up = torchdiffeq s / this s (forward against its forward, gradient against its gradient).",
        "",
        "| implementation | how it runs | first call s | s / call | NFE | µs / evaluation | torchdiffeq s / this s |",
        "|---|---|---|---|---|---|---|",
    ]
    for unit, (name, how) in EAGER_UNITS.items():
        r = results[unit]
        speed = "–" if unit.startswith("torch") else f"{_num(r['torchdiffeq_s_over_this'])}x"
        lines.append(
            f"| {name} | {how} | {_num(r['first_s'])} | {_num(r['s'])} | {r['nfe_forward']} | {_num(1e6 * r['s'] / r['nfe_forward'])} | {speed} |"
        )
    diff = max(results[u]["max_abs_diff_vs_torchdiffeq"] for u in ("tf", "jax"))
    lines += [
        "",
        f"The zoo's and torchdiffeq's solutions differ by at most {diff:.1e} (two dopri5 error estimates at rtol = {p['rtol']:g}), their "
        f"gradients by {results['tf_grad']['grad_rel_diff_vs_torchdiffeq']:.1e} relative to the largest.",
    ]
    return "\n".join(lines) + "\n"


def targets_markdown(results):
    """The issues' targets against this run's numbers (rows only for the parts measured)."""
    lines = ["| target (issue 10; eager: issue 18) | this run | met? |", "|---|---|---|"]
    rows = results.get("memory")
    if rows:
        by = {(r["n"], r["mode"]): r["peak_mib"] for r in rows}
        lo, hi = min(r["n"] for r in rows), max(r["n"] for r in rows)
        adj, bp = by[hi, "adjoint"] / by[lo, "adjoint"], by[hi, "backprop"] / by[lo, "backprop"]
        lines.append(f"| adjoint peak memory flat: ≤ 1.25x from {lo} to {hi} solver steps | {adj:.2f}x | {'yes' if adj <= 1.25 else 'no'} |")
        lines.append(f"| backprop peak memory grows with the steps | {bp:.1f}x from {lo} to {hi} steps | {'yes' if bp > 1.25 else 'no'} |")
    peer = results.get("peer")
    if peer:
        for mode in MODES:
            same, own = peer["torchdiffeq_zoo_weights"][mode], peer["torchdiffeq_own_init"][mode]
            cpu = same.get("zoo_cpu_ratio")
            verdict = {(True, True): "yes (wall and CPU time)", (True, False): "wall time only", (False, True): "CPU time only"}.get(
                (same["zoo_speedup"] > 1, cpu is not None and cpu > 1), "no"
            )
            cpu_text = f" (CPU time {cpu:.2f}x)" if cpu is not None else ""
            lines.append(
                f"| `odenet` training step faster than torchdiffeq's, {mode} | {same['zoo_speedup']:.2f}x at the same weights{cpu_text}; "
                f"{own['zoo_speedup']:.2f}x against its own init | {verdict} |"
            )
    eager = results.get("eager")
    if eager:
        tf_x, jax_x, grad_x = (eager[u]["torchdiffeq_s_over_this"] for u in ("tf", "jax", "tf_grad"))
        first = eager["torch"]["s"] / eager["tf"]["first_s"]
        lines.append(
            f"| eager `odeint` ≥ 10x faster than torchdiffeq eagerly | {tf_x:.0f}x on TensorFlow, {jax_x:.0f}x on JAX (gradient: "
            f"{grad_x:.0f}x); a first call, compiling included: {first:.1f}x | {'yes' if min(tf_x, jax_x) >= 10 else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def markdown(recorded):
    meta, results = recorded["meta"], recorded["results"]
    parts = [
        "Reproduce: `python scripts/bench_ode.py --readme docs/continuous-depth.md` (JSON in `benchmarks/bench-ode-cpu.json`; `--part memory`, "
        "`--part peer` or `--part eager` measures one part, `--render` re-renders from the JSON). The peer runs in a separate benchmark venv that "
        "pde_zoo never depends on: `python3 -m venv .bench-venv && .bench-venv/bin/pip install torch==2.13.0 torchdiffeq==0.2.5`. "
        "The machine is shared and its speed drifts from run to run, so only ratios within one run are comparable.",
        "",
    ]
    if results.get("memory"):
        parts += ["**Memory against solver steps.** " + memory_markdown(results["memory"], meta["memory"])]
    if results.get("peer"):
        parts += ["**The ODE-Net against torchdiffeq.** " + peer_markdown(results["peer"], meta["peer"])]
    if results.get("eager"):
        parts += ["**Eager `odeint` against torchdiffeq.** " + eager_markdown(results["eager"], meta["eager"])]
    parts += [targets_markdown(results)]
    return "\n".join(parts)


def _report(recorded, readme, block):
    from pde_zoo.results import update_readme_block

    text = markdown(recorded)
    print(text)
    if readme:
        update_readme_block(readme, block, text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all", "memory", "peer", "eager"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-method", default="euler", choices=["euler", "midpoint", "rk4"])
    parser.add_argument("--memory-steps", type=int, nargs="+", default=[10, 100, 1000], help="solver steps n (step_size = 1/n)")
    parser.add_argument("--memory-batch", type=int, default=32, help="batch of the memory runs (backprop stores ~n x 2.3 MiB at 32)")
    parser.add_argument("--memory-budget", type=float, default=20.0, help="seconds of measured steps per memory configuration (1 to 3 steps)")
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--atol", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=7, help="alternating repeats of the peer comparison")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (and forward passes) per repeat")
    parser.add_argument("--eager-rounds", type=int, default=5, help="alternating rounds of the eager comparison")
    parser.add_argument("--eager-calls", type=int, default=5, help="calls per round of the compiled zoo in the eager comparison")
    parser.add_argument("--peer-python", default=str(ROOT / ".bench-venv" / "bin" / "python"), help="Python of the venv with torch and torchdiffeq")
    parser.add_argument(
        "--omp-wait-policy", default="PASSIVE",
        help="OMP_WAIT_POLICY of the torch process ('' to leave unset). PASSIVE: on a loaded shared machine, OpenMP's spin-waiting "
        "threads otherwise slow torch down up to 30x; on an idle one it costs little",
    )
    add_threads_argument(parser)
    parser.set_defaults(threads=0)  # TF's defaults: 2 intra-op threads per op, as torch.set_num_threads(2); ~2x faster than 2x1 here
    parser.add_argument("--json", default="benchmarks/bench-ode-cpu.json")
    parser.add_argument("--readme", default=None, help="regenerate the benchmark block of this README")
    parser.add_argument("--block", default="ode-bench", help="name of the README block to regenerate")
    parser.add_argument("--render", action="store_true", help="no measuring: re-render the tables (and README blocks) from --json")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--eager-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from pde_zoo.io_utils import atomic_write_json
    from pde_zoo.threads import set_threads

    if args.render:
        return _report(json.loads(Path(args.json).read_text()), args.readme, args.block)
    set_threads(args.threads)
    if args.memory_child:
        return memory_child(json.loads(args.memory_child))
    if args.eager_child:
        return eager_child(json.loads(args.eager_child))
    if args.part in ("all", "peer", "eager") and not Path(args.peer_python).exists():
        parser.error(
            f"no benchmark venv at {args.peer_python}: python3 -m venv .bench-venv && .bench-venv/bin/pip install torch==2.13.0 torchdiffeq==0.2.5"
        )
    import tensorflow as tf

    common = {
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "tensorflow": tf.__version__, "keras": keras.__version__,
        "threads": args.threads, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": ("python scripts/bench_ode.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip(),
    }
    recorded = {"meta": {}, "results": {}}
    if Path(args.json).exists() and args.part != "all":  # keep the other part's results
        recorded = json.loads(Path(args.json).read_text())
    if args.part in ("all", "peer"):
        start, load = time.perf_counter(), os.getloadavg()[0]
        results, extra = run_peer(args)
        recorded["results"]["peer"] = results
        recorded["meta"]["peer"] = {
            **common, **extra, "rtol": args.rtol, "atol": args.atol, "repeats": args.repeats, "steps": args.steps, "seed": args.seed,
            "wall_s": time.perf_counter() - start, "loadavg_1min": [load, os.getloadavg()[0]],
        }
    if args.part in ("all", "eager"):
        from pde_zoo.info import cpu

        start, load = time.perf_counter(), os.getloadavg()[0]
        results, extra = run_eager(args)
        recorded["results"]["eager"] = results
        model, vector = cpu()
        recorded["meta"]["eager"] = {
            **common, **extra, "cpu": model, "vector_extensions": vector, "problem": EAGER_PROBLEM, "rounds": args.eager_rounds,
            "calls": args.eager_calls, "omp_wait_policy": args.omp_wait_policy, "wall_s": time.perf_counter() - start,
            "loadavg_1min": [load, os.getloadavg()[0]],
        }
    if args.part in ("all", "memory"):
        start, load = time.perf_counter(), os.getloadavg()[0]
        recorded["results"]["memory"] = run_memory(args)
        recorded["meta"]["memory"] = {
            **common, "method": args.memory_method, "batch": args.memory_batch, "seed": args.seed, "env": MEMORY_ENV,
            "wall_s": time.perf_counter() - start, "loadavg_1min": [load, os.getloadavg()[0]],
        }
    atomic_write_json(args.json, recorded)
    _report(recorded, args.readme, args.block)


if __name__ == "__main__":
    main()
