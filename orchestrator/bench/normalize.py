"""Benchmark results -> one normalized row per load point, and the validity gate.

Pure parsers over what the tools write (aiperf 0.13.0 artifacts, sglang bench_serving 0.5.21 JSON
lines); `read_*` only load the files. A row is valid only with output tokens and an error rate at
most `benchmark.max_error_rate`: a run that "succeeds" with zero tokens is what a broken P->D KV
path looks like (NVIDIA/srt-slurm #429), and srt-slurm #423 gates at 5 % errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.bench.spec import AIPERF_DONE_MARKER, BENCH_SERVING_FILE
from orchestrator.plan.model import LoadPoint

AIPERF_SUMMARY = "profile_export_aiperf.json"
AIPERF_RECORDS = "profile_export.jsonl"


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    """Tool-independent numbers of one load point (None = the tool did not report it)."""

    requests: int  # measured requests sent (warm-up excluded)
    completed: int  # requests that returned output
    errors: int
    output_tokens: float
    duration_s: float | None
    output_tok_s: float
    tok_s_per_user: float | None
    request_throughput: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    itl_p50_ms: float | None
    itl_p99_ms: float | None
    first_error: str = ""
    complete: bool = True  # the tool finished (aiperf: completion marker present and not partial)

    @classmethod
    def unfinished(
        cls, *, completed: int, errors: int, output_tokens: float, first_error: str = ""
    ) -> Measured:
        """A point whose tool did not finish: counts only, no rates or latencies."""
        return cls(
            requests=completed + errors,
            completed=completed,
            errors=errors,
            output_tokens=output_tokens,
            duration_s=None,
            output_tok_s=0.0,
            tok_s_per_user=None,
            request_throughput=0.0,
            ttft_p50_ms=None,
            ttft_p99_ms=None,
            itl_p50_ms=None,
            itl_p99_ms=None,
            first_error=first_error,
            complete=False,
        )


def _num(value: Any) -> float | None:
    """A finite float or None (bench_serving writes NaN when every request failed)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _stat(summary: Mapping[str, Any], metric: str, stat: str) -> float | None:
    entry = summary.get(metric)
    return _num(entry.get(stat)) if isinstance(entry, dict) else None


def _first_aiperf_error(errors: Iterable[Mapping[str, Any]]) -> str:
    for item in errors:
        details = item.get("error_details") or item
        message = details.get("message") or details.get("type") or ""
        if message:
            count = item.get("count")
            return f"{message}" + (f" (x{count})" if count else "")
    return ""


def _per_user(summary: Mapping[str, Any]) -> float | None:
    """aiperf's output tokens/s per user (per request 1 / ITL, averaged); 1000 / mean ITL when
    it is absent; None when there was no gap between tokens to measure."""
    value = _stat(summary, "output_token_throughput_per_user", "avg")
    itl = _stat(summary, "inter_token_latency", "avg")
    return value if value else (1000.0 / itl if itl else None)


def aiperf_from_summary(summary: Mapping[str, Any], marker: Mapping[str, Any] | None) -> Measured:
    """From `profile_export_aiperf.json` (schema 1.4) and `.aiperf_results_ready.json`.
    `request_count` counts successful requests, `error_request_count` the failed ones."""
    ok = int(_stat(summary, "request_count", "avg") or 0)
    errors = int(_stat(summary, "error_request_count", "avg") or 0)
    tokens = _stat(summary, "total_output_tokens", "avg")
    if tokens is None:
        tokens = _stat(summary, "total_usage_completion_tokens", "avg") or 0.0
    complete = bool(
        marker
        and marker.get("ready")
        and not marker.get("partial")
        and not marker.get("was_cancelled")
    ) and not summary.get("was_cancelled")
    return Measured(
        requests=ok + errors,
        completed=ok,
        errors=errors,
        output_tokens=tokens,
        duration_s=_stat(summary, "benchmark_duration", "avg"),
        output_tok_s=_stat(summary, "output_token_throughput", "avg") or 0.0,
        tok_s_per_user=_per_user(summary),
        request_throughput=_stat(summary, "request_throughput", "avg") or 0.0,
        ttft_p50_ms=_stat(summary, "time_to_first_token", "p50"),
        ttft_p99_ms=_stat(summary, "time_to_first_token", "p99"),
        itl_p50_ms=_stat(summary, "inter_token_latency", "p50"),
        itl_p99_ms=_stat(summary, "inter_token_latency", "p99"),
        first_error=_first_aiperf_error(summary.get("error_summary") or []),
        complete=complete,
    )


def aiperf_from_records(records: Iterable[Mapping[str, Any]]) -> Measured:
    """From `profile_export.jsonl` alone: aiperf writes no summary when every request failed
    (and exits 1), but the per-request records with their errors are there."""
    ok = errors = 0
    tokens = 0.0
    first_error = ""
    for rec in records:
        if (rec.get("metadata") or {}).get("benchmark_phase", "profiling") != "profiling":
            continue
        error = rec.get("error")
        if error:
            errors += 1
            first_error = first_error or str(error.get("message") or error.get("type") or error)
            continue
        ok += 1
        metrics = rec.get("metrics") or {}
        for name in ("output_sequence_length", "usage_completion_tokens"):
            value = _num((metrics.get(name) or {}).get("value"))
            if value is not None:
                tokens += value
                break
    return Measured.unfinished(
        completed=ok, errors=errors, output_tokens=tokens, first_error=first_error
    )


def bench_serving_from_line(line: Mapping[str, Any], requests: int) -> Measured:
    """From one bench_serving result line. It reports `completed` but no error count: the
    failed requests are the `requests` sent minus `completed`. Tokens per second per user is
    1000 / mean TPOT (time per output token after the first, per request)."""
    completed = int(_num(line.get("completed")) or 0)
    tpot = _num(line.get("mean_tpot_ms"))
    errors_list = [e for e in line.get("errors") or [] if e]  # only with --output-details
    return Measured(
        requests=requests,
        completed=completed,
        errors=max(requests - completed, 0),
        output_tokens=_num(line.get("total_output_tokens")) or 0.0,
        duration_s=_num(line.get("duration")),
        output_tok_s=_num(line.get("output_throughput")) or 0.0,
        tok_s_per_user=1000.0 / tpot if tpot else None,
        request_throughput=_num(line.get("request_throughput")) or 0.0,
        ttft_p50_ms=_num(line.get("median_ttft_ms")),
        ttft_p99_ms=_num(line.get("p99_ttft_ms")),
        itl_p50_ms=_num(line.get("median_itl_ms")),
        itl_p99_ms=_num(line.get("p99_itl_ms")),
        first_error=str(errors_list[0]) if errors_list else "",
    )


# --- loading -------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def read_aiperf(out_dir: Path) -> Measured | None:
    """The aiperf result in `out_dir` (summary, else per-request records); None if neither."""
    summary = _read_json(out_dir / AIPERF_SUMMARY)
    if isinstance(summary, dict):
        return aiperf_from_summary(summary, _read_json(out_dir / AIPERF_DONE_MARKER))
    records_file = out_dir / AIPERF_RECORDS
    if not records_file.exists():
        return None
    records = []
    for line in records_file.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a record cut short by a kill
    return aiperf_from_records(records)


def read_bench_serving(out_dir: Path, requests: int) -> Measured | None:
    """The last JSON line bench_serving appended in `out_dir` (None if there is none).
    Python's json accepts the NaN it writes for an all-failed run."""
    path = out_dir / BENCH_SERVING_FILE
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    if not lines:
        return None
    return bench_serving_from_line(json.loads(lines[-1]), requests)


# --- gate and row ----------------------------------------------------------------------------
def judge(m: Measured, *, max_error_rate: float, exit_code: int | None) -> tuple[bool, str]:
    """(valid, reason): zero output tokens, too many errors, an unfinished or failed client."""
    rate = m.errors / m.requests if m.requests else 1.0
    if m.output_tokens <= 0:
        detail = f"; first error: {m.first_error}" if m.first_error else ""
        return False, f"zero output tokens ({m.completed}/{m.requests} requests succeeded){detail}"
    if rate > max_error_rate:
        return False, (
            f"error rate {rate:.1%} ({m.errors}/{m.requests}) above "
            f"benchmark.max_error_rate={max_error_rate:g}"
            + (f"; first error: {m.first_error}" if m.first_error else "")
        )
    if not m.complete:
        return False, "the client did not finish (no completion marker, or a partial result)"
    if exit_code:
        return False, f"the client exited with code {exit_code}"
    return True, ""


def normalized_row(
    m: Measured,
    point: LoadPoint,
    *,
    tool: str,
    context: Mapping[str, Any],
    valid: bool,
    reason: str,
) -> dict[str, Any]:
    """The JSON line of one point. `context` holds run facts: name, plan_hash, job_id, gpus
    ({"prefill": 4, "decode": 4, "total": 8, "allocated": 8}), topology, artifacts, exit_code."""
    gpus = context.get("gpus") or {}
    row: dict[str, Any] = {
        "name": context.get("name", ""),
        "point": point.index,
        "tool": tool,
        "concurrency": point.concurrency,
        "isl": point.isl,
        "osl": point.osl,
    }
    row.update(_metrics(m, gpus_total=gpus.get("total") or 0))
    row.update({"valid": valid, "invalid_reason": reason})
    row.update({k: v for k, v in context.items() if k != "name"})
    return row


def _metrics(m: Measured, *, gpus_total: int) -> dict[str, Any]:
    """The measured columns of a row; per-GPU throughput is None without a GPU count."""
    return {
        "output_tok_s": m.output_tok_s,
        "output_tok_s_per_gpu": m.output_tok_s / gpus_total if gpus_total else None,
        "tok_s_per_user": m.tok_s_per_user,
        "ttft_p50_ms": m.ttft_p50_ms,
        "ttft_p99_ms": m.ttft_p99_ms,
        "itl_p50_ms": m.itl_p50_ms,
        "itl_p99_ms": m.itl_p99_ms,
        "request_throughput": m.request_throughput,
        "requests": m.requests,
        "completed": m.completed,
        "errors": m.errors,
        "error_rate": m.errors / m.requests if m.requests else None,
        "output_tokens": m.output_tokens,
        "duration_s": m.duration_s,
    }
