"""Scale-down of single workers: the driver holding them takes the request from its run directory
(orchestrator.elastic.retire), deregisters and stops them, marks them removed (never restarted, no
failure); an attached job with no workers left ends. And `ctl scale` picks them newest first
(orchestrator.elastic.scale_down)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.errors import InvalidConfig, OrchestratorError
from orchestrator.elastic import scale_down
from orchestrator.elastic.retire import attach_retire, request_retire
from orchestrator.plan.model import WorkerJobPlan
from orchestrator.run.driver import Driver
from orchestrator.rundir.jobs import WorkerJobs
from orchestrator.rundir.layout import RETIRE_FILE
from orchestrator.runtime.state import StateFile, progress_line
from tests.fake_slurm import FakeSlurm
from tests.fakes import FakeClock, FakeHttp
from tests.test_rollover import frontend_answers
from tests.test_runtime_units import READY, make_driver
from tests.test_scale import ETCD, scale_up, started_run


def routing(driver: Driver, capture: str) -> None:
    """The run's Dynamo frontend answers as captured (tests/fixtures/routes)."""
    assert isinstance(driver.http, FakeHttp)
    driver.http.script.update(frontend_answers(capture, driver.plan.readiness.frontend_url))


def serve_until(driver: Driver, t: float, *, at: float, names: list[str]) -> None:
    """Once ready: ask for the removal of `names` at clock time `at`, stop at `t`."""

    def ready(d: Driver) -> None:
        def wait(_event: threading.Event, s: float) -> bool:
            d.clock.sleep(s)
            if d.clock.now() >= at and not (d.run_dir / "asked").exists():
                (d.run_dir / "asked").touch()
                request_retire(d.run_dir, names)
            return d.stop_event.is_set() or d.clock.now() > t

        d.clock.wait = wait  # type: ignore[method-assign]

    driver.on_ready.append(ready)


def test_a_removed_worker_is_deregistered_stopped_and_never_restarted(
    plan_of: Any, tmp_path: Path
) -> None:
    driver, backend = make_driver(plan_of, tmp_path, FakeHttp(dict(READY)), "decode.workers=2")
    routing(driver, "all_routed")  # the frontend routes to other decodes
    attach_retire(driver)
    retired: list[str] = []
    driver.on_process_retired.append(lambda _d, r: retired.append(r.proc.name))
    serve_until(driver, 60, at=10, names=["decode-1"])
    assert driver.run() == 0  # served on with the rest, stopped at 60: no failure
    st = json.loads((tmp_path / "state.json").read_text())
    assert st["processes"]["decode-1"]["state"] == "removed" and st["reason"] != ""
    assert retired == ["decode-1"]  # deregistered (router: DELETE) before the stop
    assert backend.signals.count(("decode-1", "SIGTERM")) == 1  # not again at teardown
    assert backend.started.count("decode-1") == 1  # its exit was no crash: no restart
    assert st["processes"]["decode-0"]["state"] == "stopped"
    assert not (tmp_path / RETIRE_FILE).exists()
    removed = {
        "decode-0": {"probed": True, "role": "decode", "state": "healthy"},
        "decode-1": {"probed": True, "role": "decode", "state": "removed"},
    }
    assert progress_line({"phase": "ready", "processes": removed}) == "ready: decode 1/1"


def test_a_scale_down_waits_until_the_frontend_routes_to_another_worker_of_the_role(
    plan_of: Any, tmp_path: Path
) -> None:
    driver, _ = make_driver(plan_of, tmp_path, FakeHttp(dict(READY)), "prefill.workers=2")
    routing(driver, "prefill_not_routed")  # captured: a prefill listed, no request routed to it
    said: list[str] = []
    driver.say = said.append  # type: ignore[method-assign]
    attach_retire(driver)

    def routed_later(d: Driver) -> None:  # 3 s after the request (readiness.timeout_s=5)
        if d.clock.now() >= 13:
            routing(driver, "new_prefill_routed")

    driver.on_tick.append(routed_later)
    deregistered: list[float] = []
    driver.on_process_retired.append(lambda d, _r: deregistered.append(d.clock.now()))
    serve_until(driver, 20, at=10, names=["prefill-1"])
    assert driver.run() == 0
    st = json.loads((tmp_path / "state.json").read_text())
    assert st["processes"]["prefill-1"]["state"] == "removed"
    assert deregistered and deregistered[0] >= 13  # not before the frontend routed to another
    canaries = [c for c in driver.http.calls if c.url.endswith("/v1/chat/completions")]
    assert len(canaries) > 2  # one per look while it waited (the readiness canary is one)
    assert any(
        "scale-down of prefill-1 waits: the frontend routes to no other worker of prefill" in m
        for m in said
    )


def test_a_scale_down_is_refused_while_the_frontend_has_no_other_worker_of_the_role(
    plan_of: Any, tmp_path: Path
) -> None:
    driver, _ = make_driver(plan_of, tmp_path, FakeHttp(dict(READY)), "prefill.workers=2")
    routing(driver, "no_prefill")  # captured: no prefill instance at all
    said: list[str] = []
    driver.say = said.append  # type: ignore[method-assign]
    attach_retire(driver)
    serve_until(driver, 60, at=10, names=["prefill-1"])
    assert driver.run() == 0
    st = json.loads((tmp_path / "state.json").read_text())
    assert st["processes"]["prefill-1"]["state"] == "stopped"  # served on until the run's end
    assert any(
        m.startswith("warning: not removing prefill-1 (scale-down)") and "they keep serving" in m
        for m in said
    )


def test_an_attached_job_with_no_workers_left_ends(plan_of: Any, tmp_path: Path) -> None:
    run_dir, own = tmp_path / "run", tmp_path / "attached"
    run_dir.mkdir(), own.mkdir()
    StateFile(run_dir).phase("ready")
    driver, _ = make_driver(plan_of, own, FakeHttp(dict(READY)))
    driver.plan = dataclasses.replace(driver.plan, job=WorkerJobPlan(run_dir=str(run_dir)))
    routing(driver, "all_routed")  # the run's other jobs' workers are routed
    attach_retire(driver)
    serve_until(driver, 600, at=10, names=["decode-0", "prefill-0"])
    assert driver.run() == 0
    st = json.loads((own / "state.json").read_text())
    assert st["phase"] == "done" and st["reason"] == "every worker removed by scale-down"
    assert driver.clock.now() < 600  # ended at once, not at the end of its time


def removal(run_dir: Path, **counts: int) -> list[tuple[str, tuple[str, ...], bool]]:
    return [(r.holder.job_id, r.workers, r.whole) for r in scale_down.plan_removal(run_dir, counts)]


def test_scale_down_removes_single_workers_newest_first(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD)
    first, adir = scale_up(run_dir, slurm, "decode.workers=2")
    second, bdir = scale_up(run_dir, slurm, "decode.workers=4", "prefill.workers=2")
    StateFile(bdir).phase("starting")
    with pytest.raises(InvalidConfig, match="not serving yet"):  # its driver waits for all
        removal(run_dir, decode=3)
    for d in (adir, bdir):
        StateFile(d).phase("ready")
    assert removal(run_dir, decode=3) == [(second, ("decode-3",), False)]
    assert removal(run_dir, decode=2, prefill=1) == [
        (second, ("decode-3", "decode-2", "prefill-1"), True)
    ]
    assert removal(run_dir, decode=1) == [
        (second, ("decode-3", "decode-2"), False),
        (first, ("decode-1",), True),
    ]
    assert removal(run_dir, decode=4) == []  # nothing shrinks: a scale-up (or no-op)
    with pytest.raises(InvalidConfig, match="separate commands"):
        removal(run_dir, decode=2, prefill=3)


def test_the_runs_own_workers_go_last_and_removed_ones_do_not_count(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD, "decode.workers=2")
    run_job = StateFile(run_dir).data["job_id"]
    assert removal(run_dir, decode=1) == [(run_job, ("decode-1",), False)]
    StateFile(run_dir).process("decode-1", state="removed")
    assert scale_down.current_counts(run_dir) == {"prefill": 1, "decode": 1}
    _, adir = scale_up(run_dir, slurm, "decode.workers=2")  # the name is free again
    assert json.loads((adir / "plan.json").read_text())["processes"][0]["name"] == "decode-1"


def fake_driver_of(adir: Path, phase: str) -> threading.Thread:
    """The attached job's driver, as far as ctl sees it: takes the request, records removals."""

    def run() -> None:
        deadline = time.monotonic() + 10
        while not (adir / RETIRE_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        state = StateFile(adir)
        for name in json.loads((adir / RETIRE_FILE).read_text())["workers"]:
            state.process(name, state="removed")
        (adir / RETIRE_FILE).unlink()
        if phase:
            state.phase(phase, reason="every worker removed by scale-down")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_ctl_waits_for_the_removal_and_says_what_was_removed(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD)
    job_id, adir = scale_up(run_dir, slurm, "decode.workers=2")
    StateFile(adir).phase("ready")
    removals = scale_down.plan_removal(run_dir, {"decode": 1})
    driver = fake_driver_of(adir, "done")
    (line,) = scale_down.remove(run_dir, removals)
    driver.join()
    assert line.startswith(f"removed decode-1 (attached job {job_id}) in ")
    assert line.endswith("; the job ended: done")
    assert WorkerJobs(run_dir).live() == []  # marked removed: not reported as lost
    _, again = scale_up(run_dir, slurm, "decode.workers=2")
    assert again.name == "2"


class DriverAt(FakeClock):
    """ctl's clock; the job's driver records the removal once it reads `at` seconds."""

    def __init__(self, adir: Path, at: float) -> None:
        super().__init__()
        self.adir, self.at = adir, at

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.t >= self.at and (self.adir / RETIRE_FILE).exists():
            for name in json.loads((self.adir / RETIRE_FILE).read_text())["workers"]:
                StateFile(self.adir).process(name, state="removed")


def test_ctl_waits_for_the_removal_on_its_clock(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD, "decode.workers=2")
    removals = scale_down.plan_removal(run_dir, {"decode": 1})  # the run's own decode-1
    (line,) = scale_down.remove(run_dir, removals, DriverAt(run_dir, 3.0))
    assert line == "removed decode-1 (the run's own job) in 3.0 s"
    (removal,) = scale_down.plan_removal(run_dir, {"decode": 0})
    clock = FakeClock()  # its driver never answers: ctl gives up after the grace and a margin
    with pytest.raises(OrchestratorError, match=r"not removed within 80 s: decode-0 \(see "):
        scale_down.remove(run_dir, [removal], clock)
    assert removal.holder.grace_s + scale_down.WAIT_MARGIN_S == 80 <= clock.t < 80.5
