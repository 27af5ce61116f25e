"""The one place that runs Slurm commands: it builds their argv and hands the output to the pure
parsers in orchestrator.slurm.parse. Every command goes through a `CommandRunner`, so tests drive
it with tests/fake_slurm.py and nothing here needs a cluster."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.core.effects import CommandResult, CommandRunner
from orchestrator.core.errors import OrchestratorError, SubmissionError
from orchestrator.slurm import parse
from orchestrator.slurm.parse import SEP, Preemption
from orchestrator.slurm.request import SBATCH
from orchestrator.slurm.states import JOB_STATES, JobCategory, JobState

__all__ = ["JOB_STATES", "JobCategory", "JobState", "Preemption", "SlurmClient"]

SQUEUE_JOBS = f"%i{SEP}%T{SEP}%j"
SACCT_JOBS = "JobID,State,JobName"
# `-O`, not `-o`: squeue 22.05 has no `%` letter for PreemptTime. Each field ends with SEP.
SQUEUE_PREEMPT = f"JobID:{SEP},PreemptTime:{SEP},EndTime:{SEP}"


class SlurmClient:
    """sbatch / squeue / sacct / scancel / scontrol / sinfo behind typed methods."""

    def __init__(self, runner: CommandRunner, *, timeout_s: float = 30.0) -> None:
        self._runner, self._timeout = runner, timeout_s

    def _run(self, argv: list[str], *, cwd: str | None = None) -> CommandResult:
        return self._runner.run(argv, timeout=self._timeout, cwd=cwd)

    def sbatch(self, argv_tail: Sequence[str], *, cwd: str | None = None) -> str:
        """`sbatch --parsable ARGV_TAIL` (run in `cwd`); the job id. Raises SubmissionError
        with sbatch's stderr when Slurm rejects the job."""
        argv = [SBATCH, "--parsable", *argv_tail]
        res = self._run(argv, cwd=cwd)
        if res.returncode != 0:
            raise SubmissionError(argv, res.returncode, res.stderr)
        try:
            return parse.parse_sbatch_parsable(res.stdout)
        except OrchestratorError as exc:
            raise SubmissionError(argv, res.returncode, f"{exc}; stderr: {res.stderr}") from exc

    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """The state of every job in `job_ids`: ONE squeue call for the live ones, then ONE
        sacct call for the others (squeue forgets a job MinJobAge after it ended, sacct keeps
        it). A job neither knows is category `unknown`."""
        ids = list(dict.fromkeys(j for j in job_ids if j))
        if not ids:
            return {}
        # squeue exits 1 ("Invalid job id specified") when it knows none of the ids.
        res = self._run(["squeue", "-h", "-j", ",".join(ids), "-o", SQUEUE_JOBS])
        found = parse.parse_job_lines(res.stdout) if res.returncode == 0 else {}
        rest = [j for j in ids if j not in found]
        if rest:
            res = self._run(
                [
                    "sacct",
                    "-X",
                    "-n",
                    "-P",
                    f"--delimiter={SEP}",
                    "-o",
                    SACCT_JOBS,
                    "-j",
                    ",".join(rest),
                ]
            )
            if res.returncode == 0:
                found.update(parse.parse_job_lines(res.stdout))
        return {j: found.get(j) or JobState(job_id=j) for j in ids}

    def time_left(self, job_ids: Sequence[str]) -> dict[str, float | None]:
        """Seconds before each live job reaches its time limit (ONE squeue call; None: no
        limit). Jobs squeue no longer knows are left out."""
        ids = [j for j in dict.fromkeys(job_ids) if j]
        if not ids:
            return {}
        res = self._run(["squeue", "-h", "-j", ",".join(ids), "-o", f"%i{SEP}%L"])
        return parse.parse_time_left(res.stdout) if res.returncode == 0 else {}

    def preemptions(self, job_ids: Sequence[str]) -> dict[str, Preemption]:
        """The jobs of `job_ids` that Slurm is preempting now (ONE squeue call): when, and when
        they will be ended. A preempting Slurm 22.05 sends the steps SIGTERM and the batch
        shell nothing, so this is where a run learns it (orchestrator.elastic.rollover)."""
        ids = [j for j in dict.fromkeys(job_ids) if j]
        if not ids:
            return {}
        res = self._run(["squeue", "-h", "-j", ",".join(ids), "-O", SQUEUE_PREEMPT])
        return parse.parse_preemptions(res.stdout) if res.returncode == 0 else {}

    def state(self, job_id: str) -> JobState:
        """The state of one job (see `states`)."""
        return self.states([job_id]).get(job_id) or JobState(job_id=job_id)

    def cancel(
        self,
        job_id: str,
        *,
        signal: str | None = None,
        batch: bool = False,
        steps: Sequence[str] = (),
    ) -> bool:
        """`scancel [--signal=SIG] [--batch] JOB | STEP...`: without `signal` the job (or the
        steps) end; with it they only receive the signal. True when scancel succeeded."""
        argv = ["scancel"]
        if signal:
            argv.append(f"--signal={signal.removeprefix('SIG')}")
        if batch:
            argv.append("--batch")
        argv += list(steps) if steps else [job_id]
        return self._run(argv).returncode == 0

    def cancel_jobs(self, job_ids: Sequence[str]) -> bool:
        """`scancel JOB...`: end every job in `job_ids` with ONE call (a sweep's points). Jobs
        that already ended are skipped by scancel silently (22.05). True when it succeeded."""
        ids = list(dict.fromkeys(j for j in job_ids if j))
        return not ids or self._run(["scancel", *ids]).returncode == 0

    def steps(self, job_id: str) -> list[tuple[str, str]]:
        """[(step id, step name)] of a job's running steps (`batch`/`extern` included)."""
        res = self._run(
            ["squeue", "--steps", f"--jobs={job_id}", "--noheader", f"--format=%i{SEP}%j"]
        )
        return parse.parse_step_lines(res.stdout) if res.returncode == 0 else []

    def hostnames(self, nodelist: str) -> list[str]:
        """`node[1-3]` -> ['node1', 'node2', 'node3'] (scontrol show hostnames)."""
        res = self._run(["scontrol", "show", "hostnames", nodelist])
        if res.returncode != 0:
            raise OrchestratorError(
                f"scontrol show hostnames {nodelist} failed: {res.stderr.strip()}"
            )
        return parse.parse_hostnames(res.stdout)

    def job_nodes(self, job_id: str) -> list[str]:
        """The nodes a live job holds now (a node lost under --no-kill is no longer listed)."""
        res = self._run(["squeue", "-h", "-j", job_id, "-o", "%N"])
        nodelist = res.stdout.strip() if res.returncode == 0 else ""
        return self.hostnames(nodelist) if nodelist else []

    def node_states(self, nodes: Sequence[str]) -> dict[str, str]:
        """{node: state} for `nodes` from sinfo: IDLE, ALLOCATED, MIXED, DOWN, DRAINED, ...
        (flags such as `*` not responding stripped). Empty when sinfo fails."""
        if not nodes:
            return {}
        res = self._run(["sinfo", "-h", "-N", "-n", ",".join(nodes), "-o", f"%N{SEP}%T"])
        return parse.parse_node_states(res.stdout) if res.returncode == 0 else {}
