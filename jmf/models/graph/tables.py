"""A fitted model that scores by the dot products of two tables: what a graph model's DL side is evaluated as."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jmf.data.split import SplitData
from jmf.errors import ConfigError
from jmf.train.plan import RunContext


@jax.jit
def _scores(user_table: jax.Array, item_table: jax.Array, users: jax.Array) -> jax.Array:
    return user_table[users] @ item_table.T


class TablesModel:
    """A fitted model that scores by the dot products of two tables (``users [U, d] @ items [I, d]ᵀ``): a
    graph model's DL side (:meth:`~jmf.models.graph.common.GraphModel.dl_view`), evaluated like any ranking model."""

    rates = False

    def __init__(self, user_table: jax.Array, item_table: jax.Array, name: str = "tables"):
        self.user_table, self.item_table, self.name = user_table, item_table, name

    def score_tables(self) -> tuple[jax.Array, jax.Array, None]:
        return self.user_table, self.item_table, None

    def score(self, users: jax.Array) -> jax.Array:
        return _scores(self.user_table, self.item_table, jnp.asarray(users))

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        raise ConfigError(f"{self.name}'s DL-side tables are fitted with the model; they are not fitted alone")

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        raise ConfigError(f"model={self.name} ranks items; it has no rating scale (its tables report no RMSE)")
