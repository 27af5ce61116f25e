"""A run's attached jobs (RUN_DIR/attached.json, written by `ctl scale`): reading them for
`ctl status` and `ctl stop` needs none of the planning that scaling does (orchestrator.elastic.scale_up)."""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.core.errors import OrchestratorError
from orchestrator.plan.model import Plan
from orchestrator.rundir import RunDir, write_json_atomic
from orchestrator.slurm.client import SlurmClient


def read_attached(run_dir: Path) -> list[dict[str, Any]]:
    """The attached jobs of a run (RUN_DIR/attached.json; empty when none)."""
    try:
        data = json.loads(RunDir(run_dir).attached_file.read_text())
    except FileNotFoundError:
        return []
    return list(data) if isinstance(data, list) else []


def live_attached(run_dir: Path) -> list[dict[str, Any]]:
    """The attached jobs still holding workers: not removed by a scale-down, not ended (a
    job that failed or was stopped by itself holds no workers; its names may be used again)."""
    return [e for e in read_attached(run_dir)
            if not e.get("removed_at") and not RunDir(e["run_dir"]).ended()]  # fmt: skip


def rollover_in_progress(run_dir: Path) -> str:
    """'job B replaces job A' while both hold workers (frontend.placement=here), else ''."""
    live = {e["job_id"]: e for e in live_attached(run_dir)}
    for entry in live.values():
        if entry.get("replaces") in live:
            return f"job {entry['job_id']} replaces job {entry['replaces']}"
    return ""


def update_attached(
    run_dir: Path, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Read, change and write attached.json under an exclusive lock: `ctl scale` and the run's
    driver (frontend.placement=here: it submits and replaces worker jobs) both write it."""
    path = RunDir(run_dir).attached_file
    with path.with_name(f".{path.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = change(read_attached(run_dir))
        write_json_atomic(path, entries)
    return entries


def mark_removed(run_dir: Path, job_id: str) -> None:
    """Record that a scale-down stopped attached job `job_id` (it stays listed)."""

    def change(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**e, "removed_at": time.time()} if e["job_id"] == job_id else e for e in entries]

    update_attached(run_dir, change)


def load_bound(run_dir: Path) -> Plan:
    """plan.bound.json of a started run (real addresses of its frontend and discovery)."""
    return RunDir(run_dir).bound_plan()


def attached_lines(run_dir: Path, client: SlurmClient | None = None) -> list[str]:
    """`ctl status` lines for the attached jobs: one per job, one per worker (node, GPUs). With
    `client` (ONE squeue/sacct call), a job that ended without a scale-down (scancel, node
    lost) says so with its Slurm state."""
    lines = []
    entries = read_attached(run_dir)
    live = [e["job_id"] for e in entries if not e.get("removed_at")]
    slurm = client.states(live) if client and live else {}
    for entry in entries:
        adir = Path(entry["run_dir"])
        state = RunDir(adir).state()
        phase: str = state.phase
        job = slurm.get(entry["job_id"])
        if entry.get("removed_at"):
            phase += f" ({_why_removed(entry, entries)})"
        elif job is not None and job.ended:
            phase = f"ended ({job.state}; its driver: {phase or 'nothing'})"
        generation = f" generation {entry['generation']}" if entry.get("generation") else ""
        lines.append(f"attached: job {entry['job_id']}{generation} {phase}  "
                     f"{', '.join(entry['workers'])}  ({adir})")  # fmt: skip
        if entry.get("removed_at") and entry.get("generation"):
            continue  # a rolled-over job: one line (days of serving leave many)
        gpus = bound_gpus(adir)
        for name, proc in state.processes.items():
            lines.append(f"    {name:<16} {proc.get('role', ''):<8} {proc.get('host', '?')}  "
                         f"gpus {gpus.get(name, '?')}  {proc.get('state', '')}")  # fmt: skip
    return lines


def _why_removed(entry: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]) -> str:
    """Why a listed job holds no workers: a scale-down, or (placement=here) a drain or a loss."""
    if not entry.get("generation"):
        return "removed by scale-down"
    successor = next((e["job_id"] for e in entries if e.get("replaces") == entry["job_id"]), "")
    how = "drained" if entry.get("drain_at") else f"lost: {entry.get('ended', '?')}"
    return how + (f", replaced by job {successor}" if successor else "")


def bound_gpus(adir: Path) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES per process of a started attached job ({} before it started)."""
    try:
        bound = load_bound(adir)
    except OrchestratorError:
        return {}
    return {p.name: p.env.get("CUDA_VISIBLE_DEVICES", "") for p in bound.processes}
