"""Pure parsers of Slurm command output (Slurm 22.05 formats), and one batched state query."""

from __future__ import annotations

from orchestrator.effects import CommandRunner
from orchestrator.errors import OrchestratorError


def parse_sbatch_parsable(stdout: str) -> str:
    """`sbatch --parsable` prints `jobid` or `jobid;cluster`."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";")[0].strip()
    if not job_id.isdigit():
        raise OrchestratorError(f"could not read a job id from sbatch output {stdout!r}")
    return job_id


def parse_sacct_states(stdout: str) -> dict[str, str]:
    """`sacct -X -n -P -o JobID,State`: {job id: state}; `CANCELLED by 0` -> CANCELLED;
    steps (`12.batch`, `12.0`) and het components (`12+0`) are folded into their job."""
    states: dict[str, str] = {}
    for line in stdout.splitlines():
        job, sep, state = line.strip().partition("|")
        if not sep or "." in job:
            continue
        states[job.split("+")[0]] = state.split()[0] if state.split() else ""
    return states


def job_state(runner: CommandRunner, job_id: str) -> str:
    """The job's state from squeue (live jobs), else sacct; '' when unknown."""
    res = runner.run(["squeue", "-h", "-j", job_id, "-o", "%T"], timeout=15)
    if res.returncode == 0 and res.stdout.strip():
        return res.stdout.split()[0]
    res = runner.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", job_id], timeout=15)
    return parse_sacct_states(res.stdout).get(job_id, "") if res.returncode == 0 else ""
