"""autoscale=dynamo_planner on the Slurm testbed: NVIDIA Dynamo's own planner (environment:
virtual, .venvs/planner) runs as a head process on node 0 of the job next to the frontend, finds
the run's workers through its locked etcd (credentials from the environment, not argv), ticks
(`[summary] ... current: prefill=1 decode=1`), is restarted in place after kill -9 and ticks
again; `ctl logs RUN_DIR planner` shows it; stop leaves nothing. Real Slurm, etcd, Dynamo
frontend + mocker; carrying the decisions out is tests/slurm/test_e2e_autoscale.py's."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from orchestrator.core.tools import install_locations
from orchestrator.frontends.dynamo_planner import PYTHON
from tests import e2e
from tests.slurm.test_e2e_dynamo import start, stop_and_check_clean

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        not any(p.exists() for p in install_locations(PYTHON)),
        reason="scripts/install.sh --with-planner not run (scripts/test.sh runs it)",
    ),
]
TICK = "[summary]"  # the planner's line per adjustment interval (base._log_decision_summary)


def planner_pid(run_dir: Path) -> int:
    """The planner's Python process (not its bash start script or srun)."""
    found = [p.pid for p in e2e.engine_processes(run_dir, "dynamo.planner")]
    assert len(found) == 1, found
    return found[0]


def ticks(run_dir: Path) -> list[str]:
    return [ln for ln in (run_dir / "logs" / "planner.log").read_text().splitlines() if TICK in ln]


def test_the_planner_runs_next_to_the_frontend_and_restarts_in_place(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    job_id, run_dir = start(
        slurm_jobs,
        tmp_path / "run",
        "autoscale=dynamo_planner",
        "autoscale.interval_s=2",
        "autoscale.max_decode=2",
    )
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["autoscale"]["process"] == "planner" and plan["autoscale"]["namespace"] == "dynamo"
    st = e2e.state(run_dir)
    assert st["processes"]["planner"]["node"] == 0  # next to the frontend
    e2e.wait_for(lambda: ticks(run_dir), timeout=90, what="the planner's first tick")
    # It found the run's workers through the locked etcd: both counts come from discovery.
    assert "current: prefill=1 decode=1" in ticks(run_dir)[-1]
    old = planner_pid(run_dir)
    password = (run_dir / "secrets" / "etcd_password").read_text().strip()
    proc = next(p for p in e2e.engine_processes(run_dir, "dynamo.planner") if p.pid == old)
    assert proc.env["ETCD_AUTH_PASSWORD"] == password  # from the driver's environment ...
    assert all(password not in a for a in proc.argv)  # ... never on its command line
    assert password not in (run_dir / "planner" / "planner.json").read_text()
    assert Path(os.readlink(f"/proc/{old}/cwd")) == run_dir / "planner"  # its reports go there

    before = len(ticks(run_dir))
    os.kill(old, signal.SIGKILL)

    def back() -> bool:
        s = e2e.state(run_dir)
        assert s.get("phase") == "ready", s.get("error")
        p = s["processes"]["planner"]
        return p["state"] == "running" and len(p.get("restarts", [])) == 1 and not s["degraded"]

    e2e.wait_for(back, timeout=60, what="the planner restarted")
    # Its srun step is started; the new Python process comes a moment later.
    e2e.wait_for(
        lambda: [p for p in e2e.engine_processes(run_dir, "dynamo.planner") if p.pid != old],
        timeout=30,
        what="the new planner process",
    )
    assert planner_pid(run_dir) != old
    e2e.wait_for(
        lambda: len(ticks(run_dir)) > before + 1, timeout=90, what="ticks of the new planner"
    )
    assert "current: prefill=1 decode=1" in ticks(run_dir)[-1]
    logs = e2e.ctl("logs", str(run_dir), "planner", "-n", "20")  # ~6 lines per tick
    assert logs.returncode == 0 and TICK in logs.stdout, logs.stderr
    stop_and_check_clean(run_dir, job_id)
