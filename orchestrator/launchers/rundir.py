"""Run directories: one per launch, never reused, holding everything needed to understand it."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.config.schema import RootConfig, config_to_dict
from orchestrator.core.effects import CommandRunner, SubprocessRunner
from orchestrator.core.errors import OrchestratorError
from orchestrator.core.tools import CHECKOUT
from orchestrator.plan.model import Plan
from orchestrator.rundir import LaunchRecord, RunDir
from orchestrator.rundir.secrets import create_secrets, create_tls
from orchestrator.runtime.state import StateFile


def git_sha() -> str:
    """Commit of the orchestrator checkout ('' for an installed package: a venv that happens to
    live inside some other git work tree must not report that repository's commit)."""
    if not (CHECKOUT / ".git").exists():
        return ""
    try:
        done = subprocess.run(
            ["git", "-C", str(CHECKOUT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def create_run_dir(cfg: RootConfig, name: str, runner: CommandRunner | None = None) -> Path:
    """`run_dir` if given (it must not exist yet), else outputs/<UTC time>-<name>[-N]; with
    `cluster.run_dir_mode` and the run's secrets (orchestrator.rundir.secrets)."""
    path = _new_run_dir(cfg, name)
    path.chmod(int(cfg.cluster.run_dir_mode, 8))  # mkdir's mode is masked by the umask
    # The clients' key is read where you launch (validated set) and kept with the run's secrets.
    api_key_env = cfg.frontend.api_key_env
    create_secrets(path, os.environ.get(api_key_env, "") if api_key_env else "")
    if cfg.frontend.request_plane_tls:
        create_tls(path, runner or SubprocessRunner())
    return path


def _new_run_dir(cfg: RootConfig, name: str) -> Path:
    if cfg.run_dir:
        path = Path(cfg.run_dir).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError as exc:
            raise OrchestratorError(
                f"run_dir {path} already exists; runs are never overwritten "
                "(choose a new run_dir or leave it unset)"
            ) from exc
        return path.resolve()
    base = Path("outputs") / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{name}"
    for n in range(1000):
        path = base if n == 0 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path.resolve()
        except FileExistsError:
            continue
    raise OrchestratorError(f"could not create a new run directory next to {base}")


def write_run_files(
    run_dir: Path,
    cfg: RootConfig,
    plan: Plan,
    *,
    launcher: str,
    overrides: Sequence[str],
    request: dict[str, Any],
) -> StateFile:
    """config.json, plan.json (what the driver runs), launch.json (with the executed request)
    and the initial state.json."""
    return write_run_record(
        run_dir, config_to_dict(cfg), plan, launcher=launcher, overrides=overrides, request=request
    )


def write_run_record(
    run_dir: Path,
    config: Mapping[str, Any],
    plan: Plan,
    *,
    launcher: str,
    overrides: Sequence[str],
    request: dict[str, Any],
) -> StateFile:
    """`write_run_files` with the config as saved (config.json's content): what a driver
    writing the run directory of a worker job it submits has (it never composes a config)."""
    files = RunDir(run_dir)
    files.write_config(dict(config))
    files.write_plan(plan)
    files.write_launch(
        LaunchRecord(
            launcher=launcher,
            overrides=tuple(overrides),
            git_sha=git_sha(),
            cwd=os.getcwd(),
            created=time.time(),
            request=request,
        )
    )
    files.logs_dir.mkdir(exist_ok=True)
    state = StateFile(run_dir)
    state.update(launcher=launcher, run_dir=str(run_dir), name=plan.name, job_id="")
    return state
