"""`WorkerJobs`: the one store of a run's worker jobs (RUN_DIR/attached.json, `WorkerJob`
records, oldest first), and which of them hold workers now.

`ctl scale` and the run's driver (frontend.placement=here: it submits, replaces and drains worker
jobs) both write the list, so every change is a read-change-write under an exclusive lock; the
driver owns state.json and rewrites it whole, so the list cannot live there.
"""

from __future__ import annotations

import dataclasses
import fcntl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.rundir.layout import RunDir, read_json_or_none, write_json_atomic
from orchestrator.rundir.records import WorkerJob

Change = Callable[[list[WorkerJob]], list[WorkerJob]]


class WorkerJobs:
    """The worker jobs of the run in `run_dir`."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run = RunDir(run_dir)

    def read(self) -> list[WorkerJob]:
        """Every job listed, oldest first (none when attached.json is missing or unreadable)."""
        data = read_json_or_none(self.run.attached_file)
        return [WorkerJob.from_dict(e) for e in data] if isinstance(data, list) else []

    def update(self, change: Change) -> list[WorkerJob]:
        """Read, change and write the list under an exclusive lock."""
        path = self.run.attached_file
        with path.with_name(f".{path.name}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            jobs = change(self.read())
            write_json_atomic(path, [j.to_dict() for j in jobs])
        return jobs

    def add(self, job: WorkerJob) -> None:
        """List a new job (last)."""
        self.update(lambda jobs: [*jobs, job])

    def set(self, job_dir: str, **fields: Any) -> None:
        """Change the recorded facts of the job whose run directory is `job_dir`."""
        self.update(
            lambda jobs: [
                dataclasses.replace(j, **fields) if j.run_dir == job_dir else j for j in jobs
            ]
        )

    def new_dir(self) -> Path:
        """A new RUN_DIR/attached/<n>/ (n: one more than the jobs listed, past existing dirs)."""
        self.run.attached_dir.mkdir(exist_ok=True)
        n = len(self.read()) + 1
        while self.run.job_dir(n).path.exists():
            n += 1
        path = self.run.job_dir(n).path
        path.mkdir()
        return path

    def live(self) -> list[WorkerJob]:
        """The jobs not recorded removed whose driver did not record its end (a job that failed
        or was stopped by itself holds no workers; its names may be used again)."""
        return [j for j in self.read() if not j.removed and not RunDir(j.run_dir).ended()]

    def holding(self) -> list[WorkerJob]:
        """The jobs whose workers count now, oldest first: live, not being drained, and not
        being replaced (during a rollover a job and its copy hold the same workers: they count
        once, in the copy, whose workers are the newest)."""
        serving = [j for j in self.live() if not j.drain_at]
        replaced = {j.replaces for j in serving if j.replaces}
        return [j for j in serving if j.job_id not in replaced]
