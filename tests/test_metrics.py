"""Prometheus parsing on real scrapes (tests/fixtures/metrics/), the scrape targets of real plans,
the bounded metrics file and the per-point summaries."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.core.effects import HttpResponse
from orchestrator.observe import prom
from orchestrator.observe.scrape import MetricsFile, Scraper, Target, point_summary, scrape, targets
from orchestrator.plan.model import MetricsPlan, Plan
from orchestrator.plan.placeholders import Bindings, bind_plan
from tests.fakes import FakeHttp

METRICS = Path(__file__).parent / "fixtures" / "metrics"
FRONTEND = (METRICS / "dynamo_frontend.metrics").read_text()
WORKER = (METRICS / "dynamo_mocker_worker.metrics").read_text()


def test_compact_sums_label_sets_and_drops_buckets() -> None:
    values = prom.compact(FRONTEND)
    assert values["dynamo_frontend_requests_total"] == 4
    assert values["dynamo_frontend_output_tokens_total"] == 104
    assert values["dynamo_frontend_output_sequence_tokens_sum"] == 104
    assert not any(k.endswith("_bucket") for k in values)


def test_frontend_rates_between_two_scrapes() -> None:
    earlier = {"t": 100.0, "values": prom.compact(FRONTEND)}
    later_values = {
        **earlier["values"],
        "dynamo_frontend_requests_total": 24.0,
        "dynamo_frontend_output_tokens_total": 1104.0,
        "dynamo_frontend_inflight_requests": 7.0,
    }
    rates = prom.frontend_rates(earlier, {"t": 110.0, "values": later_values})
    assert rates == {"requests_per_s": 2.0, "output_tok_s": 100.0, "in_flight": 7.0}
    # A restarted frontend's counters start again at 0: no negative rate.
    reset = prom.frontend_rates(
        {"t": 110.0, "values": later_values}, {"t": 120.0, "values": earlier["values"]}
    )
    assert reset["requests_per_s"] == 0.0


def test_engine_gauges_of_a_mocker_worker() -> None:
    assert prom.engine_gauges(prom.compact(WORKER)) == {"queue_depth": 0.0, "running_requests": 0.0}
    assert prom.engine_gauges({"sglang:token_usage": 0.4}) == {"kv_cache_usage": 0.4}


def bound(plan: Plan) -> Plan:
    return bind_plan(
        plan,
        Bindings(
            node_ips=("10.0.0.1",), node_hosts=("n1",), job_id="7", run_dir="/r", port_offset=0
        ),
    )


def test_targets_follow_each_component(plan_of: Callable[..., Plan]) -> None:
    plan = bound(plan_of())
    assert [(t.name, t.role, t.url) for t in targets(plan)] == [
        ("frontend", "frontend", "http://10.0.0.1:8000/metrics"),  # Dynamo frontend: HTTP port
        (
            "decode-0",
            "decode",
            f"http://10.0.0.1:{plan.process('decode-0').ports['system']}/metrics",
        ),
        (
            "prefill-0",
            "prefill",
            f"http://10.0.0.1:{plan.process('prefill-0').ports['system']}/metrics",
        ),
    ]
    router = bound(plan_of("frontend=sglang_router", "engine=sglang"))
    front = targets(router)[0]
    # sglang-router: its own --prometheus-port, not its HTTP port.
    assert front.url == f"http://10.0.0.1:{router.process('frontend').ports['metrics']}/metrics"
    assert front.url != f"{router.process('frontend').url}/metrics"


def test_scrape_records_values_or_the_error() -> None:
    http = FakeHttp(
        {"/ok/metrics": HttpResponse(200, WORKER), "/404/metrics": HttpResponse(404, "no")}
    )
    ok = scrape(http, Target("decode-0", "decode", "http://h/ok/metrics"))
    assert ok["ok"] and ok["values"]["sglang:num_running_reqs"] == 0.0 and ok["role"] == "decode"
    assert scrape(http, Target("x", "decode", "http://h/404/metrics"))["error"] == "HTTP 404"
    assert (
        "ConnectionError" in scrape(http, Target("x", "decode", "http://h/down/metrics"))["error"]
    )


def test_metrics_file_rotates_past_its_bound(tmp_path: Path) -> None:
    out = MetricsFile(tmp_path / "results" / "metrics.jsonl", max_bytes=200)
    for i in range(20):
        out.append([{"i": i, "pad": "x" * 40}])
    sizes = [p.stat().st_size for p in (tmp_path / "results").iterdir()]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "metrics.1.jsonl",
        "metrics.jsonl",
    ]
    assert max(sizes) < 200 + 60  # one record past the bound at most
    last = (tmp_path / "results" / "metrics.jsonl").read_text().splitlines()[-1]
    assert json.loads(last)["i"] == 19


def test_point_summary_over_the_window(tmp_path: Path) -> None:
    out = MetricsFile(tmp_path / "results" / "metrics.jsonl", max_bytes=10**6)

    def rec(t: float, role: str, running: float, ok: bool = True) -> dict[str, Any]:
        return {
            "t": t,
            "role": role,
            "ok": ok,
            "values": {"sglang:num_running_reqs": running, "sglang:token_usage": running / 10},
        }

    out.append(
        [
            rec(1, "decode", 99),
            rec(10, "decode", 2),
            rec(11, "decode", 4),
            rec(12, "prefill", 1),
            rec(13, "decode", 50, ok=False),
            rec(30, "decode", 99),
        ]
    )
    summary = point_summary(tmp_path, 10, 20)
    assert summary["samples"] == 3
    assert summary["decode"]["running_requests"] == {"mean": 3.0, "max": 4}
    assert summary["decode"]["kv_cache_usage"]["max"] == 0.4
    assert summary["prefill"]["running_requests"]["max"] == 1
    assert point_summary(tmp_path, 40, 50) == {}


class View:
    """The few DriverView fields the scraper uses."""

    def __init__(self, plan: Plan, run_dir: Path) -> None:
        self.plan, self.run_dir = plan, run_dir


def test_scraper_thread_writes_until_stopped(tmp_path: Path, plan_of: Callable[..., Plan]) -> None:
    plan = bound(plan_of())
    scraped = threading.Event()

    class Http(FakeHttp):
        def get(self, url: str, *, timeout: float) -> HttpResponse:
            scraped.set()
            return super().get(url, timeout=timeout)

    http = Http({"/metrics": HttpResponse(200, FRONTEND)})
    scraper = Scraper(MetricsPlan(interval_s=0.01, max_bytes=10**6), http=http)
    scraper.start(View(plan, tmp_path))  # type: ignore[arg-type]
    assert scraped.wait(5)
    scraper.stop(View(plan, tmp_path))  # type: ignore[arg-type]
    assert scraper.thread is not None and not scraper.thread.is_alive()
    lines = (tmp_path / "results" / "metrics.jsonl").read_text().splitlines()
    assert {json.loads(x)["target"] for x in lines} == {"frontend", "decode-0", "prefill-0"}
    assert len(lines) % 3 == 0  # whole scrapes only


def test_a_large_fleet_is_scraped_in_turns_with_the_frontend_every_round() -> None:
    """768 workers scraped every interval cost most of the driver's CPU while serving (issue
    22): past WORKERS_PER_ROUND, each round takes the next workers; none is left out."""
    from orchestrator.observe.scrape import WORKERS_PER_ROUND, Target, next_round

    n = WORKERS_PER_ROUND * 2 + 5
    found = [Target("frontend", "frontend", "f")] + [
        Target(f"w{i}", "worker", str(i)) for i in range(n)
    ]
    seen: list[str] = []
    cursor = 0
    for _ in range(3):
        batch, cursor = next_round(found, cursor)
        assert batch[0].name == "frontend" and len(batch) == WORKERS_PER_ROUND + 1
        seen += [t.name for t in batch[1:]]
    assert {f"w{i}" for i in range(n)} <= set(seen)  # every worker within ceil(n / per round)
    small = found[: WORKERS_PER_ROUND + 1]
    assert next_round(small, 0) == (small, 0)  # a small fleet: everything every round
