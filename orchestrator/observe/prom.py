"""Pure helpers over the Prometheus text format: parse a scrape, keep it compact, and read the
few numbers the orchestrator shows (request rate, output tokens/s, requests in flight, and the
engines' KV-cache usage, queue depth and running requests).

Metric names are the ones the components export (fixtures in tests/fixtures/metrics/):
Dynamo's frontend (`dynamo_frontend_requests_total`, `dynamo_frontend_output_tokens_total`,
`dynamo_frontend_inflight_requests`, `dynamo_frontend_queued_requests`), SGLang's scheduler
(`sglang:num_running_reqs`, `sglang:num_queue_reqs`, `sglang:token_usage` = KV-cache usage,
also exported by Dynamo's mocker and by dynamo.sglang workers) and sglang-router
(`sgl_router_*`, summed by family).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)"
)

# What a compact record keeps of a scrape: every family summed over its label sets, without
# histogram buckets (their _sum and _count stay). ~100 numbers per target instead of ~800 lines.
SKIP_SUFFIXES = ("_bucket",)

REQUESTS = ("dynamo_frontend_requests_total", "sgl_router_requests_total")
OUTPUT_TOKENS = ("dynamo_frontend_output_tokens_total",)
IN_FLIGHT = ("dynamo_frontend_inflight_requests", "sgl_router_active_requests")
# Dynamo's frontend histograms (seconds): their _sum and _count give the mean per interval.
TTFT = "dynamo_frontend_time_to_first_token_seconds"
ITL = "dynamo_frontend_inter_token_latency_seconds"
# Per engine: summary name -> metric families (first present wins).
ENGINE_GAUGES: Mapping[str, tuple[str, ...]] = {
    "kv_cache_usage": ("sglang:token_usage", "dynamo_component_kvstats_gpu_cache_usage_percent"),
    "queue_depth": ("sglang:num_queue_reqs", "dynamo_request_queue"),
    "running_requests": ("sglang:num_running_reqs", "dynamo_component_inflight_requests"),
}


def parse(text: str) -> list[tuple[str, str, float]]:
    """(name, raw label string, value) of every sample line; comments and junk are skipped."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        samples.append((match["name"], match["labels"] or "", value))
    return samples


def compact(text: str) -> dict[str, float]:
    """Each metric family's value summed over its label sets (buckets dropped, NaN skipped)."""
    out: dict[str, float] = {}
    for name, _labels, value in parse(text):
        if name.endswith(SKIP_SUFFIXES) or math.isnan(value) or math.isinf(value):
            continue
        out[name] = out.get(name, 0.0) + value
    return out


def _first(values: Mapping[str, float], names: Iterable[str]) -> float | None:
    for name in names:
        if name in values:
            return values[name]
    return None


def frontend_rates(earlier: Mapping[str, Any], later: Mapping[str, Any]) -> dict[str, float | None]:
    """Request rate, output tokens/s (between two records `{t, values}` of the frontend) and
    requests in flight (the later record)."""
    dt = float(later["t"]) - float(earlier["t"])
    a, b = earlier["values"], later["values"]

    def rate(names: Sequence[str]) -> float | None:
        x, y = _first(a, names), _first(b, names)
        if x is None or y is None or dt <= 0:
            return None
        return max(0.0, (y - x) / dt)  # a counter reset (restart) reads as 0, not negative

    return {
        "requests_per_s": rate(REQUESTS),
        "output_tok_s": rate(OUTPUT_TOKENS),
        "in_flight": _first(b, IN_FLIGHT),
    }


def mean_ms(earlier: Mapping[str, Any], later: Mapping[str, Any], family: str) -> float | None:
    """The mean of histogram `family` (seconds) over what was observed between two records, in
    ms (None: nothing observed in between, or no such histogram)."""
    a, b = earlier["values"], later["values"]
    try:
        count = b[f"{family}_count"] - a[f"{family}_count"]
        total = b[f"{family}_sum"] - a[f"{family}_sum"]
    except KeyError:
        return None
    return total / count * 1000.0 if count > 0 else None


def per_target(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Records by target, in order: rates come from two records of one process (a frontend
    pair's replicas count their own requests)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        out.setdefault(str(rec.get("target", "")), []).append(rec)
    return out


def summed_rates(records: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """`frontend_rates` of the last two records of every frontend in `records`, summed (the
    whole deployment's rate behind a frontend pair); None where no frontend has the series."""
    parts = [
        frontend_rates(recs[-2], recs[-1])
        for recs in per_target(records).values()
        if len(recs) >= 2
    ]
    keys = ("requests_per_s", "output_tok_s", "in_flight")
    return {
        k: (
            sum(v for p in parts if (v := p[k]) is not None)
            if any(p[k] is not None for p in parts)
            else None
        )
        for k in keys
    }


def engine_gauges(values: Mapping[str, float]) -> dict[str, float]:
    """The engine summaries a record has (KV-cache usage, queue depth, running requests)."""
    out = {}
    for key, names in ENGINE_GAUGES.items():
        value = _first(values, names)
        if value is not None:
            out[key] = value
    return out
