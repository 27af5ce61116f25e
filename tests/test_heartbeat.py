"""The driver's heartbeat and an attached job's watch over its run (orchestrator.runtime.heartbeat):
an attached job stops itself when its run ended, or when the run's driver stopped beating (killed
without writing a final phase), measured on the attached driver's own clock."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from orchestrator.plan.model import WorkerJobPlan
from orchestrator.rundir.layout import HEARTBEAT_FILE
from orchestrator.runtime.heartbeat import (
    BEAT_EVERY_S,
    Beat,
    RunWatch,
    attach_heartbeat,
)
from orchestrator.runtime.state import StateFile
from tests.fakes import FakeClock, FakeHttp
from tests.test_runtime_units import READY, make_driver


def view(run_dir: Path, clock: FakeClock) -> Any:
    stops: list[str] = []
    return SimpleNamespace(
        run_dir=run_dir,
        clock=clock,
        stops=stops,
        say=lambda _m: None,
        request_stop=stops.append,
        state=StateFile(run_dir),
    )


def set_mtime(run_dir: Path, seconds: float) -> None:
    """The file server's clock: unrelated to the attached driver's (skew of hours is fine)."""
    path = run_dir / HEARTBEAT_FILE
    path.touch()
    os.utime(path, ns=(int(seconds * 1e9), int(seconds * 1e9)))


def test_a_driver_touches_its_heartbeat_every_few_seconds(tmp_path: Path) -> None:
    clock, beat = FakeClock(), Beat()
    d = view(tmp_path, clock)
    beat.on_tick(d)
    assert (tmp_path / HEARTBEAT_FILE).exists()
    set_mtime(tmp_path, 1000)
    clock.sleep(BEAT_EVERY_S / 2)
    beat.on_tick(d)  # not due: state.json and the heartbeat may be on a shared filesystem
    assert os.stat(tmp_path / HEARTBEAT_FILE).st_mtime == 1000
    clock.sleep(BEAT_EVERY_S / 2)
    beat.on_tick(d)
    assert os.stat(tmp_path / HEARTBEAT_FILE).st_mtime != 1000


def test_a_stale_heartbeat_stops_the_attached_driver_after_the_timeout(tmp_path: Path) -> None:
    clock, watch = FakeClock(), RunWatch(tmp_path, timeout_s=60)
    d = view(tmp_path, clock)
    StateFile(tmp_path).phase("ready")
    set_mtime(tmp_path, 5_000_000)  # far in the future of our clock: only changes count
    for beat in range(40):  # the run beats every 5 s for 200 s: no stop
        set_mtime(tmp_path, 5_000_000 + beat * 5)
        watch.on_tick(d)
        clock.sleep(5)
    assert d.stops == []
    while clock.now() < 195 + 59:  # its last beat was seen at 195: 59 s of silence is fine
        watch.on_tick(d)
        clock.sleep(1)
    assert d.stops == []
    clock.sleep(3)
    watch.on_tick(d)
    assert len(d.stops) == 1 and "has not beaten for" in d.stops[0]
    assert "launcher.heartbeat_timeout_s=60" in d.stops[0]
    assert d.run_gone == d.stops[0]  # router deregistration is skipped then


def test_a_run_without_a_heartbeat_file_counts_as_stale(tmp_path: Path) -> None:
    clock, watch = FakeClock(), RunWatch(tmp_path, timeout_s=10)
    d = view(tmp_path, clock)
    for _ in range(12):
        watch.on_tick(d)
        clock.sleep(1)
    assert d.stops and "has not beaten" in d.stops[0]


def test_an_attached_driver_stops_when_its_run_has_ended(plan_of: Any, tmp_path: Path) -> None:
    """ctl scale: an attached job whose run ended (failed, time limit) has no frontend left."""
    run_dir, own = tmp_path / "run", tmp_path / "attached"
    run_dir.mkdir(), own.mkdir()
    driver, backend = make_driver(plan_of, own, FakeHttp(dict(READY)))
    driver.plan = dataclasses.replace(driver.plan, job=WorkerJobPlan(run_dir=str(run_dir)))
    attach_heartbeat(driver)
    StateFile(run_dir).phase("ready")

    def run_fails(_d: Any) -> None:
        StateFile(run_dir).phase("failed", error="node lost")

    driver.on_ready.append(run_fails)
    assert driver.run() == 0
    st = json.loads((own / "state.json").read_text())
    assert st["phase"] == "done" and st["reason"].startswith("the run it attaches to has ended")
    assert {name for name, sig in backend.signals if sig == "SIGTERM"} >= {"decode-0"}
    assert (own / HEARTBEAT_FILE).exists()  # it beats too (its own attached jobs could watch it)


def test_an_attached_driver_whose_run_stopped_beating_stops_itself(
    plan_of: Any, tmp_path: Path
) -> None:
    run_dir, own = tmp_path / "run", tmp_path / "attached"
    run_dir.mkdir(), own.mkdir()
    driver, backend = make_driver(plan_of, own, FakeHttp(dict(READY)))
    job = WorkerJobPlan(run_dir=str(run_dir), heartbeat_timeout_s=30)
    driver.plan = dataclasses.replace(driver.plan, job=job)
    attach_heartbeat(driver)
    StateFile(run_dir).phase("ready")  # never ends: its driver was SIGKILLed
    set_mtime(run_dir, 1)
    assert driver.run() == 0
    st = json.loads((own / "state.json").read_text())
    assert st["phase"] == "done" and "has not beaten for" in st["reason"]
    assert driver.clock.now() < 30 + 5 + driver.plan.readiness.timeout_s  # soon after the timeout
    assert {name for name, sig in backend.signals if sig == "SIGTERM"} >= {"decode-0"}


def test_the_attached_plan_carries_the_timeout(plan_of: Any) -> None:
    from orchestrator.plan.model import plan_from_dict, plan_to_dict

    plan = dataclasses.replace(
        plan_of(), job=WorkerJobPlan(run_dir="/runs/r1", heartbeat_timeout_s=15)
    )
    again = plan_from_dict(json.loads(json.dumps(plan_to_dict(plan))))
    assert again.job is not None and again.job.heartbeat_timeout_s == 15
    assert "job" not in plan_to_dict(plan_of())  # a run's plan.json is unchanged
