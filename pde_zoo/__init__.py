"""pde_zoo: residual networks are PDEs.

Public surface: `build`, `list_models`, `load`, `predict`, `evaluate`, `compile_model`, `train`,
`train_from_card`, `list_recipes`, `list_pretrained`, `pretrained_config`, `register_model`,
`pde_zoo.layers`, `pde_zoo.physics`.
"""

from pde_zoo import layers
from pde_zoo import models as _models  # noqa: F401  (fills the registry)
from pde_zoo._version import __version__
from pde_zoo.loading import load
from pde_zoo.optimizers import compile_model
from pde_zoo.registry import build, get_spec, list_models, register_model
from pde_zoo.inference import evaluate, predict
from pde_zoo.pretrained import list_pretrained, pretrained_config
from pde_zoo.recipes import list_recipes
from pde_zoo.training import train, train_from_card

__all__ = [
    "__version__", "build", "compile_model", "evaluate", "get_spec", "layers", "list_models", "list_pretrained", "list_recipes", "load",
    "predict", "pretrained_config", "register_model", "train", "train_from_card",
]
