"""The category transfer map of a ``split=category_holdout`` run (docs/pages/guide/transfer-map.md).

* :func:`evaluate_targets`: every metric of the run's ``eval`` group, target by target on
  :func:`jmf.data.holdout.target_view`'s split (``targets/<name>/<fold>/<metric>``), and their mean over
  targets (``<fold>/<metric>``, what the console table and ``jmf-report`` show).
* :func:`transfer_map`: for each target ``t`` and source ``s``, how much ``s`` carries into ``t``: the drop of
  ``t``'s cold test users' NDCG@10 when ``s`` is hidden from every user's input, over their NDCG@10 with it,
  ``M[t, s] = (N_t - N_t(-s)) / N_t`` (0: ``t``'s ranking does not use ``s``; 1: it is all ``s``'s doing;
  negative: the ranking is better without ``s``).  The pairs are the same users, items and drawn negatives, so
  the drop is a paired difference.
* :func:`write_transfer_map`: ``transfer_map.csv`` (first column ``target``, one column per source category,
  empty on the diagonal), ``transfer_map.png`` (a heatmap, categories in a clustered order), on data with a
  planted category graph ``planted_map.csv`` in the same layout, and ``interest_lift.csv``
  (:func:`interest_lift`: how well the interest vector finds each target's cold users).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jmf.data.holdout import view_at
from jmf.data.split import SplitData
from jmf.evaluate.protocols import EvalConfig, evaluate_split, evaluation_users

log = logging.getLogger("jmf")

MAP_METRIC = "ndcg@10"


def target_names(split: SplitData) -> list[str]:
    names = [str(n) for n in split.data.category_names]
    return [names[t] for t in split.holdout.targets]


def evaluate_targets(model_for: Callable[[int], object], split: SplitData, eval_cfg: EvalConfig,
                     evaluate: Callable) -> dict[str, float]:
    """Per target ``k``, ``evaluate(model_for(k), view_k, eval_cfg)`` as ``targets/<name>/<key>``, and each key's
    mean over the targets that have it as ``<key>``."""
    out: dict[str, float] = {}
    per: dict[str, list[float]] = {}
    for k, name in enumerate(target_names(split)):
        view = view_at(split, k)
        for key, value in evaluate(model_for(k), view, eval_cfg).items():
            out[f"targets/{name}/{key}"] = value
            per.setdefault(key, []).append(value)
    out.update({key: float(np.mean(values)) for key, values in per.items()})
    return out


@dataclasses.dataclass(frozen=True)
class TransferMap:
    """``matrix [T, C]``: ``M[t, s]`` (module docstring), NaN where ``s`` is ``t``; ``base [T]``: each target's
    NDCG@10 with every source; ``targets`` / ``sources``: category names."""

    targets: list[str]
    sources: list[str]
    matrix: np.ndarray
    base: np.ndarray


def transfer_map(model, split: SplitData, eval_cfg: EvalConfig) -> TransferMap:
    """Hide each source from the input of each target's cold test users (``model.target_view(k, hide_source=s)``);
    a source none of them has in their input carries nothing (0, not evaluated)."""
    cfg = dataclasses.replace(eval_cfg, ks=(10,), ratings=False, test_sampling_seeds=(), test_full=False)
    h, C = split.holdout, split.data.n_categories
    matrix = np.full((len(h.targets), C), np.nan)
    base = np.zeros(len(h.targets))
    for k, t in enumerate(h.targets):
        view = view_at(split, k)
        base[k] = evaluate_split(model.target_view(k), view, "test", cfg)[MAP_METRIC]
        users = evaluation_users(view, "test")[0]
        present = np.unique(split.data.item_category[view.dl_items[view.dl[users].indices]])
        for s in range(C):
            if s == t:
                continue
            if s not in present or base[k] <= 0:
                matrix[k, s] = 0.0
                continue
            hidden = evaluate_split(model.target_view(k, hide_source=s), view, "test", cfg)[MAP_METRIC]
            matrix[k, s] = (base[k] - hidden) / base[k]
    names = [str(n) for n in split.data.category_names]
    return TransferMap(target_names(split), names, matrix, base)


def interest_lift(model, split: SplitData, batch: int = 512) -> list[dict]:
    """Per target ``t``: how much more interest in ``t`` the interest vector gives ``t``'s cold test users (whose rows
    in ``t`` it never saw) than users never active in ``t``: the mean ``softmax(I_u)[t]`` of each group, their
    ratio (the lift) and the AUC of ``softmax(I_u)[t]`` separating the two."""
    import jax.numpy as jnp
    from scipy.stats import rankdata

    U = split.n_users
    interest = np.concatenate([np.asarray(model.interest(jnp.asarray(np.arange(s, min(s + batch, U)), jnp.int32)))
                               for s in range(0, U, batch)])
    data, h = split.data, split.holdout
    active = np.zeros((U, data.n_categories), bool)
    active[data.user, data.item_category[data.item]] = True
    rows = []
    for k, (name, t) in enumerate(zip(target_names(split), h.targets)):
        cold, never = interest[h.test_users[k], k], interest[~active[:, t], k]
        ranks = rankdata(np.concatenate([cold, never]))
        auc = ((ranks[:len(cold)].sum() - len(cold) * (len(cold) + 1) / 2) / (len(cold) * len(never))
               if len(cold) and len(never) else float("nan"))
        rows.append({"target": name, "cold_users": len(cold), "interest_cold": float(cold.mean()),
                     "interest_never_active": float(never.mean()) if len(never) else float("nan"),
                     "lift": float(cold.mean() / never.mean()) if len(never) else float("nan"), "auc": float(auc)})
    return rows


def write_csv(path: Path, rows: list[str], cols: list[str], matrix: np.ndarray) -> None:
    """``target,<col>,...`` then one row per target; NaN cells are written empty."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", *cols])
        for name, row in zip(rows, matrix):
            w.writerow([name, *("" if np.isnan(v) else f"{v:.6g}" for v in row)])


def read_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """:func:`write_csv`'s file back: ``(rows, cols, matrix)`` with NaN for empty cells."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    cols = lines[0][1:]
    rows = [line[0] for line in lines[1:]]
    matrix = np.array([[float(v) if v != "" else np.nan for v in line[1:]] for line in lines[1:]], float)
    return rows, cols, matrix.reshape(len(rows), len(cols))


def clustered_order(matrix: np.ndarray) -> np.ndarray:
    """An order of a square map's categories that puts those that carry into each other side by side (average
    linkage on the symmetrised map, NaN as 0); the identity for fewer than three."""
    n = matrix.shape[0]
    if n < 3:
        return np.arange(n)
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import pdist

    sym = np.nan_to_num((matrix + matrix.T) / 2)
    return leaves_list(linkage(pdist(sym), "average"))


def draw_map(path: Path, rows: list[str], cols: list[str], matrix: np.ndarray, title: str,
             spread: np.ndarray | None = None) -> None:
    """A heatmap of ``matrix`` (targets down, sources across) in a clustered order where rows and columns are the
    same categories; ``spread``: ± figures written in the cells (a sweep's spread over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order_r = order_c = np.arange(len(rows))
    if rows == cols:
        order_r = order_c = clustered_order(matrix)
    else:
        order_c = np.arange(len(cols))
    m = matrix[np.ix_(order_r, order_c)]
    size = max(4.0, 0.32 * len(cols) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, max(3.5, 0.32 * len(rows) + 2.0)))
    lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
    img = ax.imshow(np.ma.masked_invalid(m), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(order_c)), [cols[i] for i in order_c], rotation=90, fontsize=7)
    ax.set_yticks(range(len(order_r)), [rows[i] for i in order_r], fontsize=7)
    ax.set_xlabel("source category (hidden from the input)")
    ax.set_ylabel("target category")
    ax.set_title(title, fontsize=9)
    if spread is not None and len(rows) <= 16:
        s = spread[np.ix_(order_r, order_c)]
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}\n±{s[i, j]:.2f}", ha="center", va="center", fontsize=5)
    fig.colorbar(img, ax=ax, label="relative drop of the target's NDCG@10")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_transfer_map(out: Path, tmap: TransferMap, planted: np.ndarray | None, targets: np.ndarray,
                       title: str, lift: list[dict] | None = None) -> list[str]:
    """The map's files in the run directory ``out`` (module docstring), and ``interest_lift.csv``
    (:func:`interest_lift`); returns their names."""
    write_csv(out / "transfer_map.csv", tmap.targets, tmap.sources, tmap.matrix)
    draw_map(out / "transfer_map.png", tmap.targets, tmap.sources, tmap.matrix,
             f"{title}: how much each source carries into each target")
    written = ["transfer_map.csv", "transfer_map.png"]
    if planted is not None:
        write_csv(out / "planted_map.csv", tmap.targets, tmap.sources, np.asarray(planted, float)[targets])
        written.append("planted_map.csv")
    if lift:
        with open(out / "interest_lift.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(lift[0]))
            w.writeheader()
            w.writerows(lift)
        written.append("interest_lift.csv")
    return written


def planted_agreement(matrix: np.ndarray, planted: np.ndarray) -> dict[str, float]:
    """How well a map recovers a planted category graph: the mean map entry within groups (planted weight > 0)
    and across them (0), their ratio, and the Spearman correlation of the entries with the planted weights."""
    from scipy.stats import spearmanr

    ok = np.isfinite(matrix) & np.isfinite(planted)
    within, across = matrix[ok & (planted > 0)], matrix[ok & (planted == 0)]
    w, a = float(within.mean()), float(across.mean())
    out = {"map/within": w, "map/across": a, "map/spearman": float(spearmanr(matrix[ok], planted[ok]).statistic)}
    if a > 0:                     # across groups at or below 0: no ratio to state (within is the whole signal)
        out["map/within_over_across"] = w / a
    return out


def mean_maps(configs: list[tuple[str, str, list[Path]]], out: Path) -> list[str]:
    """``jmf-report``'s maps: per ``(model, config, run folders)`` whose runs wrote ``transfer_map.csv``
    (``model=jmf_map``), the mean map over its seeds and their spread (sample std), as
    ``transfer_map_mean[_<n>].csv`` / ``_spread`` / ``.png`` in ``out``; returns the report's lines for them."""
    md = []
    for n, (model, config, folders) in enumerate(configs):
        files = [f / "transfer_map.csv" for f in folders if (f / "transfer_map.csv").exists()]
        if not files:
            continue
        read = [read_csv(f) for f in files]
        rows, cols = read[0][0], read[0][1]
        maps = np.stack([m for r, c, m in read if (r, c) == (rows, cols)])
        mean, spread = maps.mean(0), (maps.std(0, ddof=1) if len(maps) > 1 else np.zeros_like(maps[0]))
        stem = "transfer_map_mean" + (f"_{n}" if n else "")
        write_csv(out / f"{stem}.csv", rows, cols, mean)
        write_csv(out / f"{stem}_spread.csv", rows, cols, spread)
        draw_map(out / f"{stem}.png", rows, cols, mean, f"{model} {config}: mean of {len(maps)} seed(s)", spread)
        md += ["", f"## Category transfer map: {model} `{config}` (mean of {len(maps)} seeds)", "",
               f"![transfer map]({stem}.png)", "", f"`{stem}.csv` (mean), `{stem}_spread.csv` (std over seeds)."]
    return md
