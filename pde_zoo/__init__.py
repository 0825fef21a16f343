"""pde_zoo: residual networks are PDEs.

Public surface: `build`, `list_models`, `load`, `predict`, `compile_model`, `register_model`,
`pde_zoo.layers`, `pde_zoo.physics`.
"""

__version__ = "0.1.0"

from pde_zoo import layers  # noqa: E402
from pde_zoo import models as _models  # noqa: E402,F401  (fills the registry)
from pde_zoo.models import compile_model  # noqa: E402
from pde_zoo.registry import build, get_spec, list_models, register_model  # noqa: E402
from pde_zoo.loading import load  # noqa: E402
from pde_zoo.training import predict  # noqa: E402

__all__ = ["__version__", "build", "compile_model", "get_spec", "layers", "list_models", "load", "predict", "register_model"]
