"""Self-healing on the Slurm testbed: a killed worker restarts in place (same node, GPUs, ports)
while the others keep serving; sglang-router re-registration; multi-node units; exhaustion; and
a SIGKILLed driver leaves nothing on any node. Real Slurm, Dynamo frontend + etcd + mocker, and
the real sglang-router with the SGLang test double (tests/doubles/)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import e2e
from tests.slurm.test_e2e_dynamo import THREE_NODES
from tests.slurm.test_e2e_dynamo import start as start_dynamo
from tests.slurm.test_e2e_router import BASE as ROUTER
from tests.slurm.test_e2e_router import router_workers
from tests.slurm.test_e2e_router import start as start_router
from tests.slurm.test_e2e_scale import requests_served

pytestmark = pytest.mark.slurm
MODEL = "openai/gpt-oss-120b"
FAST = ["readiness.interval_s=0.1"]


def named(procs: list[e2e.OsProcess], name: str) -> e2e.OsProcess | None:
    found = [p for p in procs if p.env.get("ORCHESTRATOR_PROCESS") == name]
    return found[0] if len(found) == 1 else None


def chat_ok(url: str) -> bool:
    try:
        return bool(e2e.chat(url, MODEL).strip())
    except (AssertionError, OSError):
        return False


def healthy_again(run_dir: Path, name: str, restarts: int = 1) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = e2e.state(run_dir)
        assert st.get("phase") == "ready", st.get("error")
        p = st["processes"][name]
        done = p["state"] == "healthy" and len(p.get("restarts", [])) == restarts
        return st if done and not st["degraded"] else None

    return e2e.wait_for(check, timeout=40, what=f"{name} restarted and healthy")


def kill_under_load(
    run_dir: Path, name: str, load: list[e2e.Outcome]
) -> tuple[e2e.OsProcess, str, float]:
    """SIGKILL the mocker `name` while `load` runs; wait until it is healthy again and has been
    taken out of Dynamo's discovery (its lease revoked) at once. Returns the killed process, its
    network namespace (its node) and the time of the kill."""
    old = named(e2e.engine_processes(run_dir, "dynamo.mocker"), name)
    assert old is not None
    node = e2e.netns_of(old.pid)
    lease = e2e.state(run_dir)["processes"][name]["discovery_ids"]
    assert len(lease) == 1  # read from its /metrics once it was healthy
    e2e.wait_for(lambda: len(load) >= 50, timeout=30, what="requests before the kill")
    os.kill(old.pid, signal.SIGKILL)
    killed_at = time.time()
    restarts = len(e2e.state(run_dir)["processes"][name].get("restarts", []))
    healthy_again(run_dir, name, restarts + 1)
    log = (run_dir / "driver.log").read_text()
    assert f"{name} removed from Dynamo's discovery: etcd lease {lease[0]} revoked" in log, log
    # Back in Dynamo's routing: the new process's own counter moves.
    e2e.wait_for(
        lambda: requests_served(run_dir, name) >= 1,
        timeout=30,
        what=f"requests served by the restarted {name}",
    )
    sent_after = len(load)
    e2e.wait_for(lambda: len(load) >= sent_after + 50, timeout=30, what="requests after it")
    return old, node, killed_at


def late_failures(load: list[e2e.Outcome], killed_at: float) -> list[e2e.Outcome]:
    """Requests sent 1 s or more after the kill that failed: none may (only those on the dead
    worker, sent before it died or routed to it before its exit was seen, may fail)."""
    return [o for o in load if o.status != 200 and o.sent >= killed_at + 1.0]


def test_dynamo_killed_workers_restart_in_place_and_leave_discovery_at_once(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    # The default supervision interval (0.25 s): the purge follows the exit within it.
    job_id, run_dir = start_dynamo(slurm_jobs, tmp_path / "run", *THREE_NODES)
    st = e2e.state(run_dir)
    url = st["frontend_url"]
    numbers = {}
    with e2e.client_loop(url, MODEL, clients=16) as load:
        for name in ("decode-0", "prefill-0"):
            old, node, killed_at = kill_under_load(run_dir, name, load)
            # Chats take ~0.1 s: those in flight at the kill were sent within 1 s before it.
            failed = [o for o in load if o.status != 200 and o.sent >= killed_at - 1]
            numbers[name] = {
                "requests_after_kill": sum(o.sent >= killed_at for o in load),
                "failed": len(failed),
                "latest_failure_s": max(
                    (round(o.sent - killed_at, 2) for o in failed), default=None
                ),
                "late": [
                    (round(o.sent - killed_at, 2), o.status, o.detail[:80])
                    for o in late_failures(load, killed_at)
                ],
            }
            new = named(e2e.engine_processes(run_dir, "dynamo.mocker"), name)
            assert new is not None and new.pid != old.pid
            # Same node, GPUs and ports.
            assert e2e.netns_of(new.pid) == node
            assert new.argv == old.argv and new.env["DYN_SYSTEM_PORT"] == old.env["DYN_SYSTEM_PORT"]
            assert new.env["CUDA_VISIBLE_DEVICES"] == old.env["CUDA_VISIBLE_DEVICES"]
            assert e2e.state(run_dir)["phase"] == "ready"
    print(json.dumps({"kill_-9_under_16_clients": numbers}))
    assert all(not n["late"] for n in numbers.values()), numbers
    assert e2e.netns_of(new.pid) == f"slurm-{st['nodes'][2]}"  # prefill-0: the third node
    res = e2e.ctl("stop", str(run_dir))
    assert res.returncode == 0, res.stderr
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(lambda: e2e.job_state(job_id) == "COMPLETED", timeout=30, what="COMPLETED")


def test_router_prefill_re_registered_then_restarts_exhausted(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    job_id, run_dir, _ = start_router(slurm_jobs, tmp_path, *FAST, "deployment.max_restarts=1")
    url = e2e.state(run_dir)["frontend_url"]
    old_id = e2e.state(run_dir)["processes"]["prefill-1"]["router_id"]
    victim = named(e2e.engine_processes(run_dir, "sglang.launch_server"), "prefill-1")
    assert victim is not None
    os.kill(victim.pid, signal.SIGKILL)
    st = healthy_again(run_dir, "prefill-1")
    new_id = st["processes"]["prefill-1"]["router_id"]
    assert new_id != old_id and st["processes"]["prefill-1"]["registered"] is True

    def listed_healthy() -> bool:
        workers = {w["id"]: w for w in router_workers(url, run_dir)}
        return old_id not in workers and bool(workers.get(new_id, {}).get("is_healthy"))

    e2e.wait_for(listed_healthy, timeout=20, what="GET /workers: the new prefill-1 id healthy")
    assert chat_ok(url)
    # A second death within the window exceeds max_restarts=1: the run fails with every tail.
    again = e2e.wait_for(
        lambda: named(e2e.engine_processes(run_dir, "sglang.launch_server"), "prefill-1"),
        timeout=10,
        what="prefill-1 process",
    )
    os.kill(again.pid, signal.SIGKILL)
    st = e2e.wait_for(
        lambda: (s := e2e.state(run_dir)).get("phase") == "failed" and s,
        timeout=30,
        what="phase failed",
    )
    assert "prefill-1 (prefill)" in st["error"] and "restarts exhausted" in st["error"]
    assert "earlier exits of prefill-1:" in st["error"] and "(code 137)" in st["error"]  # srun's
    assert st["error"].count("[double prefill-1] SGLang test double") >= 2  # both tails
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(lambda: e2e.job_state(job_id) == "FAILED", timeout=30, what="job FAILED")


def start_multi_node(jobs: list[str], run_dir: Path, *extra: str) -> str:
    """decode-0 spanning nodes 0 and 1 (TP16, ranks decode-0 and decode-0-rank1), prefill-0 on
    node 2, behind sglang-router; returns the job id once ready."""
    base = [
        a
        for a in ROUTER
        if not a.startswith(("prefill.workers", "decode.workers", "decode.tp", "prefill.tp"))
    ]
    proc = e2e.cli([*base, f"run_dir={run_dir}", "decode.tp=16", "prefill.tp=8", *FAST, *extra])
    jobs.extend(proc.stdout.split()[:1])
    assert proc.returncode == 0, proc.stderr
    return e2e.submit_output(proc)[0]


def test_a_killed_rank_restarts_the_whole_multi_node_worker(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    job_id = start_multi_node(slurm_jobs, run_dir)
    doubles = e2e.engine_processes(run_dir, "sglang.launch_server")
    rank0, rank1 = named(doubles, "decode-0"), named(doubles, "decode-0-rank1")
    assert rank0 is not None and rank1 is not None
    rank1_ns = e2e.netns_of(rank1.pid)
    os.kill(rank1.pid, signal.SIGKILL)
    st = healthy_again(run_dir, "decode-0")
    assert len(st["processes"]["decode-0-rank1"]["restarts"]) == 1
    assert st["processes"]["decode-0"]["restarts"][0]["cause"] == "decode-0-rank1"
    doubles = e2e.engine_processes(run_dir, "sglang.launch_server")
    new0, new1 = named(doubles, "decode-0"), named(doubles, "decode-0-rank1")
    assert new0 is not None and new1 is not None
    assert {new0.pid, new1.pid}.isdisjoint({rank0.pid, rank1.pid})  # both ranks are new
    assert e2e.netns_of(new1.pid) == rank1_ns == f"slurm-{st['nodes'][1]}"
    assert chat_ok(st["frontend_url"])
    res = e2e.ctl("stop", str(run_dir))
    assert res.returncode == 0, res.stderr
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(lambda: e2e.job_state(job_id) == "COMPLETED", timeout=30, what="COMPLETED")


def test_sigkilled_driver_leaves_nothing_on_any_node(slurm_jobs: list[str], tmp_path: Path) -> None:
    job_id, run_dir = start_dynamo(slurm_jobs, tmp_path / "run", *THREE_NODES, *FAST)
    st = e2e.state(run_dir)
    assert len({e2e.netns_of(p.pid) for p in e2e.engine_processes(run_dir, "dynamo.mocker")}) == 3
    os.kill(int(st["driver_pid"]), signal.SIGKILL)  # the batch shell itself (exec'ed driver)
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=60, what="nothing left on any node")
    e2e.wait_for(
        lambda: e2e.job_state(job_id) not in ("", "RUNNING"), timeout=30, what="the job to end"
    )
    with pytest.raises(requests.RequestException):
        requests.get(f"{st['frontend_url']}/health", timeout=2)
