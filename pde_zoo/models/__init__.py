"""The registered architectures (importing this package fills the registry).

- `thesis`: `pde1`, `pde2`, `resnet`, `mlp` (the thesis sweep);
- `continuous`: `pde1ode`, `pde2ode`, `odenet` (continuous depth, thesis chapter V);
- `pdenet`: `pdenet`, `convresnet` (multi-channel PDE networks and their control, issue 11).
"""

from pde_zoo.models import continuous, thesis  # noqa: F401  (registration)
from pde_zoo.models import pdenet  # noqa: F401  (registration)
from pde_zoo.models.thesis import thesis_model, thesis_network

__all__ = ["thesis_model", "thesis_network"]
