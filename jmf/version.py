"""The package version (its own module, so that modules below ``jmf`` can read it without importing ``jmf``)."""

__version__ = "0.1.0"
