"""sglang-router registration: pure parsers over JSON captured from the real router, and the
registration logic against the scripted FakeHttp and FakeClock of tests/fakes.py.

Captured from sglang-router 0.3.2 (Rust `smg`, pip wheel) started with
`--pd-disaggregation --host 127.0.0.1 --port 31000` (regular mode: without
`--pd-disaggregation`), workers being tests/doubles/sglang_test_double.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from orchestrator.core.effects import HttpError, HttpResponse
from orchestrator.core.errors import OrchestratorError
from orchestrator.frontends import get_frontend
from orchestrator.frontends import worker_api as router
from orchestrator.plan.model import TIER_WORKER, Process, Readiness
from tests.fakes import Answer, FakeClock, FakeHttp

# --- captured answers (sglang-router 0.3.2) --------------------------------------------------------
POST_ACCEPTED = (
    '{"status":"accepted","worker_id":"11f7c252-1de5-4b2e-9c8b-f1d2b385fdda","url":"http://127.0.0.1:31001",'
    '"location":"/workers/11f7c252-1de5-4b2e-9c8b-f1d2b385fdda","message":"Worker addition queued for '
    'background processing"}'
)
# Right after the 202: registration is asynchronous, the worker is not listed yet.
WORKERS_EMPTY = (
    '{"workers":[],"total":0,"stats":{"prefill_count":0,"decode_count":0,"regular_count":0}}'
)
PREFILL = (
    '{"id":"11f7c252-1de5-4b2e-9c8b-f1d2b385fdda","url":"http://127.0.0.1:31001","model_id":"openai/gpt-oss-120b",'
    '"priority":50,"cost":1.0,"worker_type":"prefill","is_healthy":true,"load":0,"connection_mode":"HTTP",'
    '"bootstrap_port":31901,"metadata":{"model_type":"test_double","tp_size":"4","architectures":'
    '"[\\"TestDoubleForCausalLM\\"]","disaggregation_mode":"prefill","served_model_name":"openai/gpt-oss-120b",'
    '"dp_size":"1","model_path":"openai/gpt-oss-120b"},"disable_health_check":false}'
)
DECODE = (
    '{"id":"577fb827-08ff-4e2d-a3e2-328b76cfbdbc","url":"http://127.0.0.1:31002","model_id":"openai/gpt-oss-120b",'
    '"priority":50,"cost":1.0,"worker_type":"decode","is_healthy":true,"load":0,"connection_mode":"HTTP",'
    '"metadata":{"architectures":"[\\"TestDoubleForCausalLM\\"]","served_model_name":"openai/gpt-oss-120b",'
    '"dp_size":"1","model_type":"test_double","tp_size":"4","disaggregation_mode":"decode","model_path":'
    '"openai/gpt-oss-120b"},"disable_health_check":false}'
)
WORKERS_1P1D = f'{{"workers":[{PREFILL},{DECODE}],"total":2,"stats":{{"prefill_count":1,"decode_count":1,"regular_count":0}}}}'
# The decode was SIGKILLed; router started with --health-check-interval-secs 1 --health-failure-threshold 1.
WORKERS_DECODE_UNHEALTHY = WORKERS_1P1D.replace(
    '"worker_type":"decode","is_healthy":true', '"worker_type":"decode","is_healthy":false'
)
# POST without worker_type in PD mode: 0.3.2 registers it as "regular".
WORKERS_REGULAR_IN_PD = (
    '{"workers":[{"id":"41b53c25-60f5-4e57-90b9-d9b368aaa311","url":"http://127.0.0.1:31002","model_id":'
    '"openai/gpt-oss-120b","priority":50,"cost":1.0,"worker_type":"regular","is_healthy":true,"load":0,'
    '"connection_mode":"HTTP","metadata":{"tp_size":"4","disaggregation_mode":"decode"},"disable_health_check":false},'
    f'{PREFILL}],"total":2,"stats":{{"prefill_count":1,"decode_count":0,"regular_count":1}}}}'
)
WORKERS_REGULAR = (
    '{"workers":[{"id":"092e1dfe-dd4e-4947-bd99-b8a70ac9e3de","url":"http://127.0.0.1:31004","model_id":'
    '"openai/gpt-oss-120b","priority":50,"cost":1.0,"worker_type":"regular","is_healthy":true,"load":0,'
    '"connection_mode":"HTTP","metadata":{"disaggregation_mode":"null","tp_size":"1"},"disable_health_check":false}],'
    '"total":1,"stats":{"prefill_count":0,"decode_count":0,"regular_count":1}}'
)
DELETE_ACCEPTED = (
    '{"status":"accepted","worker_id":"577fb827-08ff-4e2d-a3e2-328b76cfbdbc","message":'
    '"Worker removal queued for background processing"}'
)
DELETE_MISSING = (
    '{"error":"Worker 577fb827-08ff-4e2d-a3e2-328b76cfbdbc not found","code":"WORKER_NOT_FOUND"}'
)
DELETE_BY_URL = (
    '{"error":"Invalid worker_id \'http://127.0.0.1:31002\' (expected UUID). Error: invalid character: '
    'expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `h` at 1",'
    '"code":"BAD_REQUEST"}'
)
READINESS_OK = '{"status":"ready","healthy_workers":2,"total_workers":2}'
READINESS_503 = '{"status":"not ready","reason":"insufficient healthy workers"}'
POST_MISSING_URL = "Failed to deserialize the JSON body into the target type: missing field `url` at line 1 column 24"

R = "http://10.0.0.1:8000"


# --- fakes -----------------------------------------------------------------------------------------
def ok(status: int, body: str) -> HttpResponse:
    return HttpResponse(status, body)


REFUSED = HttpError(f"ConnectionError on {R}/workers")


def worker(name: str, role: str, port: int, bootstrap: int = 0) -> Process:
    return Process(
        name=name,
        role=role,
        group=role,
        worker_index=0,
        rank=0,
        node_index=0,
        gpus=(0,),  # type: ignore[arg-type]
        ports={"http": port},
        env={},
        argv=("x",),
        tier=TIER_WORKER,
        url=f"http://127.0.0.1:{port}",
        bootstrap_port=bootstrap,
    )


PREFILL_PROC = worker("prefill-0", "prefill", 31001, bootstrap=31901)
DECODE_PROC = worker("decode-0", "decode", 31002)


# --- pure parsers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "listed", "healthy"),
    [
        (WORKERS_EMPTY, {}, {}),
        (WORKERS_1P1D, {"prefill": 1, "decode": 1}, {"prefill": 1, "decode": 1}),
        (WORKERS_DECODE_UNHEALTHY, {"prefill": 1, "decode": 1}, {"prefill": 1, "decode": 0}),
        (WORKERS_REGULAR_IN_PD, {"regular": 1, "prefill": 1}, {"regular": 1, "prefill": 1}),
        (WORKERS_REGULAR, {"regular": 1}, {"regular": 1}),
    ],
)
def test_parse_router_workers_counts_per_type(
    body: str, listed: dict[str, int], healthy: dict[str, int]
) -> None:
    counts = router.parse_router_workers(json.loads(body))
    assert dict(counts.listed) == listed
    assert dict(counts.healthy) == healthy


def test_parse_worker_list_keeps_ids_and_bootstrap_port() -> None:
    prefill, decode = router.parse_worker_list(json.loads(WORKERS_1P1D))
    assert (prefill.id, prefill.url, prefill.worker_type, prefill.bootstrap_port) == (
        "11f7c252-1de5-4b2e-9c8b-f1d2b385fdda",
        "http://127.0.0.1:31001",
        "prefill",
        31901,
    )
    assert decode.bootstrap_port is None and decode.healthy


@pytest.mark.parametrize("body", [None, {}, {"workers": {}}, {"workers": [{"id": "x"}]}, "OK"])
def test_parse_worker_list_rejects_other_shapes(body: Any) -> None:
    with pytest.raises(ValueError):
        router.parse_worker_list(body)


@pytest.mark.parametrize(
    ("body", "expected", "missing"),
    [
        (WORKERS_1P1D, {"prefill": 1, "decode": 1}, ""),
        (
            WORKERS_1P1D,
            {"prefill": 2, "decode": 1},
            "router has 1/2 healthy prefill, 1/1 healthy decode",
        ),
        (
            WORKERS_DECODE_UNHEALTHY,
            {"prefill": 1, "decode": 1},
            "router has 1/1 healthy prefill, 0/1 healthy decode (1 listed)",
        ),
        # A decode registered without worker_type counts as regular, not as the decode we wait for.
        (
            WORKERS_REGULAR_IN_PD,
            {"prefill": 1, "decode": 1},
            "router has 1/1 healthy prefill, 0/1 healthy decode",
        ),
        (WORKERS_REGULAR, {"worker": 1}, ""),
        (WORKERS_EMPTY, {"worker": 2}, "router has 0/2 healthy regular"),
    ],
)
def test_missing_workers(body: str, expected: dict[str, int], missing: str) -> None:
    assert (
        router.missing_workers(router.parse_router_workers(json.loads(body)), expected) == missing
    )


def test_registration_payloads() -> None:
    assert router.registration_payload(PREFILL_PROC) == {
        "url": "http://127.0.0.1:31001",
        "worker_type": "prefill",
        "bootstrap_port": 31901,
    }
    assert router.registration_payload(DECODE_PROC) == {
        "url": "http://127.0.0.1:31002",
        "worker_type": "decode",
    }
    agg = worker("aggregated-0", "worker", 31004)
    assert router.registration_payload(agg)["worker_type"] == "regular"


def test_parse_accepted() -> None:
    assert router.parse_accepted(ok(202, POST_ACCEPTED)) == "11f7c252-1de5-4b2e-9c8b-f1d2b385fdda"
    with pytest.raises(router.RouterError, match="HTTP 422.*missing field `url`"):
        router.parse_accepted(ok(422, POST_MISSING_URL))


# --- registration against the fake router -----------------------------------------------------------
def make(
    script: dict[tuple[str, str], list[Answer]], budget: float = 30.0
) -> tuple[router.Registrar, FakeHttp, FakeClock]:
    http, clock = FakeHttp(script), FakeClock()
    return router.Registrar(router.RouterClient(http, clock, R, budget_s=budget)), http, clock


def test_register_posts_once_and_keeps_the_uuid() -> None:
    reg, http, _ = make(
        {
            ("GET", f"{R}/workers"): [ok(200, WORKERS_EMPTY)],
            ("POST", f"{R}/workers"): [ok(202, POST_ACCEPTED)],
        }
    )
    assert reg.register(PREFILL_PROC) == ("11f7c252-1de5-4b2e-9c8b-f1d2b385fdda", True)
    assert reg.register(PREFILL_PROC) == (
        "11f7c252-1de5-4b2e-9c8b-f1d2b385fdda",
        False,
    )  # idempotent
    assert http.posts() == [
        {"url": "http://127.0.0.1:31001", "worker_type": "prefill", "bootstrap_port": 31901}
    ]


def test_register_skips_a_worker_the_router_already_lists() -> None:
    reg, http, _ = make({("GET", f"{R}/workers"): [ok(200, WORKERS_1P1D)]})
    assert reg.register(DECODE_PROC) == ("577fb827-08ff-4e2d-a3e2-328b76cfbdbc", False)
    assert http.posts() == []


def test_a_restarted_worker_registers_once_its_deleted_entry_is_gone() -> None:
    # SMG 1.13 answers DELETE with 202, lists the old entry a while longer and refuses the same
    # URL meanwhile (409 WORKER_ALREADY_EXISTS): the new registration waits for it to go.
    reg, http, clock = make(
        {
            ("GET", f"{R}/workers"): [
                ok(200, WORKERS_1P1D),
                ok(200, WORKERS_1P1D),
                ok(200, WORKERS_EMPTY),
            ],
            ("POST", f"{R}/workers"): [ok(202, POST_ACCEPTED)],
        }
    )
    reg.removed.add("577fb827-08ff-4e2d-a3e2-328b76cfbdbc")  # decode-0's entry, deleted (forget)
    assert reg.register(DECODE_PROC)[1] is True
    assert [c.method for c in http.calls] == ["GET", "GET", "GET", "POST"]
    assert 0.3 < clock.t < 1


def test_register_retries_connection_errors_with_the_clock() -> None:
    reg, http, clock = make(
        {
            ("GET", f"{R}/workers"): [REFUSED, REFUSED, ok(200, WORKERS_EMPTY)],
            ("POST", f"{R}/workers"): [REFUSED, ok(202, POST_ACCEPTED)],
        }
    )
    assert reg.register(PREFILL_PROC)[1] is True
    assert len(http.posts()) == 2
    assert 0 < clock.t < 5


def test_register_gives_up_after_the_budget() -> None:
    reg, http, clock = make({}, budget=10.0)
    with pytest.raises(router.RouterError, match="unreachable for 10 s"):
        reg.register(PREFILL_PROC)
    assert 8 <= clock.t <= 10
    assert all(m == "GET" for m, _, _ in http.calls)


def test_register_does_not_retry_http_errors() -> None:
    reg, http, _ = make(
        {
            ("GET", f"{R}/workers"): [ok(200, WORKERS_EMPTY)],
            ("POST", f"{R}/workers"): [ok(422, POST_MISSING_URL)],
        }
    )
    with pytest.raises(router.RouterError, match="refused the registration"):
        reg.register(DECODE_PROC)
    assert len(http.posts()) == 1
    assert isinstance(
        router.RouterError("x"), OrchestratorError
    )  # the driver reports it and tears down


def test_deregister_deletes_by_uuid_and_tolerates_gone_workers() -> None:
    prefill_id, decode_id = (
        "11f7c252-1de5-4b2e-9c8b-f1d2b385fdda",
        "577fb827-08ff-4e2d-a3e2-328b76cfbdbc",
    )
    reg, http, _ = make(
        {
            ("GET", f"{R}/workers"): [ok(200, WORKERS_1P1D)],
            ("DELETE", f"{R}/workers/{prefill_id}"): [ok(202, DELETE_ACCEPTED)],
            ("DELETE", f"{R}/workers/{decode_id}"): [ok(404, DELETE_MISSING)],
        }
    )
    reg.register(PREFILL_PROC)
    reg.register(DECODE_PROC)
    assert reg.deregister_all() == []
    assert reg.ids == {}
    assert [u for m, u, _ in http.calls if m == "DELETE"] == [
        f"{R}/workers/{prefill_id}",
        f"{R}/workers/{decode_id}",
    ]


def test_deregister_reports_problems() -> None:
    reg, _, _ = make(
        {
            ("GET", f"{R}/workers"): [ok(200, WORKERS_1P1D)],
            ("DELETE", f"{R}/workers/577fb827-08ff-4e2d-a3e2-328b76cfbdbc"): [
                ok(400, DELETE_BY_URL)
            ],
        }
    )
    reg.register(DECODE_PROC)
    (problem,) = reg.deregister_all()
    assert problem.startswith("decode-0:") and "HTTP 400" in problem
    reg2, _, _ = make({("GET", f"{R}/workers"): [ok(200, WORKERS_1P1D)]})
    reg2.register(PREFILL_PROC)
    assert (
        "ConnectionError" in reg2.deregister_all()[0]
    )  # router already gone: reported, not raised


# --- the readiness gate: counts first, then /readiness ----------------------------------------------
ROUTER = get_frontend("sglang_router")


def gate(expected: dict[str, int]) -> Readiness:
    """The plan's readiness section for a router at R."""
    return Readiness(
        frontend_kind="sglang_router",
        frontend_url=R,
        ready_path="/readiness",
        model="m",
        expected=expected,
        timeout_s=60,
        interval_s=1,
        canary=False,
        canary_max_tokens=1,
    )


@pytest.mark.parametrize(
    ("workers", "readiness", "ok_", "detail"),
    [
        (
            ok(200, WORKERS_EMPTY),
            ok(503, READINESS_503),
            False,
            "router has 0/1 healthy prefill, 0/1 healthy decode",
        ),
        (
            ok(200, WORKERS_DECODE_UNHEALTHY),
            ok(200, READINESS_OK),
            False,
            "0/1 healthy decode (1 listed)",
        ),
        (REFUSED, ok(200, READINESS_OK), False, "ConnectionError"),
        (ok(200, WORKERS_1P1D), ok(503, READINESS_503), False, "insufficient healthy workers"),
        (ok(200, WORKERS_1P1D), ok(200, READINESS_OK), True, ""),
    ],
)
def test_frontend_ready_for_the_router(
    workers: Answer, readiness: Answer, ok_: bool, detail: str
) -> None:
    http = FakeHttp({("GET", f"{R}/workers"): [workers], ("GET", f"{R}/readiness"): [readiness]})
    verdict = ROUTER.ready(http, gate({"prefill": 1, "decode": 1}))
    assert verdict.ok is ok_
    assert detail in verdict.detail


def test_frontend_ready_without_expected_counts_asks_readiness_only() -> None:
    http = FakeHttp({("GET", f"{R}/readiness"): [ok(200, READINESS_OK)]})
    assert ROUTER.ready(http, gate({})).ok
    assert [u for _, u, _ in http.calls] == [f"{R}/readiness"]


# --- the driver hooks --------------------------------------------------------------------------------
class FakeState:
    def __init__(self) -> None:
        self.processes: dict[str, dict[str, Any]] = {}
        self.data: dict[str, Any] = {}
        self.in_batch = False
        self.unbatched = 0  # changes written to state.json one by one (outside `batched`)

    def process(self, name: str, **fields: Any) -> None:
        self.processes.setdefault(name, {}).update(fields)
        self.unbatched += not self.in_batch

    @contextmanager
    def batched(self) -> Iterator[None]:
        self.in_batch = True
        yield
        self.in_batch = False

    def update(self, **fields: Any) -> None:
        self.data.update(fields)


class FakeDriver:
    """What attach_router_registration touches on the Driver."""

    def __init__(
        self, http: FakeHttp, attach_to: str = "", processes: tuple[Process, ...] = ()
    ) -> None:
        from types import SimpleNamespace

        self.http, self.clock, self.state = http, FakeClock(), FakeState()
        self.run_gone = ""  # runtime/heartbeat.py sets it when the run is gone
        job = SimpleNamespace(run_dir=attach_to) if attach_to else None
        self.plan = SimpleNamespace(
            readiness=SimpleNamespace(frontend_url=R), job=job, processes=processes
        )
        self.on_process_healthy: list[Any] = []
        self.on_process_lost: list[Any] = []
        self.on_process_retired: list[Any] = []
        self.before_stop: list[Any] = []
        self.on_tick: list[Any] = []
        self.said: list[str] = []

    def say(self, message: str) -> None:
        self.said.append(message)


def test_hooks_register_workers_only_and_deregister_at_stop() -> None:
    from types import SimpleNamespace

    http = FakeHttp(
        {
            ("GET", f"{R}/workers"): [ok(200, WORKERS_EMPTY)],
            ("POST", f"{R}/workers"): [ok(202, POST_ACCEPTED)],
            ("DELETE", f"{R}/workers/11f7c252-1de5-4b2e-9c8b-f1d2b385fdda"): [
                ok(202, DELETE_ACCEPTED)
            ],
        }
    )
    driver = FakeDriver(http)
    router.attach_router_registration(driver)  # type: ignore[arg-type]
    (on_healthy,), (before_stop,) = driver.on_process_healthy, driver.before_stop
    frontend = Process(
        name="frontend",
        role="frontend",
        group="frontend",
        worker_index=0,
        rank=0,
        node_index=0,
        gpus=(),
        ports={},
        env={},
        argv=("r",),
        tier=1,
        url=R,
    )
    rank1 = dataclasses.replace(worker("prefill-0-rank1", "prefill", 0), url="")  # serves no HTTP
    for proc in (rank1, PREFILL_PROC):
        on_healthy(driver, SimpleNamespace(proc=proc))
    assert http.calls == []  # the router's own /health has not passed yet: nothing to retry
    on_healthy(driver, SimpleNamespace(proc=frontend))
    assert http.posts() == [router.registration_payload(PREFILL_PROC)]
    on_healthy(driver, SimpleNamespace(proc=PREFILL_PROC))  # reported twice: still one POST
    assert len(http.posts()) == 1
    entry = driver.state.processes["prefill-0"]
    assert (
        entry["registered"] is True and entry["router_id"] == "11f7c252-1de5-4b2e-9c8b-f1d2b385fdda"
    )
    assert set(driver.state.processes) == {"prefill-0"}
    before_stop(driver)
    assert driver.state.processes["prefill-0"]["registered"] is False
    assert any(m == "DELETE" for m, _, _ in http.calls)


def test_an_attached_job_registers_with_the_running_router_at_once() -> None:
    """ctl scale: the plan has no router of its own to wait for; the run's already serves."""
    from types import SimpleNamespace

    http = FakeHttp(
        {
            ("GET", f"{R}/workers"): [ok(200, WORKERS_EMPTY)],
            ("POST", f"{R}/workers"): [ok(202, POST_ACCEPTED)],
        }
    )
    driver = FakeDriver(http, attach_to="/runs/r1")
    router.attach_router_registration(driver)  # type: ignore[arg-type]
    driver.on_process_healthy[0](driver, SimpleNamespace(proc=PREFILL_PROC))
    assert http.posts() == [router.registration_payload(PREFILL_PROC)]
    assert driver.state.processes["prefill-0"]["registered"] is True


def test_a_worker_removed_by_scale_down_is_deleted_and_gone_from_the_list_before_it_stops() -> None:
    from types import SimpleNamespace

    prefill_id = "11f7c252-1de5-4b2e-9c8b-f1d2b385fdda"
    http = FakeHttp(
        {
            ("GET", f"{R}/workers"): [
                ok(200, WORKERS_EMPTY),
                ok(200, WORKERS_1P1D),
                ok(200, WORKERS_1P1D),
                ok(200, WORKERS_EMPTY),
            ],
            ("POST", f"{R}/workers"): [ok(202, POST_ACCEPTED)],
            ("DELETE", f"{R}/workers/{prefill_id}"): [ok(202, DELETE_ACCEPTED)],
        }
    )
    driver = FakeDriver(http, attach_to="/runs/r1")
    router.attach_router_registration(driver)  # type: ignore[arg-type]
    driver.on_process_healthy[0](driver, SimpleNamespace(proc=PREFILL_PROC))
    driver.on_process_retired[0](driver, SimpleNamespace(proc=PREFILL_PROC))
    methods = [m for m, _, _ in http.calls]
    # DELETE answers 202 (asynchronous): listed twice more, then gone.
    assert methods == ["GET", "POST", "DELETE", "GET", "GET", "GET"]
    assert driver.state.processes["prefill-0"]["registered"] is False


def test_a_worker_the_router_keeps_listing_after_delete_is_an_error() -> None:
    from types import SimpleNamespace

    prefill_id = "11f7c252-1de5-4b2e-9c8b-f1d2b385fdda"
    http = FakeHttp(
        {
            ("GET", f"{R}/workers"): [ok(200, WORKERS_EMPTY), ok(200, WORKERS_1P1D)],
            ("POST", f"{R}/workers"): [ok(202, POST_ACCEPTED)],
            ("DELETE", f"{R}/workers/{prefill_id}"): [ok(202, DELETE_ACCEPTED)],
        }
    )
    driver = FakeDriver(http, attach_to="/runs/r1")
    router.attach_router_registration(driver)  # type: ignore[arg-type]
    driver.on_process_healthy[0](driver, SimpleNamespace(proc=PREFILL_PROC))
    with pytest.raises(router.RouterError, match="still lists"):
        driver.on_process_retired[0](driver, SimpleNamespace(proc=PREFILL_PROC))


class AttachedView:
    """What require_listed touches: an attached job's plan (its own workers), clock, state."""

    def __init__(self, http: FakeHttp, procs: list[Process]) -> None:
        import threading
        from types import SimpleNamespace

        self.http, self.clock, self.state = http, FakeClock(), FakeState()
        readiness = SimpleNamespace(frontend_url=R, timeout_s=5.0, interval_s=0.25)
        self.plan = SimpleNamespace(
            readiness=readiness, processes=procs, job=SimpleNamespace(run_dir="/run")
        )
        self.stop_event = threading.Event()

    def check_alive(self) -> None:
        pass


def test_an_attached_job_waits_until_the_router_lists_its_own_workers_healthy() -> None:
    from orchestrator.frontends.router_attach import require_listed

    decode = worker("decode-1", "decode", 31002)  # the attached job's worker (DECODE's URL)
    http = FakeHttp(
        {
            ("GET", f"{R}/workers"): [
                ok(200, WORKERS_EMPTY),
                ok(200, WORKERS_DECODE_UNHEALTHY),
                ok(200, WORKERS_1P1D),
            ]
        }
    )
    view = AttachedView(http, [decode])
    require_listed(view)  # type: ignore[arg-type]
    assert len(http.calls) == 3  # not listed, listed unhealthy, listed healthy
    assert view.state.data["attached_listed"] == ["http://127.0.0.1:31002"]

    never = AttachedView(FakeHttp({("GET", f"{R}/workers"): [ok(200, WORKERS_EMPTY)]}), [decode])
    with pytest.raises(
        OrchestratorError, match="does not list http://127.0.0.1:31002 healthy after 5 s"
    ):
        require_listed(never)  # type: ignore[arg-type]


def test_no_deregistration_when_the_router_stops_with_the_run() -> None:
    """The run's own router is stopped with its workers: no DELETE per worker (768 of them
    took 17 s of the stop on the testbed, issue 22); each is marked unregistered, in one
    state.json write. A router the plan does not run (attached jobs) is still told."""
    from types import SimpleNamespace

    frontend = dataclasses.replace(worker("frontend", "frontend", 0), url=R, tier=1)
    workers = [worker(f"worker-{i}", "worker", i) for i in range(3)]
    http = FakeHttp(
        {
            ("GET", f"{R}/workers"): [ok(200, WORKERS_EMPTY)],
            ("POST", f"{R}/workers"): [ok(202, POST_ACCEPTED)],
        }
    )
    driver = FakeDriver(http, processes=(frontend, *workers))
    router.attach_router_registration(driver)  # type: ignore[arg-type]
    for proc in (frontend, *workers):
        driver.on_process_healthy[0](driver, SimpleNamespace(proc=proc))
    assert len(http.posts()) == 3
    unbatched = driver.state.unbatched
    driver.before_stop[0](driver)
    assert not [c for c in http.calls if c[0] == "DELETE"]
    assert all(driver.state.processes[w.name]["registered"] is False for w in workers)
    assert driver.state.unbatched == unbatched  # one state.json write for all of them
    assert router.router_stops_with_run(driver.plan)  # type: ignore[arg-type]
    attached = SimpleNamespace(job=SimpleNamespace(run_dir="/run"), processes=(frontend,))
    assert not router.router_stops_with_run(attached)  # type: ignore[arg-type]


def test_no_deregistration_once_the_runs_router_is_gone() -> None:
    """An attached job stopping because its run is gone (runtime/heartbeat.py) does not spend
    RETRY_BUDGET_S per worker on a router that no longer answers."""
    from types import SimpleNamespace

    http = FakeHttp(
        {
            ("GET", f"{R}/workers"): [ok(200, WORKERS_EMPTY)],
            ("POST", f"{R}/workers"): [ok(202, POST_ACCEPTED)],
        }
    )
    driver = FakeDriver(http, attach_to="/run")
    router.attach_router_registration(driver)  # type: ignore[arg-type]
    driver.on_process_healthy[0](driver, SimpleNamespace(proc=PREFILL_PROC))
    assert [m for m, _, _ in http.calls] == ["GET", "POST"]  # registered with the run's router
    driver.run_gone = "the run it attaches to has not beaten for 60 s"
    driver.before_stop[0](driver)
    assert [m for m, _, _ in http.calls] == ["GET", "POST"]  # no DELETE (it would be refused)


@pytest.mark.parametrize("other_decode", [False, True])
def test_the_last_decode_lost_aborts_what_the_prefills_hold(other_decode: bool) -> None:
    """A decode dies: when the router lists no other decode (this driver's or another job's),
    the prefills' held requests are aborted (they would wait 300 s for its handshake); with one
    left anywhere they are kept, since a prefill may be paired with it."""
    from types import SimpleNamespace

    decode_id = "577fb827-08ff-4e2d-a3e2-328b76cfbdbc"
    another = DECODE.replace(decode_id, "aaaaaaaa-0000-0000-0000-000000000000")
    listed = [PREFILL, DECODE, another] if other_decode else [PREFILL, DECODE]
    http = FakeHttp(
        {
            ("GET", f"{R}/workers"): [
                ok(200, WORKERS_1P1D),
                ok(200, f'{{"workers":[{",".join(listed)}]}}'),
            ],
            ("DELETE", f"{R}/workers/{decode_id}"): [ok(202, DELETE_ACCEPTED)],
            ("POST", f"{PREFILL_PROC.url}/abort_request"): [ok(200, "")],
        }
    )
    driver = FakeDriver(http, attach_to="/runs/r1")  # registers at once
    procs = {p.name: p for p in (PREFILL_PROC, DECODE_PROC)}
    driver.plan.process = procs.__getitem__
    router.attach_router_registration(driver)  # type: ignore[arg-type]
    for proc in procs.values():
        driver.on_process_healthy[0](driver, SimpleNamespace(proc=proc))
    driver.on_process_lost[0](driver, SimpleNamespace(proc=DECODE_PROC))
    aborts = [c for c in http.calls if c.url.endswith("/abort_request")]
    assert [c.payload for c in aborts] == ([] if other_decode else [{"abort_all": True}])


def test_registrations_of_one_tick_list_the_router_once() -> None:
    """768 workers turning healthy were 768 GETs of a list growing to 768 (issue 22): one GET
    per tick, while a worker listed before is still taken as registered."""
    from types import SimpleNamespace

    http = FakeHttp(
        {
            ("GET", f"{R}/workers"): [ok(200, WORKERS_EMPTY)],
            ("POST", f"{R}/workers"): [ok(202, POST_ACCEPTED)],
        }
    )
    driver = FakeDriver(http, attach_to="/runs/r1")
    router.attach_router_registration(driver)  # type: ignore[arg-type]
    (on_healthy,), (on_tick,) = driver.on_process_healthy, driver.on_tick
    for i in (1, 2, 3):
        on_healthy(driver, SimpleNamespace(proc=worker(f"decode-{i}", "decode", 31010 + i)))
    assert [m for m, _, _ in http.calls] == ["GET", "POST", "POST", "POST"]
    on_tick(driver)
    http.script[("GET", f"{R}/workers")] = [ok(200, WORKERS_1P1D)]
    on_healthy(driver, SimpleNamespace(proc=DECODE_PROC))  # listed since: not posted again
    assert [m for m, _, _ in http.calls][4:] == ["GET"]
    assert driver.state.processes["decode-0"]["router_id"] == "577fb827-08ff-4e2d-a3e2-328b76cfbdbc"
