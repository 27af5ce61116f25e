"""etcd survived on the Slurm testbed: kill -9 of a Dynamo run's etcd under 16 clients; the driver
restarts it in place on its data directory (same member, ports, auth), the workers keep their
leases (no worker restarts), the run stays `ready`. Real Slurm, etcd, Dynamo frontend + mocker."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import requests

from tests import e2e
from tests.slurm.test_e2e_dynamo import THREE_NODES, stop_and_check_clean
from tests.slurm.test_e2e_dynamo import start as start_dynamo
from tests.slurm.test_e2e_locks import etcd_url

pytestmark = pytest.mark.slurm
MODEL = "openai/gpt-oss-120b"


def etcd_pid(run_dir: Path) -> int:
    """The etcd server of the run (the binary itself, not srun or its env wrapper)."""
    found = [
        p.pid for p in e2e.processes_mentioning(str(run_dir)) if Path(p.argv[0]).name == "etcd"
    ]
    assert len(found) == 1, found
    return found[0]


def lease_ttls(run_dir: Path) -> dict[str, int]:
    """Each worker's primary lease (its instance id, read by the driver once it was healthy):
    its remaining TTL in the run's etcd, asked with the run's own credentials (-1: gone)."""
    etcd = etcd_url(run_dir)
    password = (run_dir / "secrets" / "etcd_password").read_text().strip()
    token = requests.post(
        f"{etcd}/v3/auth/authenticate", json={"name": "root", "password": password}, timeout=5
    ).json()["token"]
    ttls = {}
    for name, proc in e2e.state(run_dir)["processes"].items():
        for lease in proc.get("discovery_ids", []):
            answer = requests.post(
                f"{etcd}/v3/lease/timetolive",
                json={"ID": str(int(lease, 16))},
                headers={"Authorization": token},
                timeout=5,
            ).json()
            ttls[name] = int(answer.get("TTL", -1))
    return ttls


def mockers(run_dir: Path) -> dict[str, int]:
    """Each mocker worker's pid by its planned name."""
    return {
        p.env["ORCHESTRATOR_PROCESS"]: p.pid for p in e2e.engine_processes(run_dir, "dynamo.mocker")
    }


def test_killed_etcd_restarts_in_place_and_the_run_keeps_serving(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    job_id, run_dir = start_dynamo(slurm_jobs, tmp_path / "run", *THREE_NODES)
    st = e2e.state(run_dir)
    workers = mockers(run_dir)
    old = etcd_pid(run_dir)
    assert len(lease_ttls(run_dir)) == 4
    with e2e.client_loop(st["frontend_url"], MODEL, clients=16) as load:
        e2e.wait_for(lambda: len(load) >= 50, timeout=30, what="requests before the kill")
        os.kill(old, signal.SIGKILL)
        killed_at = time.time()

        def back() -> bool:
            s = e2e.state(run_dir)
            assert s.get("phase") == "ready", s.get("error")
            etcd = s["processes"]["etcd"]
            return etcd["state"] == "healthy" and len(etcd.get("restarts", [])) == 1

        e2e.wait_for(back, timeout=40, what="etcd restarted and healthy")
        healthy_at = time.time()
        sent = len(load)
        e2e.wait_for(lambda: len(load) >= sent + 200, timeout=60, what="requests after it")
    failed = [o for o in load if o.status != 200]
    numbers = {
        "requests": len(load),
        "after_kill": sum(o.sent >= killed_at for o in load),
        "etcd_back_s": round(healthy_at - killed_at, 2),
        "failed": len(failed),
        "failures_s": [(round(o.sent - killed_at, 2), o.status, o.detail[:80]) for o in failed][
            :20
        ],
    }
    print(json.dumps({"kill_-9_etcd_under_16_clients": numbers}))
    st = e2e.state(run_dir)
    assert st["phase"] == "ready" and etcd_pid(run_dir) != old
    # No worker restarted: each kept its lease through etcd's restart.
    assert mockers(run_dir) == workers, st["processes"]
    assert all(not st["processes"][n].get("restarts") for n in workers)
    # ... and their registrations are the same leases, alive in the restarted etcd.
    ttls = lease_ttls(run_dir)
    assert len(ttls) == 4 and all(ttl > 0 for ttl in ttls.values()), ttls
    assert "etcd: authentication already on" in (run_dir / "driver.log").read_text()
    assert not failed, numbers
    stop_and_check_clean(run_dir, job_id)
