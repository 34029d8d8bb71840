"""Evaluation: the metric registry, the evaluators and the validator.

Importing the package registers the built-in metrics (:mod:`jmf.evaluate.metrics`), so every module
under it sees the full registry.
"""

from jmf.evaluate import metrics as _builtin_metrics  # noqa: F401  (registers the built-in metrics)
from jmf.evaluate import beyond as _beyond_metrics    # noqa: F401  (and the beyond-accuracy ones)
