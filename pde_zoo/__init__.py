"""pde_zoo: residual networks are PDEs.

Public surface: `build`, `list_models`, `load`, `predict`, `evaluate`, `compile_model`, `train`,
`train_from_card`, `list_recipes`, `list_pretrained`, `pretrained_config`, `register_model`,
`pde_zoo.layers`, `pde_zoo.physics`, `pde_zoo.ode`.

`import pde_zoo` registers the custom layers and the zoo's Adam with `keras.saving` (so
`keras.saving.load_model` reads the zoo's files); the other names are imported on first use
(PEP 562). Run as the `pde-zoo` command, the package first quietens TensorFlow's start-up lines
(`pde_zoo.console`), unless `--verbose` or PDE_ZOO_VERBOSE=1.
"""

import importlib

from pde_zoo import console as _console

if _console.cli_invocation() and not _console.verbose():
    _console.quiet_stderr()

from pde_zoo import layers  # noqa: E402  (registration with keras.saving)
from pde_zoo import optimizers  # noqa: E402, F401  (registration of the zoo's Adam)
from pde_zoo._version import __version__  # noqa: E402

_EXPORTS = {
    "build": "pde_zoo.registry", "get_spec": "pde_zoo.registry", "list_models": "pde_zoo.registry", "register_model": "pde_zoo.registry",
    "load": "pde_zoo.loading", "compile_model": "pde_zoo.optimizers", "evaluate": "pde_zoo.inference", "predict": "pde_zoo.inference",
    "list_pretrained": "pde_zoo.pretrained", "pretrained_config": "pde_zoo.pretrained", "list_recipes": "pde_zoo.recipes",
    "train": "pde_zoo.training", "train_from_card": "pde_zoo.training",
}

__all__ = ["__version__", *sorted(_EXPORTS), "layers"]


def __getattr__(name):
    """A public function (`_EXPORTS`) or a submodule (`pde_zoo.layers`, ...), imported on first use."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif not name.startswith("__"):
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'pde_zoo' has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module 'pde_zoo' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
