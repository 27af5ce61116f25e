"""What `ctl watch` shows, as data and as text: gathered from the run directory only (state.json,
plan.bound.json, the process logs, results/metrics.jsonl), so it works wherever the run
directory is visible (a login node on the shared filesystem), without reaching the nodes.

`gather` reads; `lines` renders plain text (80 columns); `ctl watch` (orchestrator.ctl.watch)
shows the same lines in a rich live view or prints them when they change.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.ctl.ls import Run, age
from orchestrator.elastic.autoscale_view import autoscale_lines
from orchestrator.observe import prom
from orchestrator.rundir import Phase, RunDir, RunState
from orchestrator.runtime import logscan
from orchestrator.runtime.state import cold_start_lines

WIDTH = 80
METRICS_TAIL_BYTES = 256 * 1024
ERROR_TAIL_LINES = 6


@dataclass
class ProcessRow:
    """One line of the process table."""

    name: str
    role: str
    where: str  # host:node
    gpus: str
    state: str
    since: float | None  # when the watcher (or the driver) saw it enter `state`
    restarts: int
    progress: logscan.Progress | None


@dataclass
class Snapshot:
    """Everything one screen of `ctl watch` shows."""

    name: str
    phase: str
    why: str
    elapsed: float | None
    job: str
    url: str
    processes: list[ProcessRow] = field(default_factory=list)
    serving: dict[str, float | None] = field(default_factory=dict)
    metrics_age: float | None = None
    benchmark: str = ""
    cold_start: list[str] = field(default_factory=list)  # fetch / stage (runtime.state)
    autoscale: list[str] = field(default_factory=list)  # the planner's last decision
    degraded: list[str] = field(default_factory=list)
    error: list[str] = field(default_factory=list)


def _gpus(plan: dict[str, Any]) -> dict[str, str]:
    out = {}
    for proc in plan.get("processes", []):
        gpus = proc.get("gpus") or []
        out[proc["name"]] = f"{gpus[0]}-{gpus[-1]}" if len(gpus) > 1 else ",".join(map(str, gpus))
    return out


def _plan(run_dir: Path) -> dict[str, Any]:
    files = RunDir(run_dir)
    return files.plan_data_or_none(bound=True) or files.plan_data_or_none() or {}


def process_rows(
    run: Run,
    seen: dict[str, tuple[str, float]],
    now: float,
    progress: dict[str, logscan.Progress | None],
) -> list[ProcessRow]:
    """The process table; `seen` remembers when each process entered its state, `progress` the
    last readiness stage found in its log (both updated)."""
    gpus = _gpus(_plan(run.path))
    rows = []
    for name, entry in run.state.processes.items():
        state = str(entry.get("state", ""))
        if seen.get(name, ("", 0.0))[0] != state:
            # The driver records when a process became healthy; other changes are dated when
            # this watcher first sees them.
            healthy_at = entry.get("healthy_at") if state == "healthy" else None
            seen[name] = (state, float(healthy_at) if healthy_at else now)
        log = Path(entry.get("log") or RunDir(run.path).log(name))
        found = (
            logscan.progress(logscan.read_tail(log)) if entry.get("role") != "benchmark" else None
        )
        # Sticky: a busy log pushes its readiness lines out of the tail that is read.
        found = found or progress.get(name)
        progress[name] = found
        node = str(entry.get("node", "?"))
        where = f"{str(entry.get('host', '?'))[: 9 - len(node)]}:{node}"  # 10 columns at most
        rows.append(
            ProcessRow(
                name,
                str(entry.get("role", "")),
                where,
                gpus.get(name) or "-",
                state,
                seen[name][1],
                len(entry.get("restarts") or []),
                found,
            )
        )
    return rows


def serving_numbers(run_dir: Path) -> tuple[dict[str, float | None], float | None]:
    """Frontend request rate, output tokens/s and in-flight requests from the last two frontend
    scrapes in results/metrics.jsonl, and the time of the last one ({} when fewer than two)."""
    frontend = []
    for line in logscan.read_tail(RunDir(run_dir).metrics_file, METRICS_TAIL_BYTES).splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # the cut first line, or one being written
        if rec.get("role") == "frontend" and rec.get("ok"):
            frontend.append(rec)
    if all(len(recs) < 2 for recs in prom.per_target(frontend).values()):
        return {}, None
    return prom.summed_rates(frontend), float(frontend[-1]["t"])


def error_lines(state: RunState) -> list[str]:
    """The failure: its first line, the known markers named in it, the end of the log tail."""
    error = state.error
    if not error:
        return []
    lines = error.splitlines()
    markers = [ln for ln in lines if ln.startswith("  - ")]
    tail = [ln for ln in lines[1:] if ln not in markers and not ln.startswith("known failure")]
    return [lines[0], *markers, *tail[-ERROR_TAIL_LINES:]]


def _benchmark(state: RunState) -> str:
    b = state.benchmark
    if not b:
        return ""
    point = f" point {b['point']}" if b.get("point") else ""
    return (
        f"{b.get('tool')} {b.get('done', 0)}/{b.get('of', '?')} points ({b.get('status')}){point}"
    )


def gather(
    run: Run,
    seen: dict[str, tuple[str, float]],
    now: float | None = None,
    progress: dict[str, logscan.Progress | None] | None = None,
) -> Snapshot:
    """One screen's worth of a run (`seen`, `progress`: what earlier screens found)."""
    now = time.time() if now is None else now
    st = run.state
    started = st.reached(Phase.STARTING)
    snap = Snapshot(
        name=str(st.data.get("name") or run.path.name),
        phase=run.view.phase,
        why=run.view.why,
        elapsed=(now - started) if started else None,
        job=st.job_id or "-",
        url=st.frontend_url,
    )
    snap.processes = process_rows(run, seen, now, {} if progress is None else progress)
    if run.view.phase == Phase.READY:
        snap.serving, snap.metrics_age = serving_numbers(run.path)
    snap.benchmark = _benchmark(st)
    snap.cold_start = cold_start_lines(st.data)
    snap.autoscale = autoscale_lines(st.data)
    snap.degraded = list(st.degraded)
    snap.error = error_lines(st)
    return snap


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def header(snap: Snapshot, *, times: bool = True) -> str:
    """`gpt-oss-120b-p1d1  ready  2m  job 123  http://...`."""
    elapsed = f"  {age(snap.elapsed)}" if snap.elapsed is not None and times else ""
    return f"{snap.name}  {snap.phase}{elapsed}  job {snap.job}  {snap.url}"[:WIDTH]


TABLE = "{:<10} {:<8} {:<10} {:<5} {:<9} {:>4} {:>1} {}"


def process_lines(snap: Snapshot, now: float, *, times: bool = True) -> list[str]:
    """The process table, each line within 80 columns. Without `times` (plain output, one
    line per change) the FOR column is empty and progress is in 25 % steps."""
    out = [TABLE.format("PROCESS", "ROLE", "HOST:NODE", "GPUS", "STATE", "FOR", "R", "PROGRESS")]
    for p in snap.processes:
        since = age(now - p.since) if p.since is not None and times else ""
        progress = "" if p.progress is None else p.progress.text() if times else p.progress.coarse()
        line = TABLE.format(
            p.name[:10],
            p.role[:8],
            p.where[:10],
            p.gpus[:5],
            p.state[:9],
            since,
            p.restarts if p.restarts < 10 else "+",
            progress,
        )
        out.append(line[:WIDTH])
    return out


def lines(snap: Snapshot, now: float | None = None, *, times: bool = True) -> list[str]:
    """The whole screen as plain lines of at most 80 columns (`times`: see process_lines)."""
    now = time.time() if now is None else now
    out = [header(snap, times=times)]
    if snap.why:
        out.append(f"  {snap.why}"[:WIDTH])
    out += process_lines(snap, now, times=times)
    if snap.serving and times:
        s = snap.serving
        ago = f"{age(now - snap.metrics_age)} ago" if snap.metrics_age else ""
        out.append(
            f"serving: {_num(s.get('requests_per_s'), '.2f')} req/s  "
            f"{_num(s.get('output_tok_s'), '.1f')} output tok/s  "
            f"{_num(s.get('in_flight'), '.0f')} in flight  ({ago})"[:WIDTH]
        )
    out += [line[:WIDTH] for line in snap.cold_start]
    out += [line[:WIDTH] for line in snap.autoscale]
    if snap.benchmark:
        out.append(f"benchmark: {snap.benchmark}"[:WIDTH])
    if snap.degraded:
        out.append(f"degraded: {', '.join(snap.degraded)} restarting"[:WIDTH])
    out += [ln[:WIDTH] for ln in snap.error]
    return out


def sweep_lines(sweep_dir: Path, runs: dict[str, Run]) -> list[str]:
    """One line per sweep point: label, phase, job, readiness or benchmark progress."""
    from orchestrator.runtime.state import progress_line
    from orchestrator.sweep.sweepdir import load_manifest

    manifest = load_manifest(sweep_dir)
    out = [f"sweep {sweep_dir.name}: {len(manifest['points'])} point(s)"[:WIDTH]]
    for entry in manifest["points"]:
        dirs = [str(sweep_dir / r["run_dir"]) for r in entry.get("runs", [])]
        run = runs.get(dirs[-1]) if dirs else None
        if run is None:
            out.append(f"{entry['label'][:30]:<30} new"[:WIDTH])
            continue
        progress = progress_line(dataclasses.replace(run.state, phase=Phase.of(run.view.phase)))
        out.append(f"{entry['label'][:30]:<30} job {run.state.job_id or '-':<6} {progress}"[:WIDTH])
    return out
