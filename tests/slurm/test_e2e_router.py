"""End to end on the Slurm testbed: frontend=sglang_router (the real sglang-router 0.3.2) with
engine=sglang, the SGLang workers being tests/doubles/sglang_test_double.py (a test double that
records the bootstrap fields of every request it receives).

2 prefill (TP4, sharing the third node) + 2 decode (TP8, a node each) = 3 nodes; the router on
node 0. Launched through the real CLI; every wait polls a condition against a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import e2e

pytestmark = pytest.mark.slurm

MODEL = "openai/gpt-oss-120b"
DOUBLE = e2e.REPO / "tests" / "doubles" / "sglang_test_double.py"
BASE = [
    "+model=gpt_oss_120b",
    "frontend=sglang_router",
    "engine=sglang",
    "cluster=testbed",
    f"engine.python={DOUBLE}",
    "launcher=submitit",
    "readiness.timeout_s=120",
    "cluster.time_limit_min=10",
    "prefill.workers=2",
    "decode.workers=2",
    "decode.tp=8",
    "prefill.tp=4",
    "model.requires_equal_pd_tp=false",
]
LATE_S = 4.0  # decode-1 keeps its port closed this long ("loading weights"), then warms up (503)
LATE_DECODE = [
    f"+decode.env.SGLANG_DOUBLE_LOAD_S={LATE_S:g}",
    "+decode.env.SGLANG_DOUBLE_WARMUP_S=2",
    "+decode.env.SGLANG_DOUBLE_ONLY=decode-1",
]


def start(jobs: list[str], tmp_path: Path, *extra: str) -> tuple[str, Path, Path]:
    """Launch through the CLI (returns once ready); (job id, run dir, record file)."""
    run_dir, record = tmp_path / "run", tmp_path / "requests.jsonl"
    proc = e2e.cli(
        [*BASE, f"run_dir={run_dir}", f"+engine.env.SGLANG_DOUBLE_RECORD={record}", *extra]
    )
    if proc.stdout.split():
        jobs.append(proc.stdout.split()[0])
    assert proc.returncode == 0, proc.stderr
    job_id, out_dir = e2e.submit_output(proc)
    assert out_dir == run_dir and "ready: http://" in proc.stderr
    return job_id, run_dir, record


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def by_room(path: Path) -> dict[int, list[dict[str, Any]]]:
    rooms: dict[int, list[dict[str, Any]]] = {}
    for rec in records(path):
        rooms.setdefault(rec["bootstrap_room"], []).append(rec)
    return rooms


def complete_rooms(
    path: Path, seen: set[int], count: int
) -> dict[int, list[dict[str, Any]]] | None:
    """The rooms not in `seen` once there are `count` of them, each with its two records."""
    rooms = {k: v for k, v in by_room(path).items() if k not in seen}
    return rooms if len(rooms) == count and all(len(v) == 2 for v in rooms.values()) else None


def router_workers(url: str, run_dir: Path) -> list[dict[str, Any]]:
    auth = e2e.admin_auth(run_dir)
    return list(requests.get(f"{url}/workers", headers=auth, timeout=5).json()["workers"])


def in_squeue(job_id: str) -> bool:
    res = subprocess.run(
        ["squeue", "-h", "-j", job_id], capture_output=True, text=True, check=False
    )
    return bool(res.stdout.strip())


def test_2p2d_router_ready_late_decode_fan_out_and_clean_stop(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    job_id, run_dir, record = start(slurm_jobs, tmp_path, *LATE_DECODE)
    st = e2e.state(run_dir)
    url = st["frontend_url"]
    assert (
        st["phase"] == "ready"
        and len(st["nodes"]) == 3
        and url == f"http://{st['node_ips'][0]}:{e2e.frontend_port(run_dir)}"
    )
    workers = {n: p for n, p in st["processes"].items() if n != "frontend"}
    assert set(workers) == {"prefill-0", "prefill-1", "decode-0", "decode-1"}
    # Every worker registered once, with the UUID the router lists it under, all healthy.
    listed = {w["url"]: w for w in router_workers(url, run_dir)}
    bound = {
        p["name"]: p for p in json.loads((run_dir / "plan.bound.json").read_text())["processes"]
    }
    for name, entry in workers.items():
        w = listed[bound[name]["url"]]
        assert entry["registered"] is True and entry["router_id"] == w["id"] and w["is_healthy"]
        assert w["worker_type"] == bound[name]["role"]
        assert w.get("bootstrap_port") == (
            bound[name]["bootstrap_port"] if name.startswith("prefill") else None
        )
    # The late decode still got registered, after the others, and the run became ready.
    late, others = (
        workers["decode-1"]["registered_at"],
        [workers[n]["registered_at"] for n in workers if n != "decode-1"],
    )
    assert late >= max(others) + LATE_S / 2
    ready_at = next(t["t"] for t in st["timeline"] if t["phase"] == "ready")
    assert ready_at >= late
    # Each chat completion reaches exactly one prefill and one decode with the same bootstrap room,
    # and the decode gets that prefill's host and bootstrap port (and reached it across nodes).
    seen_before = set(by_room(record))
    for stream in (False, True, False, True):
        assert e2e.chat(url, MODEL, stream=stream).strip()
    new = e2e.wait_for(
        lambda: complete_rooms(record, seen_before, 4),
        timeout=10,
        what="4 new rooms with a prefill and a decode record each",
    )
    prefill_ports = {bound[n]["bootstrap_port"] for n in ("prefill-0", "prefill-1")}
    for room, (a, b) in new.items():
        prefill, decode = (a, b) if a["mode"] == "prefill" else (b, a)
        assert (prefill["mode"], decode["mode"]) == ("prefill", "decode"), new[room]
        assert (decode["bootstrap_host"], decode["bootstrap_port"]) == (
            prefill["host"],
            prefill["own_bootstrap_port"],
        )
        assert prefill["bootstrap_port"] == prefill["own_bootstrap_port"] in prefill_ports
        assert decode["bootstrap_reachable"] is True
        assert decode["host"] != prefill["host"]  # decode on nodes 0/1, prefill on node 2
    # Stop: the run's router stops with its workers, so none is deleted from it one by one
    # (worker_api.router_stops_with_run); all marked unregistered, nothing left, job gone.
    res = e2e.ctl("stop", str(run_dir))
    assert res.returncode == 0, res.stderr
    st = e2e.state(run_dir)
    assert st["phase"] == "done", st.get("error")
    assert all(p["registered"] is False for n, p in st["processes"].items() if n != "frontend")
    router_log = re.sub(r"\x1b\[[0-9;]*m", "", (run_dir / "logs" / "frontend.log").read_text())
    assert "method=DELETE" not in router_log
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(lambda: not in_squeue(job_id), timeout=30, what=f"job {job_id} gone from squeue")


def test_killed_worker_fails_the_job_fast_with_its_log_tail(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    job_id, run_dir, _ = start(slurm_jobs, tmp_path, "prefill.restart=never")
    doubles = e2e.engine_processes(run_dir, "sglang.launch_server")
    assert sorted(p.env["ORCHESTRATOR_PROCESS"] for p in doubles) == [
        "decode-0",
        "decode-1",
        "prefill-0",
        "prefill-1",
    ]
    victim = next(p for p in doubles if p.env["ORCHESTRATOR_PROCESS"] == "prefill-1")
    assert str(DOUBLE) in victim.argv
    os.kill(victim.pid, signal.SIGKILL)
    st = e2e.wait_for(
        lambda: (s := e2e.state(run_dir)).get("phase") == "failed" and s,
        timeout=20,
        what="phase failed",
    )
    error = st["error"]
    assert "prefill-1 (prefill)" in error and "exited with code" in error
    assert "last 50 lines of" in error and "logs/prefill-1.log" in error
    assert "[double prefill-1] SGLang test double" in error  # the log tail itself
    stopping = next(t["t"] for t in st["timeline"] if t["phase"] == "stopping")
    ready = next(t["t"] for t in st["timeline"] if t["phase"] == "ready")
    assert stopping > ready
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(lambda: not in_squeue(job_id), timeout=30, what=f"job {job_id} gone from squeue")
    e2e.wait_for(lambda: e2e.job_state(job_id) == "FAILED", timeout=30, what="job FAILED in sacct")
