"""The worker jobs of a frontend.placement=here run (orchestrator.elastic.rollover) with a fake
Slurm and clock: first job, replacement before the time limit, drain once the copy serves,
replacement at once when a job is lost, bounded retries, teardown."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api import prepare
from orchestrator.core.effects import HttpResponse
from orchestrator.core.errors import OrchestratorError
from orchestrator.elastic.rollover import LEFT_REFRESH_S, SLURM_TICK_S, Rollover, lead_s
from orchestrator.launchers.select import Site
from orchestrator.plan.model import Plan, ServePlan
from orchestrator.plan.placeholders import Bindings, bind_plan
from orchestrator.rundir import WorkerJob
from orchestrator.rundir.layout import STOP_FILE
from orchestrator.runtime.state import StateFile
from tests.fake_slurm import FakeSlurm
from tests.fakes import FakeClock, FakeHttp
from tests.test_scale import read_attached

HERE = [
    "+model=gpt_oss_120b",
    "engine=mocker",
    "cluster=testbed",
    "frontend.placement=here",
    "frontend.host=10.77.0.1",
    "serve.rollover=true",
    "cluster.time_limit_min=2",
    "serve.rollover_lead_min=1.5",
    "launcher.signal_before_limit_s=30",
    "serve.signal_hold_s=20",
    "readiness.timeout_s=60",
    "launcher=sbatch",
]
ROUTES = Path(__file__).parent / "fixtures" / "routes"
# Instance ids in the captures (tests/fixtures/routes/README.md): the first job's workers are the
# prefill that left, the copy's are those still there.
JOB_IDS = (
    {"prefill-0": "6baaa2512d98be1e", "decode-0": "6baaa2512d98be18"},
    {"prefill-0": "6baaa2512d98be30", "decode-0": "6baaa2512d98be14"},
)


CANARY_ANSWER = '{"choices": [{"message": {"content": "yes"}}], "usage": {"completion_tokens": 3}}'


def frontend_answers(capture: str, url: str = "") -> dict[str, HttpResponse | list[HttpResponse]]:
    """The run's Dynamo frontend (at `url`, else any) answering as captured (`capture`),
    canaries answered."""
    return {
        f"{url}/health": HttpResponse(200, (ROUTES / f"dynamo_{capture}.health.json").read_text()),
        f"{url}/metrics": HttpResponse(200, (ROUTES / f"dynamo_{capture}.metrics").read_text()),
        f"{url}/v1/chat/completions": HttpResponse(200, CANARY_ANSWER),
    }


@pytest.fixture(scope="module")
def here_plan() -> Plan:
    return prepare(HERE, Site(has_sbatch=True, allocation_job_id="")).plan


class View:
    """The DriverView parts the rollover hooks use."""

    def __init__(self, plan: Plan, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.plan = bind_plan(
            plan,
            Bindings(
                node_ips=("10.77.0.1",), node_hosts=("login",), job_id="", run_dir=str(run_dir)
            ),
        )
        self.clock = FakeClock()
        self.state = StateFile(run_dir)
        self.http = FakeHttp(frontend_answers("all_routed"))  # routes to every job's workers
        self.said: list[str] = []
        self.stop_event = threading.Event()

    def say(self, message: str) -> None:
        self.said.append(message)


def setup(here_plan: Plan, tmp_path: Path) -> tuple[View, FakeSlurm, Rollover]:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    view, slurm = View(here_plan, run_dir), FakeSlurm()
    assert view.plan.serve is not None
    return view, slurm, Rollover(view.plan.serve, slurm)


def job_dir(view: View, n: int) -> Path:
    return view.run_dir / "attached" / str(n)


def set_phase(view: View, n: int, phase: str, **fields: Any) -> None:
    state = StateFile(job_dir(view, n))
    if phase == "ready":  # its driver recorded the workers' instance ids once healthy
        for name, ids in (JOB_IDS[0] if n == 1 else JOB_IDS[1]).items():
            state.process(name, discovery_ids=[ids])
    state.phase(phase, **fields)


def tick(view: View, rollover: Rollover, seconds: float = SLURM_TICK_S) -> None:
    view.clock.t += seconds
    rollover.on_tick(view)  # type: ignore[arg-type]


def serving(view: View, slurm: FakeSlurm, rollover: Rollover) -> str:
    """Start the first job and let it serve; its job id."""
    rollover.start(view)  # type: ignore[arg-type]
    job = read_attached(view.run_dir)[0]["job_id"]
    slurm.set_state(job, "RUNNING", nodes=["node2"])
    set_phase(view, 1, "ready")
    view.state.phase("ready")
    tick(view, rollover)
    return str(job)


def test_the_first_worker_job_is_attached_to_this_runs_frontend(
    here_plan: Plan, tmp_path: Path
) -> None:
    view, slurm, rollover = setup(here_plan, tmp_path)
    rollover.start(view)  # type: ignore[arg-type]
    (entry,) = read_attached(view.run_dir)
    assert entry["generation"] == 1 and entry["workers"] == ["decode-0", "prefill-0"]
    (sbatch,) = slurm.calls_to("sbatch")
    assert slurm.jobs[entry["job_id"]].cwd == str(job_dir(view, 1))
    plan = json.loads((job_dir(view, 1) / "plan.json").read_text())
    assert plan["job"]["run_dir"] == str(view.run_dir)
    decode = next(p for p in plan["processes"] if p["name"] == "decode-0")
    assert decode["env"]["ETCD_ENDPOINTS"] == "http://10.77.0.1:20000"  # this host's etcd
    # The run's own tiny model: Dynamo rejects later workers whose model card path differs.
    assert f"{view.run_dir}/tiny-model" in decode["argv"]
    assert (job_dir(view, 1) / "job.sbatch").read_text().startswith("#!/bin/bash")
    rollover.start(view)  # type: ignore[arg-type]  (a second call submits nothing)
    assert len(slurm.calls_to("sbatch")) == 1


def test_a_job_near_its_limit_is_replaced_then_drained_once_the_copy_serves(
    here_plan: Plan, tmp_path: Path
) -> None:
    view, slurm, rollover = setup(here_plan, tmp_path)
    old = serving(view, slurm, rollover)
    assert read_attached(view.run_dir)[0]["ready_at"]
    assert len(slurm.calls_to("sbatch")) == 1  # 1800 s left: nothing due
    slurm.jobs[old].time_left_s = 89  # below the 90 s lead (serve.rollover_lead_min=1.5)
    tick(view, rollover, LEFT_REFRESH_S)
    entries = read_attached(view.run_dir)
    assert [e["replaces"] for e in entries] == ["", old] and entries[1]["generation"] == 2
    assert (job_dir(view, 2) / "plan.json").read_text() == (
        job_dir(view, 1) / "plan.json"
    ).read_text()
    new = entries[1]["job_id"]
    tick(view, rollover)
    assert len(slurm.calls_to("sbatch")) == 2  # one replacement, not one per tick
    assert not (job_dir(view, 1) / STOP_FILE).exists()  # the old serves until the copy does

    slurm.set_state(new, "RUNNING", nodes=["node3"])
    set_phase(view, 2, "ready")
    tick(view, rollover)
    assert (job_dir(view, 1) / STOP_FILE).exists()
    assert slurm.signals == [(old, "TERM", True)]  # its driver deregisters, then stops the workers
    slurm.set_state(old, "COMPLETED")
    set_phase(view, 1, "done")
    tick(view, rollover)
    first = read_attached(view.run_dir)[0]
    assert first["removed_at"] and first["ended"] == "COMPLETED"  # Slurm's word once it has one
    assert any(f"worker job {old} ended (COMPLETED) as asked" in s for s in view.said)


def test_a_lost_job_is_replaced_at_once(here_plan: Plan, tmp_path: Path) -> None:
    view, slurm, rollover = setup(here_plan, tmp_path)
    old = serving(view, slurm, rollover)
    slurm.set_state(old, "PREEMPTED")  # its driver could write nothing
    tick(view, rollover)
    entries = read_attached(view.run_dir)
    assert entries[0]["ended"] == "PREEMPTED" and entries[0]["removed_at"]
    assert entries[1]["replaces"] == old and entries[1]["reason"] == "lost: PREEMPTED"
    assert any(
        "ended unexpectedly (PREEMPTED)" in s and "decode-0, prefill-0 gone" in s for s in view.said
    )


def test_failed_replacements_are_retried_a_bounded_number_of_times(
    here_plan: Plan, tmp_path: Path
) -> None:
    view, slurm, rollover = setup(here_plan, tmp_path)
    old = serving(view, slurm, rollover)
    slurm.jobs[old].time_left_s = 60
    for attempt in range(1, 4):  # serve.rollover_attempts=3
        tick(view, rollover, LEFT_REFRESH_S)
        assert len(slurm.calls_to("sbatch")) == 1 + attempt
        new = read_attached(view.run_dir)[-1]["job_id"]
        slurm.set_state(new, "FAILED")
        set_phase(view, attempt + 1, "failed", error="decode-0 exited with code 1")
        tick(view, rollover)
    tick(view, rollover, LEFT_REFRESH_S)
    assert len(slurm.calls_to("sbatch")) == 4  # no fourth attempt
    assert read_attached(view.run_dir)[0].get("removed_at") is None  # the old one still serves
    assert (
        sum("ended unexpectedly (FAILED: decode-0 exited with code 1)" in s for s in view.said) == 3
    )


def test_the_first_job_failing_fails_the_run(here_plan: Plan, tmp_path: Path) -> None:
    view, slurm, rollover = setup(here_plan, tmp_path)
    rollover.start(view)  # type: ignore[arg-type]
    job = read_attached(view.run_dir)[0]["job_id"]
    slurm.set_state(job, "FAILED")
    set_phase(view, 1, "failed", error="prefill-0 exited with code 2")
    with pytest.raises(
        OrchestratorError, match=f"worker job {job} failed before the run was ready"
    ):
        tick(view, rollover)


def test_teardown_stops_every_worker_job_and_waits_for_it(here_plan: Plan, tmp_path: Path) -> None:
    view, slurm, rollover = setup(here_plan, tmp_path)
    old = serving(view, slurm, rollover)

    def stopped(job: Any, signal: str, batch: bool) -> None:  # the job's driver ends
        job.state = "COMPLETED"
        set_phase(view, 1, "done")

    slurm.on_signal = stopped
    rollover.stop_all(view)  # type: ignore[arg-type]
    assert slurm.signals == [(old, "TERM", True)] and (job_dir(view, 1) / STOP_FILE).exists()
    assert read_attached(view.run_dir)[0]["removed_at"]


def test_the_lead_is_measured_time_to_ready_plus_the_margin() -> None:
    serve = ServePlan(host="h", workers=None, margin_s=60.0, signal_before_limit_s=15.0)  # type: ignore[arg-type]
    entry = WorkerJob(job_id="1", run_dir="", workers=(), submitted_at=100.0, ready_at=130.0)
    assert lead_s(serve, entry, limit_s=3600) == 90.0  # 30 s to ready + 60 s
    quick = WorkerJob(job_id="1", run_dir="", workers=(), submitted_at=100.0, ready_at=105.0)
    assert lead_s(serve, quick, limit_s=3600) == 75.0  # >= signal
    assert lead_s(serve, entry, limit_s=120) == 60.0  # at most half the limit
    explicit = ServePlan(host="h", workers=None, lead_s=300.0)  # type: ignore[arg-type]
    assert lead_s(explicit, entry, limit_s=3600) == 300.0


def test_a_stop_signal_from_slurm_is_replaced_at_once_while_the_job_keeps_serving(
    here_plan: Plan, tmp_path: Path
) -> None:
    view, slurm, rollover = setup(here_plan, tmp_path)
    old = serving(view, slurm, rollover)
    StateFile(job_dir(view, 1)).update(stop_signal="SIGTERM", stop_signal_at=1.0)  # elastic/hold.py
    tick(view, rollover)
    entries = read_attached(view.run_dir)
    assert entries[1]["replaces"] == old
    assert entries[1]["reason"] == "SIGTERM from Slurm (time limit or preemption)"
    assert not (job_dir(view, 1) / STOP_FILE).exists()  # drained only once the copy serves


class HoldView(View):
    def __init__(self, plan: Plan, run_dir: Path) -> None:
        super().__init__(plan, run_dir)
        self.on_tick: list[Any] = []
        self.stop_reason = ""

    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        self.stop_event.set()


def test_a_worker_job_holds_slurms_stop_signal_but_not_ours(
    here_plan: Plan, tmp_path: Path
) -> None:
    from orchestrator.elastic.hold import Hold

    assert here_plan.serve is not None and here_plan.serve.workers.job is not None
    assert here_plan.serve.workers.job.hold_s == 20.0
    job = tmp_path / "job"
    job.mkdir()
    view = HoldView(here_plan, job)
    view.state.phase("ready")
    hold = Hold(20.0)
    handle = hold.handler(view)  # type: ignore[arg-type]
    handle(signal.SIGTERM, None)
    assert not view.stop_event.is_set()  # Slurm's signal: serve on
    hold.tick(view)  # type: ignore[arg-type]
    assert view.state.data["stop_signal"] == "SIGTERM"  # the run's driver replaces this job now
    view.clock.t += 19
    hold.tick(view)  # type: ignore[arg-type]
    assert not view.stop_event.is_set()
    view.clock.t += 1
    hold.tick(view)  # type: ignore[arg-type]
    assert view.stop_reason == "received SIGTERM; held 20 s for a replacement"

    ours = HoldView(here_plan, tmp_path / "run")  # ctl stop / a drain leave the stop file first
    ours.run_dir.mkdir()
    ours.state.phase("ready")
    (ours.run_dir / STOP_FILE).touch()
    Hold(20.0).handler(ours)(signal.SIGTERM, None)  # type: ignore[arg-type,operator]
    assert ours.stop_reason == "received SIGTERM"


def test_a_worker_exiting_during_the_hold_ends_the_job_now(here_plan: Plan, tmp_path: Path) -> None:
    """A plain scancel signals every step too: the workers leave, nothing to hold for."""
    from types import SimpleNamespace

    from orchestrator.elastic.hold import Hold

    view = HoldView(here_plan, tmp_path)
    view.state.phase("ready")
    hold = Hold(20.0)
    hold.lost(view, SimpleNamespace(proc=SimpleNamespace(name="decode-0")))  # type: ignore[arg-type]
    assert not view.stop_event.is_set()  # no signal: an ordinary crash, restarted by policy
    hold.handler(view)(signal.SIGTERM, None)  # type: ignore[arg-type,operator]
    hold.lost(view, SimpleNamespace(proc=SimpleNamespace(name="decode-0")))  # type: ignore[arg-type]
    assert view.stop_reason.startswith("received SIGTERM and decode-0 exited")


def test_a_copy_leaves_out_workers_a_scale_down_removed(here_plan: Plan, tmp_path: Path) -> None:
    view, slurm, rollover = setup(here_plan, tmp_path)
    old = serving(view, slurm, rollover)
    StateFile(job_dir(view, 1)).process("decode-0", state="removed")  # elastic/retire.py
    slurm.set_state(old, "NODE_FAIL")
    tick(view, rollover)
    copy = json.loads((job_dir(view, 2) / "plan.json").read_text())
    assert [p["name"] for p in copy["processes"]] == ["prefill-0"]
    assert copy["readiness"]["expected"] == {"prefill": 1}  # it counts its own workers


def test_scaling_during_a_rollover_counts_each_worker_once(here_plan: Plan, tmp_path: Path) -> None:
    """A job and its copy hold the same workers: they count once, in the copy (the newest), so
    a scale-down waits until the copy serves rather than removing a worker it would bring back."""
    from orchestrator.core.errors import InvalidConfig
    from orchestrator.elastic.scale_down import current_counts, plan_removal
    from orchestrator.rundir import RunDir

    view, slurm, rollover = setup(here_plan, tmp_path)
    RunDir(view.run_dir).write_bound_plan(view.plan)  # the head: no workers of its own
    old = serving(view, slurm, rollover)
    assert current_counts(view.run_dir) == {"decode": 1, "prefill": 1}
    slurm.jobs[old].time_left_s = 60
    tick(view, rollover, LEFT_REFRESH_S)
    new = read_attached(view.run_dir)[1]["job_id"]
    assert current_counts(view.run_dir) == {"decode": 1, "prefill": 1}  # not doubled
    with pytest.raises(InvalidConfig, match=rf"attached job {new} \(submitted\)"):
        plan_removal(view.run_dir, {"decode": 0})  # below ctl's own limit: the choice alone
    slurm.set_state(new, "RUNNING", nodes=["node3"])
    set_phase(view, 2, "ready")
    tick(view, rollover)  # the copy serves: the old job drains
    (removal,) = plan_removal(view.run_dir, {"decode": 0})
    assert removal.holder.job_id == new and removal.workers == ("decode-0",)


def replaced_and_copy_ready(view: View, slurm: FakeSlurm, rollover: Rollover) -> tuple[str, str]:
    """The first job serving, its copy submitted and ready: (old job id, copy's job id)."""
    old = serving(view, slurm, rollover)
    slurm.jobs[old].time_left_s = 89
    tick(view, rollover, LEFT_REFRESH_S)
    new = read_attached(view.run_dir)[1]["job_id"]
    slurm.set_state(new, "RUNNING", nodes=["node3"])
    set_phase(view, 2, "ready")
    return old, str(new)


def canaries(view: View) -> int:
    return sum(1 for c in view.http.calls if c.url.endswith("/v1/chat/completions"))


def test_the_old_job_is_drained_only_once_the_frontend_routes_to_the_copys_prefill(
    here_plan: Plan, tmp_path: Path
) -> None:
    view, slurm, rollover = setup(here_plan, tmp_path)
    old, new = replaced_and_copy_ready(view, slurm, rollover)
    # Captured: the copy's prefill (be30) listed by the frontend, no request routed to it yet.
    view.http.script.update(frontend_answers("prefill_not_routed"))
    for _ in range(3):
        tick(view, rollover)
    assert not (job_dir(view, 1) / STOP_FILE).exists() and slurm.signals == []
    assert canaries(view) == 3  # one per look, through the frontend, a new prompt each
    assert any(
        f"worker job {old} not drained yet" in s and f"worker job {new}'s" in s and "prefill" in s
        for s in view.said
    ), view.said
    assert read_attached(view.run_dir)[1]["ready_at"]  # it serves; only the drain waits

    view.http.script.update(frontend_answers("new_prefill_routed"))  # it took requests since
    tick(view, rollover)
    assert (job_dir(view, 1) / STOP_FILE).exists()
    assert slurm.signals == [(old, "TERM", True)]
    assert any(f"worker job {new} takes requests from every frontend" in s for s in view.said)


def test_a_frontend_without_any_prefill_is_said_at_once_and_no_job_is_drained(
    here_plan: Plan, tmp_path: Path
) -> None:
    view, slurm, rollover = setup(here_plan, tmp_path)
    old, _ = replaced_and_copy_ready(view, slurm, rollover)
    view.http.script.update(frontend_answers("no_prefill"))  # captured: both prefills gone
    tick(view, rollover)
    url = view.plan.readiness.frontend_url
    assert view.state.view().data["frontend_missing"] == {url: ["prefill"]}
    assert any(f"the frontend {url} has no prefill worker" in s for s in view.said)
    assert not (job_dir(view, 1) / STOP_FILE).exists() and canaries(view) == 0

    view.http.script.update(frontend_answers("all_routed"))
    tick(view, rollover)
    assert view.state.view().data["frontend_missing"] == {}
    assert any(f"the frontend {url} has a worker of every role again" in s for s in view.said)
    assert slurm.signals == [(old, "TERM", True)]


def test_a_serving_run_says_when_its_frontend_loses_every_worker_of_a_role(
    here_plan: Plan, tmp_path: Path
) -> None:
    view, slurm, rollover = setup(here_plan, tmp_path)
    serving(view, slurm, rollover)
    view.http.script.update(frontend_answers("no_prefill"))
    tick(view, rollover)
    url = view.plan.readiness.frontend_url
    assert view.state.view().data["frontend_missing"] == {url: ["prefill"]}
    said = [s for s in view.said if "has no prefill worker" in s]
    tick(view, rollover)
    assert [s for s in view.said if "has no prefill worker" in s] == said  # said once


def test_a_job_slurm_preempts_is_replaced_at_once_and_drained_once_the_copy_serves(
    here_plan: Plan, tmp_path: Path
) -> None:
    """Slurm 22.05 tells a preempted job's batch shell nothing: squeue's PreemptTime does."""
    view, slurm, rollover = setup(here_plan, tmp_path)
    old = serving(view, slurm, rollover)
    asked = len(slurm.calls_to("squeue"))
    tick(view, rollover, 0.5)  # a look between Slurm ticks asks nothing more
    assert len(slurm.calls_to("squeue")) == asked
    slurm.preempt(old, "2026-12-07T15:39:17", "2026-12-07T15:39:47")
    tick(view, rollover)
    entries = read_attached(view.run_dir)
    assert entries[1]["replaces"] == old
    assert entries[1]["reason"] == "preempted by Slurm at 15:39:17, ends 15:39:47"
    assert not (job_dir(view, 1) / STOP_FILE).exists()  # it serves on until the copy does
    tick(view, rollover)
    assert len(slurm.calls_to("sbatch")) == 2  # one replacement, not one per tick
    new = entries[1]["job_id"]
    slurm.set_state(new, "RUNNING", nodes=["node3"])
    set_phase(view, 2, "ready")
    tick(view, rollover)
    assert (job_dir(view, 1) / STOP_FILE).exists() and slurm.signals == [(old, "TERM", True)]
    slurm.set_state(old, "PREEMPTED")  # Slurm ends it at the end of its GraceTime
    tick(view, rollover)
    assert len(slurm.calls_to("sbatch")) == 2 and read_attached(view.run_dir)[0]["removed_at"]
