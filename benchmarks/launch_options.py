#!/usr/bin/env python3
"""How to start K processes on each of 3 testbed nodes (issue 22; not a test: prints a table).

Inside one allocation (salloc --no-shell), the same K x 3 sleeping processes are started by:
- process: one srun step per process (SrunBackend, what cluster.launch_per=process does);
- node: one srun step per node running our node agent (NodeBackend, cluster.launch_per=node);
- multi-prog: one srun step with K tasks per node (`srun --multi-prog`, Slurm's own fan-out).
Measured: launch -> every process running (seen in /proc), srun clients held, slurmctld RPCs
(sdiag, all users: the testbed is shared), and stop -> nothing left.

Usage: python benchmarks/launch_options.py [--per-node 8 64]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.fleet import parent, rpc_count  # noqa: E402  (after the sys.path insert)
from orchestrator.core.effects import SubprocessRunner, SystemClock  # noqa: E402
from orchestrator.plan.model import Process, SlurmRequest  # noqa: E402
from orchestrator.runtime.pernode import NodeBackend  # noqa: E402
from orchestrator.runtime.processes import Backend, SrunBackend, stop_tier  # noqa: E402

NODES = 3


def marked(marker: str) -> list[int]:
    """Pids of the sleeping processes of this measurement."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def sleepers(marker: str) -> int:
    """How many of the measurement's processes run (not their srun clients or wrappers)."""
    return sum(1 for p in marked(marker) if _comm(p) == "sleep")


def srun_clients(job: str) -> int:
    """srun clients of the allocation (srun's own helper child not counted)."""
    pids = {p for p in marked(f"--jobid={job}") if _comm(p) == "srun"}
    return sum(1 for p in pids if parent(p) not in pids)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def sleeper(name: str, node: int, marker: str) -> Process:
    return Process(
        name=name,
        role="worker",
        group="aggregated",
        worker_index=0,
        rank=0,
        node_index=node,
        gpus=(),
        ports={},
        env={},
        tier=2,
        argv=("sleep", f"{marker}"),
    )


def wait_for(check: Callable[[], bool], timeout: float = 300) -> float:
    start = time.time()
    while not check():
        if time.time() - start > timeout:
            raise SystemExit("timed out")
        time.sleep(0.02)
    return time.time() - start


def with_backend(kind: str, job: str, hosts: list[str], per_node: int) -> dict[str, float]:
    marker = f"100{per_node}{os.getpid() % 1000}"  # a sleep length nobody else uses
    req = SlurmRequest(job_name="x", nodes=NODES, gpus_per_node=8, time_limit_min=10)
    log_dir = Path(tempfile.mkdtemp(prefix="orch-launch-"))
    backend: Backend = (
        NodeBackend(req, job, hosts, SubprocessRunner(), python=sys.executable, log_dir=log_dir)
        if kind == "node"
        else SrunBackend(req, job, hosts, SubprocessRunner())
    )
    procs = [sleeper(f"p{n}-{i}", n, marker) for n in range(NODES) for i in range(per_node)]
    rpc0, t0 = rpc_count(), time.time()
    running = [backend.start(p, log_dir / f"{p.name}.log") for p in procs]
    wait_for(lambda: sleepers(marker) == len(procs))
    up, rpcs = time.time() - t0, rpc_count() - rpc0
    clients = srun_clients(job)
    t1 = time.time()
    stop_tier(backend, running, grace_s=10, clock=SystemClock())
    if isinstance(backend, NodeBackend):
        backend.close()
    wait_for(lambda: not marked(marker))
    return {"start_s": up, "srun_clients": clients, "rpcs": rpcs, "stop_s": time.time() - t1}


def multi_prog(job: str, per_node: int) -> dict[str, float]:
    marker = f"200{per_node}{os.getpid() % 1000}"
    conf = Path(tempfile.mkstemp(suffix=".conf")[1])
    conf.write_text(f"0-{NODES * per_node - 1} sleep {marker}\n")
    rpc0, t0 = rpc_count(), time.time()
    srun = subprocess.Popen(
        [
            "srun",
            f"--jobid={job}",
            "--overlap",
            f"--nodes={NODES}",
            f"--ntasks-per-node={per_node}",
            "--multi-prog",
            str(conf),
        ],
        start_new_session=True,
    )
    wait_for(lambda: sleepers(marker) == NODES * per_node or srun.poll() is not None)
    if srun.poll() is not None:  # e.g. more tasks than CPUs: "More processors requested"
        return {"start_s": float("nan"), "srun_clients": 0, "rpcs": 0, "stop_s": 0.0}
    up, rpcs = time.time() - t0, rpc_count() - rpc0
    t1 = time.time()
    srun.send_signal(signal.SIGTERM)  # srun passes it to every task of the step
    srun.wait()
    wait_for(lambda: not marked(marker))
    return {"start_s": up, "srun_clients": 1, "rpcs": rpcs, "stop_s": time.time() - t1}


def allocate() -> tuple[str, list[str]]:
    out = subprocess.run(
        ["salloc", f"-N{NODES}", "--no-shell", "--exclusive", "-t", "10"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    job = out.split("Granted job allocation ")[1].split()[0]
    nodes = subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True, text=True, check=True
    ).stdout.strip()
    hosts = subprocess.run(
        ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True
    ).stdout.split()
    return job, hosts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-node", type=int, nargs="+", default=[8, 64])
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # `timeout`: still release the job
    job, hosts = allocate()
    try:
        print(
            "| per node | option | start -> all running (s) | srun clients | slurmctld RPCs "
            "| stop (s) |\n|---|---|---|---|---|---|"
        )
        for k in args.per_node:
            for kind in ("process", "node", "multi-prog"):
                row = (
                    multi_prog(job, k)
                    if kind == "multi-prog"
                    else with_backend(kind, job, hosts, k)
                )
                print(
                    f"| {k} | {kind} | {row['start_s']:.2f} | {row['srun_clients']} | "
                    f"{row['rpcs']} | {row['stop_s']:.2f} |",
                    flush=True,
                )
    finally:
        subprocess.run(["scancel", job], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
