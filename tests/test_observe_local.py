"""Metrics, fingerprint, ls and report of a real local deployment (Dynamo frontend + mocker,
launcher=local): results/metrics.jsonl fills while it serves, with the frontend's counters
following the requests we send."""

from __future__ import annotations

import importlib.util
import json
import signal
from pathlib import Path

import pytest

from orchestrator.ctl.report import report
from tests import chromium, e2e
from tests.test_local_e2e import start, wait_ready

pytestmark = [
    pytest.mark.engines,
    pytest.mark.skipif(importlib.util.find_spec("dynamo") is None, reason="Dynamo not installed"),
]


def frontend_requests(run_dir: Path) -> float:
    path = run_dir / "results" / "metrics.jsonl"
    records = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    counts = [
        r["values"].get("dynamo_frontend_requests_total", 0)
        for r in records
        if r["target"] == "frontend" and r["ok"]
    ]
    return counts[-1] if counts else -1


def test_metrics_fingerprint_and_report_of_a_local_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc, port = start(run_dir, "metrics.interval_s=0.3")
    try:
        st = wait_ready(proc, run_dir)
        served_before = frontend_requests(run_dir)
        for _ in range(3):
            assert e2e.chat(st["frontend_url"], "openai/gpt-oss-120b").strip()
        # The canary (and anything before) plus our 3 requests show up in the next scrapes.
        e2e.wait_for(
            lambda: frontend_requests(run_dir) >= max(served_before, 0) + 3,
            timeout=20,
            what="the frontend's request counter in results/metrics.jsonl",
        )
        records = [
            json.loads(x) for x in (run_dir / "results" / "metrics.jsonl").read_text().splitlines()
        ]
        assert {r["target"] for r in records if r["ok"]} == {"frontend", "decode-0", "prefill-0"}
        # The mocker's decode worker exports SGLang's scheduler gauges (the prefill one does not).
        assert any(
            "sglang:num_running_reqs" in r["values"] for r in records if r["target"] == "decode-0"
        )
        fp = e2e.wait_for(
            lambda: (
                e2e.state(run_dir)
                and (run_dir / "fingerprint.json").exists()
                and json.loads((run_dir / "fingerprint.json").read_text())
            ),
            timeout=20,
            what="fingerprint.json",
        )
        (node,) = fp["nodes"]
        assert node["packages"]["ai-dynamo"] == "1.6.1" and fp["config_hash"]
        ls = e2e.ctl("ls", str(tmp_path))
        (line,) = [x for x in ls.stdout.splitlines() if x.startswith("run ")]
        assert line.split()[:2] == ["run", "ready"] and line.endswith(st["frontend_url"])
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        e2e.kill_run(run_dir)
    assert e2e.state(run_dir)["phase"] == "done"
    healthy = [p.get("healthy_at") for p in e2e.state(run_dir)["processes"].values()]
    assert all(healthy), healthy  # the timeline's healthy marks
    page = report(run_dir)
    if chromium.binary():
        assert chromium.render(page).console == []
