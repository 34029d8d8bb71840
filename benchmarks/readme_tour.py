"""The README's commands, run in order in a fresh folder as a new user would, each timed (goal: < 5 minutes).

    python benchmarks/readme_tour.py                  # the first run and the five-minute tour (~10-15 min here)
    python benchmarks/readme_tour.py --clone          # from a fresh clone of HEAD (same venv, the clone's jmf), cold caches

The commands are read from README.md itself: the first run (``jmf-train`` of "Set up and run") and every
``bash`` line and ``python`` block of "A five-minute tour" (a ``bash`` command with ``\\`` continuations is
one command).  Set-up and ``pytest`` are not timed here.  Each runs in one folder, in README order (later
commands use what earlier ones wrote), with the venv's ``bin`` first on ``PATH``, one CPU device, a fresh
JAX compilation cache (``JAX_COMPILATION_CACHE_DIR`` in the folder: the first command of a kind compiles,
as on a new machine) and ``JMF_DATA_DIR`` as set.  Writes ``benchmarks/results/readme_tour.{md,csv,json}``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, data_dir, markdown_table, write_results

LIMIT_S = 300
BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)


def tour_commands(readme: str) -> list[tuple[str, str]]:
    """``(language, command)`` of the first run and the tour, in order."""
    first = re.search(r"^(jmf-train)\s+#", readme, re.M)
    if first is None:
        raise ValueError("README.md: no first-run `jmf-train` line in 'Set up and run'")
    start = readme.index("## A five-minute tour")
    end = readme.index("\n## ", start + 1)
    out = [("bash", "jmf-train")]
    for lang, body in BLOCK.findall(readme[start:end]):
        if lang == "python":
            out.append(("python", body))
        elif lang == "bash":
            joined = re.sub(r"\\\n\s*", " ", body)
            out += [("bash", line.split("  #")[0].strip()) for line in joined.splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clone", action="store_true", help="run in a fresh `git clone` of HEAD")
    parser.add_argument("--keep", action="store_true", help="keep the folder the tour ran in")
    args = parser.parse_args()
    data_dir()
    work = Path(tempfile.mkdtemp(prefix="jmf-tour-"))
    cwd = work
    if args.clone:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(work / "jmf")], check=True)
        cwd = work / "jmf"
    readme = (cwd / "README.md" if args.clone else ROOT / "README.md").read_text()
    env = {**os.environ, "XLA_FLAGS": "", "JAX_COMPILATION_CACHE_DIR": str(work / "xla-cache"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("JMF_COMPILE_CACHE", None)
    if args.clone:      # the clone's own package, configs and experiments, not this checkout's editable install
        env["PYTHONPATH"] = str(cwd)
    rows = []
    for lang, command in tour_commands(readme):
        cmd = ["bash", "-e", "-o", "pipefail", "-c", command] if lang == "bash" else [sys.executable, "-c", command]
        start = time.perf_counter()
        try:
            res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=2 * LIMIT_S)
            status = "ok" if res.returncode == 0 else f"exit {res.returncode}"
            tail = (res.stdout + res.stderr).strip().splitlines()[-1:] if res.returncode else []
        except subprocess.TimeoutExpired:
            status, tail = f"killed at {2 * LIMIT_S} s", []
        seconds = time.perf_counter() - start
        shown = command if lang == "bash" else "python: " + command.strip().splitlines()[1][:60] + " ..."
        rows.append({"command": f"`{shown}`", "seconds": f"{seconds:.0f}",
                     "under 5 min": "yes" if status == "ok" and seconds < LIMIT_S else "NO", "status": status})
        print(f"{seconds:7.1f} s  {status:8s} {shown}" + (f"\n         {tail[0][:300]}" if tail else ""), flush=True)
    text = markdown_table(rows, ["command", "seconds", "under 5 min", "status"])
    text += (f"\n\nEach command in one folder, in README order, one CPU device, a fresh JAX compilation cache "
             f"({'a fresh clone of HEAD' if args.clone else 'this checkout'}; {os.cpu_count()} CPUs).")
    write_results("readme_tour", text, rows)
    if not args.keep:
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
