"""Which launcher `launcher=auto` means here. Pure: the facts are passed in."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    """What the submitting machine offers."""

    has_sbatch: bool
    allocation_job_id: str  # SLURM_JOB_ID when running inside salloc/sbatch, else ""

    @classmethod
    def detect(cls) -> Site:
        """Look at PATH and the environment (the only side effect of launcher selection)."""
        return cls(has_sbatch=shutil.which("sbatch") is not None,
                   allocation_job_id=os.environ.get("SLURM_JOB_ID", ""))  # fmt: skip


def resolve_launcher(kind: str, site: Site) -> str:
    """`auto` -> submitit when Slurm is reachable (sbatch on PATH or inside an allocation), else
    local. Explicit kinds are returned unchanged."""
    if kind != "auto":
        return kind
    return "submitit" if site.has_sbatch or site.allocation_job_id else "local"
