"""`RunDir`: every file of a run directory, named once, with its reader and writer.

One error policy for all of them:
- files that may race a writer on another host, or not exist yet (state.json, the heartbeat,
  attached.json, a launch.json `ctl ls` walks past), have readers that return None, or an
  empty record, when missing or unreadable;
- contract files (plan.json, plan.bound.json, launch.json, config.json for the driver) raise
  `RunDirError` naming the file and what is wrong.
Every JSON file is written atomically (temp file + rename): readers never see half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.core.errors import OrchestratorError
from orchestrator.plan.model import Plan, plan_from_dict, plan_to_dict
from orchestrator.rundir.records import LaunchRecord, RunState

STATE_FILE = "state.json"  # the driver's record: phase, timeline, processes (runtime/state.py)
PLAN_FILE = "plan.json"  # the contract the driver runs, written at submission
BOUND_PLAN_FILE = "plan.bound.json"  # plan.json with real hosts and ports, once started
LAUNCH_FILE = "launch.json"  # how it was launched: launcher, overrides, request
CONFIG_FILE = "config.json"  # the resolved config, as launched
HEARTBEAT_FILE = "heartbeat"  # touched every few seconds by a live driver
STOP_FILE = "stop-requested"  # `ctl stop` (and a sweep's stop) asks the driver to stop
RETIRE_FILE = "retire-requested.json"  # `ctl scale` down asks the driver to remove workers
ATTACHED_FILE = "attached.json"  # jobs holding some of the run's workers
ATTACHED_DIR = "attached"  # their run directories, attached/<n>/
FINGERPRINT_FILE = "fingerprint.json"  # versions, nodes and GPUs the run ran on
DRIVER_LOG = "driver.log"  # what the driver said
DRIVER_OUT = "driver.out"  # a detached driver's stdout and stderr (launchers on this host)
SUBMITIT_DIR = "submitit"  # submitit's pickles and logs
LOGS_DIR = "logs"  # one <process>.log per process
RESULTS_DIR = "results"  # benchmark points, metrics.jsonl
METRICS_FILE = "metrics.jsonl"  # under results/: scraped metrics
REPORT_FILE = "report.html"  # `ctl report`


class RunDirError(OrchestratorError):
    """A contract file of a run directory is missing or unreadable (the message names it)."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to `path` via a temp file in the same directory and an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def read_json_or_none(path: Path) -> Any:
    """The JSON in `path`; None when it is missing or unreadable (a reader that may race)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_state(run_dir: Path) -> dict[str, Any]:
    """state.json of a run as written ({} when the driver has not written one yet)."""
    data = read_json_or_none(run_dir / STATE_FILE)
    return data if isinstance(data, dict) else {}


class RunDir:
    """A run directory: the path of each of its files, and their readers and writers."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- where each file is
    @property
    def state_file(self) -> Path:
        """state.json"""
        return self.path / STATE_FILE

    @property
    def plan_file(self) -> Path:
        """plan.json"""
        return self.path / PLAN_FILE

    @property
    def bound_plan_file(self) -> Path:
        """plan.bound.json"""
        return self.path / BOUND_PLAN_FILE

    @property
    def launch_file(self) -> Path:
        """launch.json"""
        return self.path / LAUNCH_FILE

    @property
    def config_file(self) -> Path:
        """config.json"""
        return self.path / CONFIG_FILE

    @property
    def heartbeat_file(self) -> Path:
        """heartbeat"""
        return self.path / HEARTBEAT_FILE

    @property
    def stop_file(self) -> Path:
        """the stop request"""
        return self.path / STOP_FILE

    @property
    def retire_file(self) -> Path:
        """the retire request"""
        return self.path / RETIRE_FILE

    @property
    def attached_file(self) -> Path:
        """attached.json"""
        return self.path / ATTACHED_FILE

    @property
    def attached_dir(self) -> Path:
        """attached/"""
        return self.path / ATTACHED_DIR

    @property
    def fingerprint_file(self) -> Path:
        """fingerprint"""
        return self.path / FINGERPRINT_FILE

    @property
    def driver_log(self) -> Path:
        """driver.log"""
        return self.path / DRIVER_LOG

    @property
    def logs_dir(self) -> Path:
        """logs/"""
        return self.path / LOGS_DIR

    @property
    def results_dir(self) -> Path:
        """results/"""
        return self.path / RESULTS_DIR

    @property
    def metrics_file(self) -> Path:
        """metrics"""
        return self.path / RESULTS_DIR / METRICS_FILE

    @property
    def report_file(self) -> Path:
        """report.html"""
        return self.path / REPORT_FILE

    @property
    def driver_out(self) -> Path:
        """driver.out"""
        return self.path / DRIVER_OUT

    @property
    def submitit_dir(self) -> Path:
        """submitit/"""
        return self.path / SUBMITIT_DIR

    def log(self, process: str) -> Path:
        """logs/<process>.log (appended to on a restart)."""
        return self.path / LOGS_DIR / f"{process}.log"

    def slurm_output(self, job_id: str) -> Path:
        """slurm-<job id>.out: the batch job's own output (sbatch launchers)."""
        return self.path / f"slurm-{job_id}.out"

    def job_dir(self, n: int) -> RunDir:
        """attached/<n>/: the run directory of the n-th job attached to this run."""
        return RunDir(self.path / ATTACHED_DIR / str(n))

    def is_run(self) -> bool:
        """Whether this is a run directory (it has a launch.json)."""
        return self.launch_file.exists()

    # -- state.json (written by orchestrator.runtime.state.StateFile only)
    def state(self) -> RunState:
        """The run's state as last written (empty before the driver wrote one)."""
        return RunState.from_dict(read_state(self.path))

    def ended(self) -> bool:
        """Whether the run recorded its end (done or failed)."""
        return self.state().ended

    # -- the heartbeat and the stop request
    def beat(self) -> None:
        """Touch the heartbeat."""
        self.heartbeat_file.touch()

    def heartbeat_mtime(self) -> int | None:
        """The heartbeat's mtime in ns (None when there is none yet)."""
        try:
            return os.stat(self.heartbeat_file).st_mtime_ns
        except OSError:
            return None

    def request_stop(self) -> None:
        """Ask the run's driver to stop (it looks for the stop file every tick)."""
        self.stop_file.touch()

    def stop_requested(self) -> bool:
        """Whether a stop was asked for through the stop file."""
        return self.stop_file.exists()

    # -- contract files
    def launch(self) -> LaunchRecord:
        """launch.json; RunDirError when this is not a run directory or the file is bad."""
        try:
            data = json.loads(self.launch_file.read_text())
        except FileNotFoundError as exc:
            raise RunDirError(f"{self.path} is not a run directory (no {LAUNCH_FILE})") from exc
        except (OSError, ValueError) as exc:
            raise RunDirError(f"cannot read {self.launch_file}: {exc}") from exc
        try:
            return LaunchRecord.from_dict(data)
        except ValueError as exc:
            raise RunDirError(f"cannot read {self.launch_file}: {exc}") from exc

    def launch_or_none(self) -> LaunchRecord | None:
        """launch.json; None when missing or unreadable (`ctl ls` walking many runs)."""
        try:
            return self.launch()
        except RunDirError:
            return None

    def write_launch(self, record: LaunchRecord) -> None:
        """Write launch.json."""
        write_json_atomic(self.launch_file, record.to_dict())

    def plan(self) -> Plan:
        """plan.json: the contract written at submission."""
        return self._plan(self.plan_file, "the plan ")

    def bound_plan(self) -> Plan:
        """plan.bound.json of a started run (real addresses of its frontend and discovery)."""
        return self._plan(self.bound_plan_file)

    def plan_data_or_none(self, *, bound: bool = False) -> dict[str, Any] | None:
        """plan.json (or plan.bound.json) as a mapping; None when missing or unreadable."""
        data = read_json_or_none(self.bound_plan_file if bound else self.plan_file)
        return data if isinstance(data, dict) else None

    def write_plan(self, plan: Plan) -> None:
        """Write plan.json."""
        write_json_atomic(self.plan_file, plan_to_dict(plan))

    def write_bound_plan(self, plan: Plan) -> None:
        """Write plan.bound.json."""
        write_json_atomic(self.bound_plan_file, plan_to_dict(plan))

    def config(self) -> dict[str, Any]:
        """config.json: the resolved config, as launched."""
        try:
            data = json.loads(self.config_file.read_text())
        except (OSError, ValueError) as exc:
            raise RunDirError(f"cannot read {self.config_file}: {exc}") from exc
        if not isinstance(data, dict):
            raise RunDirError(f"cannot read {self.config_file}: not a JSON object")
        return data

    def config_or_none(self) -> dict[str, Any] | None:
        """config.json; None when missing or unreadable."""
        data = read_json_or_none(self.config_file)
        return data if isinstance(data, dict) else None

    def write_config(self, config: dict[str, Any]) -> None:
        """Write config.json."""
        write_json_atomic(self.config_file, config)

    def _plan(self, path: Path, what: str = "") -> Plan:
        try:
            return plan_from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunDirError(f"cannot read {what}{path}: {exc}") from exc
