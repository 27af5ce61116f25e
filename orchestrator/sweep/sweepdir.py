"""The sweep directory: manifest.json (points -> run directories -> job ids), each point's status
and results, and the `ctl status` / `ctl collect` / `ctl stop` views over them.

A point's latest attempt decides its status: `valid` (results/summary.json says so; a re-run skips
it), `active` (its Slurm job is queued or running; skipped too), `failed` (anything else, e.g. an
invalid benchmark or a job that ended before its driver finished: a re-run submits it again), or
`new` (never submitted).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.core.effects import Clock, CommandRunner, SubprocessRunner, SystemClock
from orchestrator.core.errors import OrchestratorError
from orchestrator.rundir import ACTIVE, FINAL, Phase, RunDir, read_state
from orchestrator.runtime.state import StateFile, now_iso
from orchestrator.slurm.client import JobState, SlurmClient
from orchestrator.slurm.states import category_of

MANIFEST = "manifest.json"


def load_manifest(sweep_dir: Path) -> dict[str, Any]:
    """manifest.json of a sweep ({"points": []} for a new one)."""
    try:
        data = json.loads((sweep_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return {"version": 1, "created_at": now_iso(), "invocations": [], "points": []}
    except ValueError as exc:
        raise OrchestratorError(f"{sweep_dir / MANIFEST} is not valid JSON: {exc}") from exc
    assert isinstance(data, dict)
    return data


def run_dirs(sweep_dir: Path, entry: dict[str, Any]) -> list[Path]:
    """The run directories of a manifest entry, oldest first."""
    return [sweep_dir / r["run_dir"] for r in entry.get("runs", [])]


def read_summary(run_dir: Path) -> dict[str, Any]:
    """results/summary.json of a run ({} when the benchmark has not finished)."""
    try:
        data = json.loads((RunDir(run_dir).results_dir / "summary.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _latest(sweep_dir: Path, entry: dict[str, Any]) -> tuple[Path, dict[str, Any], str] | None:
    """(run dir, state, job id) of a point's latest attempt (None before the first)."""
    runs = entry.get("runs", [])
    if not runs:
        return None
    run_dir = sweep_dir / runs[-1]["run_dir"]
    state = read_state(run_dir)
    return run_dir, state, str(state.get("job_id") or runs[-1].get("job_id", ""))


def job_states(
    sweep_dir: Path, entries: Sequence[dict[str, Any]], client: SlurmClient
) -> dict[str, JobState]:
    """The Slurm state of every point's latest job that may still run: ONE squeue and at most
    ONE sacct call for the whole sweep (slurmctld is shared; N points must not cost N calls)."""
    ids = []
    for entry in entries:
        latest = _latest(sweep_dir, entry)
        if latest and latest[2] and latest[1].get("phase", "") in ACTIVE:
            ids.append(latest[2])
    return client.states(ids)


def point_status(
    sweep_dir: Path, entry: dict[str, Any], jobs: Mapping[str, JobState]
) -> dict[str, Any]:
    """{status, phase, job_id, run_dir, reason} of the latest attempt, given the Slurm states
    from `job_states`. status: new | valid | active (queued or running) | failed (resubmitted
    on re-run)."""
    latest = _latest(sweep_dir, entry)
    if latest is None:
        return {"status": "new", "phase": "", "job_id": "", "run_dir": None, "reason": ""}
    run_dir, state, job_id = latest
    summary = read_summary(run_dir)
    out = {
        "phase": state.get("phase", ""),
        "job_id": job_id,
        "run_dir": run_dir,
        "reason": summary.get("reason") or state.get("error", ""),
    }
    if summary.get("valid"):
        return {**out, "status": "valid"}
    if out["phase"] in ACTIVE and job_id:
        job = jobs.get(job_id) or JobState(job_id=job_id)
        if job.live:
            return {**out, "status": "active", "slurm": job.state}
        out["reason"] = (
            out["reason"]
            or f"job {job_id} ended ({job.state or 'unknown'}) in phase {out['phase'] or '-'}"
        )
    return {**out, "status": "failed"}


def point_statuses(
    sweep_dir: Path, entries: Sequence[dict[str, Any]], client: SlurmClient
) -> list[dict[str, Any]]:
    """`point_status` of every entry, with one batched Slurm query."""
    jobs = job_states(sweep_dir, entries, client)
    return [point_status(sweep_dir, entry, jobs) for entry in entries]


# --- ctl views ---------------------------------------------------------------------------------
def _manifest_or_error(sweep_dir: Path) -> dict[str, Any]:
    if not (sweep_dir / MANIFEST).exists():
        raise OrchestratorError(f"{sweep_dir} is not a sweep directory (no {MANIFEST})")
    return load_manifest(sweep_dir)


def point_rows(sweep_dir: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Valid rows of a point: from its latest attempt with a valid benchmark, else from its
    latest attempt that wrote rows (load points measured before a later one failed stay valid)."""
    from orchestrator.sweep.collect import read_rows

    dirs = list(reversed(run_dirs(sweep_dir, entry)))
    chosen = next((d for d in dirs if read_summary(d).get("valid")), None)
    chosen = chosen or next((d for d in dirs if read_rows(d)), None)
    if chosen is None:
        return []
    # The point's name tells points apart (the deployment name does not show TP, EP, ...).
    extra = {
        "sweep_point": entry["label"],
        "baseline": entry.get("baseline", False),
        "name": entry["name"],
    }
    return [
        {**row, **extra, "deployment": row.get("name", "")}
        for row in read_rows(chosen)
        if row.get("valid")
    ]


def collect(sweep_dir: Path) -> str:
    """results.csv, results.jsonl, pareto.png and the decision table over the valid rows of
    every point, and the points without a valid result with their reasons."""
    from orchestrator.sweep.collect import plot_pareto, write_decision, write_tables

    manifest = _manifest_or_error(sweep_dir)
    rows = [row for entry in manifest["points"] for row in point_rows(sweep_dir, entry)]
    with_rows = sum(1 for entry in manifest["points"] if point_rows(sweep_dir, entry))
    failed = [f for entry in manifest["points"] if (f := failure(sweep_dir, entry))]
    table, jsonl = write_tables(sweep_dir, rows)
    png = plot_pareto(
        rows, sweep_dir / "pareto.png", title=f"{sweep_dir.name}: {len(rows)} valid load points"
    )
    md, decision = write_decision(sweep_dir, rows, failed)
    lines = [
        f"{len(rows)} valid row(s) from {with_rows}/{len(manifest['points'])} point(s)",
        str(table),
        str(jsonl),
        str(png),
        str(md),
        str(decision),
    ]
    if failed:
        lines += [f"{len(failed)} point(s) without a valid result:"] + [f"  {f}" for f in failed]
    return "\n".join(lines)


def failure(sweep_dir: Path, entry: dict[str, Any]) -> str:
    """'name (swept values): why' for a point whose latest attempt ended without a valid
    result, or that has not produced one yet; '' for a valid point. Read from the run
    directory only (collect needs no Slurm)."""
    latest = _latest(sweep_dir, entry)
    what = f"{entry['name']} ({entry['label']})"
    if latest is None:
        return f"{what}: never submitted"
    run_dir, state, _ = latest
    summary = read_summary(run_dir)
    if summary.get("valid"):
        return ""
    phase = state.get("phase", "")
    if phase not in FINAL:
        return f"{what}: no result yet (phase {phase or 'submitted'}; see ctl status)"
    reason = summary.get("reason") or state.get("error") or state.get("reason") or "no result"
    return f"{what}: {str(reason).splitlines()[0][:200]}"


def status(sweep_dir: Path, runner: CommandRunner | None = None) -> str:
    """One line per point: status, phase, job id, nodes/GPUs, best result or the failure."""
    client = SlurmClient(runner or SubprocessRunner())
    manifest = _manifest_or_error(sweep_dir)
    lines = [f"sweep: {sweep_dir}  ({len(manifest['points'])} point(s))"]
    statuses = point_statuses(sweep_dir, manifest["points"], client)
    for entry, st in zip(manifest["points"], statuses, strict=True):
        result = _result(point_rows(sweep_dir, entry))
        if st["status"] == "failed" and st["reason"]:
            result += f"; failed: {st['reason'].splitlines()[0][:160]}"
        bench = read_state(st["run_dir"]).get("benchmark", {}) if st["run_dir"] else {}
        phase = st["phase"] or "-"
        if st.get("slurm") == "PENDING":  # queued, or waiting for a point (sweep.max_in_flight)
            phase = "PENDING"
        if phase == Phase.READY and bench:
            phase += f" (bench {bench.get('done', 0)}/{bench.get('of', '?')})"
        lines.append(
            f"  {entry['name']:<32} {st['status']:<7} {phase:<18} job {st['job_id'] or '-':<7} "
            f"{entry['nodes']}n/{entry['gpus']:>3} GPUs  {result}"
        )
    return "\n".join(lines)


def _result(rows: list[dict[str, Any]]) -> str:
    """A point's status result: its best load row, or its accuracy (each task's first metric)."""
    load = [r for r in rows if "task" not in r]
    best = max(load, key=lambda r: r.get("output_tok_s_per_gpu") or 0.0, default=None)
    if best is not None:
        user = best.get("tok_s_per_user")
        return (
            f"best {best['output_tok_s_per_gpu'] or 0.0:.1f} tok/s/GPU at "
            f"{f'{user:.1f}' if user else 'n/a'} tok/s/user (c={best['concurrency']})"
        )
    from orchestrator.sweep.collect import accuracy_by_topology

    return "; ".join(accuracy_by_topology(rows).values()) or "-"


# --- stop --------------------------------------------------------------------------------------
def stop(
    sweep_dir: Path,
    runner: CommandRunner | None = None,
    *,
    timeout_s: float = 120.0,
    clock: Clock | None = None,
) -> str:
    """Cancel every queued point and stop every running one; each run directory records it.

    Queued jobs go first, in one scancel: a job waiting (sweep.max_in_flight) for a running one
    would otherwise start the moment that one stops. No driver runs for them, so their run is
    recorded done here ("cancelled before start"). A running driver is asked to stop (stop file
    and SIGTERM to the batch shell, as `ctl stop RUN_DIR`) and records its own end; this waits
    for all of them together."""
    client = SlurmClient(runner or SubprocessRunner())
    clock = clock or SystemClock()
    manifest = _manifest_or_error(sweep_dir)
    statuses = point_statuses(sweep_dir, manifest["points"], client)  # one batched query
    active = [s for s in statuses if s["status"] == "active"]
    queued = [s for s in active if category_of(s.get("slurm", "")) == "queued"]
    running = [s for s in active if s not in queued]
    client.cancel_jobs([s["job_id"] for s in queued])
    for st in queued:
        _record_cancelled(st)
    for st in running:
        RunDir(st["run_dir"]).request_stop()
        client.cancel(st["job_id"], signal="TERM", batch=True)
    left = _wait_final(running, timeout_s, clock, client)
    lines = [
        f"cancelled {len(queued)} queued point(s), stopped {len(running) - len(left)} "
        f"running point(s) of {len(statuses)}"
    ]
    lines += [f"  still stopping after {timeout_s:g} s: {d} (see its driver.log)" for d in left]
    return "\n".join(lines)


def _record_cancelled(status: dict[str, Any]) -> None:
    """A cancelled queued job never ran its driver: record the end in its run directory
    (unless its driver started meanwhile: it got the cancel's SIGTERM and records it)."""
    state = StateFile(status["run_dir"])
    if state.view().phase == status["phase"]:
        state.phase(Phase.DONE, reason="cancelled before start (ctl stop of the sweep)")


def _wait_final(
    running: Sequence[dict[str, Any]], timeout_s: float, clock: Clock, client: SlurmClient
) -> list[Path]:
    """Wait until every run's state.json says done or failed, or its job ended (a driver
    killed before it could write); the run directories that did neither in time."""
    deadline = clock.now() + timeout_s
    left = {str(s["job_id"]): s["run_dir"] for s in running}
    while left and clock.now() < deadline:
        left = {j: d for j, d in left.items() if not RunDir(d).ended()}
        if left:
            jobs = client.states(list(left))  # one batched query per round
            left = {j: d for j, d in left.items() if jobs[j].live}
        if left:
            clock.sleep(1.0)
    return list(left.values())
