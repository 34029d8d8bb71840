"""The interfaces every model family implements (STYLE R5).

Evaluation only needs a :class:`Scorer`; the trainer needs :meth:`CFModel.fit`.  Later
families (encoders, heads, the joint model) add their own Protocols here.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax
import numpy as np

from jmf.data.split import SplitData


@runtime_checkable
class Scorer(Protocol):
    """Scores CF-side items for users."""

    def score(self, users: jax.Array) -> jax.Array:
        """``[B] int32`` users -> ``[B, I_T]`` scores (higher is better)."""
        ...

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Paired ``[N]`` users and CF-side items -> ``[N]`` predicted ratings."""
        ...


@runtime_checkable
class CFModel(Scorer, Protocol):
    """A model fitted on the CF side (O1) of a split."""

    def fit(self, split: SplitData, seed: int = 0) -> dict[str, float]:
        """Fit on ``split.train``; returns training statistics (losses, epochs) for the log."""
        ...
