"""A sweep job's folder name (``hydra.sweep.subdir: ${jmf_job_subdir:${hydra.job.override_dirname}}``)."""

from __future__ import annotations

import hashlib

MAX_NAME_BYTES = 200   # file systems refuse names over 255 bytes


def job_subdir(override_dirname: str) -> str:
    """A sweep job's folder (``hydra.sweep.subdir``): its overrides, Hydra's ``override_dirname``, with
    every path part longer than ``MAX_NAME_BYTES`` cut and ended by a hash of the whole part, so a search
    over many keys (``model.weights.dl=0.437...,model.table_lr=...``) still gets a folder, one per
    distinct set of overrides."""
    parts = []
    for part in override_dirname.split("/"):
        if len(part.encode()) > MAX_NAME_BYTES:
            digest = hashlib.sha1(part.encode()).hexdigest()[:12]
            part = part.encode()[: MAX_NAME_BYTES - 14].decode(errors="ignore") + "~" + digest
        parts.append(part)
    return "/".join(parts)
