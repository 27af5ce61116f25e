"""GPU sharing end to end with the local launcher: 1 prefill + 1 decode on GPU 0 of a one-GPU
machine (deployment.workers_per_gpu=2), SGLang workers being tests/doubles/sglang_test_double.py
behind the real sglang-router. The plan, not an env trick, sets CUDA_VISIBLE_DEVICES and each
worker's --mem-fraction-static; prefill starts only once decode is healthy; both serve."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.config.load import quote_override_value
from tests import e2e

pytestmark = [
    pytest.mark.engines,
    pytest.mark.skipif(
        importlib.util.find_spec("sglang_router") is None,
        reason="sglang-router not installed (scripts/install.sh)",
    ),
]
DOUBLE = e2e.REPO / "tests" / "doubles" / "sglang_test_double.py"
MODEL = "meta-llama/Llama-3.3-70B-Instruct"
LOAD_S = 1.5  # decode "loads weights" this long: prefill must not start meanwhile


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "run"
    yield path
    e2e.kill_run(path)


def test_prefill_and_decode_share_one_gpu_and_serve(run_dir: Path, tmp_path: Path) -> None:
    record, port = tmp_path / "requests.jsonl", e2e.free_port()
    args = [
        "+model=llama_3_3_70b",
        "engine=sglang",
        "frontend=sglang_router",
        "launcher=local",
        "cluster.gpus_per_node=1",
        "prefill.tp=1",
        "decode.tp=1",
        "deployment.workers_per_gpu=2",
        f"engine.python={DOUBLE}",
        f"run_dir={quote_override_value(str(run_dir))}",
        f"frontend.http_port={port}",
        f"cluster.port_base={22000 + e2e.free_port() % 80 * 100}",
        "readiness.timeout_s=60",
        "readiness.interval_s=0.2",
        f"+engine.env.SGLANG_DOUBLE_RECORD={record}",
        f"+decode.env.SGLANG_DOUBLE_LOAD_S={LOAD_S}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=e2e.REPO,
    )

    def ready() -> dict | None:
        assert proc.poll() is None, proc.communicate()[1]
        st = e2e.state(run_dir)
        return st if st.get("phase") == "ready" else None

    st = e2e.wait_for(ready, timeout=60, what="phase ready")
    workers = {
        p.env["ORCHESTRATOR_PROCESS"]: p
        for p in e2e.engine_processes(run_dir, "sglang.launch_server")
    }
    assert set(workers) == {"decode-0", "prefill-0"}
    for name, fraction in (("decode-0", "0.4"), ("prefill-0", "0.666")):
        argv = workers[name].argv
        assert workers[name].env["CUDA_VISIBLE_DEVICES"] == "0"
        assert argv[argv.index("--mem-fraction-static") + 1] == fraction
    decode, prefill = st["processes"]["decode-0"], st["processes"]["prefill-0"]
    assert prefill["started_at"] >= decode["healthy_at"] >= decode["started_at"] + LOAD_S
    assert e2e.chat(st["frontend_url"], MODEL).strip()
    served = {json.loads(line)["name"] for line in record.read_text().splitlines()}
    assert {"decode-0", "prefill-0"} <= served, served
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert e2e.state(run_dir)["phase"] == "done" and e2e.nothing_left(run_dir)
