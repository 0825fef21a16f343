"""Atomic writes: everything is written under a temporary name in the same directory, then
renamed into place, so an interrupted run never leaves a half-written file."""

import json
import os
import secrets
import shutil
from pathlib import Path


def atomic_write_text(path, text):
    """Write `text` to `path` through a temporary file in the same directory and a rename. The
    file gets the permissions `open()` would give it (mode 0o666, less the process's umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # a fresh name, created here (O_EXCL); the kernel applies the umask to 0o666
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save(path, save_fn):
    """Call `save_fn(tmp_path)` to write a file or directory, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}"  # keeps the suffix: keras.saving needs ".keras"
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    save_fn(tmp)
    if path.is_dir():
        old = path.parent / f".old-{path.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)


def atomic_savefig(fig, path, dpi=110):
    """Save a matplotlib figure as PNG at `path` through `atomic_save`; returns the path."""
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    return Path(path)
