"""On the Slurm testbed: what happens to attached jobs (`ctl scale`) when something ends without
`ctl`: the run's driver killed with SIGKILL (no final phase written) -> the attached job notices
the run's stale heartbeat and ends by itself, leaving nothing on any node."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests import e2e
from tests.slurm.test_e2e_scale import ROUTER

pytestmark = pytest.mark.slurm

HEARTBEAT_S = 8  # launcher.heartbeat_timeout_s of these runs (default 60)


def scaled_run(slurm_jobs: list[str], tmp_path: Path, *extra: str) -> tuple[Path, str, Path]:
    """A 1P1D sglang-router run with one attached decode job: (run dir, attached job, its dir)."""
    run_dir = tmp_path / "run"
    proc = e2e.cli([*ROUTER, f"run_dir={run_dir}", *extra])
    job_id, _ = e2e.submit_output(proc)
    slurm_jobs.append(job_id)
    assert proc.returncode == 0, proc.stderr
    res = e2e.ctl("scale", str(run_dir), "decode.workers=2")
    assert res.returncode == 0, res.stderr
    attached_job, attached_dir = res.stdout.split()
    slurm_jobs.append(attached_job)
    assert e2e.state(Path(attached_dir))["phase"] == "ready"
    return run_dir, attached_job, Path(attached_dir)


def test_an_attached_job_stops_itself_when_the_runs_driver_is_killed(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    run_dir, attached_job, adir = scaled_run(
        slurm_jobs, tmp_path, f"launcher.heartbeat_timeout_s={HEARTBEAT_S}"
    )
    st = e2e.state(run_dir)
    # The testbed's nodes share the host's PID namespace (network namespaces only): the driver
    # is submitit's job process there (python -m submitit.core._submit RUN_DIR/submitit).
    driver = e2e._read_proc(st["driver_pid"])
    assert driver is not None and str(run_dir) in " ".join(driver.argv), driver
    killed = time.time()
    os.kill(st["driver_pid"], signal.SIGKILL)  # no teardown, no final phase in state.json
    ended = e2e.wait_for(lambda: e2e.state(adir).get("phase") in ("done", "failed") and e2e.state(adir),
                         timeout=HEARTBEAT_S + 60, what="the attached job to end by itself")  # fmt: skip
    took = time.time() - killed
    assert ended["phase"] == "done", ended
    assert "the run it attaches to has not beaten for" in ended["reason"]
    assert e2e.state(run_dir)["phase"] == "ready"  # nobody recorded the run's end
    print({"kill_to_attached_done_s": round(took, 1), "heartbeat_timeout_s": HEARTBEAT_S})
    for d in (adir, run_dir):
        e2e.wait_for(lambda d=d: e2e.nothing_left(d), timeout=30, what=f"no processes of {d}")  # type: ignore[misc]
    e2e.wait_for(lambda: e2e.job_state(attached_job) == "COMPLETED", timeout=30,
                 what=f"attached job {attached_job} COMPLETED in sacct")  # fmt: skip
