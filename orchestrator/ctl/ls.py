"""`ctl ls [DIR]`: one line per run directory under DIR (default outputs/), its phase reconciled
with Slurm (one batched squeue/sacct for all runs) and with the local driver process (`lost`).
Also the reconciled phase of one run for `ctl watch` and `ctl report`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.launchers import facts_of
from orchestrator.observe.reconcile import RunView, driver_alive, reconcile
from orchestrator.rundir import LaunchRecord, Phase, RunDir, RunState
from orchestrator.slurm.client import SlurmClient

MAX_DEPTH = 3  # outputs/<run>, outputs/sweeps/<sweep>/<run>


@dataclass(frozen=True)
class Run:
    """A run directory with its launch.json, state.json and reconciled view."""

    path: Path
    launch: LaunchRecord  # launcher "" when launch.json is missing or unreadable
    state: RunState
    view: RunView


def read_launch_or_empty(run_dir: Path) -> LaunchRecord:
    """launch.json of a run (an empty record when missing or unreadable)."""
    return RunDir(run_dir).launch_or_none() or LaunchRecord(launcher="")


def find_runs(root: Path, depth: int = MAX_DEPTH) -> list[Path]:
    """Run directories (those with a launch.json) under `root`, oldest first by name."""
    if RunDir(root).is_run():
        return [root]
    if depth == 0 or not root.is_dir():
        return []
    found: list[Path] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        found += find_runs(child, depth - 1)
    return found


def load_runs(paths: Sequence[Path], client: SlurmClient | None) -> list[Run]:
    """Every run reconciled; their Slurm jobs looked up in one batched call."""
    raw = [(p, read_launch_or_empty(p), RunDir(p).state()) for p in paths]
    ids = [s.job_id for _, launch, s in raw if facts_of(launch.launcher).slurm_job]
    jobs = client.states([i for i in ids if i]) if client and any(ids) else {}
    runs = []
    for path, launch, state in raw:
        job_id = state.job_id
        launcher = facts_of(launch.launcher)
        job = jobs.get(job_id) if launcher.slurm_job and job_id else None
        alive = driver_alive(state) if launcher.driver_on_this_host else None
        runs.append(Run(path, launch, state, reconcile(state, job, alive)))
    return runs


def age(seconds: float) -> str:
    """`42s`, `17m`, `5h`, `3d`."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(max(seconds, 0))}s"


def _gpus(run: Run) -> str:
    plan = RunDir(run.path).plan_data_or_none()
    if plan is None:
        return "-/-"
    gpus = sum(len(p.get("gpus", [])) for p in plan.get("processes", []))
    return f"{plan.get('num_nodes', '?')}/{gpus}"


def ls_lines(root: Path, client: SlurmClient | None, now: float | None = None) -> list[str]:
    """The `ctl ls` table: NAME PHASE JOB NODES/GPUS AGE URL, one line per run."""
    now = time.time() if now is None else now
    runs = load_runs(find_runs(root), client)
    if not runs:
        return [f"no runs under {root}"]
    names = [str(r.path.relative_to(root)) if r.path != root else r.path.name for r in runs]
    width = min(max(len(n) for n in names), 60)  # run names are <UTC time>-<name>: ~35 columns
    lines = [f"{'RUN':<{width}}  {'PHASE':<9} {'JOB':<8} {'NODES/GPUS':<10} {'AGE':>4}  URL"]
    for run, name in zip(runs, names, strict=True):
        created = run.launch.created or now
        url = run.state.frontend_url if run.view.phase == Phase.READY else ""
        lines.append(
            f"{name[-width:]:<{width}}  {run.view.phase:<9} {run.state.job_id or '-':<8} "
            f"{_gpus(run):<10} {age(now - created):>4}  {url}".rstrip()
        )
    return lines
