"""jmf: a JAX research framework for cross-category user-interest mapping."""

__version__ = "0.1.0"
