"""On the Slurm testbed: `ctl scale` attaches a job with two more decode workers to a running
1P1D run (Dynamo with etcd discovery; sglang-router); the new workers serve through the run's
frontend; scaling back 1P3D -> 1P2D -> 1P1D removes single workers newest first (the attached
job ends with its last one) with no failed request in a loop running meanwhile; `ctl stop`
ends attached jobs with the run."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests

from tests import e2e

pytestmark = pytest.mark.slurm

MODEL = "openai/gpt-oss-120b"
BASE = [
    "+model=gpt_oss_120b",
    "engine=mocker",
    "cluster=testbed",
    "readiness.timeout_s=120",
    "cluster.time_limit_min=10",
    "launcher=submitit",
    "frontend.discovery=etcd",
]


def requests_served(run_dir: Path, name: str) -> int:
    """`dynamo_component_requests_total` of the generate endpoint on the worker's system port
    (the mocker logs no line per request at INFO; its metrics count them)."""
    bound = json.loads((run_dir / "plan.bound.json").read_text())
    health = next(p for p in bound["processes"] if p["name"] == name)["health"]["url"]
    text = requests.get(health.replace("/health", "/metrics"), timeout=5).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("dynamo_component_requests_total{")
        and 'dynamo_endpoint="generate"' in line
    )


def scale_down_under_load(
    run_dir: Path, url: str, steps: tuple[int, ...] = (2, 1)
) -> tuple[list[str], list[float], list[str]]:
    """decode.workers=N for each N of `steps` while a request loop runs: (ctl's lines, seconds
    each, results)."""
    lines, took = [], []
    with e2e.request_loop(url, MODEL) as results:
        for n in steps:
            e2e.wait_for(lambda n=n: len(results) >= 3 * n, timeout=30, what="requests meanwhile")  # type: ignore[misc]
            started = time.time()
            down = e2e.ctl("scale", str(run_dir), f"decode.workers={n}")
            took.append(round(time.time() - started, 2))
            assert down.returncode == 0, down.stderr
            lines += down.stdout.splitlines()
        seen = len(results)
        e2e.wait_for(lambda: len(results) >= seen + 3, timeout=30, what="requests after it")
    return lines, took, results


def test_scale_up_attaches_a_decode_job_that_serves_and_stops_with_the_run(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    proc = e2e.cli([*BASE, f"run_dir={run_dir}"])
    job_id, _ = e2e.submit_output(proc)
    slurm_jobs.append(job_id)
    assert proc.returncode == 0, proc.stderr
    st = e2e.state(run_dir)
    url = st["frontend_url"]

    started = time.time()
    res = e2e.ctl("scale", str(run_dir), "decode.workers=3")
    took = time.time() - started
    assert res.returncode == 0, res.stderr
    attached_job, attached_dir = res.stdout.split()
    slurm_jobs.append(attached_job)
    ast = e2e.state(Path(attached_dir))
    assert ast["phase"] == "ready" and set(ast["processes"]) == {"decode-1", "decode-2"}
    assert ast["nodes"][0] not in st["nodes"]  # the run's node is full: another node
    status = e2e.ctl("status", str(run_dir))
    assert f"attached: job {attached_job} ready  decode-1, decode-2" in status.stdout
    # Four GPU ids: which ones depends on what else shares the node (testbed: not exclusive).
    assert re.search(
        rf"decode-1 +decode +{ast['nodes'][0]}  gpus \d(,\d){{3}}  healthy", status.stdout
    )
    timeline = {t["phase"]: t["t"] for t in ast["timeline"]}
    print(
        json.dumps(
            {
                "scale_total_s": round(took, 2),
                "submit_to_driver_started_s": round(
                    timeline["starting"] - timeline["submitted"], 2
                ),
                "driver_started_to_healthy_s": round(
                    ast["workers_healthy_at"] - timeline["starting"], 2
                ),
                "ready_after_healthy_s": round(timeline["ready"] - ast["workers_healthy_at"], 2),
            }
        )
    )

    # Dynamo's round-robin router spreads requests over all three decode workers.
    for _ in range(6):
        assert e2e.chat(url, MODEL).strip()
    for name in ("decode-1", "decode-2"):
        assert requests_served(Path(attached_dir), name) >= 1, name
    assert requests_served(run_dir, "decode-0") >= 1

    # Scale back down while a request loop runs: single workers go, the run keeps serving.
    lines, took_s, results = scale_down_under_load(run_dir, url)
    assert lines[0].startswith(f"removed decode-2 (attached job {attached_job}) in "), lines
    assert lines[1].startswith(f"removed decode-1 (attached job {attached_job}) in "), lines
    assert lines[1].endswith("; the job ended: done")
    ast = e2e.state(Path(attached_dir))
    assert ast["phase"] == "done" and ast["reason"] == "every worker removed by scale-down"
    assert {p["state"] for p in ast["processes"].values()} == {"removed"}
    e2e.wait_for(
        lambda: e2e.nothing_left(Path(attached_dir)),
        timeout=30,
        what="no processes of the attached job",
    )
    print(
        json.dumps(
            {
                "scale_down_s": took_s,
                "requests": len(results),
                "failed": [r for r in results if r != "ok"],
            }
        )
    )
    assert all(r == "ok" for r in results), results
    assert "(removed by scale-down)" in e2e.ctl("status", str(run_dir)).stdout
    assert "attached_lost" not in e2e.state(run_dir)  # a scale-down is no loss

    stopped = e2e.ctl("stop", str(run_dir))
    assert stopped.returncode == 0, stopped.stderr
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    for job in (job_id, attached_job):
        e2e.wait_for(
            lambda j=job: e2e.job_state(j) == "COMPLETED",
            timeout=30,  # type: ignore[misc]
            what=f"job {job} COMPLETED in sacct",
        )


ROUTER = [
    "+model=gpt_oss_120b",
    "frontend=sglang_router",
    "engine=sglang",
    "cluster=testbed",
    f"engine.python={e2e.REPO / 'tests' / 'doubles' / 'sglang_test_double.py'}",
    "launcher=submitit",
    "readiness.timeout_s=120",
    "cluster.time_limit_min=10",
]


def decodes_listed(url: str, run_dir: Path) -> int:
    """Decode workers the router lists."""
    listed = requests.get(f"{url}/workers", headers=e2e.admin_auth(run_dir), timeout=5).json()
    return sum(w.get("worker_type") == "decode" for w in listed["workers"])


def test_router_scale_up_registers_the_attached_decode(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    run_dir, record = tmp_path / "run", tmp_path / "requests.jsonl"
    proc = e2e.cli([*ROUTER, f"run_dir={run_dir}", f"+engine.env.SGLANG_DOUBLE_RECORD={record}"])
    job_id, _ = e2e.submit_output(proc)
    slurm_jobs.append(job_id)
    assert proc.returncode == 0, proc.stderr
    url = e2e.state(run_dir)["frontend_url"]

    res = e2e.ctl("scale", str(run_dir), "decode.workers=3")
    assert res.returncode == 0, res.stderr
    attached_job, attached_dir = res.stdout.split()
    slurm_jobs.append(attached_job)
    ast = e2e.state(Path(attached_dir))
    assert ast["phase"] == "ready"
    assert all(ast["processes"][n]["registered"] is True for n in ("decode-1", "decode-2"))
    assert decodes_listed(url, run_dir) == 3

    def decode_served() -> set[str]:
        assert e2e.chat(url, MODEL).strip()
        lines = record.read_text().splitlines() if record.exists() else []
        names = {json.loads(line)["name"] for line in lines}
        return names if {"decode-0", "decode-1", "decode-2"} <= names else set()

    e2e.wait_for(decode_served, timeout=30, what="requests on all three decode workers")

    # One worker of the attached job goes (newest first); the job keeps the other.
    lines, took_s, results = scale_down_under_load(run_dir, url, steps=(2,))
    failed = [r for r in results if r != "ok"]
    print(json.dumps({"scale_down_s": took_s, "requests": len(results), "failed": failed}))
    assert failed == []
    assert len(lines) == 1 and lines[0].startswith(
        f"removed decode-2 (attached job {attached_job}) in "
    )
    assert decodes_listed(url, run_dir) == 2  # deregistered from the router
    assert e2e.state(Path(attached_dir))["processes"]["decode-2"]["state"] == "removed"
    serving = {"prefill-0", "decode-0", "decode-1"}
    e2e.wait_for(
        lambda: {w["name"] for w in e2e.state(run_dir)["workers"]} == serving,
        timeout=10,
        what=f"the run's state.json to list {serving}",
    )

    # Stopping the run stops its attached job too (first: it deregisters from the router).
    stopped = e2e.ctl("stop", str(run_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert f"attached job {attached_job}: stopped (done)" in stopped.stdout
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    for job in (job_id, attached_job):
        e2e.wait_for(
            lambda j=job: e2e.job_state(j) == "COMPLETED",
            timeout=30,  # type: ignore[misc]
            what=f"job {job} COMPLETED in sacct",
        )


def test_scale_down_removes_the_runs_own_newest_worker(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    """No attached job: the run's own decode-1 goes (deregistered, stopped, never restarted)."""
    run_dir, record = tmp_path / "run", tmp_path / "requests.jsonl"
    proc = e2e.cli(
        [
            *ROUTER,
            f"run_dir={run_dir}",
            "decode.workers=2",
            f"+engine.env.SGLANG_DOUBLE_RECORD={record}",
        ]
    )
    job_id, _ = e2e.submit_output(proc)
    slurm_jobs.append(job_id)
    assert proc.returncode == 0, proc.stderr
    url = e2e.state(run_dir)["frontend_url"]
    lines, took_s, results = scale_down_under_load(run_dir, url, steps=(1,))
    assert [r for r in results if r != "ok"] == []
    assert len(lines) == 1 and lines[0].startswith("removed decode-1 (the run's own job) in "), (
        lines
    )
    st = e2e.state(run_dir)
    assert st["phase"] == "ready" and st["processes"]["decode-1"]["state"] == "removed"
    assert decodes_listed(url, run_dir) == 1
    served = len(record.read_text().splitlines())
    for _ in range(3):
        assert e2e.chat(url, MODEL).strip()
    after = [json.loads(line)["name"] for line in record.read_text().splitlines()[served:]]
    assert "decode-1" not in after and "decode-0" in after, after
    assert "restart" not in (run_dir / "driver.log").read_text().split("removed decode-1")[-1]
    print(json.dumps({"scale_down_own_s": took_s, "requests": len(results)}))
    assert e2e.ctl("stop", str(run_dir)).returncode == 0
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
