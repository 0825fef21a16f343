"""A quiet console: TensorFlow's start-up lines filtered out of the process's stderr.

TensorFlow 2.21 writes lines such as `All log messages before absl::InitializeLog() is called
are written to STDERR`, `Could not find cuda drivers`, `failed call to cuInit`, the
cpu_feature_guard's "rebuild TensorFlow" advice and `NodeDef mentions attribute
use_unbounded_threadpool` from C++, straight to file descriptor 2, whatever
TF_CPP_MIN_LOG_LEVEL says. They read as failures on a machine that works.

`quiet_stderr()` points file descriptor 2 at a pipe and copies every line it receives to the
real stderr, except those matching `NOISE`. Python's own warnings and errors, pde_zoo's
messages, and any other C++ line still show. The filter is installed once per process, by the
`pde-zoo` command (unless `--verbose` or PDE_ZOO_VERBOSE=1) and the test suite; standard
library only, so it can run before TensorFlow is imported.
"""

import atexit
import os
import re
import sys
import threading

VERBOSE_ENV = "PDE_ZOO_VERBOSE"

# Start-up and device-probe lines of TF / XLA / absl that say nothing about the user's work.
_NOISY_SOURCES = (
    "cudart_stub", "cuda_platform", "cuda_executor", "cuda_diagnostics", "cuda_dnn", "cuda_fft", "cuda_blas",
    "cpu_feature_guard", "port.cc", "dso_loader", "computation_placer", "gpu_device", "device_compiler",
    "tf_trt", "absl_log", "oneDNN",
)
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+\s+\d+ (" + "|".join(re.escape(s) for s in _NOISY_SOURCES) + r")[^\]]*\]"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow"
    r"|.*NodeDef mentions attribute use_unbounded_threadpool"
    r"|.*Could not find cuda drivers on your machine"
    r"|.*failed call to cuInit"
    r"|.*oneDNN custom operations are on"
    r"|.*Unable to register cu(DNN|FFT|BLAS) factory"
    r"|.*TF-TRT Warning"
    r")"
)

_CONTROL = re.compile(r"^(\x1b\[[0-9;]*[A-Za-z]|\r)+")  # a progress bar's cursor moves before a line

_installed = None  # (the real stderr's descriptor, the copying thread) once installed


def is_noise(line):
    """Whether a line (bytes or str) written to stderr is one of `NOISE`, after any leading
    terminal control sequences."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return bool(NOISE.match(_CONTROL.sub("", text)))


def verbose():
    """Whether the user asked for TensorFlow's own start-up lines (PDE_ZOO_VERBOSE=1, or
    `--verbose` on the `pde-zoo` command line)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0") or "--verbose" in sys.argv[1:] + list(getattr(sys, "orig_argv", []))


def cli_invocation():
    """Whether this process is the `pde-zoo` command (its console script or `python -m pde_zoo.cli`),
    read from the command line before anything is imported."""
    if sys.argv and os.path.basename(sys.argv[0]) == "pde-zoo":
        return True
    orig = list(getattr(sys, "orig_argv", []))
    return any(orig[i:i + 2] == ["-m", "pde_zoo.cli"] for i in range(len(orig)))


def quiet_stderr():
    """Filter `NOISE` out of everything written to file descriptor 2 from now on (idempotent).

    A thread copies the pipe's other lines to the original stderr as they come; at exit the
    pipe is closed and drained, so nothing written before is lost.
    """
    global _installed
    if _installed is not None:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def copy():
        with os.fdopen(read_end, "rb", buffering=0) as source:
            pending = b""
            for chunk in iter(lambda: source.read(4096), b""):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not is_noise(line):
                        os.write(real, line + b"\n")
            if pending and not is_noise(pending):
                os.write(real, pending)

    thread = threading.Thread(target=copy, name="pde_zoo-stderr-filter", daemon=True)
    thread.start()
    _installed = (real, thread)
    atexit.register(restore)


def restore():
    """Point descriptor 2 back at the real stderr and let the copier drain the pipe (at exit,
    or before `os._exit`, which runs no atexit hook)."""
    global _installed
    if _installed is None:
        return
    real, thread = _installed
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(real, 2)  # the pipe's last writer closes: the copier reads to its end
    thread.join(timeout=5)
    _installed = None
