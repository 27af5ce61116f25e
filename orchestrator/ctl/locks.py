"""`ctl status`'s view of a run's locks: the run directory's and the secrets' modes as they are
on disk, and what the plan locks (orchestrator.frontends.lock_lines; secrets as placeholders)."""

from __future__ import annotations

import stat
from pathlib import Path

from orchestrator.frontends import get_frontend
from orchestrator.rundir import RunDir, RunDirError, read_state
from orchestrator.rundir.secrets import SECRETS_DIR


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


def status_lines(run_dir: Path) -> list[str]:
    """`locks:` lines of `ctl status` (empty for a directory that is not a run)."""
    secrets = run_dir / SECRETS_DIR
    try:
        plan = RunDir(run_dir).plan()
    except RunDirError:
        return []
    own = f"run directory {_mode(run_dir)}"
    own += f", secrets {_mode(secrets)}" if secrets.is_dir() else ", no secrets (made before locks)"
    lines = [f"locks: {own}"]
    lines += [f"  {line}" for line in get_frontend(plan.readiness.frontend_kind).lock_lines(plan)]
    if read_state(run_dir).get("etcd_locked"):
        lines.append("  etcd: locked (checked by the driver: anonymous reads refused)")
    return lines
