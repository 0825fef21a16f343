"""Build once (cached) and load the C++ stencil-stack ops of `stencil_op.cc`.

The library is compiled on first use with the machine's C++ compiler (`$CXX`, else `c++` /
`g++`) against the installed TensorFlow, for this CPU (`-march=native`), into
`$PDE_ZOO_CACHE/ops/` (default `~/.cache/pde_zoo/ops/`) under a name that hashes the source,
the TensorFlow version, the compiler flags and the CPU, written to a temporary file and renamed.
It is compiled once per cache; `scripts/setup_env.sh` does it at install time.

When it cannot be built (no compiler, a failed compile) or `PDE_ZOO_NATIVE=0`, `stencil_ops()`
returns None after one warning, and the stencil stack runs on standard TF ops instead (same
numbers, slower to train on CPU: docs/performance.md measures both).
"""

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

from pde_zoo.cache import cache_dir

SOURCE = Path(__file__).with_name("stencil_op.cc")
# Tried in order. AVX512-FP16 is switched off because TF's Eigen headers fail to compile with it.
ARCH_FLAGS = (["-march=native", "-mno-avx512fp16"], ["-march=native"], [])


def _cpu_signature():
    """The CPU model and feature flags (Linux), so a cache shared between machines never loads
    code built for another instruction set."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({l for l in lines if l.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() + platform.machine()


def _compiler():
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _candidates(compiler, cache):
    """(arch flags, full flags, library path) of each way to build, in order of preference; the
    path is keyed by the source, TF version, compiler, CPU and flags."""
    import tensorflow as tf

    common = [SOURCE.read_text(), tf.__version__, compiler, _cpu_signature()]
    candidates = []
    for arch in ARCH_FLAGS:
        flags = ["-shared", "-fPIC", "-O3", "-w", *arch, *tf.sysconfig.get_compile_flags()]
        key = hashlib.sha256("\n".join(common + flags).encode()).hexdigest()[:16]
        candidates.append((arch, flags, cache / f"stencil_op-{key}.so"))
    return candidates


def built_library():
    """(library path, its architecture flags) of the op already built for this CPU and TF, or
    None (nothing compiled: `pde-zoo info` reports, it never builds)."""
    compiler = _compiler()
    if not compiler:
        return None
    for arch, _, path in _candidates(compiler, cache_dir() / "ops"):
        if path.exists():
            return path, " ".join(arch) or "generic (no -march)"
    return None


def build(cache=None, compiler=None):
    """Compile `stencil_op.cc` into the cache unless it is there; returns the library path.

    Raises RuntimeError naming the problem (no compiler; the compiler's last error lines).
    """
    import tensorflow as tf

    compiler = compiler or _compiler()
    if not compiler:
        raise RuntimeError("no C++ compiler found; install g++ (Debian: apt install g++) or set $CXX")
    cache = Path(cache or cache_dir() / "ops")
    candidates = _candidates(compiler, cache)
    built = [path for _, _, path in candidates if path.exists()]
    if built:  # an earlier build, even with fallback flags: never retry a compile that failed
        return built[0]
    cache.mkdir(parents=True, exist_ok=True)
    errors = []
    for arch, flags, path in candidates:
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        command = [compiler, *flags, str(SOURCE), "-o", tmp, *tf.sysconfig.get_link_flags()]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0:
            os.replace(tmp, path)
            return path
        os.unlink(tmp)
        errors.append(f"{' '.join(arch) or 'generic'}: " + "\n".join(result.stderr.strip().splitlines()[-5:]))
    raise RuntimeError("compiling stencil_op.cc failed:\n" + "\n".join(errors))


@functools.cache
def stencil_ops():
    """The op module (`pde_zoo_stencil_stack`, `pde_zoo_stencil_stack_grad`), or None when the
    library cannot be built here or `PDE_ZOO_NATIVE=0` (one warning says why)."""
    if os.environ.get("PDE_ZOO_NATIVE", "1") == "0":
        return None
    import tensorflow as tf

    try:
        return tf.load_op_library(str(build()))
    except (RuntimeError, OSError, tf.errors.OpError) as error:
        warnings.warn(
            f"pde_zoo: the C++ stencil op is unavailable ({error}); using standard TF ops "
            "(same numbers, slower training on CPU). Set PDE_ZOO_NATIVE=0 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


if __name__ == "__main__":  # python -m pde_zoo.layers._native: build now (setup_env.sh)
    print(build())
