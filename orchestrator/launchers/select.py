"""Which launcher runs a launch here: what `launcher=auto` means, and the launchers the site
or the placement choose (allocation, here). Pure: the facts are passed in."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from orchestrator.launchers.allocation import KIND as ALLOCATION
from orchestrator.launchers.here import KIND as HERE
from orchestrator.launchers.local import KIND as LOCAL
from orchestrator.launchers.submitit import KIND as SUBMITIT

AUTO = "auto"  # launcher.kind: submitit where Slurm is reachable, else local


@dataclass(frozen=True)
class Site:
    """What the submitting machine offers."""

    has_sbatch: bool
    allocation_job_id: str  # SLURM_JOB_ID when running inside salloc/sbatch, else ""

    @classmethod
    def detect(cls) -> Site:
        """Look at PATH and the environment (the only side effect of launcher selection)."""
        return cls(
            has_sbatch=shutil.which("sbatch") is not None,
            allocation_job_id=os.environ.get("SLURM_JOB_ID", ""),
        )


def resolve_launcher(kind: str, site: Site) -> str:
    """`auto` -> submitit when Slurm is reachable (sbatch on PATH or inside an allocation), else
    local. Explicit kinds are returned unchanged."""
    if kind != AUTO:
        return kind
    return SUBMITIT if site.has_sbatch or site.allocation_job_id else LOCAL


def placed_launcher(kind: str, site: Site, *, frontend_here: bool) -> str:
    """The launcher that runs a launch of the resolved `kind`: `here` for a frontend on this
    host, `allocation` inside salloc/sbatch (but for local), else `kind`."""
    if frontend_here:
        return HERE
    if site.allocation_job_id and kind != LOCAL:
        return ALLOCATION
    return kind
