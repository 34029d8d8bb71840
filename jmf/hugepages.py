"""Huge pages for XLA's per-call buffers: the commands re-execute themselves once with glibc's
``glibc.malloc.hugetlb=1`` tunable set.

XLA:CPU allocates a compiled step's temporary buffers anew at every call (846 MB for DisenCDR's training
step), and glibc serves allocations that large with fresh ``mmap`` regions, so every step page-faults its
whole working set in 4 KiB pages: 207,000 faults and 0.46 s of system time per DisenCDR step on the
2-core machine.  With ``glibc.malloc.hugetlb=1`` glibc advises transparent huge pages for those regions
(2 MiB pages: ~700 faults per step); the DisenCDR step measured 10-15 % faster in alternating runs.
Tunables are read when the process starts, hence the one re-execution, done before JAX is imported.

It applies only where it can help: Linux with transparent huge pages in ``madvise`` mode (with
``always`` the kernel already uses them; with ``never`` nothing can).  ``JMF_HUGEPAGES=0`` switches it
off; a ``GLIBC_TUNABLES`` that already names the tunable is left as it is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "JMF_HUGEPAGES"
TUNABLE = "glibc.malloc.hugetlb=1"
_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def wanted(environ: dict | None = None) -> bool:
    """Whether :func:`ensure` would re-execute the process (see the module docstring)."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV, "1") == "0" or not sys.platform.startswith("linux") or "jax" in sys.modules:
        return False
    if "glibc.malloc.hugetlb" in environ.get("GLIBC_TUNABLES", "") or environ.get("_JMF_HUGEPAGES_SET"):
        return False
    try:
        return "[madvise]" in _THP.read_text()
    except OSError:
        return False


def ensure() -> None:
    """Re-execute this command with the tunable set, when :func:`wanted`; otherwise return at once."""
    if not wanted() or not getattr(sys, "orig_argv", None):
        return
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    env = {**os.environ, "GLIBC_TUNABLES": f"{tunables}:{TUNABLE}" if tunables else TUNABLE,
           "_JMF_HUGEPAGES_SET": "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return          # cannot re-execute (unusual interpreter setups): run on with 4 KiB pages
