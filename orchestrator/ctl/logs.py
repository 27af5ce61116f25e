"""`ctl logs RUN_DIR [NAME] [-n N]`: tail one process log, or list the logs."""

from __future__ import annotations

from pathlib import Path

from orchestrator.core.errors import OrchestratorError
from orchestrator.rundir import RunDir
from orchestrator.runtime.processes import log_tail


def logs(run_dir: Path, name: str | None, lines: int) -> str:
    """Tail one process log, or list the logs."""
    log_dir = RunDir(run_dir).logs_dir
    if name is None:
        return "\n".join(sorted(p.stem for p in log_dir.glob("*.log")))
    path = RunDir(run_dir).log(name)
    if not path.exists():
        raise OrchestratorError(f"no log for {name!r} in {log_dir}")
    return log_tail(path, lines)
