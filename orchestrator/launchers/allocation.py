"""The allocation launcher: a launch inside salloc/sbatch (SLURM_JOB_ID set) runs the driver in
the foreground of the allocation it is given, whatever launcher.kind says (but local). Chosen
by the site (orchestrator.launchers.select), never named in the config."""

from __future__ import annotations

from orchestrator.launchers.local import DriverLauncher

KIND = "allocation"

LAUNCHER = DriverLauncher(kind=KIND, selectable=False, in_allocation=True)
