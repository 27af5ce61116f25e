"""End to end on the Slurm testbed: `ctl stop` lets srun-started SGLang workers drain and exit 0.

Real SGLang drains and exits 0 on a SIGTERM to its server process alone, but crash-exits when
every process of its tree gets one: its scheduler children die first, the server logs "SIGQUIT
received ... one child failed", sleeps 5 s and SIGKILLs its tree (issue 26). `scancel
--signal=TERM JOB.STEP` reaches every process of the step (proctrack/cgroup here), so each step
runs the engine under the stop wrapper (orchestrator/slurm/stepwrap.py), which turns the
driver's SIGWINCH into a SIGTERM to the engine's leader alone. The SGLang test double starts a
scheduler child that behaves the same way (tests/doubles/double_lifecycle.py).

1 prefill + 1 decode (TP8, a node each) behind the real sglang-router on node 0.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.slurm.stepwrap import WRAPPER
from tests import e2e
from tests.slurm.test_e2e_router import DOUBLE, MODEL, in_squeue

pytestmark = pytest.mark.slurm

GRACE_S = 15.0  # the router's own graceful shutdown took 7-10 s here
CRASH_S = 5.0  # a crash-exit sleeps this long before its SIGKILL (SGLang's crash-dump wait)
BASE = [
    "+model=gpt_oss_120b",
    "frontend=sglang_router",
    "engine=sglang",
    "cluster=testbed",
    f"engine.python={DOUBLE}",
    "launcher=submitit",
    "readiness.timeout_s=120",
    "cluster.time_limit_min=10",
    "prefill.workers=1",
    "decode.workers=1",
    "decode.tp=8",
    "prefill.tp=8",
    "model.requires_equal_pd_tp=false",
    f"launcher.stop_grace_s={GRACE_S:g}",
]
WORKERS = ("prefill-0", "decode-0")


def phase_time(st: dict, phase: str) -> float:
    return float(next(t["t"] for t in st["timeline"] if t["phase"] == phase))


def wait_gone(pids: dict[int, str], *, timeout: float) -> dict[str, float]:
    """{name: time.time() when its process was gone} for every pid in `pids`."""
    gone: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(gone) < len(pids) and time.monotonic() < deadline:
        for pid, name in pids.items():
            if name not in gone and not Path(f"/proc/{pid}").exists():
                gone[name] = time.time()
        time.sleep(0.05)
    assert len(gone) == len(pids), (
        f"still running after {timeout:g} s: {set(pids.values()) - set(gone)}"
    )
    return gone


def test_ctl_stop_drains_srun_sglang_workers_to_exit_0(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    proc = e2e.cli([*BASE, f"run_dir={run_dir}"])
    if proc.stdout.split():
        slurm_jobs.append(proc.stdout.split()[0])
    assert proc.returncode == 0, proc.stderr
    job_id, _ = e2e.submit_output(proc)
    url = e2e.state(run_dir)["frontend_url"]
    assert e2e.chat(url, MODEL).strip()
    # Each worker runs a scheduler child, as real SGLang does: a step-wide SIGTERM would kill it.
    schedulers = [
        p
        for p in e2e.processes_mentioning(str(run_dir))
        if p.argv[-1:] == ["scheduler"] and "double_lifecycle.py" in p.argv[-2]
    ]
    assert sorted(p.env["ORCHESTRATOR_PROCESS"] for p in schedulers) == sorted(WORKERS)
    # ... and is started by the step's stop wrapper, named after its process.
    wrappers = [
        p.argv[3]
        for p in e2e.processes_mentioning(str(run_dir))
        if Path(p.argv[0]).name == "bash" and p.argv[1:3] == ["-c", WRAPPER]
    ]
    assert set(WORKERS) <= set(wrappers)
    engines = {
        p.pid: p.env["ORCHESTRATOR_PROCESS"]
        for p in e2e.engine_processes(run_dir, "sglang.launch_server")
    }
    stop = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.ctl", "stop", str(run_dir)],
        cwd=e2e.REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    gone_at = wait_gone(engines, timeout=GRACE_S + 10)
    _, err = stop.communicate(timeout=60)
    assert stop.returncode == 0, err
    st = e2e.state(run_dir)
    assert st["phase"] == "done", st.get("error")
    stopping = phase_time(st, "stopping")
    took = {name: round(t - stopping, 3) for name, t in gone_at.items()}
    print(
        f"engine exit after the driver began stopping: {took}; driver stop "
        f"{phase_time(st, 'done') - stopping:.3f} s"
    )
    for name in WORKERS:
        entry = st["processes"][name]
        log = (run_dir / "logs" / f"{name}.log").read_text(errors="replace")
        assert (entry["state"], entry["exit_code"]) == ("stopped", 0), (name, entry, log[-2000:])
        assert "Gracefully exiting" in log and "SIGQUIT" not in log, log[-2000:]
        assert took[name] < CRASH_S  # a crash-exit would take at least its 5-s sleep
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(lambda: not in_squeue(job_id), timeout=30, what=f"job {job_id} gone from squeue")
