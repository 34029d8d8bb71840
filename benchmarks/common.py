"""Shared plumbing of the benchmark scripts: data paths, timing, tables and result files.

Every script prints a markdown table and writes ``benchmarks/results/<name>.{md,csv,json}``;
the JSON also records the command line, the machine and the library versions, so a number
in a table can be traced to how it was produced.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def data_dir() -> Path:
    """``$JMF_DATA_DIR``, default ``../shared/data`` relative to the repository root."""
    path = Path(os.environ.get("JMF_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"JMF_DATA_DIR={path} does not exist: point it at the shared datasets")
    return path


def median_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """Rows of dicts -> a GitHub markdown table (floats to ``digits`` places)."""
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c, ""), digits) for c in columns) + " |")
    return "\n".join(lines)


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    import jax
    import numpy as np
    import scipy

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": _cpu_name(), "jax": jax.__version__, "jax_devices": [str(d) for d in jax.devices()],
            "numpy": np.__version__, "scipy": scipy.__version__}
    from importlib.metadata import PackageNotFoundError, version

    for package in ("jmf", "jaxlib", "flax", "optax", "orbax-checkpoint", "hydra-core", "transformers", "torch",
                    "implicit", "scikit-surprise"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_results(name: str, markdown: str, rows: Sequence[dict], extra: dict | None = None) -> None:
    """Print ``markdown`` and write ``results/<name>.md``, ``.csv`` (``rows``) and ``.json`` (all)."""
    print(markdown)
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/" + Path(sys.argv[0]).name + "".join(" " + a for a in sys.argv[1:])
    header = f"<!-- written by `{command}` on {time.strftime('%Y-%m-%d %H:%M')} -->\n\n"
    (RESULTS / f"{name}.md").write_text(header + markdown + "\n")
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(RESULTS / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    now = {"command": command, "commit": STARTED_AT, "written": time.strftime("%Y-%m-%d %H:%M")}
    payload = {"command": command, "machine": machine(), "commit": STARTED_AT, "rows": list(rows),
               "history": _history(RESULTS / f"{name}.json", rows, now), **(extra or {})}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _history(path: Path, rows: Sequence[dict], now: dict) -> list[dict]:
    """The commands that made the rows a results file holds, oldest first, ``now`` last.  A file whose rows carry
    their ``commit`` (``--resume``'d benchmarks keep rows of several sessions) keeps the earlier commands whose
    commit still made one of its rows; any other file was made by ``now`` alone."""
    commits = {r.get("commit") for r in rows if isinstance(r, dict)}
    if not path.exists() or not commits - {None}:
        return [now]
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return [now]
    earlier = old.get("history") or [{"command": old.get("command"), "commit": old.get("commit")}]
    kept = [h for h in earlier if h.get("commit") in commits and h.get("command") != now["command"]]
    return [*kept, now]


def _commit() -> str:
    """``<hash>`` of the code the benchmark ran (``+dirty`` with uncommitted changes to tracked files; the files the
    benchmarks write, ``benchmarks/results/`` and the docs, are outputs, not code: a benchmark run after another
    one in the same tree is still the clean commit's)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results", ":(exclude)docs"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{'+dirty' if dirty else ''}" if head else "unknown"


# the code the benchmark runs is the code at its start: later edits to the tree do not change a running process
STARTED_AT = _commit()


def _jsonable(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
