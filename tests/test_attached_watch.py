"""The run's driver watches its attached jobs (orchestrator.elastic.jobwatch): an attached
job that ended without a scale-down (scancel, its node lost) is reported once with how it ended
and what still serves; state.json lists the attached jobs and every worker; Slurm is asked in
one call, and only when needed."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from orchestrator.ctl import status
from orchestrator.elastic.jobwatch import SLURM_EVERY_S, WATCH_EVERY_S, JobWatch
from orchestrator.plan.model import plan_to_dict
from orchestrator.plan.placeholders import Bindings, bind_plan
from orchestrator.run.entry import load_plan
from orchestrator.rundir import RunDir, write_json_atomic
from orchestrator.rundir.jobs import WorkerJobs
from orchestrator.runtime.state import StateFile
from orchestrator.slurm.client import SlurmClient
from tests.fake_slurm import FakeSlurm
from tests.fakes import FakeClock
from tests.test_scale import ETCD, scale_up, started_run


def run_driver_view(run_dir: Path) -> Any:
    """What the plugin touches on the run's driver; the run's workers are healthy on node1."""
    state = StateFile(run_dir)
    for name, host in (("prefill-0", "node1"), ("decode-0", "node1")):
        state.process(name, host=host, role=name.split("-")[0], state="healthy", probed=True)
    said: list[str] = []
    return SimpleNamespace(
        run_dir=run_dir,
        clock=FakeClock(),
        plan=RunDir(run_dir).bound_plan(),
        state=state,
        say=said.append,
        said=said,
    )


def started_attached(adir: Path, slurm: FakeSlurm, job_id: str, node: str) -> None:
    """The attached job runs on `node`: bound (GPUs 4-7), its worker healthy."""
    slurm.set_state(job_id, "RUNNING", nodes=[node])
    plan = load_plan(adir)
    bound = bind_plan(plan, Bindings(("10.77.0.12",), (node,), job_id, str(adir), 0))
    procs = [p for p in plan_to_dict(bound)["processes"]]
    for p in procs:
        p["env"]["CUDA_VISIBLE_DEVICES"] = "4,5,6,7"
    write_json_atomic(adir / "plan.bound.json", {**plan_to_dict(bound), "processes": procs})
    state = StateFile(adir)
    state.phase("ready")
    for p in plan.processes:
        state.process(p.name, host=node, role=p.role, state="healthy", probed=True)


def watched_run(tmp_path: Path) -> tuple[FakeSlurm, Path, str, Path, Any, JobWatch]:
    """A ready 1P1D run with one attached decode job (ready on node2), watched once."""
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD)
    job_id, adir = scale_up(run_dir, slurm, "decode.workers=2")
    started_attached(adir, slurm, job_id, "node2")
    d, watch = run_driver_view(run_dir), JobWatch(SlurmClient(slurm))
    watch.on_tick(d)
    return slurm, run_dir, job_id, adir, d, watch


def squeues(slurm: FakeSlurm) -> int:
    return len([c for c in slurm.calls_to("squeue") if "--steps" not in c])


def test_state_json_lists_attached_jobs_and_every_worker(tmp_path: Path) -> None:
    slurm, run_dir, job_id, adir, d, watch = watched_run(tmp_path)
    st = StateFile(run_dir).data
    run_job = st["job_id"]
    assert [(w["name"], w["group"], w["job_id"], w["host"], w["state"]) for w in st["workers"]] == [
        ("prefill-0", "prefill", run_job, "node1", "healthy"),
        ("decode-0", "decode", run_job, "node1", "healthy"),
        ("decode-1", "decode", job_id, "node2", "healthy"),
    ]
    assert st["workers"][2]["gpus"] == "4,5,6,7"
    assert st["attached"][0]["job_id"] == job_id and not st["attached"][0]["ended"]
    written = (run_dir / "state.json").stat().st_mtime_ns
    d.clock.sleep(WATCH_EVERY_S)
    watch.on_tick(d)  # nothing changed: state.json (maybe on a shared filesystem) not rewritten
    assert (run_dir / "state.json").stat().st_mtime_ns == written
    assert d.said == []


def test_slurm_is_asked_once_per_period_for_live_jobs(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD)
    for n in (2, 3):
        job_id, adir = scale_up(run_dir, slurm, f"decode.workers={n}")
        started_attached(adir, slurm, job_id, "node2")
    d, watch = run_driver_view(run_dir), JobWatch(SlurmClient(slurm))
    before = squeues(slurm)
    for _ in range(int(SLURM_EVERY_S / WATCH_EVERY_S) * 2):
        watch.on_tick(d)
        d.clock.sleep(WATCH_EVERY_S)
    assert squeues(slurm) - before == 2  # both jobs in one call, every SLURM_EVERY_S


def test_a_scancelled_attached_job_is_reported_once_with_what_still_serves(tmp_path: Path) -> None:
    slurm, run_dir, job_id, adir, d, watch = watched_run(tmp_path)
    # scancel: its driver got SIGTERM and recorded done; Slurm still cleans up for a moment.
    StateFile(adir).phase("done", reason="received SIGTERM")
    slurm.set_state(job_id, "COMPLETING")
    d.clock.sleep(WATCH_EVERY_S)
    watch.on_tick(d)
    assert d.said == []  # how it ended is not known yet
    slurm.set_state(job_id, "CANCELLED")
    for _ in range(3):
        d.clock.sleep(WATCH_EVERY_S)
        watch.on_tick(d)
    assert d.said == [
        f"attached job {job_id} ended (CANCELLED; its driver: done, received "
        "SIGTERM): decode-1 gone; still serving: prefill-0, decode-0"
    ]
    st = StateFile(run_dir).data
    assert st["attached_lost"] == [
        {
            "job_id": job_id,
            "slurm_state": "CANCELLED",
            "workers": ["decode-1"],
            "serving": ["prefill-0", "decode-0"],
        }
    ]
    assert [w["name"] for w in st["workers"]] == ["prefill-0", "decode-0"]
    assert st["attached"][0]["ended"] and st["attached"][0]["slurm_state"] == "CANCELLED"
    text, _ = status.status(run_dir, SlurmClient(slurm))
    assert f"attached: job {job_id} ended (CANCELLED; its driver: done)  decode-1" in text
    calls = len(slurm.calls)
    (adir / "state.json").unlink()  # settled: neither its state.json nor Slurm is read again
    d.clock.sleep(SLURM_EVERY_S)
    watch.on_tick(d)
    assert StateFile(run_dir).data["attached"][0]["phase"] == "done" and len(slurm.calls) == calls


def test_an_attached_job_lost_with_its_driver_is_found_through_slurm(tmp_path: Path) -> None:
    slurm, run_dir, job_id, adir, d, watch = watched_run(tmp_path)
    slurm.set_state(job_id, "NODE_FAIL")  # its state.json still says ready
    for _ in range(int(SLURM_EVERY_S / WATCH_EVERY_S) + 1):
        d.clock.sleep(WATCH_EVERY_S)
        watch.on_tick(d)
    assert len(d.said) == 1 and d.said[0].startswith(f"attached job {job_id} ended (NODE_FAIL")


def test_a_job_removed_by_scale_down_is_not_reported_as_lost(tmp_path: Path) -> None:
    slurm, run_dir, job_id, adir, d, watch = watched_run(tmp_path)
    WorkerJobs(run_dir).set(str(adir), removed_at=time.time())  # what ctl scale down records
    StateFile(adir).phase("done", reason="stop requested (ctl stop)")
    slurm.set_state(job_id, "COMPLETED")
    d.clock.sleep(SLURM_EVERY_S)
    watch.on_tick(d)
    assert d.said == [] and "attached_lost" not in StateFile(run_dir).data
    assert StateFile(run_dir).data["attached"][0]["removed"] is True
