"""The run directory: its files (`RunDir`), their typed records (`RunState`, `LaunchRecord`) and
the run's phases (`Phase` and its groups). The only place a run's file names and phases are
spelled, with the run's secrets (`orchestrator.rundir.secrets`); imports core and the plan model
only, nothing of the runtime, the launchers or the CLI."""

from orchestrator.rundir.layout import RunDir, RunDirError, read_state, write_json_atomic
from orchestrator.rundir.phase import ACTIVE, FINAL, STARTED, Phase
from orchestrator.rundir.records import LaunchRecord, RunState, TimelineEntry, WorkerJob

__all__ = [
    "ACTIVE",
    "FINAL",
    "STARTED",
    "LaunchRecord",
    "Phase",
    "RunDir",
    "RunDirError",
    "RunState",
    "TimelineEntry",
    "WorkerJob",
    "read_state",
    "write_json_atomic",
]
