"""`pde-zoo analyze`: the chapter-III physics report of a model (thesis eq 21-38).

For every block: its stencil K, the PDE it discretises (`physics.kernel_to_pde`, exact for PDE
blocks, a projection with a residual for c_ResNet), the von Neumann amplification
max_p |G(p)|; for the stack: the propagator P (the path sum with ReLU removed) beside its
Gaussian limits, the product of per-block amplifications (a Lipschitz bound of the whole
stack), and the path sum with the ReLU gates of a real MNIST test image checked against the
Keras forward pass. Files: report.md, report.json and PNG figures, each written atomically.

Staged multi-channel models (pdenet, convresnet: one stack of blocks per resolution, blocks
that mix channels) get the per-block and per-channel part: for a mixing block max_p |G| is
the spectral norm of its C x C matrix symbol (`physics.system_symbol`), and the per-channel
rows are its diagonal stencils (for `PDESystemBlock` the channel's PDE, γ = Γ_cc); the
propagator and path sums, defined for one stack at one resolution, are skipped.

Continuous PDE models (pde1ode, pde2ode: a `PDEField` integrated by an `ODEBlock`) get one row
per time segment (piece of the field): its coefficients, the symbol |R(h λ(p))| of one solver
step over the steps the solver took on a test image, and stability (`continuous`). Every layer
read implements the physics protocol (`pde_zoo.layers.physics_protocol`); one that does not is
refused with a TypeError naming the missing method.

By concern: `numerics` (the numbers, and `compare_stability` of several models), `plots` (the
figures), `markdown` (report.md, the stability table), `report` (`analyze`: all of it written
to a directory). Models are resolved by `pde_zoo.loading`; the command line is `pde_zoo.cli`.
"""

from pde_zoo.analysis.continuous import continuous_numbers, pde_fields_of
from pde_zoo.analysis.markdown import (
    continuous_markdown,
    report_markdown,
    stability_markdown,
)
from pde_zoo.analysis.numerics import (
    AMPLIFYING,
    channel_stencils,
    compare_stability,
    jsonable,
    layer_table,
    model_numbers,
)
from pde_zoo.analysis.report import analyze

__all__ = [
    "AMPLIFYING", "analyze", "channel_stencils", "compare_stability", "continuous_markdown", "continuous_numbers", "jsonable",
    "layer_table", "model_numbers", "pde_fields_of", "report_markdown", "stability_markdown",
]
