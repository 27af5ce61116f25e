"""A run's life on the Slurm testbed beyond the happy path (submitit launcher, Dynamo frontend and
the mocker): a killed driver is shown lost, ctl stop of a queued job cancels it at once, a requeued
job comes back as the same run, and a node set DOWN fails the run naming it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.core.effects import SubprocessRunner
from orchestrator.slurm.client import SlurmClient
from tests import e2e
from tests.slurm.test_e2e_dynamo import BASE, MODEL, THREE_NODES, start

pytestmark = pytest.mark.slurm


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=30)


def driver_process(run_dir: Path) -> e2e.OsProcess:
    """The batch shell: submitit's `exec python -m submitit.core._submit RUN_DIR/submitit`."""
    found = [p for p in e2e.processes_mentioning(str(run_dir)) if "submitit.core._submit" in p.argv]
    assert len(found) == 1, [p.argv for p in e2e.processes_mentioning(str(run_dir))]
    return found[0]


def test_killed_driver_is_shown_lost(slurm_jobs: list[str], tmp_path: Path) -> None:
    job_id, run_dir = start(slurm_jobs, tmp_path / "run")
    os.kill(driver_process(run_dir).pid, signal.SIGKILL)
    # Lost at once (COMPLETING: the batch script is over), then with the final state.
    res = e2e.wait_for(
        lambda: (
            (r := e2e.ctl("status", str(run_dir))).returncode == 1 and "(FAILED)" in r.stdout and r
        ),
        timeout=60,
        what="ctl status: lost, job FAILED",
    )
    assert f"job: {job_id} (FAILED)" in res.stdout
    assert f"lost: job {job_id} ended (FAILED) in phase ready" in res.stdout
    assert "last 20 lines of" in res.stdout and "ready: http://" in res.stdout  # driver.log tail
    assert e2e.state(run_dir)["phase"] == "ready"  # shown lost, never written
    # Slurm ends every step of a job whose batch shell died: nothing is left on any node.
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")


@pytest.fixture
def nodes_held(slurm_jobs: list[str], tmp_path: Path) -> Iterator[str]:
    """Every node taken by a plain job, so that the next job stays PENDING."""
    hold = sh(
        "sbatch",
        "--parsable",
        "--nodes=3",
        "--exclusive",
        f"--output={tmp_path}/hold-%j.out",
        "--wrap",
        "sleep 120",
    )
    assert hold.returncode == 0, hold.stderr
    job = hold.stdout.strip().split(";")[0]
    slurm_jobs.append(job)
    try:
        e2e.wait_for(lambda: e2e.job_state(job) == "RUNNING", timeout=30, what="hold job running")
        yield job
    finally:
        sh("scancel", job)


def test_stop_of_a_pending_job_cancels_it_within_seconds(
    slurm_jobs: list[str], tmp_path: Path, nodes_held: str
) -> None:
    run_dir = tmp_path / "run"
    proc = e2e.cli([*BASE, f"run_dir={run_dir}", "wait=false"])
    assert proc.returncode == 0, proc.stderr
    job_id, _ = e2e.submit_output(proc)
    slurm_jobs.append(job_id)
    assert SlurmClient(SubprocessRunner()).state(job_id).state == "PENDING"  # squeue
    began = time.monotonic()
    res = e2e.ctl("stop", str(run_dir))
    took = time.monotonic() - began
    assert res.returncode == 0 and "cancelled before start" in res.stdout, res.stdout + res.stderr
    assert took < 10, f"ctl stop took {took:.1f} s"
    st = e2e.state(run_dir)
    assert st["phase"] == "done" and st["reason"] == "cancelled before start"
    e2e.wait_for(lambda: e2e.job_state(job_id) == "CANCELLED", timeout=15, what="CANCELLED")
    sh("scancel", nodes_held)  # the nodes free up: the cancelled job must still never start
    assert not any(t["phase"] == "starting" for t in e2e.state(run_dir)["timeline"])
    assert not (run_dir / "driver.log").exists()


SILENT = Path(__file__).parent.parent / "doubles" / "silent_worker.py"


def test_stop_while_starting_stops_what_has_started(slurm_jobs: list[str], tmp_path: Path) -> None:
    # Workers that never become healthy keep the run in `starting`.
    run_dir = tmp_path / "run"
    proc = e2e.cli([*BASE, f"run_dir={run_dir}", "wait=false", f"engine.python={SILENT}"])
    assert proc.returncode == 0, proc.stderr
    job_id, _ = e2e.submit_output(proc)
    slurm_jobs.append(job_id)
    e2e.wait_for(
        lambda: len(e2e.engine_processes(run_dir, str(SILENT))) == 2,
        timeout=60,
        what="both silent workers running on their node",
    )
    assert e2e.state(run_dir)["phase"] == "starting"
    res = e2e.ctl("stop", str(run_dir))
    assert res.returncode == 0 and "stopped (done)" in res.stdout, res.stdout + res.stderr
    st = e2e.state(run_dir)
    assert "ready" not in [t["phase"] for t in st["timeline"]]
    assert {p["state"] for p in st["processes"].values()} == {"stopped"}, st["processes"]
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")


@pytest.mark.parametrize("launcher", ["submitit", "sbatch"])
def test_requeued_job_comes_back_as_the_same_run(
    slurm_jobs: list[str], tmp_path: Path, launcher: str
) -> None:
    # Both launchers' batch scripts run again on requeue (submitit's re-runs the pickled job).
    job_id, run_dir = start(slurm_jobs, tmp_path / "run", f"launcher={launcher}")
    assert [a["attempt"] for a in e2e.state(run_dir)["attempts"]] == [1]
    res = sh("scontrol", "requeue", job_id)
    assert res.returncode == 0, res.stderr
    # Slurm 22.05 holds a requeued job back for ~120 s (PENDING, reason BeginTime) once the old
    # run has been cleaned up; an operator may start it at once.
    e2e.wait_for(
        lambda: (
            sh("squeue", "-h", "-j", job_id, "-o", "%T %r").stdout.split()
            == ["PENDING", "BeginTime"]
        ),
        timeout=60,
        what="job requeued, held until BeginTime",
    )
    res = sh("scontrol", "update", f"jobid={job_id}", "StartTime=now")
    assert res.returncode == 0, res.stderr
    st = e2e.wait_for(
        lambda: (
            (s := e2e.state(run_dir)).get("phase") == "ready"
            and len(s.get("attempts", [])) == 2
            and s
        ),
        timeout=150,
        what="attempt 2 ready in the same run directory",
    )
    assert [(a["attempt"], a["job_id"], a["restart_count"]) for a in st["attempts"]] == [
        (1, job_id, 0),
        (2, job_id, 1),
    ]
    assert st["attempts"][0]["outcome"]["phase"] in ("done", "stopping", "ready")
    phases = [t["phase"] for t in st["timeline"]]
    assert phases.count("ready") == 2 and phases[-1] == "ready"  # appended, never reset
    assert (run_dir / "driver.log").read_text().count("ready: http://") == 2  # appended
    if launcher == "sbatch":  # --open-mode=append: the first attempt's output is kept
        assert (run_dir / f"slurm-{job_id}.out").read_text().count("ready: http://") == 2
    assert e2e.chat(st["frontend_url"], MODEL).strip()
    res = e2e.ctl("stop", str(run_dir))
    assert res.returncode == 0 and e2e.state(run_dir)["phase"] == "done", res.stderr
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")


def node_usable(node: str) -> bool:
    """Back in service and responding (idle, or already running someone else's job)."""
    return sh("sinfo", "-h", "-N", "-n", node, "-o", "%T").stdout.strip() in (
        "idle",
        "mixed",
        "allocated",
    )


def test_node_down_fails_the_run_naming_the_node(slurm_jobs: list[str], tmp_path: Path) -> None:
    job_id, run_dir = start(slurm_jobs, tmp_path / "run", *THREE_NODES)
    st = e2e.state(run_dir)
    lost = st["nodes"][1]  # not the batch host (node 0 runs the driver)
    victims = sorted(n for n, p in st["processes"].items() if p["node"] == 1)
    try:
        res = sh("scontrol", "update", f"nodename={lost}", "state=down", "reason=orchestrator-test")
        assert res.returncode == 0, res.stderr
        st = e2e.wait_for(
            lambda: (s := e2e.state(run_dir)).get("phase") == "failed" and s,
            timeout=30,
            what="phase failed",
        )
    finally:
        sh("scontrol", "update", f"nodename={lost}", "state=resume")  # no-op if already back
        e2e.wait_for(lambda: node_usable(lost), timeout=60, what=f"{lost} back in service")
    assert any(v in st["error"] for v in victims), st["error"]
    assert (
        f"node failure: {lost} (srun reported a node failure; removed from job {job_id}"
        in (st["error"])
    ), st["error"]
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    # (sacct keeps a RESIZING record for the 3-node allocation: ask the client, not e2e.job_state)
    client = SlurmClient(SubprocessRunner())
    e2e.wait_for(lambda: client.state(job_id).state == "FAILED", timeout=30, what="job FAILED")
    res = e2e.ctl("status", str(run_dir))
    assert res.returncode == 1 and lost in res.stdout
