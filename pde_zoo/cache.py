"""The pde_zoo cache directory, at the bottom of the package (standard library only): the
MNIST files (`pde_zoo.data`), the C++ op library (`pde_zoo.layers._native`) and downloaded
pretrained models (`pde_zoo.pretrained`) live under it."""

import os
from pathlib import Path

CACHE_ENV = "PDE_ZOO_CACHE"


def cache_dir():
    """The pde_zoo cache directory (`$PDE_ZOO_CACHE`, default `~/.cache/pde_zoo`)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "pde_zoo"))
