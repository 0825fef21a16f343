"""pde_zoo: residual networks are PDEs.

Public surface: `build`, `list_models`, `load`, `predict`, `compile_model`, `register_model`,
`pde_zoo.layers`, `pde_zoo.physics`.
"""

from pde_zoo import layers
from pde_zoo import models as _models  # noqa: F401  (fills the registry)
from pde_zoo._version import __version__
from pde_zoo.loading import load
from pde_zoo.models import compile_model
from pde_zoo.registry import build, get_spec, list_models, register_model
from pde_zoo.training import predict

__all__ = ["__version__", "build", "compile_model", "get_spec", "layers", "list_models", "load", "predict", "register_model"]
