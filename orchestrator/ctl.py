"""`python -m orchestrator.ctl status|logs|stop RUN_DIR`: look at and stop a run later;
`scale RUN_DIR decode.workers=N` attaches a job with more workers (orchestrator.scale).
`status SWEEP_DIR`, `collect SWEEP_DIR` and `stop SWEEP_DIR` work on a sweep directory
(orchestrator.sweep)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator import attached as attachments
from orchestrator import ctl_see as see
from orchestrator.effects import Clock, SubprocessRunner, SystemClock
from orchestrator.errors import OrchestratorError
from orchestrator.launchers import Facts, facts_of
from orchestrator.rundir import FINAL, Phase, RunDir, RunState
from orchestrator.rundir.jobs import WorkerJobs
from orchestrator.rundir.phase import QUEUED
from orchestrator.runtime.processes import log_tail
from orchestrator.runtime.reconcile import RunView, driver_alive, reconcile
from orchestrator.runtime.state import StateFile, progress_line
from orchestrator.slurm.client import SlurmClient
from orchestrator.slurm.states import category_of

TAIL_LINES = 20


def _client() -> SlurmClient:
    return SlurmClient(SubprocessRunner())


def run_view(run_dir: Path, client: SlurmClient | None = None) -> tuple[RunView, RunState]:
    """The run reconciled with its Slurm job and its driver process, and its state.json."""
    files = RunDir(run_dir)
    state, launcher = files.state(), facts_of(files.launch().launcher)
    job_id = state.job_id
    job = (client or _client()).state(job_id) if launcher.slurm_job and job_id else None
    alive = driver_alive(state) if launcher.driver_on_this_host else None
    return reconcile(state, job, alive), state


def status(run_dir: Path, client: SlurmClient | None = None) -> tuple[str, int]:
    """One block (phase, job, URL, per-process state) and the exit code: 1 when the run failed
    or is lost (its job or driver is gone while state.json says it runs)."""
    client = client or _client()
    view, state = run_view(run_dir, client)
    job = f"{state.job_id or '-'}" + (f" ({view.job_state})" if view.job_state else "")
    progress = progress_line(dataclasses.replace(state, phase=Phase.of(view.phase)))
    lines = [f"run: {run_dir}", f"launcher: {RunDir(run_dir).launch().launcher}  job: {job}  "
             f"{progress}"]  # fmt: skip
    if view.phase != view.recorded:
        lines.append(f"{view.phase}: {view.why} (state.json says {view.recorded or 'nothing yet'})")
    if state.data.get("attempt", 1) > 1:
        lines.append(f"attempt: {state.data['attempt']} (Slurm requeued the job)")
    if state.frontend_url:
        lines.append(f"frontend: {state.frontend_url}")
    for key, value in (("reason", state.reason), ("error", state.error)):
        if value:
            lines.append(f"{key}: {value}")
    if state.degraded:
        lines.append(f"degraded: {', '.join(state.degraded)} restarting")
    if state.benchmark:
        b = state.benchmark
        lines.append(f"benchmark: {b.get('tool')} {b.get('status')} {b.get('done')}/{b.get('of')} "
                     f"point(s) (results/points.jsonl)")  # fmt: skip
    lines += [_process_line(name, entry) for name, entry in state.processes.items()]
    lines += attachments.attached_lines(run_dir, client)
    if view.phase == Phase.LOST:
        lines += _lost_tail(run_dir, state.job_id)
    return "\n".join(lines), 0 if view.ok else 1


def _process_line(name: str, entry: Mapping[str, Any]) -> str:
    code = f" exit={entry['exit_code']}" if entry.get("exit_code") is not None else ""
    restarts = f" restarts={len(entry['restarts'])}" if entry.get("restarts") else ""
    return (f"  {name:<18} {entry.get('role', ''):<9} {entry.get('host', '')}:"
            f"node{entry.get('node', '?')}  {entry.get('state', '')}{code}{restarts}")  # fmt: skip


def _lost_tail(run_dir: Path, job_id: str) -> list[str]:
    """The last lines of the first log that exists: the driver's, the batch job's, submitit's."""
    files = RunDir(run_dir)
    candidates = [files.driver_log, files.slurm_output(job_id)]
    candidates += sorted(files.submitit_dir.glob(f"{job_id}_*_log.*"))
    for path in candidates:
        if path.exists():
            return [f"last {TAIL_LINES} lines of {path}:", log_tail(path, TAIL_LINES)]
    return ["(no driver log found)"]


def logs(run_dir: Path, name: str | None, lines: int) -> str:
    """Tail one process log, or list the logs."""
    log_dir = RunDir(run_dir).logs_dir
    if name is None:
        return "\n".join(sorted(p.stem for p in log_dir.glob("*.log")))
    path = RunDir(run_dir).log(name)
    if not path.exists():
        raise OrchestratorError(f"no log for {name!r} in {log_dir}")
    return log_tail(path, lines)


def stop(
    run_dir: Path, timeout_s: float = 120.0, client: SlurmClient | None = None,
    clock: Clock | None = None,
) -> str:  # fmt: skip
    """Stop the run in whatever phase it is: a job still queued is cancelled at once (and the run
    recorded done); a running driver is asked to stop gracefully and waited for."""
    launcher = facts_of(RunDir(run_dir).launch().launcher)  # also: is this a run directory?
    client, clock = client or _client(), clock or SystemClock()
    # Worker jobs first: Dynamo workers deregister from the run's etcd, which must outlive them.
    attached = [f"attached job {j.job_id}: {stop(Path(j.run_dir), timeout_s, client, clock)}"
                for j in WorkerJobs(run_dir).live()]  # fmt: skip
    said = stop_run(run_dir, launcher, timeout_s, client, clock)
    return "\n".join([*attached, said])


def stop_run(
    run_dir: Path, launcher: Facts, timeout_s: float, client: SlurmClient, clock: Clock
) -> str:
    """`stop` of the run itself (not its worker jobs)."""
    view, state = run_view(run_dir, client)
    if view.recorded in FINAL and view.phase != Phase.REQUEUED:
        return f"already {view.recorded}"
    job_id = state.job_id
    if view.phase == Phase.LOST:
        return f"nothing to stop: {view.why}"
    if launcher.slurm_job and job_id and category_of(view.job_state) == "queued":
        return _cancel_queued(run_dir, job_id, client, view.recorded)
    # The stop file works wherever the driver runs; a signal only makes it quicker.
    RunDir(run_dir).request_stop()
    if launcher.submits_job and job_id:
        # The driver is the batch shell (exec): --batch delivers SIGTERM to it alone, and it
        # stops the workers and infrastructure in order.
        client.cancel(job_id, signal="TERM", batch=True)
    elif state.driver_pid and state.driver_host == socket.gethostname():
        try:
            os.kill(state.driver_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = clock.now() + timeout_s
    while clock.now() < deadline:
        phase = RunDir(run_dir).state().phase
        if phase in FINAL:
            return f"stopped ({phase})"
        clock.sleep(0.2)
    raise OrchestratorError(
        f"the driver did not finish within {timeout_s:g} s; see {RunDir(run_dir).driver_log}"
    )


def _cancel_queued(run_dir: Path, job_id: str, client: SlurmClient, seen: str) -> str:
    """scancel a job that has not started (or waits to start again after a requeue): no driver
    runs to record anything, so the run is recorded done here. `seen`: the phase before."""
    client.cancel(job_id)
    state = StateFile(run_dir)
    if state.view().phase != seen:
        # It started between our look and scancel: its driver got SIGTERM and records the end.
        return f"cancelled job {job_id}; its driver had just started and is stopping"
    reason = "cancelled before start" if seen in QUEUED else "cancelled while requeued"
    state.phase(Phase.DONE, reason=reason)
    return f"{reason} (job {job_id})"


def scale(run_dir: Path, items: Sequence[str], client: SlurmClient | None = None) -> int:
    """Validate a scale request (exit 2 before anything is submitted), submit the attached job,
    wait for its workers to serve through the run's frontend."""
    # Scaling plans (OmegaConf, the engines): imported only for this command, not status/stop.
    from orchestrator import scale as scaling
    from orchestrator import scale_down
    from orchestrator.launchers.follow import follow

    request = scaling.parse_request(items)
    view, _ = run_view(run_dir, client)
    scaling.check_ready(run_dir, view.phase)
    removals = scale_down.plan_removal(run_dir, request.counts)
    if removals:  # single workers, newest first; their drivers deregister and stop them
        print("\n".join(scale_down.remove(run_dir, removals)), flush=True)
        return 0
    job = scaling.scale_up(run_dir, request)
    print(job.job_id, flush=True)
    print(job.run_dir, flush=True)
    return follow(Path(job.run_dir), job.job_id, until_done=False)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator.ctl")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd in ("status", "logs", "stop", "collect"):
        p = sub.add_parser(cmd)
        p.add_argument("run_dir", type=Path, metavar="SWEEP_DIR" if cmd == "collect" else "RUN_DIR")
        if cmd == "logs":
            p.add_argument("name", nargs="?")
            p.add_argument("-n", "--lines", type=int, default=50)
    p = sub.add_parser("scale", help="attach a job with more workers to a running run")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("counts", nargs="*", metavar="GROUP.workers=N")
    see.register(sub)
    args = parser.parse_args(argv)
    try:
        if args.cmd in see.COMMANDS:
            return see.run(args)
        if args.cmd == "scale":
            return scale(args.run_dir, args.counts)
        if args.cmd in ("status", "collect", "stop") and (args.run_dir / "manifest.json").exists():
            from orchestrator.bench import sweepdir

            views = {"status": sweepdir.status, "collect": sweepdir.collect, "stop": sweepdir.stop}
            print(views[args.cmd](args.run_dir))
        elif args.cmd == "collect":
            raise OrchestratorError(f"{args.run_dir} is not a sweep directory (no manifest.json)")
        elif args.cmd == "status":
            text, code = status(args.run_dir)
            print(text)
            return code
        elif args.cmd == "logs":
            print(logs(args.run_dir, args.name, args.lines))
        else:
            print(stop(args.run_dir))
    except OrchestratorError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
