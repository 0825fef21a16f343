"""Build once (cached) and load the C++ ops of pde_zoo, with the kernel this CPU runs best: the stencil stack of
`stencil_op.cc` (one-channel thesis blocks), the multi-channel PDE-system steps (a stack of them) of `system_step_op.cc`, the
group normalization of `group_norm_op.cc` and Adam over a list of variables (`variable_list_op.cc`), one library.

Kernels (`KERNELS`): the same sources compiled for one instruction set each, `avx512` (AVX-512 F/BW/DQ/VL,
16 floats per SIMD vector), `avx2` (AVX2 + FMA, 8 floats) and `generic` (SSE2, 4 floats: the compiler's baseline x86-64 /
any CPU). At run time `kernel()` reads the CPU's features (Linux: /proc/cpuinfo flags) and picks the best
it supports, so one cache (or one image) serves an AVX-512 machine and an AVX2-only one alike; set
`PDE_ZOO_KERNEL` to one of them to force it (a kernel the CPU lacks is refused with the reason).

A kernel's library is compiled on first use with the machine's C++ compiler (`$CXX`, else `c++` /
`g++`) against the installed TensorFlow into `$PDE_ZOO_CACHE/ops/` (default `~/.cache/pde_zoo/ops/`),
under a name that hashes the sources, the TensorFlow version, the compiler and the flags, written to a
temporary file and renamed; `scripts/setup_env.sh` builds this machine's kernel at install time.

When it cannot be built (no compiler, a failed compile) or `PDE_ZOO_NATIVE=0`, `stencil_ops()`
returns None after one warning, and the stencil stack runs on standard TF ops instead (same
numbers, slower to train on CPU: docs/performance.md measures both).
"""

import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

from pde_zoo.cache import cache_dir

SOURCES = tuple(Path(__file__).with_name(name) for name in ("stencil_op.cc", "system_step_op.cc", "group_norm_op.cc", "variable_list_op.cc"))
HEADERS = (Path(__file__).with_name("pde_zoo_ops.h"),)
KERNEL_ENV = "PDE_ZOO_KERNEL"
# name -> (CPU flags it needs, compiler flags), best first.
KERNELS = {
    "avx512": ({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"},
               ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma", "-mtune=generic"]),
    "avx2": ({"avx2", "fma"}, ["-mavx2", "-mfma", "-mtune=generic"]),
    "generic": (set(), []),
}


def cpu_flags():
    """The CPU's feature flags (Linux /proc/cpuinfo; an empty set where it cannot be read)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1] for line in lines if line.startswith("flags")), "").split())


def kernel(flags=None):
    """The kernel to run: `$PDE_ZOO_KERNEL` when set (refused with the reason when the CPU lacks what it
    needs), else the best of `KERNELS` whose features the CPU has (`flags`: default `cpu_flags()`).

    Raises:
        ValueError: an unknown `$PDE_ZOO_KERNEL`, or one this CPU cannot run.
    """
    flags = cpu_flags() if flags is None else set(flags)
    forced = os.environ.get(KERNEL_ENV)
    if forced:
        if forced not in KERNELS:
            raise ValueError(f"${KERNEL_ENV}={forced!r} is not a kernel; choose one of {', '.join(KERNELS)}.")
        missing = sorted(KERNELS[forced][0] - flags)
        if missing:
            raise ValueError(f"${KERNEL_ENV}={forced!r} needs CPU features this machine lacks: {', '.join(missing)}.")
        return forced
    return next(name for name, (needs, _) in KERNELS.items() if needs <= flags)


def _compiler():
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _library(name, compiler, cache):
    """(full compiler flags, library path) of kernel `name`; the path is keyed by the sources, the
    TF version, the compiler and the flags."""
    import tensorflow as tf

    # -fno-math-errno: std::sqrt need not set errno (the ops never read it), so it is one instruction with
    # no error branch and loops holding it may vectorize; the results are the same IEEE-rounded values.
    flags = ["-shared", "-fPIC", "-O3", "-fno-math-errno", "-w", *KERNELS[name][1], *tf.sysconfig.get_compile_flags()]
    texts = [path.read_text() for path in SOURCES + HEADERS]
    key = hashlib.sha256("\n".join([*texts, tf.__version__, compiler, *flags]).encode()).hexdigest()[:16]
    return flags, cache / f"pde_zoo_ops-{name}-{key}.so"


def built_library():
    """(library path, kernel name) of this CPU's kernel when it is already built for this TF, or None
    (nothing compiled: `pde-zoo info` reports, it never builds)."""
    compiler = _compiler()
    if not compiler:
        return None
    name = kernel()
    path = _library(name, compiler, cache_dir() / "ops")[1]
    return (path, name) if path.exists() else None


def build(cache=None, compiler=None, name=None):
    """Compile kernel `name` (default: this CPU's, `kernel()`) of the C++ `SOURCES` into the cache unless it
    is there; returns the library path.

    Raises RuntimeError naming the problem (no compiler; the compiler's last error lines).
    """
    import tensorflow as tf

    compiler = compiler or _compiler()
    if not compiler:
        raise RuntimeError("no C++ compiler found; install g++ (Debian: apt install g++) or set $CXX")
    name = name or kernel()
    cache = Path(cache or cache_dir() / "ops")
    flags, path = _library(name, compiler, cache)
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    command = [compiler, *flags, *map(str, SOURCES), "-o", tmp, *tf.sysconfig.get_link_flags()]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError(f"compiling the C++ ops ({name} kernel) failed:\n" + "\n".join(result.stderr.strip().splitlines()[-5:]))
    os.replace(tmp, path)
    return path


@functools.cache
def stencil_ops():
    """The op module (`pde_zoo_stencil_stack`, `pde_zoo_system_stack`, `pde_zoo_group_norm` and their `_grad`
    ops), or None when the
    library cannot be built here or `PDE_ZOO_NATIVE=0` (one warning says why)."""
    if os.environ.get("PDE_ZOO_NATIVE", "1") == "0":
        return None
    import tensorflow as tf

    try:
        return tf.load_op_library(str(build()))
    except (RuntimeError, ValueError, OSError, tf.errors.OpError) as error:
        warnings.warn(
            f"pde_zoo: the C++ ops are unavailable ({error}); using standard TF ops "
            "(same numbers, slower training on CPU). Set PDE_ZOO_NATIVE=0 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


@functools.cache
def warn_not_float32(kernel, dtype):
    """One warning per (kernel, dtype): the C++ `kernel` runs float32 only, so layers computing in
    `dtype` run on the standard ops (same maths; slower training on CPU)."""
    warnings.warn(
        f"pde_zoo: the fused C++ {kernel} runs float32 only; a layer computing in {dtype} runs on the standard "
        "ops instead (same maths, slower training on CPU). Use float32 (the default dtype policy) for the fused kernel.",
        RuntimeWarning,
        stacklevel=3,
    )


def float32_kernel_applies(layer, kernel):
    """Whether `layer`'s training steps may run the float32 C++ `kernel`, decided at build: the
    TensorFlow backend and a float32 compute dtype. Another dtype warns once (`warn_not_float32`) and
    runs the standard ops; JAX runs the `keras.ops` path (compiled by XLA) without a word."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return False
    if layer.compute_dtype != "float32":
        warn_not_float32(kernel, layer.compute_dtype)
        return False
    return True


_EVALUATION = threading.local()


@contextlib.contextmanager
def fused_evaluation():
    """Within it, layers with a fused C++ kernel run it in inference calls too (`training=False`,
    forward only), as in training steps. `training.fit_epochs` runs `fit` in it, so the score after
    each epoch (a graph Keras traces there, keeps as the model's `evaluate` graph in this process,
    and never exports) runs the kernels: 10k images through pde2-50 in 0.12 instead of 0.20 s.
    Every other inference graph (`predict`, every SavedModel route, which trace anew) holds standard
    TF ops. The same numbers either way (tests hold the paths equal)."""
    previous = getattr(_EVALUATION, "on", False)
    _EVALUATION.on = True
    try:
        yield
    finally:
        _EVALUATION.on = previous


def runs_fused_kernel(training):
    """Whether a layer's call may run its fused C++ kernel: in training steps, and within `fused_evaluation`."""
    return bool(training) or getattr(_EVALUATION, "on", False)


if __name__ == "__main__":  # python -m pde_zoo.layers._native: build now (setup_env.sh)
    print(build())
