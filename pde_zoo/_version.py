"""The package version, in one place: `pde_zoo.__version__`, setup.cfg (`attr:`) and the run cards read it."""

__version__ = "0.1.0"
