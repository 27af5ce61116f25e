"""The one table of Slurm job states and what each means to us.

States as `squeue %T` and `sacct State` print them (Slurm 22.05, `man squeue` "JOB STATE CODES").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

JobCategory = Literal["queued", "active", "ended_ok", "ended_failed", "unknown"]

JOB_STATES: Mapping[str, JobCategory] = {
    # Waiting for resources or for a release; no batch script runs yet.
    "PENDING": "queued",
    # Nodes allocated but still booting (cloud/power saving): the batch script has not started.
    "CONFIGURING": "queued",
    # Being put back in the queue (scontrol requeue, preemption with requeue, node failure).
    "REQUEUED": "queued",
    "REQUEUE_HOLD": "queued",
    "REQUEUE_FED": "queued",
    # Requeued and held by an EpilogSlurmctld for a special exit code: still in the queue.
    "SPECIAL_EXIT": "queued",
    "RUNNING": "active",
    "COMPLETING": "active",  # ending: steps and epilog still running on some nodes
    "SUSPENDED": "active",
    "RESIZING": "active",
    "STOPPED": "active",  # SIGSTOPped; holds its allocation
    "SIGNALING": "active",
    "STAGE_OUT": "active",  # burst buffer stage-out after the script ended
    "COMPLETED": "ended_ok",
    "CANCELLED": "ended_failed",
    "FAILED": "ended_failed",
    "TIMEOUT": "ended_failed",
    "PREEMPTED": "ended_failed",  # preempted without requeue
    "DEADLINE": "ended_failed",
    "NODE_FAIL": "ended_failed",
    "OUT_OF_MEMORY": "ended_failed",
    "BOOT_FAIL": "ended_failed",
    "REVOKED": "ended_failed",  # federation: a sibling cluster runs the job instead
}


# Active states in which the batch script has already ended (or the job was cancelled): Slurm
# is only cleaning up steps and epilogs.
ENDING_STATES = ("COMPLETING", "STAGE_OUT")


def category_of(state: str) -> JobCategory:
    """Category of a state as Slurm prints it (`CANCELLED by 0` is CANCELLED)."""
    words = state.split()
    return JOB_STATES.get(words[0].upper(), "unknown") if words else "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobState:
    """One job as Slurm reports it: `state` is Slurm's word (CANCELLED, NODE_FAIL, ...)."""

    job_id: str
    name: str = ""
    state: str = ""
    category: JobCategory = "unknown"

    @property
    def ended(self) -> bool:
        """The job is over (successfully or not): no batch script or step runs any more."""
        return self.category in ("ended_ok", "ended_failed")

    @property
    def live(self) -> bool:
        """Queued or running: Slurm still tracks it in its queue."""
        return self.category in ("queued", "active")

    @property
    def ending(self) -> bool:
        """The batch script is over; Slurm is still cleaning up (sacct may already say why)."""
        return self.state in ENDING_STATES

    @property
    def queued(self) -> bool:
        """Waiting in the queue (its batch script has not started, or is waiting to start again)."""
        return self.category == "queued"


def job_state(job_id: str, state: str, name: str = "") -> JobState:
    """A JobState from Slurm's words; the category comes from JOB_STATES."""
    word = state.split()[0].upper() if state.split() else ""
    return JobState(job_id=job_id, name=name, state=word, category=category_of(word))


UNKNOWN = "UNKNOWN"
