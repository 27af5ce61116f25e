"""Pure runtime pieces: readiness parsers, node discovery, state, the
driver's sequencing with fake side effects (clock, HTTP, processes)."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.effects import HttpResponse
from orchestrator.core.errors import OrchestratorError
from orchestrator.frontends import dynamo, sglang_router
from orchestrator.plan.model import Process
from orchestrator.plan.placeholders import Bindings, bind_plan
from orchestrator.run.driver import Driver
from orchestrator.run.entry import (
    Allocation,
    allocation_issues,
    gpus_in_allocation,
    port_conflicts,
)
from orchestrator.runtime import health
from orchestrator.runtime.nodes import NodeInfo, busy_ports, check_address, parse_node_lines
from orchestrator.runtime.processes import Running
from orchestrator.runtime.state import StateFile, progress_line
from tests.fakes import FakeClock, FakeHttp


def resp(status: int, body: Any) -> HttpResponse:
    return HttpResponse(status, body if isinstance(body, str) else json.dumps(body))


# --- readiness parsers (bodies as Dynamo 1.6.1 / sglang-router 0.3.2 return them) ---------------
def test_dynamo_ready_gate() -> None:
    ok = {"model": "m", "ready": True, "namespaces": {"dynamo": {"ready": True}}}
    assert dynamo.parse_ready(resp(200, ok)).ok
    missing = {"model": "m", "ready": False, "reason": "missing worker types: prefill"}
    verdict = dynamo.parse_ready(resp(503, missing))
    assert not verdict.ok and "missing worker types: prefill" in verdict.detail


def test_router_readiness_gate() -> None:
    assert sglang_router.parse_readiness(resp(200, {"status": "ready", "healthy_workers": 2})).ok
    verdict = sglang_router.parse_readiness(
        resp(503, {"status": "not ready", "reason": "insufficient healthy workers"})
    )
    assert not verdict.ok and "insufficient healthy workers" in verdict.detail


@pytest.mark.parametrize(
    ("message", "tokens", "ok"),
    [
        ({"content": "Yes, it is up."}, 5, True),
        ({"content": "", "reasoning_content": "The user asks"}, 8, True),  # gpt-oss still thinking
        ({"content": ""}, 0, False),  # zero output: what a broken KV transfer looks like
        ({"content": "   "}, 3, False),
    ],
)
def test_canary_needs_generated_text(message: dict[str, str], tokens: int, ok: bool) -> None:
    body = {"choices": [{"message": message}], "usage": {"completion_tokens": tokens}}
    assert health.parse_canary(resp(200, body)).ok is ok


def test_canary_http_error_is_reported() -> None:
    verdict = health.parse_canary(resp(503, {"message": "Model is not ready"}))
    assert not verdict.ok and "503" in verdict.detail


# Slurm output parsers and the Slurm client: tests/test_slurm.py


# --- node discovery: stderr chatter must never become an address (srt-slurm #250) -------------
def test_node_lines_ignore_non_json_chatter() -> None:
    out = (
        'srun: Step created for StepId=5.1\n{"host": "node1", "ip": "10.77.0.11", "busy": [20010]}\n'
        '{"host": "node2", "ip": "10.77.0.12", "busy": []}\n'
    )
    assert parse_node_lines(out) == {
        "node1": NodeInfo("10.77.0.11", (20010,)),
        "node2": NodeInfo("10.77.0.12"),
    }


def test_busy_ports_are_found_and_named(plan_of: Any) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        assert busy_ports([taken]) == [taken]
    plan = plan_of()
    decode = plan.process("decode-0")
    alloc = Allocation("1", ("nodeA",), ("10.0.0.1",), ((decode.ports["nccl"],),))
    assert port_conflicts(plan, alloc) == [
        f"port {decode.ports['nccl']} (decode-0 nccl) is already in use on nodeA (node 0)"
    ]


@pytest.mark.parametrize("bad", ["Step created", "0.0.0.0", "", "10.77.0.300"])
def test_invalid_addresses_are_rejected(bad: str) -> None:
    with pytest.raises(OrchestratorError, match="node1"):
        check_address("node1", bad)


def test_allocation_checks(plan_of: Any) -> None:
    plan = plan_of("prefill.workers=2", "decode.workers=2")  # 2 nodes x 8 GPUs
    assert gpus_in_allocation({"SLURM_GPUS_ON_NODE": "8"}) == 8
    assert gpus_in_allocation({"SLURM_GPUS_PER_NODE": "h100:4"}) == 4
    assert gpus_in_allocation({"SLURM_JOB_GPUS": "0,1"}) == 2
    assert gpus_in_allocation({}) is None
    problems = allocation_issues(
        plan, {"SLURM_JOB_ID": "9", "SLURM_JOB_NUM_NODES": "1", "SLURM_GPUS_ON_NODE": "4"}
    )
    assert len(problems) == 2
    assert "has 1 node(s); the plan needs 2" in problems[0]
    assert "has 4 GPU(s) per node; the plan needs 8" in problems[1]
    assert (
        allocation_issues(
            plan, {"SLURM_JOB_ID": "9", "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "8"}
        )
        == []
    )


def test_progress_line_counts_probed_processes(tmp_path: Path) -> None:
    state = StateFile(tmp_path)
    state.phase("starting")
    state.process("frontend", role="frontend", probed=True, state="healthy")
    state.process("decode-0", role="decode", probed=True, state="healthy")
    state.process("decode-0-rank1", role="decode", probed=False, state="starting")
    state.process("prefill-0", role="prefill", probed=True, state="starting")
    assert progress_line(state.data) == "starting: frontend 1/1 prefill 0/1 decode 1/1"
    assert json.loads((tmp_path / "state.json").read_text())["timeline"][0]["phase"] == "starting"


# --- the driver, with fake processes, HTTP and clock -----------------------------------------
class FakePopen:
    def __init__(self) -> None:
        self.code: int | None = None
        self.pid = 4242

    def poll(self) -> int | None:
        return self.code

    def wait(self, timeout: float | None = None) -> int | None:
        return self.code

    def kill(self) -> None:
        self.code = -9


class FakeBackend:
    """Processes that run until signalled (or until a test makes one exit)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.signals: list[tuple[str, str]] = []
        self.procs: dict[str, FakePopen] = {}

    def start(self, proc: Process, log: Path) -> Running:
        self.started.append(proc.name)
        self.procs[proc.name] = FakePopen()
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"{proc.name} line 1\n{proc.name} last line\n")
        return Running(proc=proc, popen=self.procs[proc.name], log=log, host="nodeA")  # type: ignore[arg-type]

    def signal(self, running: Sequence[Running], sig: signal.Signals) -> None:
        for r in running:
            self.signals.append((r.proc.name, sig.name))
            self.procs[r.proc.name].code = -sig.value

    def leftovers(self, running: Sequence[Running]) -> list[str]:
        return [r.proc.name for r in running if r.popen.poll() is None]


def make_driver(
    plan_of: Any, tmp_path: Path, http: FakeHttp, *overrides: str
) -> tuple[Driver, FakeBackend]:
    plan = plan_of(
        "engine=mocker", "readiness.timeout_s=5", "readiness.interval_s=0.001", *overrides
    )
    bound = bind_plan(
        plan, Bindings(("10.0.0.1", "10.0.0.2"), ("nodeA", "nodeB"), "77", str(tmp_path))
    )
    backend = FakeBackend()
    driver = Driver(
        bound,
        run_dir=tmp_path,
        backend=backend,
        http=http,
        clock=FakeClock(),  # type: ignore[arg-type]
        state=StateFile(tmp_path),
        say=lambda _m: None,
    )
    return driver, backend


READY = {
    "/health": resp(200, {"status": "ready"}),
    "/ready": resp(200, {"ready": True}),
    "/v1/chat/completions": resp(
        200, {"choices": [{"message": {"content": "yes"}}], "usage": {"completion_tokens": 3}}
    ),
}


def test_driver_reaches_ready_then_stops_in_tiers(plan_of: Any, tmp_path: Path) -> None:
    http = FakeHttp(dict(READY))
    driver, backend = make_driver(plan_of, tmp_path, http, "prefill.workers=2", "decode.workers=2")
    driver.on_ready.append(lambda d: d.request_stop("test over"))
    assert driver.run() == 0
    assert backend.started[0] == "etcd"  # infrastructure first
    st = json.loads((tmp_path / "state.json").read_text())
    assert [t["phase"] for t in st["timeline"]] == ["starting", "ready", "stopping", "done"]
    assert st["reason"] == "test over"
    term = [name for name, sig in backend.signals if sig == "SIGTERM"]
    assert term[-1] == "etcd" and set(term[:-1]) == {
        "frontend",
        "decode-0",
        "decode-1",
        "prefill-0",
        "prefill-1",
    }
    urls = http.urls()
    assert urls.index(next(u for u in urls if u.endswith("/ready"))) > max(
        i for i, u in enumerate(urls) if u.endswith("/health")
    )  # the frontend gate is asked only once every process is healthy


def test_driver_fails_fast_naming_the_dead_process(plan_of: Any, tmp_path: Path) -> None:
    driver, backend = make_driver(plan_of, tmp_path, FakeHttp(dict(READY)), "decode.restart=never")

    def crash(d: Driver) -> None:
        backend.procs["decode-0"].code = 137

    driver.on_ready.append(crash)
    assert driver.run() == 1
    st = json.loads((tmp_path / "state.json").read_text())
    assert st["phase"] == "failed"
    assert "decode-0 (decode) on nodeA (node 0) exited with code 137" in st["error"]
    assert "decode-0 last line" in st["error"]  # the log tail


def test_driver_deadline_says_who_is_missing(plan_of: Any, tmp_path: Path) -> None:
    answers = {k: v for k, v in READY.items() if k != "/health"}
    answers["10.0.0.1:8000/health"] = resp(200, "ok")  # only the frontend is up
    driver, _ = make_driver(plan_of, tmp_path, FakeHttp(answers))
    assert driver.run() == 1
    error = json.loads((tmp_path / "state.json").read_text())["error"]
    assert error.startswith("not ready after 5 s: waiting for decode-0, prefill-0")
    assert "ConnectionError" in error


def test_driver_canary_without_tokens_is_not_ready(plan_of: Any, tmp_path: Path) -> None:
    answers = dict(READY)
    answers["/v1/chat/completions"] = resp(
        200, {"choices": [{"message": {"content": ""}}], "usage": {"completion_tokens": 0}}
    )
    driver, _ = make_driver(plan_of, tmp_path, FakeHttp(answers))
    assert driver.run() == 1
    error = json.loads((tmp_path / "state.json").read_text())["error"]
    assert "workers healthy" in error and "canary returned no output" in error


def test_driver_fails_a_process_that_hangs_while_serving(plan_of: Any, tmp_path: Path) -> None:
    http = FakeHttp(dict(READY))
    driver, _ = make_driver(
        plan_of,
        tmp_path,
        http,
        "readiness.serve_check_s=30",
        "readiness.interval_s=1",
        "prefill.restart=never",
    )

    def hang_prefill(d: Driver) -> None:
        # The prefill stops answering (a stuck engine) but its process does not exit.
        http.script[d.plan.process("prefill-0").health.url] = resp(503, {"status": "notready"})  # type: ignore[union-attr]

    driver.on_ready.append(hang_prefill)
    assert driver.run() == 1
    st = json.loads((tmp_path / "state.json").read_text())
    assert (
        "prefill-0 (prefill) on nodeA (node 0) failed 3 health checks in a row while serving"
        in st["error"]
    )
    assert "HTTP 503" in st["error"] and st["processes"]["prefill-0"]["state"] == "stopped"
    assert driver.clock.now() >= 3 * 30  # type: ignore[attr-defined]  # three checks, 30 s apart


def test_serving_health_watch_can_be_disabled(plan_of: Any, tmp_path: Path) -> None:
    http = FakeHttp(dict(READY))
    driver, _ = make_driver(
        plan_of,
        tmp_path,
        http,
        "readiness.serve_failures=0",
        "readiness.interval_s=1",
        "readiness.serve_check_s=1",
    )
    hung_url = driver.plan.process("prefill-0").health.url  # type: ignore[union-attr]
    calls_at_ready: list[int] = []

    def hang(d: Driver) -> None:
        http.script[hung_url] = resp(503, {})
        calls_at_ready.append(len(http.calls))
        d.clock.wait = lambda event, s: (d.clock.sleep(s), d.clock.now() > 120)[1]  # type: ignore[method-assign]

    driver.on_ready.append(hang)
    assert driver.run() == 0  # served 120 fake seconds, then the (patched) wait said stop
    assert hung_url not in http.urls()[calls_at_ready[0] :]  # never probed while serving


class SlowHealth(FakeHttp):
    """/health answers after `delay` s; records how many probes were in flight at once."""

    def __init__(self, script: dict[Any, Any], delay: float) -> None:
        super().__init__(script)
        self.delay, self.inflight, self.most = delay, 0, 0
        self.lock = threading.Lock()

    def get(self, url: str, *, timeout: float) -> HttpResponse:
        if not url.endswith("/health"):
            return super().get(url, timeout=timeout)
        with self.lock:
            self.inflight += 1
            self.most = max(self.most, self.inflight)
        time.sleep(self.delay)
        with self.lock:
            self.inflight -= 1
        return super().get(url, timeout=timeout)


def test_startup_health_checks_run_at_once_not_one_after_another(
    plan_of: Any, tmp_path: Path
) -> None:
    """768 starting processes took 19 s to turn healthy with one probe at a time (issue 22)."""
    http = SlowHealth(dict(READY), delay=0.2)
    driver, _ = make_driver(plan_of, tmp_path, http, "prefill.workers=2", "decode.workers=2")
    driver.on_ready.append(lambda d: d.request_stop("test over"))
    assert driver.run() == 0
    assert http.most == 5  # every worker and the frontend probed in the same tick
