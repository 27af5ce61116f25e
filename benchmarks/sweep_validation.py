#!/usr/bin/env python3
"""Time sweep validation and planning (not a test: prints numbers).

Expands a sweep of N points (`prefill.workers` x `decode.workers` x `benchmark.seed`), then
composes, validates, plans and materializes every point exactly as `python -m orchestrator -m
... dry_run=true` does (orchestrator.sweep.run: expand, validate_points), and prints ms per point.
Nothing is submitted and no Slurm is needed (a fresh sweep directory has no jobs to query).

Usage: python benchmarks/sweep_validation.py [--points 256] [--engine mocker|sglang] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator.launchers.select import Site  # noqa: E402
from orchestrator.sweep import run as sweep  # noqa: E402  (after the sys.path insert)

SITE = Site(has_sbatch=True, allocation_job_id="")


def overrides(points: int, engine: str) -> list[str]:
    """A sweep of `points` points (a multiple of 16): 4 x 4 topologies x points/16 seeds."""
    if points % 16:
        raise SystemExit("--points must be a multiple of 16")
    frontend = ["frontend=sglang_router"] if engine == "sglang" else []
    return [
        "+model=gpt_oss_120b",
        f"engine={engine}",
        *frontend,
        "benchmark=aiperf",
        "benchmark.binary=aiperf",
        "benchmark.points=[{concurrency:2,isl:64,osl:16}]",
        "readiness.timeout_s=120",
        "cluster.time_limit_min=30",
        "prefill.workers=1,2,3,4",
        "decode.workers=1,2,3,4",
        f"benchmark.seed=range(0,{points // 16})",
    ]


def one_run(args: list[str]) -> tuple[int, float]:
    """(points validated, seconds) for one expansion + validation of every point."""
    started = time.perf_counter()
    points, options = sweep.expand(args)
    prepared = sweep.validate_points(points, SITE, options.get("sweep.baseline", ""))
    return len(prepared), time.perf_counter() - started


def main() -> int:
    """Print ms per point for each run and the median."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=256)
    parser.add_argument("--engine", default="mocker", choices=("mocker", "sglang"))
    parser.add_argument("--runs", type=int, default=3)
    ns = parser.parse_args()
    times = []
    for run in range(ns.runs):
        count, seconds = one_run(overrides(ns.points, ns.engine))
        times.append(seconds)
        print(
            f"run {run + 1}: {count} points in {seconds:.2f} s = {1000 * seconds / count:.1f} ms/point"
        )
    median = statistics.median(times)
    print(
        f"median: {median:.2f} s for {ns.points} points = {1000 * median / ns.points:.1f} ms/point "
        f"(engine={ns.engine})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
