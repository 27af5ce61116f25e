"""Restart bookkeeping of the driver: which processes restart together, when, and how often.

Pure: times come from the driver's Clock, so backoff and windows are tested with a FakeClock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.plan.model import Process
from orchestrator.runtime.logscan import hint_text
from orchestrator.runtime.processes import Running, log_tail
from orchestrator.runtime.state import now_iso

TAIL_LINES = 20  # log lines kept per restart in state.json

UnitKey = tuple[str, int]  # (group, worker_index)


def unit_key(proc: Process) -> UnitKey:
    """The restart unit of `proc`: every rank of one multi-node worker shares it (the ranks of
    a TP/EP group cannot rejoin one another; SGLang needs all of them started together)."""
    return (proc.group, proc.worker_index)


def unit_members(procs: Sequence[Process], key: UnitKey) -> list[Process]:
    """The processes of one unit in plan order (rank 0 first)."""
    return sorted((p for p in procs if unit_key(p) == key), key=lambda p: p.rank)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do about one exit: restart at `due` (clock time), or fail because of `refusal`."""

    due: float | None
    refusal: str = ""
    recent: int = 0  # restarts of this unit within the window before this one


@dataclass
class RestartBook:
    """Restart times per unit (for the window), pending restarts and their due times."""

    history: dict[UnitKey, list[float]] = field(default_factory=dict)
    pending: dict[UnitKey, float] = field(default_factory=dict)  # unit -> due clock time
    log: list[tuple[float, str]] = field(default_factory=list)  # (clock time, description)

    def decide(self, proc: Process, code: int, *, now: float) -> Decision:
        """Restart `proc`'s unit after an exit with `code`, or say why not."""
        policy = proc.restart
        if not policy.applies(code):
            return Decision(None, f"restart policy is {policy.mode!r}")
        recent = [t for t in self.history.get(unit_key(proc), []) if t > now - policy.window_s]
        if len(recent) >= policy.max_restarts:
            return Decision(
                None,
                f"restarts exhausted: {len(recent)} restart(s) within "
                f"{policy.window_s:g} s, max_restarts={policy.max_restarts}",
                len(recent),
            )
        return Decision(now + policy.backoff(len(recent)), recent=len(recent))

    def schedule(self, proc: Process, code: int, decision: Decision, *, now: float) -> None:
        """Remember a restart decided for `proc`'s unit."""
        assert decision.due is not None
        key = unit_key(proc)
        self.history.setdefault(key, []).append(now)
        self.pending[key] = decision.due
        self.log.append((now, f"{proc.name} exited with code {code}"))

    def due(self, now: float) -> list[UnitKey]:
        """Units whose backoff has passed."""
        return [key for key, at in self.pending.items() if at <= now]

    def since(self, t: float) -> list[str]:
        """Descriptions of the restarts decided at or after clock time `t`."""
        return [what for at, what in self.log if at >= t]


def restart_entry(running: Running, *, cause: str, exited: bool) -> dict[str, Any]:
    """state.json's record of one restart of `running`: when, its exit code (None for a rank
    stopped because `cause` died), the last lines of its log."""
    return {
        "at": now_iso(),
        "exit_code": running.exit_code if exited else None,
        "tail": log_tail(running.log, TAIL_LINES),
        "cause": cause,
    }


def exit_message(
    running: Running,
    code: int,
    refusal: str,
    earlier: Sequence[Mapping[str, Any]],
    detail: str = "",
) -> str:
    """The failure of an exit that is not restarted: who, where, why (`detail`: what the backend
    knows, such as a failed node), and every log tail (this exit's last 50 lines and those kept
    of each earlier exit)."""
    proc = running.proc
    why = f" ({refusal})" if refusal.startswith("restarts exhausted") else ""
    tails = "".join(
        f"\nexit {i} at {r['at']} (code {r['exit_code']}), last lines:\n{r['tail']}"
        for i, r in enumerate((r for r in earlier if r.get("cause") == proc.name), 1)
    )
    return (
        f"{proc.name} ({proc.role}) on {running.host} (node {proc.node_index}) exited with code "
        f"{code}{why}{detail}; last 50 lines of {running.log}:\n{log_tail(running.log)}"
        + (f"\nearlier exits of {proc.name}:{tails}" if tails else "")
        # Known fatal markers (CUDA OOM, NCCL, port in use, KV transfer) named with their line.
        + hint_text(proc.name, log_tail(running.log, 400))
    )


def gpu_neighbours(procs: Sequence[Process], proc: Process) -> list[str]:
    """The other workers that share a GPU with `proc` (deployment.workers_per_gpu > 1)."""
    if not proc.gpu_share:
        return []
    return [
        p.name
        for p in procs
        if p.name != proc.name
        and p.gpu_share
        and p.node_index == proc.node_index
        and set(p.gpus) & set(proc.gpus)
    ]


def shared_restart(procs: Sequence[Process], proc: Process, healthy: set[str]) -> Process | None:
    """`proc` as it restarts, or None while it must wait. A worker sharing its GPUs sizes its
    memory from what is free when it starts (orchestrator.plan.sharing): it waits for the
    workers planned before it, and takes its restart fraction (plan's `restart_args`) only when
    every neighbour is up; with one of them down too it starts as planned, and the neighbour,
    planned after it, waits for it."""
    if not set(proc.start_after) <= healthy:
        return None
    if proc.restart_args and set(gpu_neighbours(procs, proc)) <= healthy:
        return replace(proc, argv=proc.argv + proc.restart_args)
    return proc
