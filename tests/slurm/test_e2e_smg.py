"""End to end on the Slurm testbed: frontend=smg (the real Shepherd Model Gateway 1.13) with
engine=sglang, the SGLang workers being tests/doubles/sglang_test_double.py. The same assertions
as the sglang-router test (tests/slurm/test_e2e_router.py), plus SMG's admin key: registration,
readiness and deregistration work only with it, and it is written nowhere in the run directory.

2 prefill (TP4, sharing the third node) + 2 decode (TP8, a node each) = 3 nodes; SMG on node 0.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import e2e
from tests.slurm.test_e2e_router import (
    DOUBLE,
    LATE_DECODE,
    LATE_S,
    MODEL,
    by_room,
    complete_rooms,
    in_squeue,
)

pytestmark = pytest.mark.slurm

KEY_ENV = "ORCH_TEST_SMG_KEY"
SECRET = "smg-e2e-secret-7f3a"
BASE = [
    "+model=gpt_oss_120b",
    "frontend=smg",
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
    f"frontend.admin_key_env={KEY_ENV}",
]


def gateway_workers(url: str) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {SECRET}"}
    return list(requests.get(f"{url}/workers", headers=auth, timeout=5).json()["workers"])


def test_2p2d_smg_ready_late_decode_fan_out_and_clean_stop(
    slurm_jobs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)  # exported where the user launches
    run_dir, record = tmp_path / "run", tmp_path / "requests.jsonl"
    proc = e2e.cli(
        [*BASE, f"run_dir={run_dir}", f"+engine.env.SGLANG_DOUBLE_RECORD={record}", *LATE_DECODE]
    )
    if proc.stdout.split():
        slurm_jobs.append(proc.stdout.split()[0])
    assert proc.returncode == 0, proc.stderr
    job_id, _ = e2e.submit_output(proc)
    st = e2e.state(run_dir)
    url = st["frontend_url"]
    assert st["phase"] == "ready" and len(st["nodes"]) == 3
    assert requests.get(f"{url}/workers", timeout=5).status_code == 401  # the key is in force
    workers = {n: p for n, p in st["processes"].items() if n != "frontend"}
    listed = {w["url"]: w for w in gateway_workers(url)}
    bound = {
        p["name"]: p for p in json.loads((run_dir / "plan.bound.json").read_text())["processes"]
    }
    for name, entry in workers.items():
        w = listed[bound[name]["url"]]
        assert entry["registered"] is True and entry["router_id"] == w["id"]
        assert w["is_healthy"] and w["status"] == "ready"
        assert w["worker_type"] == bound[name]["role"]
        assert w.get("bootstrap_port") == (
            bound[name]["bootstrap_port"] if name.startswith("prefill") else None
        )
    late = workers["decode-1"]["registered_at"]
    assert late >= max(workers[n]["registered_at"] for n in workers if n != "decode-1") + LATE_S / 2
    assert next(t["t"] for t in st["timeline"] if t["phase"] == "ready") >= late
    # SMG's metrics on its own planned port, bound to the node address.
    metrics = bound["frontend"]["ports"]["metrics"]
    assert requests.get(f"http://{st['node_ips'][0]}:{metrics}/metrics", timeout=5).ok
    # Each completion: one prefill and one decode with the same bootstrap room, across nodes.
    seen_before = set(by_room(record))
    for stream in (False, True, False, True):
        assert e2e.chat(url, MODEL, stream=stream).strip()
    new = e2e.wait_for(
        lambda: complete_rooms(record, seen_before, 4),
        timeout=10,
        what="4 new rooms with a prefill and a decode record each",
    )
    for room, (a, b) in new.items():
        prefill, decode = (a, b) if a["mode"] == "prefill" else (b, a)
        assert (prefill["mode"], decode["mode"]) == ("prefill", "decode"), new[room]
        assert (decode["bootstrap_host"], decode["bootstrap_port"]) == (
            prefill["host"],
            prefill["own_bootstrap_port"],
        )
        assert decode["bootstrap_reachable"] is True and decode["host"] != prefill["host"]
    # Stop: SMG stops with its workers, so none is deleted one by one
    # (worker_api.router_stops_with_run; test_e2e_locks deletes a killed decode with the key);
    # nothing left, job gone; the key is nowhere on disk.
    res = e2e.ctl("stop", str(run_dir))
    assert res.returncode == 0, res.stderr
    st = e2e.state(run_dir)
    assert st["phase"] == "done", st.get("error")
    assert all(p["registered"] is False for n, p in st["processes"].items() if n != "frontend")
    log = re.sub(r"\x1b\[[0-9;]*m", "", (run_dir / "logs" / "frontend.log").read_text())
    assert "method=DELETE" not in log  # SMG 1.13 would log `method=DELETE path=/workers/<id>`
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in proc.stdout + proc.stderr
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(lambda: not in_squeue(job_id), timeout=30, what=f"job {job_id} gone from squeue")
    assert os.environ[KEY_ENV] == SECRET
