"""The observers attached to the real Driver (fake backend, HTTP and clock): failure markers in
its exit message, healthy times for the timeline, and follow's readiness lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.launchers.follow import ReadinessLines
from orchestrator.observe.scrape import attach_metrics
from orchestrator.run.driver import Driver
from tests.test_runtime_units import READY, FakeHttp, make_driver

LOGS = Path(__file__).parent / "fixtures" / "logs"


def test_exit_message_names_the_known_marker_and_its_line(plan_of: Any, tmp_path: Path) -> None:
    # restart=never: the exit fails the run at once (a restarted worker would be restarted here)
    driver, backend = make_driver(plan_of, tmp_path, FakeHttp(dict(READY)), "decode.restart=never")

    def crash(d: Driver) -> None:
        (tmp_path / "logs" / "decode-0.log").write_text((LOGS / "failures.log").read_text())
        backend.procs["decode-0"].code = 1

    driver.on_ready.append(crash)
    assert driver.run() == 1
    error = json.loads((tmp_path / "state.json").read_text())["error"]
    assert error.startswith("decode-0 (decode) on nodeA (node 0) exited with code 1")
    assert "known failure markers in decode-0:\n  - KV transfer failure: [2026-02-26" in error
    assert "  - address already in use: OSError: [Errno 98] Address already in use" in error


def test_healthy_times_are_recorded_for_the_timeline(plan_of: Any, tmp_path: Path) -> None:
    driver, _ = make_driver(plan_of, tmp_path, FakeHttp(dict(READY)))
    attach_metrics(driver, None)  # metrics off: the timeline hook is attached anyway
    driver.on_ready.append(lambda d: d.request_stop("test over"))
    assert driver.run() == 0
    procs = json.loads((tmp_path / "state.json").read_text())["processes"]
    assert {n for n, p in procs.items() if p.get("healthy_at")} == {
        n for n, p in procs.items() if p["probed"]
    }


def test_follow_prints_one_line_per_readiness_change(tmp_path: Path) -> None:
    log = tmp_path / "decode-0.log"
    state = {"phase": "starting", "processes": {"decode-0": {"state": "starting", "log": str(log)}}}
    lines = ReadinessLines()
    text = (LOGS / "sglang_launch_server.log").read_text().splitlines(keepends=True)
    printed, now = [], 0.0
    for n in range(len(text) + 1):
        log.write_text("".join(text[:n]))
        now += 2.0
        printed += lines.changes(state, now)
    assert printed[:4] == [
        "decode-0: torch.distributed init",
        "decode-0: loading weights",
        "decode-0: loading weights 0%",
        "decode-0: loading weights 100%",
    ]
    assert printed[-1] == "decode-0: ready (fired up)"
    assert len(printed) == len(set(printed))  # a line per change, never repeated
    assert lines.changes(state, now + 0.5) == []  # logs are read at most every 2 s
    assert lines.changes({**state, "phase": "ready"}, now + 10) == []
