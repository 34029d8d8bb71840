"""A fitted model as an artifact: ``<run dir>/model/`` is written at the end of every run and read back
by :func:`jmf.load`.

What the folder holds:

* ``state.safetensors`` -- the fitted arrays (``model.fitted_state()``: an engine model's best state,
  the others' factors), flattened by pytree path;
* ``meta.json`` -- the format version, the model's ``_target_``, the package versions, the non-array
  leaves of the fitted state, the seeds and the split's row counts;
* ``config.yaml`` -- the resolved run config;
* ``data.npz`` -- the preprocessed interactions with their id maps (users, items, categories), so the
  run's split -- and with it the O1/O2 partition and every id map -- is rebuilt exactly, without the
  original files.

Loading instantiates the model from the config, rebuilds the split, and hands the arrays to
``model.load_fitted(split, state)``; for an engine model that is ``setup`` (which rebuilds everything
derived from the split: graphs, sequences, score terms) with the saved leaves put in place of the
initial ones.  Scores of the reloaded model equal the run's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig, OmegaConf

from jmf.data.interactions import Interactions
from jmf.data.split import SplitData
from jmf.errors import JmfError

log = logging.getLogger("jmf")
FORMAT = 1
VERSIONED = ("jmf", "jax", "flax", "numpy")


class ArtifactError(JmfError, ValueError):
    """A run directory whose model cannot be loaded (missing, corrupt, or written by another version/config)."""


def versions() -> dict[str, str]:
    import flax

    import jmf

    return {"jmf": jmf.__version__, "jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__}


# ------------------------------------------------------------------ pytrees <-> flat files
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


class AttributeState:
    """``fitted_state``/``load_fitted`` for models whose fit leaves plain attributes (``fitted``: their
    names; arrays, dicts of arrays, scalars), saved as they are and set back on load.  Anything else
    (an NNX module's state) goes in :meth:`extra_state` and is put back by :meth:`restored`."""

    fitted: tuple[str, ...] = ()

    def fitted_state(self) -> dict:
        return {**{name: getattr(self, name) for name in self.fitted}, **self.extra_state()}

    def extra_state(self) -> dict:
        return {}

    def load_fitted(self, split: SplitData, saved: dict) -> None:
        def mine(flat):
            return {k: v for k, v in flat.items() if k.split("]")[0][2:-1] in self.fitted}
        for name, value in nested(mine(saved["arrays"]), mine(saved["scalars"])).items():
            setattr(self, name, jax.tree.map(lambda x: jax.numpy.asarray(x) if isinstance(x, np.ndarray) else x,
                                             value))
        self.restored(split, saved)

    def restored(self, split: SplitData, saved: dict) -> None:
        """Rebuild what the attributes imply (derived tables, modules from ``extra_state``); nothing by default."""


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


# ------------------------------------------------------------------ save
def save_model(run_dir: str | Path, model, data: Interactions, split: SplitData, cfg: DictConfig,
               seed: int) -> Path:
    """Write ``run_dir/model/`` (atomically: a temporary folder renamed into place)."""
    from safetensors.numpy import save_file

    target = Path(run_dir) / "model"
    tmp = Path(run_dir) / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays, scalars = flatten(model.fitted_state())
    save_file(arrays, str(tmp / "state.safetensors"))
    (tmp / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    meta = {"format": FORMAT, "target": cfg.model.get("_target_"), "versions": versions(), "scalars": scalars,
            "seed": seed, "split": split.counts(), "model_class": type(model).__name__}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default))
    _save_data(tmp / "data.npz", data)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def _json_default(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    return str(value)


def _save_data(path: Path, data: Interactions) -> None:
    arrays = {"user": data.user, "item": data.item, "value": data.value, "item_category": data.item_category,
              "user_ids": np.asarray(data.user_ids).astype(str), "item_ids": np.asarray(data.item_ids).astype(str),
              "category_names": np.asarray(data.category_names, dtype=str),
              "flags": np.array([data.implicit], bool), "name": np.array([data.name])}
    for key in ("timestamp", "fold"):
        if getattr(data, key) is not None:
            arrays[key] = getattr(data, key)
    if data.item_titles is not None:
        arrays["item_titles"] = np.asarray(data.item_titles).astype(str)
    np.savez_compressed(path, **arrays)


def _load_data(path: Path) -> Interactions:
    with np.load(path, allow_pickle=False) as z:
        get = {k: z[k] for k in z.files}
    return Interactions(user=get["user"], item=get["item"], value=get["value"], timestamp=get.get("timestamp"),
                        item_category=get["item_category"], user_ids=get["user_ids"], item_ids=get["item_ids"],
                        category_names=tuple(str(c) for c in get["category_names"]), name=str(get["name"][0]),
                        implicit=bool(get["flags"][0]), fold=get.get("fold"), item_titles=get.get("item_titles"))


# ------------------------------------------------------------------ load
def read(run_dir: str | Path, strict: bool = True):
    """``(model, split, cfg, meta, data)`` of ``run_dir``'s saved model; see :func:`jmf.load`."""
    from hydra.utils import instantiate
    from safetensors.numpy import load_file

    from jmf.run import build_split

    run = Path(run_dir)
    folder = run / "model"
    if not run.is_dir():
        raise ArtifactError(f"{run}: no such run directory")
    missing = [f for f in ("meta.json", "config.yaml", "state.safetensors", "data.npz") if not (folder / f).exists()]
    if missing:
        raise ArtifactError(f"{folder}: no saved model ({', '.join(missing)} missing); a run writes it when it ends "
                            "(runs from before jmf 0.2 or with trainer.save_model=false have none)")
    try:
        meta = json.loads((folder / "meta.json").read_text())
        cfg = OmegaConf.load(folder / "config.yaml")
        arrays = load_file(str(folder / "state.safetensors"))
        data = _load_data(folder / "data.npz")
    except Exception as err:   # noqa: BLE001 -- any unreadable file is the same user-facing problem
        raise ArtifactError(f"{folder}: cannot read the saved model ({type(err).__name__}: {err})") from None
    _check(run, folder, meta, cfg, strict)
    split = build_split(data, cfg.partition, cfg.split, int(meta["seed"]))
    if split.counts() != meta["split"]:
        raise ArtifactError(f"{folder}: the rebuilt split has rows {split.counts()}, the run had {meta['split']}")
    model = instantiate(cfg.model, _convert_="all")
    model.load_fitted(split, {"arrays": arrays, "scalars": meta["scalars"]})
    return model, split, cfg, meta, data


def _check(run: Path, folder: Path, meta: dict, cfg: DictConfig, strict: bool) -> None:
    """Refuse a model written by another format or version (``strict``), or whose run config differs."""
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{folder}: format {meta.get('format')} is not this jmf's format {FORMAT}")
    now = versions()
    differ = {k: (meta["versions"].get(k), now[k]) for k in VERSIONED if meta["versions"].get(k) != now[k]}
    if differ and strict:
        shown = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in differ.items())
        raise ArtifactError(f"{folder}: written by other versions ({shown}); load it with jmf.load(run_dir, "
                            "strict=False) to accept that scores may differ in the last digits")
    run_config = run / "config.yaml"
    if run_config.exists():
        from jmf.train.engine import _flatten

        old = _flatten(OmegaConf.to_container(cfg, resolve=True))
        new = _flatten(OmegaConf.to_container(OmegaConf.load(run_config), resolve=False))
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and not k.startswith("hydra"))
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} (model) vs {new.get(k)!r} (run)" for k in diff[:6])
            raise ArtifactError(f"{run}: config.yaml differs from the one the model was written with ({shown}); "
                                "the run directory was reused by another run")
