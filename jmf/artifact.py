"""A fitted model as an artifact: ``<run dir>/model/`` is written at the end of every run and read back
by :func:`jmf.load`.

What the folder holds:

* ``state.safetensors`` -- the fitted arrays (``model.fitted_state()``: an engine model's best state,
  the others' factors), flattened by pytree path;
* ``meta.json`` -- the format version, the model's ``_target_``, the package versions, the non-array
  leaves of the fitted state, the seeds, the split's row counts and the sha256 of the three other files;
* ``config.yaml`` -- the resolved run config;
* ``data.npz`` -- the preprocessed interactions with their id maps (users, items, categories), so the
  run's split -- and with it the CF/DL partition and every id map -- is rebuilt exactly, without the
  original files.

Loading instantiates the model from the config, rebuilds the split, and hands the arrays to
``model.load_fitted(split, state)``; for an engine model that is ``setup`` (which rebuilds everything
derived from the split: graphs, sequences, score terms) with the saved leaves put in place of the
initial ones.  Scores of the reloaded model equal the run's.

Before anything is parsed, each file is hashed once and checked against ``meta.json``: a file changed
since the save (a bad disk, a torn copy, a hand edit) is refused naming it, where it would otherwise
load and recommend differently.  A model saved before the checksums (no ``sha256`` in ``meta.json``)
loads unverified, with an info line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import jax
import numpy as np
from omegaconf import DictConfig, OmegaConf

from jmf.data.interactions import Interactions
from jmf.data.split import SplitData
from jmf.errors import ArtifactError
from jmf.evaluate.registry import load_plugins
from jmf.pipeline import build_split
from jmf.pytrees import flat_dict, flatten
from jmf.version import __version__

log = logging.getLogger("jmf")
FORMAT = 1
VERSIONED = ("jmf", "jax", "flax", "numpy")
CHECKED = ("state.safetensors", "config.yaml", "data.npz")     # their sha256 is in meta.json


def versions() -> dict[str, str]:
    import flax

    return {"jmf": __version__, "jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__}


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
    _save_data(tmp / "data.npz", data)
    meta = {"format": FORMAT, "target": cfg.model.get("_target_"), "versions": versions(), "scalars": scalars,
            "seed": seed, "split": split.counts(), "model_class": type(model).__name__,
            "sha256": {name: _sha256(tmp / name) for name in CHECKED}}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
        _verify(folder, meta)                  # before parsing: a damaged file is named, not half-read
        cfg = OmegaConf.load(folder / "config.yaml")
        arrays = load_file(str(folder / "state.safetensors"))
        data = _load_data(folder / "data.npz")
    except ArtifactError:
        raise
    except Exception as err:   # noqa: BLE001 -- any unreadable file is the same user-facing problem
        raise ArtifactError(f"{folder}: cannot read the saved model ({type(err).__name__}: {err})") from None
    _check(run, folder, meta, cfg, strict)
    split = build_split(data, cfg.partition, cfg.split, int(meta["seed"]))
    if split.counts() != meta["split"]:
        raise ArtifactError(f"{folder}: the rebuilt split has rows {split.counts()}, the run had {meta['split']}")
    load_plugins((cfg.get("eval") or {}).get("plugins") or ())      # a project's metrics its monitor may name
    model = instantiate(cfg.model, _convert_="all")
    model.load_fitted(split, {"arrays": arrays, "scalars": meta["scalars"]})
    return model, split, cfg, meta, data


def _verify(folder: Path, meta: dict) -> None:
    """Refuse a file whose sha256 is not the one ``meta.json`` recorded when the model was saved (one hash each)."""
    sums = meta.get("sha256")
    if sums is None:
        log.info("%s: no checksums in meta.json (saved before jmf recorded them); its files are not verified",
                 folder)
        return
    for name in CHECKED:
        got, want = _sha256(folder / name), sums.get(name)
        if got != want:
            raise ArtifactError(
                f"{folder / name}: damaged or changed since the model was saved (sha256 {got[:12]}..., meta.json "
                f"recorded {str(want)[:12]}...), so it would load a different model; save the model again by "
                "rerunning the run's jmf-train command (run_info.json has it) or retraining, or restore model/ "
                "from an intact copy")


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
        old = flat_dict(OmegaConf.to_container(cfg, resolve=True))
        new = flat_dict(OmegaConf.to_container(OmegaConf.load(run_config), resolve=False))
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and not k.startswith("hydra"))
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} (model) vs {new.get(k)!r} (run)" for k in diff[:6])
            raise ArtifactError(f"{run}: config.yaml differs from the one the model was written with ({shown}); "
                                "the run directory was reused by another run")
