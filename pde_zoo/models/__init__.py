"""The registered architectures (importing this package fills the registry).

- `thesis`: `pde1`, `pde2`, `resnet`, `mlp` (the thesis sweep) and `compile_model`;
- `continuous`: `pde1ode`, `pde2ode`, `odenet` (continuous depth, thesis chapter V).
"""

from pde_zoo.models import continuous, thesis  # noqa: F401  (registration)
from pde_zoo.models.thesis import compile_model, thesis_model, thesis_network

__all__ = ["compile_model", "thesis_model", "thesis_network"]
