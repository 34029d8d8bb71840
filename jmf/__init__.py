"""jmf: a JAX research framework for cross-category user-interest mapping."""

from jmf.version import __version__  # noqa: F401


def load(run_dir, strict: bool = True):
    """The model saved in ``run_dir/model/`` as a :class:`jmf.recommend.Recommender` (see there)."""
    from jmf.recommend import load as _load

    return _load(run_dir, strict)
