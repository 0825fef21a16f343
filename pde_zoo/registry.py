"""The model registry: one dict, filled by `register_model`, read by `build`, the CLI,
the tests and scripts/train_all.sh (through `pde-zoo list`)."""

import dataclasses
import fnmatch
import inspect

THESIS_DEPTHS = (5, 15, 27, 50)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    Attributes:
        name: registry name (`pde1`, ...).
        builder: function `(depth, **options) -> keras.Model`.
        sweep_depths: depths of the thesis experiment for this model.
        default_depth: depth used when `build` gets none.
        description: one line for `pde-zoo list`.
    """

    name: str
    builder: callable
    sweep_depths: tuple
    default_depth: int
    description: str

    @property
    def options(self):
        """Keyword options `build` accepts for this model, with their defaults."""
        params = inspect.signature(self.builder).parameters
        return {k: p.default for k, p in params.items() if k != "depth"}


_REGISTRY = {}


def _registered():
    """The registry, filled on first use by importing the model families (`pde_zoo.models`)."""
    import pde_zoo.models  # noqa: F401  (registration)

    return _REGISTRY


def register_model(name, *, sweep_depths=THESIS_DEPTHS, default_depth=5, description=""):
    """Decorator: register `fn(depth, **options) -> keras.Model` under `name`. Names are unique.

    `description` defaults to the first line of `fn`'s docstring, or "" when it has none.
    """

    def decorator(fn):
        if name in _registered():
            raise ValueError(f"Model name {name!r} is already registered; choose another name.")
        summary = description or next(iter((fn.__doc__ or "").strip().splitlines()), "")
        _REGISTRY[name] = ModelSpec(name, fn, tuple(sweep_depths), default_depth, summary)
        return fn

    return decorator


def list_models(pattern="*"):
    """Sorted registry names matching the fnmatch `pattern`, e.g. `list_models("pde*")`."""
    return sorted(n for n in _registered() if fnmatch.fnmatch(n, pattern))


def get_spec(name):
    """The `ModelSpec` of `name`; ValueError listing the known names if there is none."""
    if name not in _registered():
        raise ValueError(f"Unknown model {name!r}. Known models: {', '.join(list_models())}.")
    return _REGISTRY[name]


def validate_depth(depth):
    """Return `depth` if it is a non-negative int, else raise ValueError."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer (number of blocks). Received: depth={depth!r}")
    return depth


def run_name(name, depth):
    """The name of `name` at `depth`, "<name>-<depth>" (e.g. "pde2-50"): the Keras model's name,
    its run directory, its pretrained name. Registry names contain no "-" (`parse_run_name`)."""
    return f"{name}-{depth}"


def parse_run_name(run):
    """(name, depth) of a "<name>-<depth>" string (`run_name`'s inverse); ValueError otherwise."""
    name, sep, depth = run.rpartition("-")
    if not (sep and name and depth.isdigit()):
        raise ValueError(f"Expected NAME-DEPTH, e.g. 'pde2-50'. Received: {run!r}")
    return name, int(depth)


def build(name, depth=None, **options):
    """Build the registered model `name` with `depth` blocks; returns an *uncompiled* keras.Model.

    Like `keras.applications`, the model is not compiled: call
    `pde_zoo.compile_model(model)` for the thesis recipe (Adam 1e-3, sparse CE, accuracy)
    or `model.compile(...)` yourself.

    Args:
        name: a name from `list_models()`.
        depth: number of residual blocks (default: the model's `default_depth`).
        **options: model options, see `get_spec(name).options` (channels, num_classes,
            input_shape, head_units, ...).

    Raises:
        ValueError: unknown name, bad depth or unknown option.
    """
    spec = get_spec(name)
    depth = validate_depth(spec.default_depth if depth is None else depth)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for model {name!r}. Valid options: {sorted(spec.options)}.")
    return spec.builder(depth, **options)
