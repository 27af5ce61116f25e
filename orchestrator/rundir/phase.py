"""A run's phase, as its driver records it in state.json, and the groups of phases readers ask
about. The only place phases are spelled: everything else compares with `Phase` members and these
groups (tests/test_architecture.py keeps it so)."""

from __future__ import annotations

from enum import Enum


class Phase(str, Enum):
    """A run's phase. A `str` so state.json stays byte-compatible (`"phase": "ready"`) and a
    member compares equal to the string read back from disk."""

    NEW = ""  # the run directory exists; no driver wrote a phase yet (shown as `launching`)
    SUBMITTED = "submitted"  # the Slurm job is queued
    STARTING = "starting"  # the driver starts the processes and waits for readiness
    READY = "ready"  # the deployment serves
    STOPPING = "stopping"  # teardown began
    DONE = "done"  # ended as asked (a benchmark finished, a stop request)
    FAILED = "failed"  # ended by a failure (`error` says which)
    # Shown by readers (observe/reconcile.py), never recorded: the driver is gone, or the job
    # is back in the queue.
    LOST = "lost"
    REQUEUED = "requeued"

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def of(cls, value: object) -> Phase:
        """The phase a state.json value names (NEW for a missing or unknown one)."""
        try:
            return cls(value or "")
        except ValueError:
            return cls.NEW


RECORDED = frozenset(
    {Phase.SUBMITTED, Phase.STARTING, Phase.READY, Phase.STOPPING, Phase.DONE, Phase.FAILED}
)  # what a driver (or a launcher, or `ctl stop`) writes
FINAL = frozenset({Phase.DONE, Phase.FAILED})  # the run recorded its end
ACTIVE = frozenset(
    {Phase.NEW, Phase.SUBMITTED, Phase.STARTING, Phase.READY, Phase.STOPPING}
)  # a driver runs or is about to (so Slurm or the process table can contradict it)
STARTED = frozenset({Phase.STARTING, Phase.READY, Phase.STOPPING})  # a driver began serving
QUEUED = frozenset({Phase.NEW, Phase.SUBMITTED})  # nothing ran yet
SETTLED = frozenset({*FINAL, Phase.READY})  # `follow` stops waiting (unless until done)
OVER = frozenset({*FINAL, Phase.LOST})  # shown as over (`ctl watch` exits)
