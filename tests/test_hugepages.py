"""The commands' one re-execution with glibc's huge-page tunable (jmf/hugepages.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jmf import hugepages

SHOW = "from jmf import hugepages; hugepages.ensure(); import os; print(os.environ.get('GLIBC_TUNABLES', ''))"


def _run(**env) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "_JMF_HUGEPAGES_SET", hugepages.ENV)}
    out = subprocess.run([sys.executable, "-c", SHOW], env={**base, **env}, capture_output=True, text=True,
                         check=True, timeout=120)
    return out.stdout.strip()


def _madvise() -> bool:
    try:
        return "[madvise]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


def test_the_process_runs_again_with_the_tunable_where_the_kernel_takes_advice():
    got = _run()
    assert got == (hugepages.TUNABLE if sys.platform.startswith("linux") and _madvise() else "")


def test_switched_off_or_already_set_it_leaves_the_environment_alone():
    assert _run(**{hugepages.ENV: "0"}) == ""
    assert _run(GLIBC_TUNABLES="glibc.malloc.hugetlb=0") == "glibc.malloc.hugetlb=0"


def test_other_tunables_are_kept():
    got = _run(GLIBC_TUNABLES="glibc.malloc.arena_max=2")
    assert got.startswith("glibc.malloc.arena_max=2")
    assert got.endswith(hugepages.TUNABLE) == (sys.platform.startswith("linux") and _madvise())


def test_never_after_jax_is_loaded():
    import jax  # noqa: F401 -- loaded in this process, as under pytest

    assert not hugepages.wanted({})


def test_only_the_command_itself_runs_again():
    """``python -m jmf`` re-executes; a program that imports ``jmf.__main__`` (pytest, a notebook) never does."""
    code = ("import os, sys; sys.argv = ['host-program']; import jmf.__main__; "
            "print(os.environ.get('GLIBC_TUNABLES', ''))")
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "_JMF_HUGEPAGES_SET", hugepages.ENV)}
    out = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, check=True,
                         timeout=120)
    assert out.stdout.strip().splitlines()[-1:] in ([""], [])
    shown = subprocess.run([sys.executable, "-m", "jmf", "--help"], env=base, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0
