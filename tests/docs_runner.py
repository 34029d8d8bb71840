"""Run a documentation page's code blocks in order, in a folder (tests/test_docs.py, tests/test_extensions.py).

* a block whose first line is ``# file: <path>`` is written to that path (Python, YAML);
* other ``bash`` blocks run in ``bash -e -o pipefail``;
* other ``python`` blocks run with this interpreter;
* ``text`` and other blocks are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in BLOCK.findall(page.read_text())]


def run_page(page: Path, workdir: Path, timeout: int = 900) -> list[str]:
    """Run ``page``'s blocks in ``workdir``; returns each run block's output (raises on a failing block)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XLA_FLAGS": "", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for lang, body in blocks(page):
        first = body.splitlines()[0] if body.strip() else ""
        if first.startswith("# file: "):
            target = workdir / first.removeprefix("# file: ").strip()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("\n".join(body.splitlines()[1:]) + "\n")
            continue
        if lang == "bash":
            cmd = ["bash", "-e", "-o", "pipefail", "-c", body]
        elif lang == "python":
            cmd = [sys.executable, "-c", body]
        else:
            continue
        res = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise AssertionError(f"{page.name}: a {lang} block failed ({res.returncode}):\n{body}\n--- stdout\n"
                                 f"{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}")
        outputs.append(res.stdout + res.stderr)
    return outputs
