"""benchmark=aiperf against a real local mocker deployment (launcher=local): the job ends after the
benchmark, with aiperf's artifacts and one normalized row, even with HF_HUB_OFFLINE=1 exported
(aiperf rejects a local tokenizer directory in offline mode; the step unsets it for the client)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.core.tools import AIPERF, find_tool
from tests import e2e

pytestmark = [
    pytest.mark.engines,
    pytest.mark.skipif(
        importlib.util.find_spec("dynamo") is None,
        reason="Dynamo not installed (scripts/install.sh)",
    ),
    pytest.mark.skipif(
        find_tool(AIPERF) is None,
        reason="aiperf not installed (scripts/install.sh --with-aiperf)",
    ),
]


def test_aiperf_against_the_local_mocker(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        "+model=gpt_oss_120b",
        "engine=mocker",
        "launcher=local",
        f"run_dir={run_dir}",
        f"frontend.http_port={e2e.free_port()}",
        f"cluster.port_base={22000 + e2e.free_port() % 80 * 100}",
        "readiness.timeout_s=60",
        "benchmark=aiperf",
        "benchmark.points=[{concurrency:2,isl:64,osl:16,requests:8}]",
    ]
    try:
        res = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=e2e.REPO,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            check=False,
        )
    finally:
        e2e.kill_run(run_dir)
    assert res.returncode == 0, res.stderr
    st = e2e.state(run_dir)
    assert st["phase"] == "done" and st["reason"] == "benchmark finished"
    (row,) = [
        json.loads(x) for x in (run_dir / "results" / "points.jsonl").read_text().splitlines()
    ]
    assert row["valid"] and row["completed"] == 8 and row["output_tokens"] == 8 * 16
    assert row["gpus"]["total"] == 8 and row["output_tok_s_per_gpu"] > 0 and row["ttft_p50_ms"] > 0
    assert (run_dir / "results" / "00-c2-i64-o16" / ".aiperf_results_ready.json").exists()
    assert e2e.nothing_left(run_dir)
