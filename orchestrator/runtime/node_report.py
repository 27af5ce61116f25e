"""Steps the driver runs on nodes before the workers (fetch, stage): the srun that runs one on
some nodes, and its one-JSON-line report, written by the node and parsed out of srun's output."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Sequence
from typing import Any


def print_report(run: Callable[[], dict[str, Any]], failure: type[Exception]) -> int:
    """Print {"host", ...what `run` returned} or {"host", "error"}; the exit code (1: failure)."""
    host = socket.gethostname()
    try:
        report = run()
    except failure as exc:
        print(json.dumps({"host": host, "error": str(exc)}), flush=True)
        return 1
    print(json.dumps({"host": host, **report}), flush=True)
    return 0


def parse_report(stdout: str) -> dict[str, Any] | None:
    """The last report line in `stdout` (srun chatter and progress bars ignored)."""
    for line in reversed(stdout.splitlines()):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and "host" in item:
            return item
    return None


def srun_prefix(job_id: str, hosts: Sequence[str], name: str) -> list[str]:
    """One task on each of `hosts`, beside the job's other steps; [] without a job
    (launcher=local: the command runs here)."""
    if not job_id:
        return []
    return [
        "srun",
        f"--jobid={job_id}",
        "--overlap",
        f"--nodes={len(hosts)}",
        "--ntasks-per-node=1",
        f"--nodelist={','.join(hosts)}",
        f"--job-name={name}",
    ]
