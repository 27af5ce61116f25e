"""The benchmark step inside a real Driver: real client processes (a stand-in for the aiperf binary
that replays captured artifacts, so no deployment is needed), the gate, stop handling, phases."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator.bench.step import attach_benchmark
from orchestrator.config.schema import RootConfig
from orchestrator.core.effects import HttpResponse, SystemClock
from orchestrator.plan.build import build_plan
from orchestrator.plan.placeholders import Bindings, bind_plan
from orchestrator.run.driver import Driver
from orchestrator.rundir import read_state
from orchestrator.runtime.processes import LocalBackend
from orchestrator.runtime.state import StateFile
from tests.e2e import wait_for
from tests.fakes import FakeHttp

FIXTURES = Path(__file__).parent / "fixtures" / "bench"
POINTS = (
    "benchmark.points=[{concurrency:2,isl:64,osl:16,requests:12},"
    "{concurrency:4,isl:64,osl:16,requests:12}]"
)
# Replays a captured aiperf artifact directory into --output-artifact-dir, then exits like aiperf.
FAKE_AIPERF = """\
import os, shutil, sys, time
out = sys.argv[sys.argv.index("--output-artifact-dir") + 1]
os.makedirs(out, exist_ok=True)
open(os.path.join(out, "started"), "w").close()  # the client is running: tests may stop it now
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
shutil.copytree(os.environ["FAKE_FIXTURE"], out, dirs_exist_ok=True)
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


# The frontend gate and the canary always pass.
READY_HTTP = {
    "/ready": HttpResponse(200, json.dumps({"ready": True})),
    "/v1/chat/completions": HttpResponse(
        200,
        json.dumps(
            {"choices": [{"message": {"content": "ok"}}], "usage": {"completion_tokens": 2}}
        ),
    ),
}


def make(
    compose: Any,
    tmp_path: Path,
    *overrides: str,
    fixture: str = "aiperf_ok",
    exit_code: int = 0,
    sleep: float = 0.0,
) -> tuple[Driver, RootConfig]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "fake-aiperf"
    script.write_text(f"#!{sys.executable}\n{FAKE_AIPERF}")
    script.chmod(0o755)
    env = [
        f"+benchmark.env.FAKE_FIXTURE={FIXTURES / fixture}",
        f"+benchmark.env.FAKE_EXIT='{exit_code}'",
        f"+benchmark.env.FAKE_SLEEP='{sleep}'",
    ]
    cfg = compose(
        "+model=gpt_oss_120b",
        "engine=mocker",
        "benchmark=aiperf",
        POINTS,
        f"benchmark.binary={script}",
        "readiness.interval_s=0.05",
        "readiness.timeout_s=10",
        *env,
        *overrides,
    )
    plan = bind_plan(build_plan(cfg), Bindings(("127.0.0.1",), ("localhost",), "", str(tmp_path)))
    plan = dataclasses.replace(plan, processes=())  # no deployment: only the benchmark clients run
    driver = Driver(
        plan,
        run_dir=tmp_path,
        backend=LocalBackend(),
        http=FakeHttp(READY_HTTP),
        clock=SystemClock(),  # type: ignore[arg-type]
        state=StateFile(tmp_path),
        say=lambda _m: None,
    )
    attach_benchmark(driver, plan.benchmark)
    return driver, cfg


def rows(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (tmp_path / "results" / "points.jsonl").read_text().splitlines()]


def state(tmp_path: Path) -> dict[str, Any]:
    return dict(json.loads((tmp_path / "state.json").read_text()))


@contextmanager
def stop_once(
    driver: Driver, condition: Callable[[], bool], what: str, reason: str
) -> Iterator[None]:
    """While the body runs the driver, request a stop from another thread as soon as `condition`
    holds (polled with a deadline); a deadline miss still stops the driver, then fails the test."""
    failures: list[AssertionError] = []

    def watch() -> None:
        try:
            wait_for(condition, timeout=30, what=what, interval=0.02)
        except AssertionError as exc:
            failures.append(exc)
        driver.request_stop(reason)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield
    watcher.join(timeout=35)
    assert not failures, failures[0]


def test_valid_benchmark_ends_the_job(compose: Any, tmp_path: Path) -> None:
    driver, _ = make(compose, tmp_path)
    assert driver.run() == 0
    st = state(tmp_path)
    assert [t["phase"] for t in st["timeline"]] == ["starting", "ready", "stopping", "done"]
    assert st["reason"] == "benchmark finished" and st["benchmark"]["status"] == "valid"
    assert [r["valid"] for r in rows(tmp_path)] == [True, True]
    assert rows(tmp_path)[1]["artifacts"] == "results/01-c4-i64-o16"
    assert (
        tmp_path / "results" / "01-c4-i64-o16" / "profile_export_aiperf.json"
    ).exists()  # the tool's own files
    assert "--concurrency 4" in (tmp_path / "results" / "01-c4-i64-o16" / "command.txt").read_text()
    assert json.loads((tmp_path / "results" / "summary.json").read_text())["valid"] is True
    assert st["processes"]["benchmark-1"]["exit_code"] == 0


def test_keep_serving_after_the_benchmark(compose: Any, tmp_path: Path) -> None:
    driver, _ = make(compose, tmp_path, "benchmark.keep_serving=true")

    def benchmark_done_still_serving() -> bool:
        st = read_state(tmp_path)
        return st.get("phase") == "ready" and st.get("benchmark", {}).get("status") == "valid"

    with stop_once(driver, benchmark_done_still_serving, "the benchmark to finish", "test over"):
        assert driver.run() == 0
    st = state(tmp_path)
    assert st["reason"] == "test over" and st["benchmark"]["status"] == "valid"


def test_zero_tokens_fail_the_run_and_keep_the_rows(compose: Any, tmp_path: Path) -> None:
    driver, _ = make(compose, tmp_path, fixture="aiperf_all_failed", exit_code=1)
    assert driver.run() == 1
    st = state(tmp_path)
    assert st["phase"] == "failed"
    assert st["error"].startswith("benchmark point 00-c2-i64-o16 invalid: zero output tokens (0/4")
    (only,) = rows(tmp_path)  # the first invalid point stops the benchmark
    assert only["valid"] is False and only["exit_code"] == 1 and only["errors"] == 4
    assert json.loads((tmp_path / "results" / "summary.json").read_text())["valid"] is False


def test_error_rate_gate_is_configurable(compose: Any, tmp_path: Path) -> None:
    driver, _ = make(compose, tmp_path / "strict", fixture="aiperf_partial_errors")
    assert driver.run() == 1 and "error rate 41.7%" in state(tmp_path / "strict")["error"]
    driver, _ = make(
        compose, tmp_path / "lax", "benchmark.max_error_rate=0.5", fixture="aiperf_partial_errors"
    )
    assert driver.run() == 0


def test_missing_results_name_the_log(compose: Any, tmp_path: Path) -> None:
    driver, _ = make(compose, tmp_path, fixture="does-not-exist")
    assert driver.run() == 1
    assert "no result files" in rows(tmp_path)[0]["invalid_reason"]
    assert "FileNotFoundError" in rows(tmp_path)[0]["invalid_reason"]  # the client's log tail


def test_stop_during_a_point_stops_the_client(compose: Any, tmp_path: Path) -> None:
    driver, _ = make(compose, tmp_path, sleep=60)
    started = tmp_path / "results" / "00-c2-i64-o16" / "started"
    with stop_once(driver, started.exists, "the first client to start", "received SIGTERM"):
        assert driver.run() == 0
    st = state(tmp_path)
    assert st["phase"] == "done" and st["reason"] == "received SIGTERM"
    assert st["processes"]["benchmark-0"]["exit_code"] not in (None, 0)  # terminated
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary == {**summary, "valid": False, "reason": "received SIGTERM", "points_done": 0}


def test_point_timeout(compose: Any, tmp_path: Path) -> None:
    driver, _ = make(compose, tmp_path, "benchmark.point_timeout_s=1", sleep=60)
    assert driver.run() == 1
    assert "still running after benchmark.point_timeout_s=1" in state(tmp_path)["error"]


@pytest.mark.parametrize("kind", ["none"])
def test_no_benchmark_no_hook(compose: Any, tmp_path: Path, kind: str) -> None:
    driver, _ = make(compose, tmp_path, f"benchmark={kind}")
    assert driver.on_ready == []
