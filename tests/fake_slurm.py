"""One stateful fake Slurm behind `CommandRunner`: it answers exactly the argv that
orchestrator.slurm.client builds (in the formats of tests/fixtures/slurm/, Slurm 22.05).

Pattern: submitit's MockedSubprocess (job ids from 100, `set_state`). No subprocess is patched:
code under test gets `SlurmClient(FakeSlurm())` where it would get `SlurmClient(SubprocessRunner())`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.core.effects import CommandResult
from orchestrator.slurm.parse import SEP
from orchestrator.slurm.states import JOB_STATES

LIVE = {s for s, c in JOB_STATES.items() if c in ("queued", "active")}


@dataclass
class FakeJob:
    job_id: str
    name: str
    state: str = "PENDING"
    nodes: list[str] = field(default_factory=list)
    steps: list[tuple[str, str]] = field(default_factory=list)  # (step id, name)
    argv: tuple[str, ...] = ()
    cwd: str | None = None
    time_left_s: int = 1800  # what squeue %L says (a test moves it towards the limit)
    preempt_time: str = "N/A"  # what squeue -O PreemptTime says (`preempt` sets it)
    end_time: str = "N/A"  # and EndTime


class FakeSlurm:
    """sbatch creates PENDING jobs (ids from 100); squeue/sacct report them; scancel ends them
    (or records a signal); `calls` keeps every argv in order."""

    def __init__(self, nodes: Sequence[str] = ("node1", "node2", "node3")) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.node_state: dict[str, str] = {n: "idle" for n in nodes}
        self.calls: list[tuple[str, ...]] = []
        self.signals: list[tuple[str, str, bool]] = []  # (job or step id, signal, --batch)
        self.sbatch_error = ""  # when set, sbatch fails with this stderr (exit 1)
        self.on_signal: Callable[[FakeJob, str, bool], None] | None = None
        self._next_id = 100

    # --- test controls -----------------------------------------------------------------------
    def set_state(self, job_id: str, state: str, *, nodes: Sequence[str] = ()) -> None:
        """Move a job to `state` (as Slurm would: RUNNING on `nodes`, CANCELLED, NODE_FAIL...)."""
        job = self.jobs[job_id]
        job.state = state
        if nodes:
            job.nodes = list(nodes)

    def add_job(self, job_id: str, state: str = "PENDING", name: str = "job") -> FakeJob:
        """A job submitted by someone else (a sweep's earlier invocation, another user)."""
        self.jobs[job_id] = FakeJob(job_id, name, state)
        return self.jobs[job_id]

    def set_node_state(self, node: str, state: str) -> None:
        """`state` as sinfo prints it (`idle`, `down*`, `drained`, ...)."""
        self.node_state[node] = state

    def preempt(self, job_id: str, at: str, ends_at: str) -> None:
        """Slurm preempts the job: squeue shows PreemptTime `at` and EndTime `ends_at`
        (`2026-12-07T15:39:17`); the job runs on until the test ends it (GraceTime)."""
        self.jobs[job_id].preempt_time, self.jobs[job_id].end_time = at, ends_at

    def add_step(self, job_id: str, name: str) -> str:
        """A running srun step of the job; its step id."""
        job = self.jobs[job_id]
        step_id = f"{job_id}.{len(job.steps)}"
        job.steps.append((step_id, name))
        return step_id

    def calls_to(self, command: str) -> list[tuple[str, ...]]:
        """Every argv run so far whose program is `command`."""
        return [c for c in self.calls if c[0] == command]

    # --- CommandRunner ------------------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
    ) -> CommandResult:
        self.calls.append(tuple(argv))
        handler = getattr(self, f"_{argv[0]}", None)
        if handler is None:
            return CommandResult(tuple(argv), 127, "", f"{argv[0]}: not faked")
        code, out, err = handler(list(argv[1:]), cwd)
        return CommandResult(tuple(argv), code, out, err)

    def _sbatch(self, args: list[str], cwd: str | None) -> tuple[int, str, str]:
        if self.sbatch_error:
            return 1, "", self.sbatch_error
        name = next((a.split("=", 1)[1] for a in args if a.startswith("--job-name=")), "sbatch")
        job_id = str(self._next_id)
        self._next_id += 1
        self.jobs[job_id] = FakeJob(job_id, name, argv=tuple(args), cwd=cwd)
        return 0, f"{job_id}\n" if "--parsable" in args else f"Submitted batch job {job_id}\n", ""

    def _squeue(self, args: list[str], cwd: str | None) -> tuple[int, str, str]:
        if "--steps" in args:
            job = self.jobs.get(_value(args, "--jobs="), None)
            fmt_ok = any(a == f"--format=%i{SEP}%j" for a in args)
            lines = [f"{s}{SEP}{n}" for s, n in job.steps] if job and job.state in LIVE else []
            return (0, "".join(f"{line}\n" for line in lines), "") if fmt_ok else (2, "", "format")
        ids = args[args.index("-j") + 1].split(",")
        live = [self.jobs[j] for j in ids if j in self.jobs and self.jobs[j].state in LIVE]
        if not live:
            return 1, "", "slurm_load_jobs error: Invalid job id specified\n"
        if "-O" in args:
            if args[args.index("-O") + 1] != f"JobID:{SEP},PreemptTime:{SEP},EndTime:{SEP}":
                return 1, "", "format"
            fields = ((j.job_id, j.preempt_time, j.end_time) for j in live)
            return 0, "".join(f"{SEP.join(f)}{SEP}\n" for f in fields), ""
        fmt = args[args.index("-o") + 1]
        if fmt == "%N":
            return 0, "".join(f"{_nodelist(j.nodes)}\n" for j in live), ""
        if fmt == f"%i{SEP}%L":
            return 0, "".join(f"{j.job_id}{SEP}{_duration(j.time_left_s)}\n" for j in live), ""
        return 0, "".join(f"{j.job_id}{SEP}{j.state}{SEP}{j.name}\n" for j in live), ""

    def _sacct(self, args: list[str], cwd: str | None) -> tuple[int, str, str]:
        ids = args[args.index("-j") + 1].split(",")
        sep = _value(args, "--delimiter=") or "|"
        lines = []
        for job in (self.jobs[j] for j in ids if j in self.jobs):
            state = "CANCELLED by 0" if job.state == "CANCELLED" else job.state
            lines.append(f"{job.job_id}{sep}{state}{sep}{job.name}")
            if "-X" not in args:
                lines.append(f"{job.job_id}.batch{sep}{state}{sep}batch")
        return 0, "".join(f"{line}\n" for line in lines), ""

    def _scancel(self, args: list[str], cwd: str | None) -> tuple[int, str, str]:
        sig = _value(args, "--signal=")
        batch = "--batch" in args
        for target in (a for a in args if not a.startswith("-")):
            job = self.jobs.get(target.split(".")[0])
            if job is None or job.state not in LIVE:
                continue  # scancel of a finished or unknown job succeeds silently (22.05)
            if sig:
                self.signals.append((target, sig, batch))
                if self.on_signal is not None:
                    self.on_signal(job, sig, batch)
            elif "." in target:
                job.steps = [s for s in job.steps if s[0] != target]
            else:
                job.state, job.steps = "CANCELLED", []
        return 0, "", ""

    def _scontrol(self, args: list[str], cwd: str | None) -> tuple[int, str, str]:
        if args[:2] != ["show", "hostnames"]:
            return 1, "", f"scontrol {' '.join(args)}: not faked"
        return 0, "".join(f"{h}\n" for h in expand(args[2])), ""

    def _sinfo(self, args: list[str], cwd: str | None) -> tuple[int, str, str]:
        wanted = _value_after(args, "-n").split(",")
        lines = [f"{n}{SEP}{self.node_state[n]}" for n in wanted if n in self.node_state]
        return 0, "".join(f"{line}\n" for line in lines), ""


def _value(args: list[str], prefix: str) -> str:
    return next((a[len(prefix) :] for a in args if a.startswith(prefix)), "")


def _value_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1] if flag in args else ""


def expand(nodelist: str) -> list[str]:
    """`node[1-3],gpu07` -> node1 node2 node3 gpu07 (the subset of Slurm's syntax tests use)."""
    hosts = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", nodelist):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            width = len(lo)
            hosts += [f"{prefix}{i:0{width}d}" for i in range(int(lo), int(hi or lo) + 1)]
    return hosts


def _nodelist(nodes: Sequence[str]) -> str:
    return ",".join(nodes)


def _duration(seconds: int) -> str:
    """As squeue's %L prints it: M:SS, H:MM:SS or D-HH:MM:SS."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
