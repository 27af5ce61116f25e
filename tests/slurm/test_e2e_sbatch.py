"""sbatch launcher, the serve.sbatch wrapper and salloc on the Slurm testbed: one driver for all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import e2e

pytestmark = pytest.mark.slurm

MODEL = "openai/gpt-oss-120b"
COMMON = [
    "+model=gpt_oss_120b",
    "engine=mocker",
    "cluster=testbed",
    "readiness.timeout_s=120",
    "cluster.time_limit_min=10",
]


def ready_state(run_dir: Path, timeout: float = 90) -> dict:
    def check() -> dict | None:
        st = e2e.state(run_dir)
        assert st.get("phase") != "failed", st.get("error")
        return st if st.get("phase") == "ready" else None

    return e2e.wait_for(check, timeout=timeout, what=f"{run_dir} ready")


def stop_clean(run_dir: Path) -> None:
    res = e2e.ctl("stop", str(run_dir))
    assert res.returncode == 0 and "stopped (done)" in res.stdout, res.stderr
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")


def test_sbatch_launcher_renders_submits_and_serves(slurm_jobs: list[str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    res = e2e.cli([*COMMON, "launcher=sbatch", f"run_dir={run_dir}"])
    slurm_jobs.extend(res.stdout.split()[:1])
    assert res.returncode == 0, res.stderr
    job_id, _ = e2e.submit_output(res)
    script = (run_dir / "job.sbatch").read_text()
    assert (
        "#SBATCH --nodes=1" in script and "exec " in script and "orchestrator.run.entry" in script
    )
    assert subprocess.run(["bash", "-n", str(run_dir / "job.sbatch")], check=False).returncode == 0
    st = e2e.state(run_dir)
    assert st["phase"] == "ready" and st["job_id"] == job_id
    assert e2e.chat(st["frontend_url"], MODEL).strip()
    stop_clean(run_dir)
    e2e.wait_for(lambda: e2e.job_state(job_id) == "COMPLETED", timeout=30, what="COMPLETED")


def test_serve_sbatch_wrapper_uses_its_allocation(slurm_jobs: list[str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = [
        "sbatch",
        "--parsable",
        "--nodes=1",
        "--gpus-per-node=8",
        f"--output={tmp_path}/slurm-%j.out",
        str(e2e.REPO / "scripts" / "serve.sbatch"),
        *COMMON,
        f"run_dir={run_dir}",
    ]
    res = subprocess.run(
        argv, capture_output=True, text=True, cwd=e2e.REPO, env=_with_python(), check=True
    )
    slurm_jobs.append(res.stdout.strip().split(";")[0])
    st = ready_state(run_dir)
    assert st["job_id"] == slurm_jobs[0]
    assert e2e.state(run_dir)["launcher"] == "allocation"
    assert e2e.chat(st["frontend_url"], MODEL).strip()
    stop_clean(run_dir)


def test_wrapper_rejects_an_allocation_too_small(slurm_jobs: list[str], tmp_path: Path) -> None:
    argv = [
        "salloc",
        "--nodes=1",
        "--gpus-per-node=4",
        sys.executable,
        "-m",
        "orchestrator",
        *COMMON,
        f"run_dir={tmp_path / 'run'}",
    ]
    res = subprocess.run(
        argv, capture_output=True, text=True, cwd=e2e.REPO, timeout=60, check=False
    )
    assert res.returncode == 2
    assert "has 4 GPU(s) per node; the plan needs 8" in res.stderr
    assert not (tmp_path / "run").exists()  # nothing created, nothing started


def test_salloc_runs_the_driver_in_the_foreground(slurm_jobs: list[str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = [
        "salloc",
        "--nodes=1",
        "--gpus-per-node=8",
        sys.executable,
        "-m",
        "orchestrator",
        *COMMON,
        f"run_dir={run_dir}",
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=e2e.REPO
    )
    try:
        st = ready_state(run_dir)
        slurm_jobs.append(st["job_id"])
        assert e2e.chat(st["frontend_url"], MODEL, stream=True).strip()
        stop_clean(run_dir)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.splitlines() == [st["job_id"], str(run_dir)]
    finally:
        proc.kill()


def _with_python() -> dict[str, str]:
    import os

    return {**os.environ, "ORCHESTRATOR_PYTHON": sys.executable}


def test_a_rejected_submission_is_reported_and_recorded(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    res = e2e.cli(
        [*COMMON, "launcher=sbatch", f"run_dir={run_dir}", "cluster.partition=nosuchpartition"]
    )
    assert res.returncode == 1
    assert "sbatch" in res.stderr and "invalid partition" in res.stderr.lower()
    assert res.stdout == ""  # no job id, no run directory announced
    st = e2e.state(run_dir)
    assert st["phase"] == "failed" and "invalid partition" in st["error"].lower()
