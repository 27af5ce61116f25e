"""Pure parsers of Slurm command output (Slurm 22.05 formats, tests/fixtures/slurm/).

Multi-field formats use the ASCII unit separator (`SEP`): job names may hold spaces and `|`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from orchestrator.core.errors import OrchestratorError
from orchestrator.slurm.states import JobState, job_state

SEP = "\x1f"
# sinfo appends flags to the state: `*` not responding, `~` powered off, `#` powering up,
# `%` powering down, `!` pending power down, `$` reserved maintenance, `@` pending reboot,
# `^` rebooting, `-` planned by the backfill scheduler (man sinfo, "NODE STATE CODES").
NODE_FLAGS = "*~#%!$@^-"
# srun's message when a node of its step fails (src/srun/srun_job.c, Slurm 22.05).
NODE_FAILURE = re.compile(r"srun: error: Node failure on (\S+)")


def parse_sbatch_parsable(stdout: str) -> str:
    """`sbatch --parsable` prints `jobid` or `jobid;cluster`."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";")[0].strip()
    if not job_id.isdigit():
        raise OrchestratorError(f"could not read a job id from sbatch output {stdout!r}")
    return job_id


def parse_job_lines(stdout: str) -> dict[str, JobState]:
    """`squeue -o %i<SEP>%T<SEP>%j` or `sacct -X -P --delimiter=<SEP> -o JobID,State,JobName`
    -> {job id: JobState}. Steps (`12.batch`, `12.extern`, `12.0`) are skipped; the components
    of a heterogeneous job (`12+0`, `12+1`) fold into job 12 (see `_fold`); of repeated
    records of one job (sacct lists a RESIZING record per earlier size) the last one counts."""
    jobs: dict[str, JobState] = {}
    for line in stdout.splitlines():
        fields = line.strip().split(SEP, 2)
        if len(fields) < 2 or "." in fields[0] or not fields[0].split("+")[0].isdigit():
            continue
        job_id, het = fields[0].partition("+")[::2]
        state = job_state(job_id, fields[1], fields[2] if len(fields) > 2 else "")
        # A job resized (a node lost under --no-kill) has one record per size: the last is current.
        jobs[job_id] = _fold(jobs[job_id], state) if het and job_id in jobs else state
    return jobs


def _fold(first: JobState, other: JobState) -> JobState:
    """One state for a het job: a live component keeps the job live; once all ended, a failed
    component makes the job failed."""
    if first.live:
        return first
    if other.live or (other.category == "ended_failed" and first.category != "ended_failed"):
        return other
    return first


def parse_step_lines(stdout: str) -> list[tuple[str, str]]:
    """`squeue --steps -o %i<SEP>%j` -> [(step id, step name)]; other lines are ignored."""
    pairs = []
    for line in stdout.splitlines():
        step_id, sep, name = line.strip().partition(SEP)
        if sep and "." in step_id:
            pairs.append((step_id, name))
    return pairs


def parse_node_states(stdout: str) -> dict[str, str]:
    """`sinfo -h -N -o %N<SEP>%T` -> {node: state}, upper case, flags stripped (`idle*` ->
    IDLE). A node in several partitions is listed once per partition: the first line wins."""
    states: dict[str, str] = {}
    for line in stdout.splitlines():
        node, sep, state = line.strip().partition(SEP)
        if sep and node and node not in states:
            states[node] = state.strip().rstrip(NODE_FLAGS).upper()
    return states


def parse_hostnames(stdout: str) -> list[str]:
    """`scontrol show hostnames LIST` -> one hostname per line."""
    return [h.strip() for h in stdout.split() if h.strip()]


def failed_nodes_in_log(text: str) -> list[str]:
    """Nodes srun reported as failed in a step's output, in order, without repeats."""
    return list(dict.fromkeys(NODE_FAILURE.findall(text)))


def parse_duration(text: str) -> float | None:
    """A Slurm duration as squeue prints it (`%L`: `M:SS`, `H:MM:SS`, `D-HH:MM:SS`; Slurm's
    secs2time_str) -> seconds; None for UNLIMITED, NOT_SET, INVALID or anything else."""
    days, _, clock = text.strip().rpartition("-")
    parts = clock.split(":")
    if (
        days
        and not days.isdigit()
        or len(parts) not in (2, 3)
        or not all(p.isdigit() for p in parts)
    ):
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return float(seconds + int(days or 0) * 86400)


def parse_time_left(stdout: str) -> dict[str, float | None]:
    """`squeue -h -o %i<SEP>%L` -> {job id: seconds left (None: no limit)}. A pending job shows
    its whole time limit."""
    left: dict[str, float | None] = {}
    for line in stdout.splitlines():
        fields = line.strip().split(SEP)
        if len(fields) == 2 and fields[0].isdigit():
            left[fields[0]] = parse_duration(fields[1])
    return left


@dataclass(frozen=True, slots=True)
class Preemption:
    """A running job Slurm is preempting (`squeue -O PreemptTime`, set once the preemptor is
    scheduled): `at`, and `ends_at`, its EndTime, moved to PreemptTime + the partition's
    GraceTime (Slurm 22.05 `_preempt_signal`; its periodic time-limit pass ends the job up to
    ~30 s later, measured on the testbed). Epoch seconds."""

    job_id: str
    at: float
    ends_at: float | None


def parse_timestamp(text: str) -> float | None:
    """A Slurm timestamp as squeue prints it (`2026-12-07T15:39:17`, the local time of the
    client) -> epoch seconds; None for N/A, Unknown, None or anything else."""
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def parse_preemptions(stdout: str) -> dict[str, Preemption]:
    """`squeue -h -O JobID:<SEP>,PreemptTime:<SEP>,EndTime:<SEP>` -> {job id: Preemption} for
    the jobs being preempted (PreemptTime N/A: not preempted; a pending job may show an
    expected EndTime)."""
    found: dict[str, Preemption] = {}
    for line in stdout.splitlines():
        fields = line.strip().split(SEP)
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        at = parse_timestamp(fields[1])
        if at is not None:
            found[fields[0]] = Preemption(fields[0], at, parse_timestamp(fields[2]))
    return found
