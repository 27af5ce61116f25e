"""`python -m orchestrator.ctl status|logs|stop RUN_DIR`: look at and stop a run later.
`status SWEEP_DIR` and `collect SWEEP_DIR` work on a sweep directory (orchestrator.sweep)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from orchestrator.effects import SubprocessRunner
from orchestrator.errors import OrchestratorError
from orchestrator.launchers.rundir import read_launch
from orchestrator.runtime.driver import STOP_FILE
from orchestrator.runtime.processes import log_tail
from orchestrator.runtime.state import progress_line, read_state

FINAL = ("done", "failed")


def status(run_dir: Path) -> str:
    """One block: phase, job, URL, per-process state."""
    state = read_state(run_dir)
    lines = [f"run: {run_dir}", f"launcher: {read_launch(run_dir).get('launcher')}  job: "
             f"{state.get('job_id') or '-'}  {progress_line(state)}"]  # fmt: skip
    if state.get("frontend_url"):
        lines.append(f"frontend: {state['frontend_url']}")
    for key in ("reason", "error"):
        if state.get(key):
            lines.append(f"{key}: {state[key]}")
    if state.get("benchmark"):
        b = state["benchmark"]
        lines.append(f"benchmark: {b.get('tool')} {b.get('status')} {b.get('done')}/{b.get('of')} "
                     f"point(s) (results/points.jsonl)")  # fmt: skip
    for name, entry in state.get("processes", {}).items():
        code = f" exit={entry['exit_code']}" if entry.get("exit_code") is not None else ""
        lines.append(f"  {name:<18} {entry.get('role', ''):<9} {entry.get('host', '')}:"
                     f"node{entry.get('node', '?')}  {entry.get('state', '')}{code}")  # fmt: skip
    return "\n".join(lines)


def logs(run_dir: Path, name: str | None, lines: int) -> str:
    """Tail one process log, or list the logs."""
    log_dir = run_dir / "logs"
    if name is None:
        return "\n".join(sorted(p.stem for p in log_dir.glob("*.log")))
    path = log_dir / f"{name}.log"
    if not path.exists():
        raise OrchestratorError(f"no log for {name!r} in {log_dir}")
    return log_tail(path, lines)


def stop(run_dir: Path, timeout_s: float = 120.0) -> str:
    """Ask the driver to stop gracefully, then wait for its final phase."""
    launcher = read_launch(run_dir).get("launcher")  # also: is this a run directory at all?
    state = read_state(run_dir)
    if state.get("phase") in FINAL:
        return f"already {state['phase']}"
    # The stop file works wherever the driver runs; a signal only makes it quicker.
    (run_dir / STOP_FILE).touch()
    job_id = state.get("job_id", "")
    if launcher in ("submitit", "sbatch") and job_id:
        # The driver is the batch shell (exec): --batch delivers SIGTERM to it alone, and it
        # stops the workers and infrastructure in order.
        SubprocessRunner().run(["scancel", "--batch", "--signal=TERM", job_id], timeout=30)
    elif state.get("driver_pid") and state.get("driver_host") == socket.gethostname():
        try:
            os.kill(int(state["driver_pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        phase = read_state(run_dir).get("phase")
        if phase in FINAL:
            return f"stopped ({phase})"
        time.sleep(0.2)
    raise OrchestratorError(
        f"the driver did not finish within {timeout_s:g} s; see {run_dir}/driver.log"
    )


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
    args = parser.parse_args(argv)
    try:
        if args.cmd in ("status", "collect") and (args.run_dir / "manifest.json").exists():
            from orchestrator.bench import sweepdir

            view = sweepdir.status if args.cmd == "status" else sweepdir.collect
            print(view(args.run_dir))
        elif args.cmd == "collect":
            raise OrchestratorError(f"{args.run_dir} is not a sweep directory (no manifest.json)")
        elif args.cmd == "status":
            print(status(args.run_dir))
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
