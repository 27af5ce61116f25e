#!/usr/bin/env python3
"""Fleets of stub workers on the Slurm testbed (issue 22; not a test: prints a table).

Each fleet is 3 nodes x N processes (N = 8, 64, 256 by default): aggregated stub workers
(tests/doubles/stub_worker.sh: one perl process serving /health and a canary answer, a few
MB each) behind sglang-router (or SMG: `--frontend smg`), launched through the real library
(compose, validate, plan, submitit). N > 8 puts N/8 workers on each fake GPU
(deployment.workers_per_gpu); their one-after-another start (orchestrator/plan/sharing.py:
SGLang sizes its memory from what is free at its start) is taken out of the plan here, since
stubs hold no GPU memory and the start order is not what is measured.

Measured per fleet:
- submit -> ready (the CLI's submit to state.json's `ready`) and job start -> ready (from the
  driver's `starting`: without the queue wait, which on the shared testbed depends on others);
- the driver's CPU (% of one core) and RSS over `--serve-s` seconds of serving;
- memory (RSS) on node 0 of everything of the run there: driver, srun clients, frontend, stubs;
- srun clients on node 0 (children of the driver);
- slurmctld RPCs (sdiag, all users: the testbed is shared) from submit to ready and per minute
  while serving;
- stop -> nothing left (ctl stop until no process mentions the run dir, on any node).

Usage: python benchmarks/fleet.py [--per-node 8 64 256] [--launch-per node|process]
                                  [--frontend sglang_router|smg]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator.api import Prepared, prepare  # noqa: E402  (after the sys.path insert)
from orchestrator.launch import launch  # noqa: E402
from orchestrator.launchers.select import Site  # noqa: E402
from tests.e2e import nothing_left, processes_mentioning  # noqa: E402

STUB = REPO / "tests" / "doubles" / "stub_worker.sh"
GPUS = 8
TICK = os.sysconf("SC_CLK_TCK")


def overrides(per_node: int, launch_per: str, run_dir: Path, frontend: str) -> list[str]:
    """3 nodes x `per_node` aggregated stub workers behind sglang-router (or SMG)."""
    return [
        "+model=gpt_oss_120b",
        f"frontend={frontend}",
        "engine=sglang",
        f"engine.python={STUB}",
        "deployment=aggregated",
        f"aggregated.workers={3 * per_node}",
        "aggregated.tp=1",
        f"deployment.workers_per_gpu={max(1, per_node // GPUS)}",
        "cluster=testbed",
        "launcher=submitit",
        f"cluster.launch_per={launch_per}",
        "readiness.timeout_s=600",
        "cluster.time_limit_min=30",
        f"run_dir={run_dir}",
        # 256 workers x 10 ports a node: below the ephemeral range and other jobs' blocks.
        "cluster.port_base=10000",
        "cluster.port_job_blocks=2",
    ]


def unchained(prepared: Prepared) -> Prepared:
    """The plan without the shared-GPU start order (stubs hold no GPU memory)."""
    procs = tuple(dataclasses.replace(p, start_after=()) for p in prepared.plan.processes)
    return dataclasses.replace(prepared, plan=dataclasses.replace(prepared.plan, processes=procs))


def rpc_count() -> int:
    """slurmctld's RPCs so far, all message types (sdiag)."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    section = out.split("Remote Procedure Call statistics by message type", 1)[-1]
    section = section.split("Remote Procedure Call statistics by user", 1)[0]
    return sum(int(n) for n in re.findall(r"count:(\d+)", section))


def cpu_s(pid: int) -> float:
    """utime + stime of `pid` in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float:
    """VmRSS of `pid` (0 when gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(found.group(1)) / 1024 if found else 0.0


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0


def node_pids(node: str) -> set[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", f"slurm-{node}"], capture_output=True, text=True, check=False
    ).stdout
    return {int(p) for p in out.split()}


def node0_view(run_dir: Path, driver: int, node: str) -> tuple[float, int]:
    """(RSS of the run's processes on node 0 in MiB, srun clients the driver holds)."""
    here = node_pids(node)
    mine = {p.pid for p in processes_mentioning(str(run_dir))} | {driver}
    srun = [p for p in here if parent(p) == driver and _comm(p) == "srun"]
    return sum(rss_mib(p) for p in (mine | set(srun)) & here), len(srun)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def one_fleet(per_node: int, launch_per: str, serve_s: float, frontend: str) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="orch-fleet-")) / "run"
    cfg = overrides(per_node, launch_per, run_dir, frontend)
    prepared = unchained(prepare(cfg, Site.detect()))
    print(f"run directory: {run_dir}", file=sys.stderr, flush=True)
    rpc0, t0 = rpc_count(), time.time()
    if launch(prepared) != 0:
        raise SystemExit(f"fleet of {per_node}/node did not get ready: see {run_dir}")
    rpc_ready = rpc_count()
    state = json.loads((run_dir / "state.json").read_text())
    at = {t["phase"]: t["t"] for t in state["timeline"]}
    driver, node0 = int(state["driver_pid"]), state["nodes"][0]
    cpu0, s0 = cpu_s(driver), time.time()
    time.sleep(serve_s)
    cpu1, s1, rpc_serve = cpu_s(driver), time.time(), rpc_count()
    mem, clients = node0_view(run_dir, driver, node0)
    row = {
        "processes": 3 * per_node,
        "launch_per": launch_per,
        "frontend": frontend,
        "submit_to_ready_s": at["ready"] - t0,
        "start_to_ready_s": at["ready"] - at["starting"],
        "driver_cpu_pct": 100 * (cpu1 - cpu0) / (s1 - s0),
        "driver_rss_mib": rss_mib(driver),
        "node0_rss_mib": mem,
        "srun_clients_node0": clients,
        "rpcs_submit_to_ready": rpc_ready - rpc0,
        "rpcs_per_min_serving": (rpc_serve - rpc_ready) * 60 / (s1 - s0),
    }
    t_stop = time.time()
    subprocess.run(
        [sys.executable, "-m", "orchestrator.ctl", "stop", str(run_dir)],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    while not nothing_left(run_dir):
        time.sleep(0.05)
    row["stop_to_nothing_left_s"] = time.time() - t_stop
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-node", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--launch-per", choices=("node", "process"), default="node")
    parser.add_argument("--serve-s", type=float, default=20.0)
    parser.add_argument("--frontend", choices=("sglang_router", "smg"), default="sglang_router")
    args = parser.parse_args()
    for i, n in enumerate(args.per_node):
        row = one_fleet(n, args.launch_per, args.serve_s, args.frontend)
        if not i:
            print("| " + " | ".join(row) + " |\n|" + "---|" * len(row), flush=True)
        print(
            "| "
            + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values())
            + " |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
