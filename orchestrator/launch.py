"""Launch a prepared config: run directory, then execute its request (submit, or run the driver
here for the local launcher and inside an allocation, or detached for frontend.placement=here).
The request picks its flow (`LaunchRequest.execute`); the flows are `Launch`'s methods."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.api import Prepared
from orchestrator.core.effects import CommandRunner, SubprocessRunner
from orchestrator.core.errors import InvalidConfig, Issue, SubmissionError
from orchestrator.launchers import get_launcher
from orchestrator.launchers.follow import follow
from orchestrator.launchers.rundir import create_run_dir, write_run_files
from orchestrator.run.entry import allocation_issues, run_driver
from orchestrator.rundir import Phase, RunDir
from orchestrator.runtime.state import StateFile


def launch(prepared: Prepared, runner: CommandRunner | None = None) -> int:
    """Create the run directory and execute the prepared request; returns an exit code."""
    cfg, plan = prepared.cfg, prepared.plan
    if get_launcher(prepared.launcher).in_allocation:
        _check_allocation(prepared)
    run_dir = create_run_dir(cfg, plan.name)
    request = prepared.request.bind(str(run_dir))
    state = write_run_files(
        run_dir,
        cfg,
        plan,
        launcher=prepared.launcher,
        overrides=prepared.overrides,
        request=request.to_dict(),
    )
    # A benchmark that ends the job is what the user waits for; a serving deployment is ready.
    until_done = plan.benchmark is not None and not plan.benchmark.keep_serving
    session = Launch(
        run_dir=run_dir,
        state=state,
        wait=cfg.wait,
        until_done=until_done,
        runner=runner or SubprocessRunner(),
    )
    return request.execute(session)


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """A launch in progress: the `orchestrator.launchers.base.Session` requests execute in."""

    run_dir: Path
    state: StateFile
    wait: bool
    until_done: bool
    runner: CommandRunner

    def submitted(self, submit: Callable[[Path, CommandRunner], str]) -> int:
        """Submit; the run directory says why when that fails. Then follow the job."""
        try:
            job_id = submit(self.run_dir, self.runner)
        except SubmissionError as exc:
            self.state.phase(
                Phase.FAILED, error=str(exc)
            )  # the run directory says why it never ran
            raise
        self.state.phase(Phase.SUBMITTED, job_id=job_id)
        _announce(job_id, self.run_dir)
        if not self.wait:
            return 0
        return follow(self.run_dir, job_id, until_done=self.until_done)

    def foreground(self, argv: Sequence[str]) -> int:
        """The driver runs right here, in the foreground: Ctrl-C stops the deployment."""
        _announce(os.environ.get("SLURM_JOB_ID", ""), self.run_dir)
        if not self.wait:
            self.state.update(driver_pid=detach(argv, self.run_dir))
            return 0
        return run_driver(self.run_dir)

    def detached(self, argv: Sequence[str]) -> int:
        """A detached driver (its own session: logout and Ctrl-C do not reach it) runs the
        frontend here and submits the worker jobs; ctl stop ends it all."""
        self.state.update(driver_pid=detach(argv, self.run_dir))
        _announce("", self.run_dir)
        return follow(self.run_dir, "", until_done=False) if self.wait else 0


def detach(argv: Sequence[str], run_dir: Path) -> int:
    """Start the driver in its own session (wait=false without Slurm); its pid."""
    log = open(RunDir(run_dir).driver_out, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    log.close()
    return proc.pid


def _check_allocation(prepared: Prepared) -> None:
    """Inside salloc/sbatch the allocation is given: check it fits before creating anything."""
    job = os.environ.get("SLURM_JOB_ID", "")
    issues = [
        Issue("allocation", job, problem, "adjust the allocation or the topology")
        for problem in allocation_issues(prepared.plan, os.environ)
    ]
    if not prepared.cfg.wait:
        issues.append(
            Issue(
                "wait",
                "false",
                "inside an allocation the driver runs in the foreground "
                "(the allocation ends with this command)",
                "drop wait=false, or submit from a login node",
            )
        )
    if issues:
        raise InvalidConfig(issues)


def _announce(job_id: str, run_dir: Path) -> None:
    """stdout carries only the job id and the run directory (scripts parse it)."""
    if job_id:
        print(job_id, flush=True)
    print(run_dir, flush=True)
