"""Attempts of one run: a job that Slurm requeues (`scontrol requeue`, preemption with requeue)
comes back as the SAME run.

Slurm re-runs the batch script of a requeued job with the same job id and SLURM_RESTART_COUNT
incremented (sbatch and submitit alike: submitit's script re-runs the pickled job function), so
the driver starts again in the same run directory. Each start is recorded as an attempt; the
timeline and the logs are appended to, never reset. The previous attempt's outcome (phase,
reason/error, processes) moves into its attempt entry, so the new attempt starts clean.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from orchestrator.runtime.state import StateFile, now_iso

# Top-level fields that describe one attempt, not the run.
PER_ATTEMPT = (
    "processes",
    "error",
    "reason",
    "degraded",
    "canary",
    "workers_healthy_at",
    "benchmark",
)


def restart_count(env: Mapping[str, str]) -> int:
    """SLURM_RESTART_COUNT (0 on the first run, and outside Slurm)."""
    value = env.get("SLURM_RESTART_COUNT", "0").strip()
    return int(value) if value.isdigit() else 0


def begin_attempt(state: StateFile, env: Mapping[str, str]) -> int:
    """Record that a driver starts on this run; returns the attempt number (1 for the first).
    A later attempt archives what the previous one left in state.json under its entry."""
    attempts: list[dict[str, Any]] = state.data.setdefault("attempts", [])
    attempt = len(attempts) + 1
    if attempts:
        previous = attempts[-1]
        previous["outcome"] = {k: state.data[k] for k in ("phase", *PER_ATTEMPT) if k in state.data}
        for key in PER_ATTEMPT:
            state.data.pop(key, None)
        state.data["processes"] = {}
    job_id = env.get("SLURM_JOB_ID", "") or str(state.data.get("job_id", ""))
    attempts.append(
        {
            "attempt": attempt,
            "job_id": job_id,
            "started_at": now_iso(),
            "t": time.time(),
            "restart_count": restart_count(env),
        }
    )
    state.update(attempt=attempt)
    return attempt
