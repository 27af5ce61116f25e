#!/usr/bin/env python3
"""Measure a worker restart on the Slurm testbed (not a test: prints numbers).

Each run launches the three-node topology (2 prefill + 2 decode, engine=mocker with Dynamo and
etcd, or engine=sglang with the SGLang test double behind sglang-router), starts a steady request
loop through the frontend (a fixed number of client threads, each one chat at a time), SIGKILLs
one worker and measures:
- kill -> detected: until the driver recorded the exit (the `at` of its restart entry);
- healthy -> counted: from the restarted worker's own health endpoint first answering 200
  (polled here every 10 ms) to the driver counting it healthy again in state.json; goal <= 0.5 s;
- healthy -> registered (router): the driver's health check passing -> POST /workers accepted
  (`healthy_at` -> `registered_at` in state.json);
- kill -> counted: the whole outage of that worker (backoff 1 s + start-up included);
- requests failed across the restart, and how many were in flight when the worker died (goal:
  only those routed to the dead worker fail).

Usage: python benchmarks/restart.py [--runs 3] [--frontend dynamo|router] [--clients 2]
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.loadgen import Load, stop_run, wait  # noqa: E402  (after the sys.path insert)
from tests.e2e import engine_processes, state  # noqa: E402

MODEL = "openai/gpt-oss-120b"
COMMON = [
    "+model=gpt_oss_120b",
    "cluster=testbed",
    "readiness.timeout_s=120",
    "readiness.interval_s=0.1",
    "cluster.time_limit_min=10",
    "launcher=submitit",
    "prefill.workers=2",
    "decode.workers=2",
    "decode.tp=8",
    "prefill.tp=4",
    "model.requires_equal_pd_tp=false",
]
DOUBLE = REPO / "tests" / "doubles" / "sglang_test_double.py"
SETUPS = {  # overrides, engine module to find the victim, victim
    "dynamo": (["engine=mocker"], "dynamo.mocker", "decode-0"),
    "router": (
        ["engine=sglang", "frontend=sglang_router", f"engine.python={DOUBLE}"],
        "sglang.launch_server",
        "prefill-1",
    ),
}


def iso_to_epoch(text: str) -> float:
    """state.json's `2026-12-02T01:28:07.897Z` -> seconds since the epoch."""
    base, _, ms = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + int(ms or 0) / 1000


def launch(frontend: str, run_dir: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator", *COMMON, *SETUPS[frontend][0], f"run_dir={run_dir}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if res.returncode != 0:
        raise SystemExit(f"launch failed: {res.stderr[-2000:]}")


def health_url(run_dir: Path, name: str) -> str:
    plan = json.loads((run_dir / "plan.bound.json").read_text())
    return str(next(p["health"]["url"] for p in plan["processes"] if p["name"] == name))


def one_run(frontend: str, clients: int) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="orch-restart-")) / "run"
    launch(frontend, run_dir)
    _, module, victim = SETUPS[frontend]
    try:
        url, probe = state(run_dir)["frontend_url"], health_url(run_dir, victim)
        pid = next(
            p.pid
            for p in engine_processes(run_dir, module)
            if p.env["ORCHESTRATOR_PROCESS"] == victim
        )
        with Load(url, clients) as load:
            wait(lambda: len(load.done) >= 20, 30, "20 requests before the kill")
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            # The dead process's port refuses at once; the restarted one answers after start-up.
            time.sleep(0.3)
            healthy = wait(lambda: _ok(probe) and time.time(), 60, f"{victim} health 200")
            entry = wait(lambda: _counted(run_dir, victim), 10, f"{victim} counted again")
            time.sleep(3.0)  # keep the load running across the rejoin
        after = [d for d in load.done if d[1] >= killed]
        in_flight = sum(1 for s, e, _ in load.done if s < killed <= e)
        detected = iso_to_epoch(entry["restarts"][0]["at"])
        counted = entry["_seen"]
        registered = entry.get("registered_at")
        return {
            "kill_to_detected_s": detected - killed,
            "healthy_to_counted_s": counted - healthy,
            # The driver's own clock: its health check passed -> POST /workers accepted.
            "healthy_to_registered_s": registered - entry["healthy_at"] if registered else 0.0,
            "kill_to_counted_s": counted - killed,
            "requests_after_kill": len(after),
            "failed": sum(1 for *_, why in after if why),
            # Failed requests sent once the restarted worker was healthy (its rejoin).
            "failed_after_healthy": sum(1 for t, _, ok in after if not ok and t >= healthy),
            "in_flight_at_kill": in_flight,
            "failed_in_flight": sum(1 for t, _, ok in after if not ok and t < killed),
            # When each failed request was sent, relative to the kill and to healthy again.
            "failures_sent_at_s": ",".join(f"{t - killed:+.2f}" for t, _, why in after if why),
            "healthy_at_s": healthy - killed,
        }
    finally:
        stop_run(run_dir, REPO)


SESSION = requests.Session()
SESSION.trust_env = False  # testbed addresses: never through a proxy


def _ok(url: str) -> bool:
    try:
        return SESSION.get(url, timeout=0.5).status_code == 200
    except requests.RequestException:
        return False


def _counted(run_dir: Path, name: str) -> dict[str, Any] | None:
    st = state(run_dir)
    entry = dict(st.get("processes", {}).get(name, {}))
    registered = entry.get("registered", True)  # only router runs have the key
    if (
        entry.get("state") == "healthy"
        and entry.get("restarts")
        and not st.get("degraded")
        and registered
    ):
        entry["_seen"] = time.time()
        return entry
    return None


def main() -> None:
    """Run, then print one line per run and the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--frontend", choices=sorted(SETUPS), default="dynamo")
    ap.add_argument("--clients", type=int, default=2)
    args = ap.parse_args()
    results = []
    for i in range(args.runs):
        r = one_run(args.frontend, args.clients)
        results.append(r)
        print(
            f"run {i + 1}: "
            + ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
            ),
            flush=True,
        )
    print(
        "median: "
        + ", ".join(
            f"{k}={statistics.median(r[k] for r in results):.3f}"
            for k in results[0]
            if not isinstance(results[0][k], str)
        )
    )


if __name__ == "__main__":
    main()
