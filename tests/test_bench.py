"""Benchmark step, pure parts: load points, client argv, result normalization over captured tool
output (tests/fixtures/bench, see its README), the validity gate, sweep tables and the plot."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.bench.normalize import (
    aiperf_from_summary,
    bench_serving_from_line,
    judge,
    normalized_row,
    read_aiperf,
    read_bench_serving,
)
from orchestrator.bench.spec import (
    LoadPoint,
    Target,
    aiperf_argv,
    bench_serving_argv,
    client_process,
    estimate_s,
    load_points,
    run_context,
    tokenizer_for,
)
from orchestrator.config.schema import RootConfig
from orchestrator.config.validate import validate
from orchestrator.plan.build import build_plan
from orchestrator.sweep import collect

FIXTURES = Path(__file__).parent / "fixtures" / "bench"
POINTS = (
    "benchmark.points=[{concurrency:2,isl:64,osl:16,requests:12},{concurrency:4,isl:128,osl:32}]"
)
Compose = Callable[..., RootConfig]
POINT = LoadPoint(index=0, concurrency=2, isl=64, osl=16, requests=12, warmup=2)
TARGET = Target(
    url="http://10.0.0.1:8000", model="openai/gpt-oss-120b", tokenizer="/runs/r1/tiny-model"
)


@pytest.fixture
def bench_cfg(compose: Compose) -> RootConfig:
    return compose("+model=gpt_oss_120b", "engine=mocker", "benchmark=aiperf", POINTS)


# --- load points and commands ---------------------------------------------------------------
def test_points_fill_request_and_warmup_defaults(bench_cfg: RootConfig) -> None:
    first, second = load_points(bench_cfg.benchmark)
    assert (first.requests, first.warmup, first.label()) == (12, 2, "00-c2-i64-o16")
    assert (second.requests, second.warmup) == (40, 4)  # 10 x concurrency, warm-up = concurrency


def test_aiperf_argv_is_offline_and_unsets_hf_offline_for_a_local_tokenizer(
    bench_cfg: RootConfig,
) -> None:
    argv = aiperf_argv(bench_cfg.benchmark, POINT, TARGET, "/runs/r1/results/00")
    assert argv[:3] == ["env", "-u", "HF_HUB_OFFLINE"]  # aiperf rejects a local dir when it is set
    assert argv[3].endswith(".venvs/aiperf/bin/aiperf") and argv[4] == "profile"
    joined = " ".join(argv)
    for part in (
        "--url http://10.0.0.1:8000",
        "--tokenizer /runs/r1/tiny-model",
        "--isl 64 --osl 16",
        "--concurrency 2 --request-count 12 --warmup-request-count 2",
        "--streaming",
        "--output-artifact-dir /runs/r1/results/00",
        "--ui-type none",
        "ignore_eos:true",
    ):
        assert part in joined
    hub = aiperf_argv(
        bench_cfg.benchmark,
        POINT,
        dataclasses.replace(TARGET, tokenizer="openai/gpt-oss-120b"),
        "o",
    )
    assert hub[0] != "env"  # an HF id is resolved through the (offline) cache: leave the env alone


def test_bench_serving_argv_uses_random_ids(bench_cfg: RootConfig) -> None:
    b = dataclasses.replace(bench_cfg.benchmark, kind="sglang_bench")
    argv = bench_serving_argv(b, "/venv/bin/python", POINT, TARGET, "/out")
    joined = " ".join(argv)
    assert argv[:3] == ["/venv/bin/python", "-m", "sglang.bench_serving"]
    for part in (
        "--backend sglang-oai-chat",
        "--base-url http://10.0.0.1:8000",
        "--dataset-name random-ids",
        "--random-input-len 64 --random-output-len 16 --random-range-ratio 1.0",
        "--num-prompts 12 --max-concurrency 2",
        "--output-file /out/bench_serving.jsonl",
    ):
        assert part in joined


def test_client_is_a_benchmark_process_on_node_0(bench_cfg: RootConfig) -> None:
    proc = client_process(bench_cfg, POINT, TARGET, "/out")
    assert (proc.role, proc.node_index, proc.gpus, proc.name) == ("benchmark", 0, (), "benchmark-0")
    assert proc.env["CUDA_VISIBLE_DEVICES"] == ""


def test_tokenizer_defaults(compose: Compose) -> None:
    mocker = compose("+model=gpt_oss_120b", "engine=mocker", "benchmark=aiperf")
    assert tokenizer_for(mocker) == "{run_dir}/tiny-model"  # generated into the run directory
    real = compose("+model=gpt_oss_120b", "benchmark=aiperf")
    assert tokenizer_for(real) == "openai/gpt-oss-120b"
    own = compose("+model=gpt_oss_120b", "benchmark=aiperf", "benchmark.tokenizer=/models/gpt-oss")
    assert tokenizer_for(own) == "/models/gpt-oss"


def test_time_estimate_counts_against_the_limit(compose: Compose) -> None:
    cfg = compose("+model=gpt_oss_120b", "benchmark=aiperf", "cluster.time_limit_min=70")
    assert 0 < estimate_s(cfg.benchmark) / 60 < 60  # four points of 1024/1024 tokens
    issues = [i for i in validate(cfg) if i.key == "cluster.time_limit_min"]
    assert len(issues) == 1 and "from the load points" in issues[0].problem
    explicit = dataclasses.replace(cfg.benchmark, duration_estimate_min=5)
    assert estimate_s(explicit) == 300


def test_benchmark_validation_reports_every_problem(compose: Compose) -> None:
    cfg = compose(
        "+model=gpt_oss_120b",
        "benchmark=aiperf",
        "benchmark.points=[{concurrency:0,osl:0}]",
        "benchmark.max_error_rate=5",
        "benchmark.binary=/nonexistent/aiperf",
    )
    keys = {i.key for i in validate(cfg)}
    assert {
        "benchmark.points[0].concurrency",
        "benchmark.points[0].osl",
        "benchmark.max_error_rate",
        "benchmark.binary",
    } <= keys
    empty = compose("+model=gpt_oss_120b", "benchmark=sglang_bench", "benchmark.points=[]")
    assert "benchmark.points" in {i.key for i in validate(empty)}


# --- normalization over captured output -----------------------------------------------------
def test_aiperf_ok_normalizes(bench_cfg: RootConfig) -> None:
    m = read_aiperf(FIXTURES / "aiperf_ok")
    assert m is not None and m.complete
    assert (m.requests, m.completed, m.errors, m.output_tokens) == (12, 12, 0, 192.0)  # 12 x osl 16
    assert m.output_tok_s == pytest.approx(265.815, rel=1e-3)
    assert (
        m.ttft_p50_ms == pytest.approx(95.11, rel=1e-3)
        and m.ttft_p99_ms
        and m.ttft_p99_ms > m.ttft_p50_ms
    )
    assert m.itl_p50_ms and m.itl_p99_ms and m.tok_s_per_user and m.request_throughput > 0
    assert judge(m, max_error_rate=0.05, exit_code=0) == (True, "")
    plan = build_plan(bench_cfg)
    row = normalized_row(
        m, POINT, tool="aiperf", context=run_context(bench_cfg, plan), valid=True, reason=""
    )
    assert row["gpus"] == {"prefill": 4, "decode": 4, "total": 8, "allocated": 8}
    assert row["output_tok_s_per_gpu"] == pytest.approx(m.output_tok_s / 8)
    assert row["topology"]["prefill_tp"] == 4 and row["topology"]["engine"] == "mocker"
    assert len(row["plan_hash"]) == 12 and json.dumps(row)


def test_aiperf_partial_errors_exceed_the_threshold() -> None:
    m = read_aiperf(FIXTURES / "aiperf_partial_errors")
    assert m is not None
    assert (m.requests, m.completed, m.errors) == (12, 7, 5)  # warm-up records are not counted
    valid, reason = judge(m, max_error_rate=0.05, exit_code=0)
    assert not valid and "error rate 41.7% (5/12)" in reason and "TimeoutError" in reason
    assert judge(m, max_error_rate=0.5, exit_code=0)[0]


def test_aiperf_all_failed_has_only_records() -> None:
    """aiperf writes no summary (and exits 1) when every request failed: the records remain."""
    m = read_aiperf(FIXTURES / "aiperf_all_failed")
    assert m is not None and (m.requests, m.completed, m.errors, m.output_tokens) == (4, 0, 4, 0.0)
    valid, reason = judge(m, max_error_rate=0.05, exit_code=1)
    assert not valid and reason.startswith("zero output tokens (0/4") and "No responses" in reason


def test_tokens_per_user_falls_back_to_the_inter_token_latency() -> None:
    summary = json.loads((FIXTURES / "aiperf_ok" / "profile_export_aiperf.json").read_text())
    del summary["output_token_throughput_per_user"]
    summary["inter_token_latency"]["avg"] = 2.0
    assert aiperf_from_summary(summary, None).tok_s_per_user == 500.0
    summary["inter_token_latency"]["avg"] = 0.0  # every token in one chunk: nothing to measure
    assert aiperf_from_summary(summary, None).tok_s_per_user is None


def test_aiperf_missing_output_is_none(tmp_path: Path) -> None:
    assert read_aiperf(tmp_path) is None


def test_bench_serving_ok_normalizes() -> None:
    m = read_bench_serving(FIXTURES / "bench_serving_ok", requests=12)
    assert m is not None and (m.requests, m.completed, m.errors) == (12, 12, 0)
    assert (
        m.output_tokens == 192 and m.output_tok_s > 0 and m.tok_s_per_user and m.tok_s_per_user > 0
    )
    assert m.ttft_p50_ms and m.ttft_p99_ms and m.itl_p50_ms is not None and m.itl_p99_ms is not None
    assert judge(m, max_error_rate=0.05, exit_code=0) == (True, "")


def test_bench_serving_all_failed_writes_no_line(tmp_path: Path) -> None:
    """0.5.21 crashes on an all-failed run (percentiles of nothing): no line, exit 1. The step
    reports that as an invalid point naming the log (test_bench_step)."""
    log = (FIXTURES / "bench_serving_all_failed" / "benchmark-0.log").read_text()
    assert (
        "IndexError" in log
        and not (FIXTURES / "bench_serving_all_failed" / "bench_serving.jsonl").exists()
    )
    assert read_bench_serving(FIXTURES / "bench_serving_all_failed", requests=4) is None
    # A line with NaN latencies (what the code path writes when percentiles do not crash) is
    # read as zero output and missing latencies.
    line = json.loads((FIXTURES / "bench_serving_ok" / "bench_serving.jsonl").read_text())
    nan = {
        **line,
        "completed": 0,
        "total_output_tokens": 0,
        "median_ttft_ms": float("nan"),
        "mean_tpot_ms": float("nan"),
    }
    (tmp_path / "bench_serving.jsonl").write_text(json.dumps(nan) + "\n")
    m = read_bench_serving(tmp_path, requests=4)
    assert m is not None and (m.completed, m.errors, m.ttft_p50_ms, m.tok_s_per_user) == (
        0,
        4,
        None,
        None,
    )
    assert judge(m, max_error_rate=0.05, exit_code=0)[1].startswith("zero output tokens")


def test_bench_serving_counts_missing_completions_as_errors() -> None:
    line = json.loads(
        (FIXTURES / "bench_serving_ok" / "bench_serving.jsonl").read_text().splitlines()[-1]
    )
    m = bench_serving_from_line({**line, "completed": 10}, requests=12)
    assert m.errors == 2 and not judge(m, max_error_rate=0.05, exit_code=0)[0]


def test_gate_rejects_unfinished_and_failed_clients() -> None:
    m = read_aiperf(FIXTURES / "aiperf_ok")
    assert m is not None
    assert "exited with code 3" in judge(m, max_error_rate=0.05, exit_code=3)[1]
    assert (
        "did not finish"
        in judge(dataclasses.replace(m, complete=False), max_error_rate=0.05, exit_code=0)[1]
    )


# --- sweep tables and plot ------------------------------------------------------------------
def row(name: str, conc: int, x: float, y: float, mode: str = "disaggregated") -> dict:
    return {
        "name": name,
        "concurrency": conc,
        "tok_s_per_user": x,
        "output_tok_s_per_gpu": y,
        "valid": True,
        "gpus": {"prefill": 4, "decode": 4, "total": 8},
        "topology": {"name": name, "mode": mode, "prefill_workers": 1},
        "sweep_point": name,
    }


def test_pareto_front() -> None:
    pts = [(10, 100), (20, 90), (15, 80), (30, 20), (30, 10), (5, 100)]
    assert collect.pareto_front(pts) == [0, 1, 3]


def test_tables_and_plot(tmp_path: Path) -> None:
    rows = [
        row("p1d1", 1, 50, 10),
        row("p1d1", 8, 30, 40),
        row("a2", 8, 25, 45, "aggregated"),
        {**row("p2d1", 4, 0, 0), "tok_s_per_user": None},
    ]
    table, jsonl = collect.write_tables(tmp_path, rows)
    records = list(csv.DictReader(table.open()))
    assert (
        len(records) == 4
        and records[0]["gpus_total"] == "8"
        and records[0]["prefill_workers"] == "1"
    )
    assert len(jsonl.read_text().splitlines()) == 4
    png = collect.plot_pareto(rows, tmp_path / "pareto.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = collect.plot_pareto([], tmp_path / "empty.png", title="t")
    assert empty.stat().st_size > 0
