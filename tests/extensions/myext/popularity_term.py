"""A new score term: ``log(1 + #training interactions of i)``, added to JMF's ranking after the fit."""

import jax.numpy as jnp
import numpy as np

from jmf.models.joint.terms import WeightedTerm


class PopularityTerm(WeightedTerm):
    """Prepared from the training split; ``weight`` may be a list (chosen on validation)."""

    name = "popularity"

    def prepare(self, split) -> None:
        counts = np.diff(split.train.tocsc().indptr).astype(np.float32)
        self.log_counts = jnp.asarray(np.log1p(counts))                  # [I_T]

    def __call__(self, users, user):
        return jnp.broadcast_to(self.log_counts, (len(users), self.log_counts.shape[0]))   # [B, I_T]
