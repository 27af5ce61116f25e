"""Typed records of the run directory's JSON files: what state.json and launch.json hold, read
once at the edge so readers use attributes instead of `dict.get` chains.

`RunState` is a read-only view: the driver's writer (orchestrator.runtime.state.StateFile) keeps
the raw mapping it writes, so state.json stays byte-for-byte what it was. Per-process entries
and keys only some plugins write stay plain (`processes`, `data`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.rundir.phase import FINAL, Phase

JsonDict = Mapping[str, Any]
REMOVED = "removed"  # a process's state once a scale-down removed it (elastic/retire.py)


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineEntry:
    """One phase change: the phase, the UTC time as text and as epoch seconds."""

    phase: Phase
    at: str = ""
    t: float = 0.0

    @classmethod
    def from_dict(cls, data: JsonDict) -> TimelineEntry:
        """An entry of state.json's `timeline`."""
        return cls(
            phase=Phase.of(data.get("phase")),
            at=str(data.get("at", "")),
            t=float(data.get("t") or 0.0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunState:
    """state.json as its driver last wrote it (`RunState.empty()` before it wrote one)."""

    phase: Phase = Phase.NEW
    timeline: tuple[TimelineEntry, ...] = ()
    processes: Mapping[str, JsonDict] = field(default_factory=dict)
    job_id: str = ""
    frontend_url: str = ""
    reason: str = ""
    error: str = ""
    degraded: tuple[str, ...] = ()
    benchmark: JsonDict = field(default_factory=dict)
    driver_pid: int | None = None
    driver_host: str = ""
    data: JsonDict = field(default_factory=dict)  # every key, as written

    @classmethod
    def empty(cls) -> RunState:
        """The state of a run whose state.json is missing or unreadable."""
        return cls()

    @classmethod
    def from_dict(cls, data: JsonDict) -> RunState:
        """The typed view of a state.json mapping (missing keys get their defaults)."""
        pid = data.get("driver_pid")
        bench = data.get("benchmark")
        return cls(
            phase=Phase.of(data.get("phase")),
            timeline=tuple(TimelineEntry.from_dict(t) for t in data.get("timeline") or ()),
            processes=dict(data.get("processes") or {}),
            job_id=str(data.get("job_id") or ""),
            frontend_url=str(data.get("frontend_url") or ""),
            reason=str(data.get("reason") or ""),
            error=str(data.get("error") or ""),
            degraded=tuple(data.get("degraded") or ()),
            benchmark=bench if isinstance(bench, Mapping) else {},
            driver_pid=int(pid) if isinstance(pid, int | str) and str(pid).isdigit() else None,
            driver_host=str(data.get("driver_host") or ""),
            data=data,
        )

    @property
    def ended(self) -> bool:
        """Whether the run recorded its end (done or failed)."""
        return self.phase in FINAL

    def reached(self, phase: Phase) -> float | None:
        """When the run first entered `phase` (epoch seconds; None if it never did)."""
        return next((t.t for t in self.timeline if t.phase == phase), None)

    def removed(self) -> set[str]:
        """The processes a scale-down removed (elastic/retire.py marks them `removed`)."""
        return {n for n, p in self.processes.items() if p.get("state") == REMOVED}


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchRecord:
    """launch.json: how the run was launched. Written once by the launcher; a contract file."""

    launcher: str
    overrides: tuple[str, ...] = ()
    git_sha: str = ""
    cwd: str = ""
    created: float | None = None
    request: JsonDict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: object) -> LaunchRecord:
        """The record of a launch.json mapping; ValueError naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, found {type(data).__name__}")
        if not isinstance(data.get("launcher"), str):
            raise ValueError(f"no launcher (found {data.get('launcher')!r})")
        created = data.get("created")
        return cls(
            launcher=data["launcher"],
            overrides=tuple(data.get("overrides") or ()),
            git_sha=str(data.get("git_sha") or ""),
            cwd=str(data.get("cwd") or ""),
            created=float(created) if created is not None else None,
            request=dict(data.get("request") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """launch.json's content (key order as it has always been written)."""
        return {
            "launcher": self.launcher,
            "overrides": list(self.overrides),
            "git_sha": self.git_sha,
            "cwd": self.cwd,
            "created": self.created,
            "request": dict(self.request),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerJob:
    """A Slurm job holding some of a run's workers (RUN_DIR/attached.json; orchestrator.rundir.
    jobs). Generation 0: the run's own job and those `ctl scale` adds; a placement=here run's
    first worker job is generation 1, each replacement one more than the job it replaces."""

    job_id: str  # '' while sbatch has not answered (listed first: a record of the directory)
    run_dir: str
    workers: tuple[str, ...]  # process names, ranks included
    groups: Mapping[str, int] = field(default_factory=dict)  # worker units per group
    submitted_at: float = 0.0
    generation: int = 0
    replaces: str = ""  # the job id this one replaces (rollover, loss)
    reason: str = ""  # why it was submitted (start, time limit, lost: ...)
    ready_at: float = 0.0  # its workers serve (placement=here: seen by the run's driver)
    drain_at: float = 0.0  # asked to stop by the run's driver (a drain, or the run's teardown)
    removed_at: float = 0.0  # holds no workers any more (scale-down, drained, lost, stopped)
    ended: str = ""  # how it ended, once seen (Slurm's state, or its driver's phase)
    error: str = ""  # why it could not be submitted

    @classmethod
    def from_dict(cls, data: JsonDict) -> WorkerJob:
        """An entry of attached.json (as `to_dict` writes it; missing keys get defaults)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and v is not None}
        known.update(workers=tuple(known.get("workers", ())), groups=dict(known.get("groups", {})))
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """attached.json's entry: what every job has, the facts of a generation, what is set."""
        keys = ["job_id", "run_dir", "workers", "groups", "submitted_at"]
        keys += ["generation", "replaces", "reason"] if self.generation else []
        data = {k: getattr(self, k) for k in keys}
        later = ("ready_at", "drain_at", "removed_at", "ended", "error")
        data.update({k: getattr(self, k) for k in later if getattr(self, k)})
        return {**data, "workers": list(self.workers), "groups": dict(self.groups)}

    @property
    def removed(self) -> bool:
        """Recorded as holding no workers (removed by a scale-down, drained, seen ending)."""
        return bool(self.removed_at)
