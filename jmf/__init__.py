"""jmf: a JAX research framework for cross-category user-interest mapping."""

__version__ = "0.1.0"


def load(run_dir, strict: bool = True):
    """The model saved in ``run_dir/model/`` as a :class:`jmf.recommend.Recommender` (see there)."""
    from jmf.recommend import load as _load

    return _load(run_dir, strict)
