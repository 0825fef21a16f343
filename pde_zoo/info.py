"""`pde-zoo info`: what a bug report needs (like `torch.utils.collect_env`).

Every entry is read independently; what cannot be determined is reported as "unknown" (with
the reason), so `collect()` never fails.
"""

import importlib.metadata
import os
import platform
from pathlib import Path

UNKNOWN = "unknown"


def cpu():
    """(CPU model, vector extensions: "AVX-512", "AVX2" or "neither AVX2 nor AVX-512") from
    /proc/cpuinfo; "unknown" where it cannot be read."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or UNKNOWN, UNKNOWN
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), UNKNOWN)
    flags = set(next((line.split(":", 1)[1] for line in lines if line.startswith("flags")), "").split())
    if not flags:
        return model, UNKNOWN
    return model, "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "neither AVX2 nor AVX-512"


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _safe(fn):
    try:
        return fn()
    except Exception as err:  # noqa: BLE001  (info never fails: it says what it could not read)
        return f"{UNKNOWN} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"


def _native():
    from pde_zoo.layers import _native

    if os.environ.get("PDE_ZOO_NATIVE", "1") == "0":
        return "off (PDE_ZOO_NATIVE=0): standard TF ops"
    try:
        chosen = _native.kernel()
    except ValueError as err:  # a forced kernel this CPU cannot run
        return f"refused: {err}"
    built = _native.built_library()
    if built is None:
        where = "built on first use; needs a C++ compiler" if _native._compiler() else "unavailable: no C++ compiler (standard TF ops)"
        return f"{chosen} kernel for this CPU, not built ({where})"
    path, name = built
    return f"built, {name} kernel for this CPU ({path})"


def _gpus():
    import tensorflow as tf

    devices = tf.config.list_physical_devices("GPU")
    return ", ".join(d.name for d in devices) or "none (CPU only)"


def _pretrained():
    from pde_zoo import pretrained

    places = [f"{label} {path}" for label, path in pretrained._local_dirs() if Path(path).is_dir()]
    names = pretrained.list_pretrained()
    return f"{len(names)} ({', '.join(names)}); looked up in: {'; '.join(places) or 'no local directory'}, then the cache {pretrained.cache_models_dir()}"


def _mnist():
    from pde_zoo import data

    directory = data.find_idx_dir(download=False)
    return str(directory) if directory else "not prepared (run `pde-zoo data`)"


def collect():
    """[(label, value)] of everything `pde-zoo info` prints."""
    from pde_zoo._version import __version__
    from pde_zoo.cache import cache_dir
    from pde_zoo.cards import git_commit

    model, vector = cpu()
    return [
        ("pde_zoo", f"{__version__} (commit {_safe(git_commit)})"),
        ("python", f"{platform.python_version()} ({platform.platform()})"),
        ("tensorflow", _version("tensorflow")),
        ("keras", _version("keras")),
        ("jax", _version("jax")),
        ("keras backend", _safe(lambda: __import__("keras").backend.backend())),
        ("cpu", f"{model}; {os.cpu_count()} cores; {vector}"),
        ("C++ ops", _safe(_native)),
        ("GPUs", _safe(_gpus)),
        ("cache", str(_safe(cache_dir))),
        ("MNIST", _safe(_mnist)),
        ("TFDS data dir", os.environ.get("TFDS_DATA_DIR", str(Path.home() / "tensorflow_datasets"))),
        ("pretrained models", _safe(_pretrained)),
    ]


def report():
    """The text `pde-zoo info` prints."""
    rows = collect()
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
