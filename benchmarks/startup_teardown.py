#!/usr/bin/env python3
"""Measure start-up and teardown on the Slurm testbed (not a test: prints numbers).

For each run it submits `python -m orchestrator ... engine=mocker cluster=testbed`, then measures:
- submit -> ready: from invoking the CLI to the `ready` phase in state.json;
- orchestrator overhead: from the moment the last worker's health endpoint really answered 200
  (observed independently here, polling every 10 ms) to `ready` (driver's detection delay, the
  frontend's readiness gate and the canary generation); goal < 0.5 s;
- stop -> nothing left: from `ctl stop` to no process mentioning the run directory on any node
  (the testbed's nodes share this host's process table); goal < 5 s.

Usage: python benchmarks/startup_teardown.py [--runs 5] [--topology reference|three-nodes]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e import nothing_left  # noqa: E402  (after the sys.path insert)

BASE = [
    "+model=gpt_oss_120b",
    "engine=mocker",
    "cluster=testbed",
    "readiness.timeout_s=120",
    "cluster.time_limit_min=10",
    "launcher=submitit",
]
TOPOLOGIES = {
    "reference": [],
    "three-nodes": [
        "prefill.workers=2",
        "decode.workers=2",
        "decode.tp=8",
        "prefill.tp=4",
        "model.requires_equal_pd_tp=false",
    ],
}


def watch_health(run_dir: Path, stop: threading.Event, healthy_at: dict[str, float]) -> None:
    """Record when each worker's health URL (from plan.bound.json) first answers 200."""
    session = requests.Session()
    session.trust_env = False
    urls: dict[str, str] = {}
    while not stop.is_set():
        if not urls and (run_dir / "plan.bound.json").exists():
            plan = json.loads((run_dir / "plan.bound.json").read_text())
            urls = {
                p["name"]: p["health"]["url"]
                for p in plan["processes"]
                if p["health"] and p["role"] in ("prefill", "decode", "worker")
            }
        for name, url in urls.items():
            if name in healthy_at:
                continue
            try:
                if session.get(url, timeout=0.5).status_code == 200:
                    healthy_at[name] = time.time()
            except requests.RequestException:
                pass
        time.sleep(0.01)


def one_run(topology: list[str]) -> dict[str, float]:
    run_dir = Path(tempfile.mkdtemp(prefix="orch-bench-")) / "run"
    stop, healthy_at = threading.Event(), {}
    watcher = threading.Thread(target=watch_health, args=(run_dir, stop, healthy_at), daemon=True)
    watcher.start()
    t0 = time.time()
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator", *BASE, *topology, f"run_dir={run_dir}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    stop.set()
    watcher.join()
    if res.returncode != 0:
        raise SystemExit(f"launch failed: {res.stderr}")
    state = json.loads((run_dir / "state.json").read_text())
    ready = next(t["t"] for t in state["timeline"] if t["phase"] == "ready")
    submitted = next(t["t"] for t in state["timeline"] if t["phase"] == "submitted")
    starting = next(t["t"] for t in state["timeline"] if t["phase"] == "starting")
    t_stop = time.time()
    subprocess.run(
        [sys.executable, "-m", "orchestrator.ctl", "stop", str(run_dir)],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    while not nothing_left(run_dir):
        time.sleep(0.02)
    gone = time.time()
    return {
        "submit_to_ready_s": ready - t0,
        "queue_and_job_start_s": starting - submitted,
        "last_worker_healthy_to_ready_s": ready - max(healthy_at.values()),
        "stop_to_nothing_left_s": gone - t_stop,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--topology", choices=sorted(TOPOLOGIES), default="reference")
    args = parser.parse_args()
    rows = [one_run(TOPOLOGIES[args.topology]) for _ in range(args.runs)]
    print(f"topology={args.topology} runs={args.runs}")
    print(f"{'metric':<34}{'min':>8}{'median':>8}{'max':>8}")
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(f"{key:<34}{min(values):8.3f}{statistics.median(values):8.3f}{max(values):8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
