"""Pytrees as flat files and back: what a saved model and a checkpoint's config check are made of.

* :func:`flatten` -- a pytree -> ``(path -> array, path -> JSON scalar)``, paths as ``jax.tree_util.keystr``;
* :func:`fill` -- a rebuilt skeleton with the saved leaves put back at the same paths;
* :func:`nested` -- nested dicts back from ``keystr`` paths of dict keys;
* :func:`flat_dict` -- a nested dict as ``{"a.b.c": leaf}`` (config comparisons).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jmf.errors import ArtifactError


def flatten(tree) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``tree`` -> (path -> array, path -> JSON scalar).  PRNG keys are stored as their key data."""
    arrays, scalars = {}, {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = jax.tree_util.keystr(path)
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            arrays[key] = np.asarray(jax.random.key_data(leaf))
        elif hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
            arrays[key] = np.ascontiguousarray(np.asarray(leaf))
        else:
            scalars[key] = leaf
    return arrays, scalars


def fill(skeleton, arrays: dict[str, np.ndarray], scalars: dict[str, Any] | None = None, prefix: str = ""):
    """``skeleton`` with each leaf replaced by the saved leaf at the same path (``prefix`` + path).

    Leaves missing from the save keep the skeleton's value only when ``arrays`` has none under that
    subtree (e.g. an optimiser state that is not saved); a shape or dtype mismatch is an error.
    """
    scalars = scalars or {}

    def put(path, leaf):
        key = prefix + jax.tree_util.keystr(path)
        if key in scalars:
            return scalars[key]
        if key not in arrays:
            raise ArtifactError(f"model/state.safetensors: no array {key!r} (the model's state has changed shape)")
        saved = arrays[key]
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(saved, impl=jax.random.key_impl(leaf))
        if np.shape(leaf) == () and np.shape(saved) == (1,):   # safetensors keeps 0-d arrays as [1]
            saved = np.reshape(saved, ())
        if np.shape(saved) != np.shape(leaf):
            raise ArtifactError(f"model/state.safetensors: {key!r} has shape {np.shape(saved)}, the rebuilt model "
                                f"expects {np.shape(leaf)} (a different config or data)")
        if isinstance(leaf, jax.Array):   # keep the rebuilt placement (replicated / row-sharded over the mesh)
            return jax.device_put(np.asarray(saved, dtype=leaf.dtype), leaf.sharding)
        return saved
    return jax.tree_util.tree_map_with_path(put, skeleton)


def nested(arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> dict:
    """Rebuild nested dicts from ``keystr`` paths of dict keys only (``"['a']['b']"``)."""
    out: dict = {}
    for flat in (arrays, scalars):
        for key, value in flat.items():
            parts = [p[2:-2] for p in key.replace("][", "]\x00[").split("\x00")] if key else [""]
            node = out
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
    return out


def flat_dict(tree, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: nested dicts as one level of dotted keys."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flat_dict(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


# settings added to the config later whose default is what the code did before they existed: a config
# saved without them reads as this value
IMPLIED = {"data.encoding": "utf-8"}


def changed_settings(now: dict, old: dict) -> list[str]:
    """The keys of two flattened configs (:func:`flat_dict`) whose values differ; a key one side lacks (a setting
    added to the config since) matches when the other side has it off (:func:`is_off`) or at its
    :data:`IMPLIED` value."""
    def lacks_and_matches(k) -> bool:
        value = now.get(k, old.get(k))
        return (k in now) != (k in old) and (is_off(value) or (k in IMPLIED and value == IMPLIED[k]))
    return sorted(k for k in set(now) | set(old) if now.get(k) != old.get(k) and not lacks_and_matches(k))


def is_off(value) -> bool:
    """A config value that means "not used" (``None``, ``False``, 0, empty): what a setting added to the config
    later reads as in an older run's saved config."""
    return value is None or value is False or (not isinstance(value, bool) and value == 0) or value in ("", [], {})
