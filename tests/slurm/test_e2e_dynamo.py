"""End to end on the Slurm testbed: submitit launcher, driver, Dynamo frontend, etcd and the mocker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

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
]
# 2 decode (TP8, a whole node each) + 2 prefill (TP4, sharing the third node): 3 nodes, etcd.
THREE_NODES = [
    "prefill.workers=2",
    "decode.workers=2",
    "decode.tp=8",
    "prefill.tp=4",
    "model.requires_equal_pd_tp=false",
]


def start(jobs: list[str], run_dir: Path, *extra: str) -> tuple[str, Path]:
    proc = e2e.cli([*BASE, f"run_dir={run_dir}", *extra])
    if proc.stdout.split():
        jobs.append(proc.stdout.split()[0])
    assert proc.returncode == 0, proc.stderr
    job_id, out_dir = e2e.submit_output(proc)
    assert out_dir == run_dir
    assert "ready: http://" in proc.stderr  # progress and the URL go to stderr
    return job_id, run_dir


def stop_and_check_clean(run_dir: Path, job_id: str) -> None:
    res = e2e.ctl("stop", str(run_dir))
    assert res.returncode == 0, res.stderr
    st = e2e.state(run_dir)
    assert st["phase"] == "done", st
    assert all(p["state"] == "stopped" for p in st["processes"].values()), st["processes"]
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(
        lambda: e2e.job_state(job_id) == "COMPLETED", timeout=30, what="job COMPLETED in sacct"
    )


def test_reference_topology_serves_and_binds_gpus(slurm_jobs: list[str], tmp_path: Path) -> None:
    job_id, run_dir = start(slurm_jobs, tmp_path / "run")
    st = e2e.state(run_dir)
    assert st["phase"] == "ready" and st["job_id"] == job_id
    url = st["frontend_url"]
    assert url == f"http://{st['node_ips'][0]}:{e2e.frontend_port(run_dir)}"
    assert e2e.chat(url, MODEL).strip()
    assert e2e.chat(url, MODEL, stream=True).strip()
    mockers = e2e.engine_processes(run_dir, "dynamo.mocker")
    gpus = {
        p.argv[p.argv.index("--disaggregation-mode") + 1]: p.env["CUDA_VISIBLE_DEVICES"]
        for p in mockers
    }
    assert gpus == {"decode": "0,1,2,3", "prefill": "4,5,6,7"}
    for name in (
        "config.json",
        "plan.json",
        "plan.bound.json",
        "logs/frontend.log",
        "logs/decode-0.log",
    ):
        assert (run_dir / name).exists(), name
    stop_and_check_clean(run_dir, job_id)


def test_three_nodes_with_etcd_run_where_planned(slurm_jobs: list[str], tmp_path: Path) -> None:
    job_id, run_dir = start(slurm_jobs, tmp_path / "run", *THREE_NODES)
    st = e2e.state(run_dir)
    assert len(st["nodes"]) == 3
    assert set(st["processes"]) == {
        "etcd",
        "frontend",
        "decode-0",
        "decode-1",
        "prefill-0",
        "prefill-1",
    }
    for _ in range(4):  # round robin reaches every worker pair
        assert e2e.chat(st["frontend_url"], MODEL).strip()
    nodes = st["nodes"]
    bound = json.loads((run_dir / "plan.bound.json").read_text())["processes"]
    planned = {p["name"]: f"slurm-{nodes[p['node_index']]}" for p in bound if p["name"] != "etcd"}
    real = e2e.engine_processes(run_dir, "dynamo.mocker") + e2e.engine_processes(
        run_dir, "dynamo.frontend"
    )
    seen = {p.env["ORCHESTRATOR_PROCESS"]: e2e.netns_of(p.pid) for p in real}
    assert seen == planned
    assert planned["frontend"] == f"slurm-{nodes[0]}"
    stop_and_check_clean(run_dir, job_id)


def test_killed_decode_worker_fails_the_job_fast(slurm_jobs: list[str], tmp_path: Path) -> None:
    # restart=never: the exit fails the run (restarts: tests/slurm/test_e2e_restart.py).
    job_id, run_dir = start(slurm_jobs, tmp_path / "run", *THREE_NODES, "decode.restart=never")
    decode = [
        p
        for p in e2e.engine_processes(run_dir, "dynamo.mocker")
        if p.argv[p.argv.index("--disaggregation-mode") + 1] == "decode"
    ][0]
    os.kill(decode.pid, signal.SIGKILL)
    st = e2e.wait_for(
        lambda: (s := e2e.state(run_dir)).get("phase") == "failed" and s,
        timeout=20,
        what="phase failed",
    )
    assert "decode-" in st["error"] and "exited with code" in st["error"]
    assert "last 50 lines of" in st["error"] and "logs/decode-" in st["error"]
    failed_at = next(t["t"] for t in st["timeline"] if t["phase"] == "stopping")
    ready_at = next(t["t"] for t in st["timeline"] if t["phase"] == "ready")
    assert failed_at > ready_at
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(lambda: e2e.job_state(job_id) == "FAILED", timeout=30, what="job FAILED in sacct")


def test_scancel_stops_gracefully(slurm_jobs: list[str], tmp_path: Path) -> None:
    job_id, run_dir = start(slurm_jobs, tmp_path / "run")
    subprocess.run(["scancel", job_id], check=True)
    st = e2e.wait_for(
        lambda: (s := e2e.state(run_dir)).get("phase") in ("done", "failed") and s,
        timeout=30,
        what="final phase",
    )
    assert st["phase"] == "done", st.get("error")
    assert "SIGTERM" in st["reason"]
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")


def test_time_limit_signal_tears_down_before_slurm_kills(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    # 1-minute limit, SIGTERM to the driver 50 s before it (Slurm may send it up to a minute
    # early): the driver must stop everything itself, so the job ends COMPLETED, not TIMEOUT.
    run_dir = tmp_path / "run"
    proc = e2e.cli(
        [
            *BASE,
            f"run_dir={run_dir}",
            "wait=false",
            "cluster.time_limit_min=1",
            "readiness.timeout_s=10",
            "launcher.signal_before_limit_s=50",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    job_id, _ = e2e.submit_output(proc)
    slurm_jobs.append(job_id)
    st = e2e.wait_for(
        lambda: (s := e2e.state(run_dir)).get("phase") in ("done", "failed") and s,
        timeout=90,
        what="the driver to stop on the time-limit signal",
    )
    assert st["phase"] == "done" and "SIGTERM" in st["reason"], st
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    assert e2e.job_ended(job_id) == "COMPLETED"  # not TIMEOUT


def test_a_stop_signal_during_setup_is_not_lost(slurm_jobs: list[str], tmp_path: Path) -> None:
    # A signal seconds after the job starts, while the driver still looks up its nodes and runs
    # the preflight step (scancel; the time-limit warning, sent by slurmctld's 30-s time-limit
    # pass): submitit's own handler used to drop SIGTERM there, so the run served on until
    # Slurm killed it at the limit; under sbatch it killed the driver with state.json unended.
    run_dir = tmp_path / "run"
    proc = e2e.cli([*BASE, f"run_dir={run_dir}", "wait=false"])
    assert proc.returncode == 0, proc.stderr
    job_id, _ = e2e.submit_output(proc)
    slurm_jobs.append(job_id)
    e2e.wait_for(lambda: e2e.state(run_dir).get("driver_pid"), timeout=60, what="the driver")
    subprocess.run(["scancel", "--batch", "--signal=TERM", job_id], check=True)
    st = e2e.wait_for(
        lambda: (s := e2e.state(run_dir)).get("phase") in ("done", "failed") and s,
        timeout=30,
        what="the driver to stop on the signal",
    )
    assert st["phase"] == "done" and st["reason"] == "received SIGTERM", st
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    assert e2e.job_ended(job_id) == "COMPLETED"


def test_queued_job_is_reported_and_a_cancel_before_start_is_an_error(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    hold = (
        subprocess.run(
            [
                "sbatch",
                "--parsable",
                "--nodes=3",
                "--exclusive",
                f"--output={tmp_path}/hold-%j.out",
                "--wrap",
                "sleep 120",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .split(";")[0]
    )
    slurm_jobs.append(hold)
    run_dir = tmp_path / "run"
    cli = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *BASE, f"run_dir={run_dir}"],
        cwd=e2e.REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        job_id = cli.stdout.readline().strip() if cli.stdout else ""
        slurm_jobs.append(job_id)
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.extend(iter(cli.stderr.readline, "")), daemon=True
        )  # type: ignore[union-attr]
        reader.start()
        e2e.wait_for(
            lambda: any(f"job {job_id}: PENDING" in line for line in lines),
            timeout=30,
            what="the queued state on stderr",
        )
        subprocess.run(["scancel", job_id], check=True)
        cli.wait(timeout=60)
        reader.join(timeout=10)
        assert cli.returncode == 1
        assert any(
            f"job {job_id} ended (CANCELLED) in phase submitted" in line for line in lines
        ), lines
    finally:
        cli.kill()
