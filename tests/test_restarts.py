"""Restarting dead workers in place while serving: policy, backoff, window, degraded state,
multi-node units and router re-registration (fake processes, HTTP and clock)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.effects import HttpError, HttpResponse
from orchestrator.frontends.worker_api import attach_router_registration
from orchestrator.plan.model import RestartPolicy, plan_from_dict, plan_to_dict
from orchestrator.plan.placeholders import Bindings, bind_plan
from orchestrator.run.driver import Driver
from orchestrator.runtime.restarts import RestartBook
from orchestrator.runtime.state import StateFile, progress_line
from tests.fakes import FakeClock
from tests.test_bench_step import make as make_bench
from tests.test_bench_step import rows
from tests.test_runtime_units import READY, FakeBackend, FakeHttp, make_driver, resp

IPS = ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")


# --- policy, backoff, window (pure) ----------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "code", "restarts"),
    [
        ("never", 137, False),
        ("never", 0, False),
        ("on_failure", 137, True),
        ("on_failure", -9, True),
        ("on_failure", 0, False),
        ("always", 0, True),
        ("always", 1, True),
    ],
)
def test_policy_modes(mode: Any, code: int, restarts: bool) -> None:
    assert RestartPolicy(mode=mode).applies(code) is restarts


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RestartPolicy(mode="always", backoff_s=1.0, backoff_max_s=5.0)
    assert [policy.backoff(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_window_bounds_the_restarts(plan_of: Any) -> None:
    decode = plan_of("deployment.max_restarts=2", "deployment.restart_window_s=100").process(
        "decode-0"
    )
    book = RestartBook()
    for now in (0.0, 10.0):
        decision = book.decide(decode, 137, now=now)
        assert decision.due is not None
        book.schedule(decode, 137, decision, now=now)
    assert book.decide(decode, 137, now=20.0).refusal.startswith("restarts exhausted: 2 restart(s)")
    later = book.decide(decode, 137, now=105.0)  # the first restart left the window
    assert later.due == 105.0 + 2.0 and later.recent == 1  # backoff of the 2nd restart


def test_plan_carries_the_policies(plan_of: Any) -> None:
    plan = plan_of(
        "decode.restart=always",
        "frontend.restart=never",
        "deployment.max_restarts=5",
        "prefill.workers=2",
        "decode.workers=2",
    )
    assert plan.process("decode-1").restart == RestartPolicy(mode="always", max_restarts=5)
    assert plan.process("prefill-0").restart.mode == "on_failure"  # the default
    assert plan.process("frontend").restart.mode == "never"
    assert plan.process("etcd").restart.mode == "never"  # follows the frontend's
    assert plan_from_dict(json.loads(json.dumps(plan_to_dict(plan)))) == plan


def test_etcd_restarts_in_place_well_within_dynamo_s_reconnection_deadline(plan_of: Any) -> None:
    plan = plan_of(
        "deployment.restart_backoff_s=10",
        "deployment.restart_backoff_max_s=120",
        "prefill.workers=2",
        "decode.workers=2",
    )
    etcd = plan.process("etcd").restart
    assert etcd.mode == "on_failure" and etcd.backoff_max_s == 5.0  # Dynamo waits ~30 s for it
    assert [etcd.backoff(n) for n in range(3)] == [5.0, 5.0, 5.0]
    assert plan.process("decode-0").restart.backoff_max_s == 120


# --- the driver ----------------------------------------------------------------------------------
def serve_steps(driver: Driver, seconds: float) -> None:
    """What the serving loop does for `seconds` of fake time, tick by tick."""
    end = driver.clock.now() + seconds
    while driver.clock.now() < end:
        driver.check_alive()
        driver.clock.sleep(driver.plan.readiness.interval_s)


def test_a_killed_worker_restarts_in_place_and_the_run_stays_ready(
    plan_of: Any, tmp_path: Path
) -> None:
    http = FakeHttp(dict(READY))
    driver, backend = make_driver(plan_of, tmp_path, http, "readiness.interval_s=0.1")
    url = driver.plan.process("decode-0").health.url  # type: ignore[union-attr]
    seen: dict[str, Any] = {}

    def scenario(d: Driver) -> None:
        backend.procs["decode-0"].code = 137
        http.script[url] = resp(503, "loading")  # the restarted engine is not healthy yet
        d.check_alive()
        seen["after_exit"] = json.loads((tmp_path / "state.json").read_text())
        seen["line"] = progress_line(d.state.data)
        serve_steps(d, 0.5)
        seen["before_backoff"] = backend.started.count("decode-0")
        serve_steps(d, 1.0)
        seen["after_backoff"] = backend.started.count("decode-0")
        seen["still_degraded"] = list(d.degraded)
        http.script[url] = resp(200, "ok")
        serve_steps(d, 0.2)
        d.request_stop("test over")

    driver.on_ready.append(scenario)
    assert driver.run() == 0
    st = seen["after_exit"]
    assert st["phase"] == "ready" and st["degraded"] == ["decode-0"]
    assert st["processes"]["decode-0"]["state"] == "restarting"
    (entry,) = st["processes"]["decode-0"]["restarts"]
    assert entry["exit_code"] == 137 and "decode-0 last line" in entry["tail"] and entry["at"]
    assert (
        seen["line"] == "ready DEGRADED (decode-0 restarting): frontend 1/1 prefill 1/1 decode 0/1"
    )
    assert (seen["before_backoff"], seen["after_backoff"]) == (1, 2)  # restarted after 1 s
    assert seen["still_degraded"] == ["decode-0"]  # counted only once its own health passes
    final = json.loads((tmp_path / "state.json").read_text())
    assert final["degraded"] == [] and final["phase"] == "done"
    assert backend.started.count("prefill-0") == 1  # nothing else restarted


def test_restarts_exhausted_fail_the_run_with_every_tail(plan_of: Any, tmp_path: Path) -> None:
    driver, backend = make_driver(
        plan_of,
        tmp_path,
        FakeHttp(dict(READY)),
        "deployment.max_restarts=2",
        "readiness.interval_s=0.1",
    )
    crashes = itertools.count(1)

    def crash_loop(d: Driver) -> None:
        while True:
            if backend.procs["prefill-0"].code is None:
                backend.procs["prefill-0"].code = 100 + next(crashes)
            serve_steps(d, 0.5)

    driver.on_ready.append(crash_loop)
    assert driver.run() == 1
    st = json.loads((tmp_path / "state.json").read_text())
    assert backend.started.count("prefill-0") == 3  # the first start and two restarts
    assert (
        "prefill-0 (prefill) on nodeA (node 0) exited with code 103 (restarts exhausted: "
        "2 restart(s) within 3600 s, max_restarts=2)" in st["error"]
    )
    assert "exit 1 at " in st["error"] and "(code 101)" in st["error"]
    assert "exit 2 at " in st["error"] and "(code 102)" in st["error"]
    assert st["error"].count("prefill-0 last line") == 3  # the final tail and both earlier ones
    assert [r["exit_code"] for r in st["processes"]["prefill-0"]["restarts"]] == [101, 102]
    assert st["phase"] == "failed"


def test_an_exit_before_ready_fails_at_once(plan_of: Any, tmp_path: Path) -> None:
    # No restarts while starting: a worker that dies before it was ever ready most likely has a
    # configuration or environment problem a restart would repeat (and the user is watching).
    answers = {k: v for k, v in READY.items() if k != "/v1/chat/completions"}  # canary pending
    driver, backend = make_driver(plan_of, tmp_path, FakeHttp(answers))
    driver.on_workers_healthy.append(lambda d: setattr(backend.procs["decode-0"], "code", 1))
    assert driver.run() == 1
    st = json.loads((tmp_path / "state.json").read_text())
    assert "decode-0 (decode) on nodeA (node 0) exited with code 1; last 50 lines" in st["error"]
    assert backend.started.count("decode-0") == 1


def test_a_hung_worker_is_killed_and_restarted(plan_of: Any, tmp_path: Path) -> None:
    http = FakeHttp(dict(READY))
    driver, backend = make_driver(
        plan_of, tmp_path, http, "readiness.serve_check_s=1", "readiness.interval_s=0.5"
    )
    url = driver.plan.process("prefill-0").health.url  # type: ignore[union-attr]

    def hang(d: Driver) -> None:
        http.script[url] = resp(503, "stuck")
        d.clock.wait = lambda event, s: (  # type: ignore[method-assign]
            d.clock.sleep(s),
            http.script.update({url: resp(200, "ok")}) if d.clock.now() > 6 else None,
            d.clock.now() > 10,
        )[2]

    driver.on_ready.append(hang)
    assert driver.run() == 0
    assert ("prefill-0", "SIGKILL") in backend.signals
    assert backend.started.count("prefill-0") == 2
    st = json.loads((tmp_path / "state.json").read_text())
    assert st["processes"]["prefill-0"]["restarts"][0]["exit_code"] == -9


def test_a_multi_node_worker_restarts_as_one_unit(plan_of: Any, tmp_path: Path) -> None:
    plan = plan_of(
        "engine=dynamo_sglang",
        "decode.tp=16",
        "prefill.tp=8",
        "model.requires_equal_pd_tp=false",
        "readiness.interval_s=0.1",
    )
    bound = bind_plan(plan, Bindings(IPS, ("nodeA", "nodeB", "nodeC", "nodeD"), "7", str(tmp_path)))
    backend = FakeBackend()
    driver = Driver(
        bound,
        run_dir=tmp_path,
        backend=backend,
        http=FakeHttp(dict(READY)),  # type: ignore[arg-type]
        clock=FakeClock(),
        state=StateFile(tmp_path),
        say=lambda _m: None,
    )
    assert {p.name for p in bound.processes} >= {"decode-0", "decode-0-rank1"}

    def kill_rank1(d: Driver) -> None:
        backend.procs["decode-0-rank1"].code = -9
        serve_steps(d, 2.0)
        d.request_stop("test over")

    driver.on_ready.append(kill_rank1)
    assert driver.run() == 0
    assert ("decode-0", "SIGKILL") in backend.signals  # the surviving rank is stopped too
    assert backend.started.count("decode-0") == backend.started.count("decode-0-rank1") == 2
    assert backend.started.count("prefill-0") == 1
    st = json.loads((tmp_path / "state.json").read_text())
    assert st["processes"]["decode-0"]["restarts"][0]["cause"] == "decode-0-rank1"


class FakeRouter:
    """sglang-router's worker API with state: POST adds under a new id, DELETE removes."""

    def __init__(self, base: str) -> None:
        self.base, self.workers, self.calls = base, {}, []  # type: ignore[var-annotated]
        self.ids = (f"id-{n}" for n in itertools.count(1))

    def get(self, url: str, *, timeout: float) -> HttpResponse:
        if url == f"{self.base}/workers":
            listed = [
                {"id": i, "url": u, "worker_type": t, "is_healthy": True}
                for i, (u, t) in self.workers.items()
            ]
            return HttpResponse(200, json.dumps({"workers": listed}))
        if url.endswith(("/health", "/readiness")):
            return HttpResponse(200, "{}")
        raise HttpError(f"ConnectionError on {url}")

    def post(self, url: str, payload: Any, *, timeout: float) -> HttpResponse:
        if url.endswith("/chat/completions"):
            return READY["/v1/chat/completions"]
        worker_id = next(self.ids)
        self.workers[worker_id] = (payload["url"], payload["worker_type"])
        self.calls.append(("POST", payload["url"]))
        return HttpResponse(202, json.dumps({"worker_id": worker_id}))

    def delete(self, url: str, *, timeout: float) -> HttpResponse:
        worker_id = url.rsplit("/", 1)[1]
        self.calls.append(("DELETE", worker_id))
        return HttpResponse(202 if self.workers.pop(worker_id, None) else 404, "{}")


@pytest.mark.parametrize("victim", ["prefill-0", "frontend"])
def test_router_re_registration(plan_of: Any, tmp_path: Path, victim: str) -> None:
    plan = plan_of("engine=sglang", "frontend=sglang_router", "readiness.interval_s=0.1")
    bound = bind_plan(plan, Bindings(IPS[:1], ("nodeA",), "7", str(tmp_path)))
    http, backend = FakeRouter("http://10.0.0.1:8000"), FakeBackend()
    driver = Driver(
        bound,
        run_dir=tmp_path,
        backend=backend,
        http=http,
        clock=FakeClock(),  # type: ignore[arg-type]
        state=StateFile(tmp_path),
        say=lambda _m: None,
    )
    attach_router_registration(driver)
    before: dict[str, Any] = {}

    def kill(d: Driver) -> None:
        before.update({n: dict(e) for n, e in d.state.data["processes"].items()})
        backend.procs[victim].code = -9
        serve_steps(d, 2.0)
        d.request_stop("test over")

    driver.on_ready.append(kill)
    assert driver.run() == 0
    url = {"prefill-0": bound.process("prefill-0").url, "decode-0": bound.process("decode-0").url}
    st = json.loads((tmp_path / "state.json").read_text())
    if victim == "prefill-0":
        old = before["prefill-0"]["router_id"]
        assert http.calls[2:4] == [("DELETE", old), ("POST", url["prefill-0"])]
        assert st["processes"]["prefill-0"]["router_id"] != old
    else:  # a restarted router knows no worker: both register again under new ids
        assert sorted(http.calls[2:4]) == sorted(
            [("POST", url["prefill-0"]), ("POST", url["decode-0"])]
        )
        assert st["processes"]["decode-0"]["router_id"] != before["decode-0"]["router_id"]
    # The run's router stops with it: no DELETE at stop (worker_api.router_stops_with_run).
    assert [c for c in http.calls[4:] if c[0] == "DELETE"] == []
    assert all(p.get("registered") is not True for p in st["processes"].values())


# --- the benchmark -------------------------------------------------------------------------------
@pytest.mark.parametrize("allow", [False, True])
def test_a_restart_during_a_point_invalidates_it(compose: Any, tmp_path: Path, allow: bool) -> None:
    driver, _ = make_bench(compose, tmp_path, f"benchmark.allow_restarts={str(allow).lower()}")
    driver.restarts_since = lambda t: ["decode-0 exited with code -9"]  # type: ignore[method-assign]
    assert driver.run() == (0 if allow else 1)
    first = rows(tmp_path)[0]
    assert first["restarts"] == ["decode-0 exited with code -9"]
    assert first["valid"] is allow
    if not allow:
        assert first["invalid_reason"].startswith("worker restart during the point: decode-0")


# --- validation ----------------------------------------------------------------------------------
def test_restart_settings_are_validated(compose: Any) -> None:
    from orchestrator.config.validate import validate

    cfg = compose(
        "+model=gpt_oss_120b",
        "decode.restart=sometimes",
        "frontend.restart=nope",
        "deployment.max_restarts=-1",
        "deployment.restart_window_s=0",
        "deployment.restart_backoff_s=10",
        "deployment.restart_backoff_max_s=5",
    )
    found = {i.key: i for i in validate(cfg)}
    assert found["decode.restart"].found == "'sometimes'"
    assert "never, on_failure, always" in found["decode.restart"].fix
    assert "frontend.restart" in found and "prefill.restart" not in found
    assert found["deployment.max_restarts"].problem == "must not be negative"
    assert found["deployment.restart_window_s"].problem == "must be positive"
    assert (
        "below deployment.restart_backoff_s=10" in found["deployment.restart_backoff_max_s"].problem
    )
    assert validate(compose("+model=gpt_oss_120b")) == []


def test_a_process_without_health_check_is_back_in_service_once_restarted(
    plan_of: Any, tmp_path: Path
) -> None:
    """Dynamo's planner (autoscale) has no health endpoint: running again is all it can show,
    so its restart ends the degraded state instead of waiting for a check that never comes."""
    http = FakeHttp(dict(READY))
    driver, backend = make_driver(
        plan_of, tmp_path, http, "readiness.interval_s=0.1", "autoscale=dynamo_planner"
    )
    assert driver.plan.process("planner").health is None
    seen: dict[str, Any] = {}

    def scenario(d: Driver) -> None:
        backend.procs["planner"].code = 137
        d.check_alive()
        seen["degraded"] = list(d.degraded)
        serve_steps(d, 1.5)
        seen["after"] = json.loads((tmp_path / "state.json").read_text())
        d.request_stop("test over")

    driver.on_ready.append(scenario)
    assert driver.run() == 0
    assert seen["degraded"] == ["planner"]
    after = seen["after"]
    assert after["degraded"] == [] and after["processes"]["planner"]["state"] == "running"
    assert backend.started.count("planner") == 2 and backend.started.count("decode-0") == 1
