"""On the Slurm testbed: what happens to attached jobs (`ctl scale`) when something ends without
`ctl`: the run's driver killed with SIGKILL (no final phase written) -> the attached job notices
the run's stale heartbeat and ends by itself, leaving nothing on any node; a plain `scancel` of
an attached job -> the run keeps serving with the rest (no failed request) and reports it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests import e2e
from tests.slurm.test_e2e_scale import BASE, MODEL, ROUTER

pytestmark = pytest.mark.slurm

HEARTBEAT_S = 8  # launcher.heartbeat_timeout_s of these runs (default 60)


def scaled_run(
    slurm_jobs: list[str], tmp_path: Path, *extra: str, base: Sequence[str] = ROUTER
) -> tuple[Path, str, Path]:
    """A 1P1D run with one attached decode job: (run dir, attached job, its dir)."""
    run_dir = tmp_path / "run"
    proc = e2e.cli([*base, f"run_dir={run_dir}", *extra])
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
    ended = e2e.wait_for(
        lambda: e2e.state(adir).get("phase") in ("done", "failed") and e2e.state(adir),
        timeout=HEARTBEAT_S + 60,
        what="the attached job to end by itself",
    )
    took = time.time() - killed
    assert ended["phase"] == "done", ended
    assert "the run it attaches to has not beaten for" in ended["reason"]
    assert e2e.state(run_dir)["phase"] == "ready"  # nobody recorded the run's end
    print({"kill_to_attached_done_s": round(took, 1), "heartbeat_timeout_s": HEARTBEAT_S})
    for d in (adir, run_dir):
        e2e.wait_for(lambda d=d: e2e.nothing_left(d), timeout=30, what=f"no processes of {d}")  # type: ignore[misc]
    e2e.wait_for(
        lambda: e2e.job_state(attached_job) == "COMPLETED",
        timeout=30,
        what=f"attached job {attached_job} COMPLETED in sacct",
    )
    # ctl status works without the run's driver: attached.json and the attached job directly.
    status = e2e.ctl("status", str(run_dir))
    assert status.returncode == 1 and "lost" in status.stdout, (
        status.stdout
    )  # the run's job is gone
    assert (
        f"attached: job {attached_job} ended (COMPLETED; its driver: done)  decode-1"
        in status.stdout
    )


@pytest.mark.parametrize("base", [BASE, ROUTER], ids=["dynamo", "sglang_router"])
def test_scancel_of_an_attached_job_leaves_the_run_serving_and_is_reported(
    slurm_jobs: list[str], tmp_path: Path, base: list[str]
) -> None:
    run_dir, attached_job, adir = scaled_run(slurm_jobs, tmp_path, base=base)
    st = e2e.state(run_dir)
    url = st["frontend_url"]

    # state.json lists every worker: the run's own and the attached job's (job, node, GPUs).
    def listed() -> dict[str, dict[str, str]] | None:
        found = {w["name"]: w for w in e2e.state(run_dir).get("workers", [])}
        return found if found.get("decode-1", {}).get("state") == "healthy" else None

    workers = e2e.wait_for(listed, timeout=10, what="decode-1 healthy in the run's state.json")
    assert workers["decode-0"]["job_id"] == st["job_id"]
    assert workers["decode-1"]["job_id"] == attached_job
    assert workers["decode-1"]["host"] == e2e.state(adir)["nodes"][0]
    assert len(workers["decode-1"]["gpus"].split(",")) == 4
    assert [a["job_id"] for a in e2e.state(run_dir)["attached"]] == [attached_job]

    with e2e.request_loop(url, MODEL) as results:
        e2e.wait_for(lambda: len(results) >= 3, timeout=30, what="requests before the scancel")
        cancelled_at = time.time()
        subprocess.run(["scancel", attached_job], check=True)  # not ctl: Slurm alone
        lost = e2e.wait_for(
            lambda: e2e.state(run_dir).get("attached_lost"),
            timeout=30,
            what="the run's driver to report the attached job's end",
        )
        reported = time.time() - cancelled_at
        seen = len(results)
        e2e.wait_for(lambda: len(results) >= seen + 5, timeout=30, what="requests after it")
    failed = [r for r in results if r != "ok"]
    print(
        json.dumps(
            {
                "scancel_to_reported_s": round(reported, 2),
                "requests": len(results),
                "failed": failed,
            }
        )
    )
    assert failed == []
    assert lost == [
        {
            "job_id": attached_job,
            "slurm_state": "CANCELLED",
            "workers": ["decode-1"],
            "serving": ["prefill-0", "decode-0"],
        }
    ]
    st = e2e.state(run_dir)
    assert st["phase"] == "ready" and [w["name"] for w in st["workers"]] == [
        "prefill-0",
        "decode-0",
    ]
    log = (run_dir / "driver.log").read_text()
    assert f"attached job {attached_job} ended (CANCELLED" in log
    assert "decode-1 gone; still serving: prefill-0, decode-0" in log
    status = e2e.ctl("status", str(run_dir))
    assert f"attached: job {attached_job} ended (CANCELLED" in status.stdout, status.stdout
    e2e.wait_for(
        lambda: e2e.nothing_left(adir), timeout=30, what="no processes of the attached job"
    )
    assert e2e.ctl("stop", str(run_dir)).returncode == 0
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
