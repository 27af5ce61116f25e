"""What each frontend says it routes to (Frontend.routes), from captured real answers: Dynamo
1.6.1's /health and /metrics (tests/fixtures/routes), sglang-router 0.3.2's GET /workers."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.core.effects import HttpResponse
from orchestrator.frontends import get_frontend
from orchestrator.frontends.base import Routes
from orchestrator.frontends.dynamo_routes import listed, routed
from orchestrator.plan.model import Readiness
from tests.fakes import FakeHttp
from tests.test_router import WORKERS_1P1D, WORKERS_DECODE_UNHEALTHY, gate
from tests.test_router import R as URL

ROUTES = Path(__file__).parent / "fixtures" / "routes"


def readiness(**expected: int) -> Readiness:
    """The plan's readiness section (only `expected` matters here)."""
    return gate(expected)


def dynamo(capture: str, r: Readiness) -> Routes:
    http = FakeHttp(
        {
            f"{URL}/health": HttpResponse(
                200, (ROUTES / f"dynamo_{capture}.health.json").read_text()
            ),
            f"{URL}/metrics": HttpResponse(200, (ROUTES / f"dynamo_{capture}.metrics").read_text()),
        }
    )
    return get_frontend("dynamo").routes(http, URL, r)


def test_dynamo_lists_instances_by_role_and_routed_workers_by_their_gauges() -> None:
    routes = dynamo("all_routed", readiness(prefill=2, decode=2))
    assert routes.listed == {
        "prefill": {"6baaa2512d98be1e", "6baaa2512d98be30"},
        "decode": {"6baaa2512d98be14", "6baaa2512d98be18"},
    }
    assert routes.routed == {
        "6baaa2512d98be1e",
        "6baaa2512d98be30",
        "6baaa2512d98be14",
        "6baaa2512d98be18",
    }
    assert routes.empty_roles(["prefill", "decode"]) == []


def test_a_listed_dynamo_prefill_without_a_gauge_is_not_routed_yet() -> None:
    routes = dynamo("prefill_not_routed", readiness(prefill=2, decode=2))
    assert routes.listed["prefill"] == {"6baaa2512d98be30"}
    assert not routes.routes_to("6baaa2512d98be30")  # its gauge went with the other prefill
    assert routes.routes_to("6baaa2512d98be14")
    assert not routes.routes_to("6baaa2512d98be1e")  # gone (killed)
    later = dynamo("new_prefill_routed", readiness(prefill=2, decode=2))
    assert later.routes_to("6baaa2512d98be30") and later.routes_to("6baaa2512d98be5c")


def test_dynamo_without_prefill_instances_has_an_empty_role() -> None:
    routes = dynamo("no_prefill", readiness(prefill=2, decode=2))
    assert routes.empty_roles(["prefill", "decode"]) == ["prefill"]


def test_aggregated_dynamo_workers_are_the_worker_role() -> None:
    health = json.loads((ROUTES / "dynamo_all_routed.health.json").read_text())
    assert set(listed(health, readiness(worker=2))) == {"prefill", "worker"}
    assert routed("no metrics here\n") == frozenset()


def test_the_router_routes_to_the_workers_it_lists_healthy() -> None:
    http = FakeHttp({f"{URL}/workers": HttpResponse(200, WORKERS_1P1D)})
    routes = get_frontend("sglang_router").routes(http, URL, readiness(prefill=1, decode=1))
    assert routes.listed == {
        "prefill": {"http://127.0.0.1:31001"},
        "decode": {"http://127.0.0.1:31002"},
    }
    assert routes.routes_to("http://127.0.0.1:31002")
    http.script[f"{URL}/workers"] = HttpResponse(200, WORKERS_DECODE_UNHEALTHY)
    routes = get_frontend("smg").routes(http, URL, readiness(prefill=1, decode=1))
    assert routes.empty_roles(["prefill", "decode"]) == ["decode"]
    assert not routes.routes_to("http://127.0.0.1:31002")
