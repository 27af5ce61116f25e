"""The local launcher end to end with engine=sglang and the real sglang-router 0.3.2: SGLang
workers are tests/doubles/sglang_test_double.py, made to behave as real SGLang did on an H100
(issue 26): a generating /health that answers after 1 s, a scheduler child that a group-wide
SIGTERM kills (the server then crash-exits with -9 after 5 s), a prefill that waits for its
decode's bootstrap handshake."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
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
MODEL = "openai/gpt-oss-120b"
DOUBLE = e2e.REPO / "tests" / "doubles" / "sglang_test_double.py"
READY_AT = re.compile(r"ready to roll! at (\d+\.\d+)")


def overrides(run_dir: Path, port: int, *extra: str) -> list[str]:
    return [
        "+model=gpt_oss_120b",
        "engine=sglang",
        "frontend=sglang_router",
        "launcher=local",
        f"engine.python={DOUBLE}",
        f"run_dir={quote_override_value(str(run_dir))}",
        f"frontend.http_port={port}",
        f"cluster.port_base={22000 + e2e.free_port() % 80 * 100}",
        "readiness.timeout_s=60",
        "model.requires_equal_pd_tp=false",
        *extra,
    ]


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "run"
    yield path
    e2e.kill_run(path)


def start(run_dir: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "orchestrator", *overrides(run_dir, e2e.free_port(), *extra)]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=e2e.REPO
    )


def wait_ready(proc: subprocess.Popen[str], run_dir: Path) -> dict:
    def ready() -> dict | None:
        assert proc.poll() is None, proc.communicate()[1]
        st = e2e.state(run_dir)
        return st if st.get("phase") == "ready" else None

    return e2e.wait_for(ready, timeout=90, what="phase ready")


def worker_ready_times(run_dir: Path) -> dict[str, float]:
    """Each worker's own "ready to roll" (wall clock), from its log."""
    out = {}
    for log in (run_dir / "logs").glob("*.log"):
        found = READY_AT.findall(log.read_text(errors="replace"))
        if found:
            out[log.stem] = float(found[-1])
    return out


def test_ready_right_after_the_last_worker_and_a_clean_stop(run_dir: Path) -> None:
    # decode-0 warms up 3 s longer than the prefill: the last worker's own "ready" decides.
    proc = start(run_dir, "+decode.env.SGLANG_DOUBLE_WARMUP_S=3")
    st = wait_ready(proc, run_dir)
    ready_t = next(t["t"] for t in st["timeline"] if t["phase"] == "ready")
    last = max(worker_ready_times(run_dir).values())
    overhead = ready_t - last - st["canary_s"]
    print(
        f"last worker ready -> ready: {ready_t - last:.3f} s, canary {st['canary_s']:.3f} s, "
        f"driver overhead {overhead:.3f} s"
    )
    # Goal 0.5 s (issue 26); 1 s here: two shared cores. A generating /health (1 s each, then
    # the router's own 1-s check at registration) would take > 2 s.
    assert overhead <= 1.0
    stop_t = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    stop_s = time.time() - stop_t
    print(f"stop took {stop_s:.3f} s")
    final = e2e.state(run_dir)
    assert proc.returncode == 0 and final["phase"] == "done"
    for name in ("prefill-0", "decode-0"):
        entry = final["processes"][name]
        assert (entry["state"], entry["exit_code"]) == ("stopped", 0), (name, entry)
        log = (run_dir / "logs" / f"{name}.log").read_text()
        assert "Gracefully exiting" in log and "SIGQUIT" not in log
    assert stop_s < 5  # a crash exit sleeps 5 s before its SIGKILL
    assert e2e.nothing_left(run_dir)


def test_a_killed_decode_leaves_the_router_at_once_and_nothing_hangs(run_dir: Path) -> None:
    # The restarted decode keeps its port closed 3 s ("loading weights"): with one decode the
    # router has none meanwhile. A prefill whose decode never dials would hold a request 20 s.
    # A decode that dials its prefill 1 s late keeps ~10 requests in flight at the kill.
    proc = start(
        run_dir,
        "+decode.env.SGLANG_DOUBLE_LOAD_S=3",
        "+decode.env.SGLANG_DOUBLE_DIAL_S=1",
        "+engine.env.SGLANG_DISAGGREGATION_BOOTSTRAP_TIMEOUT=20",
    )
    url = wait_ready(proc, run_dir)["frontend_url"]
    (decode,) = [
        p
        for p in e2e.engine_processes(run_dir, "sglang.launch_server")
        if p.env["ORCHESTRATOR_PROCESS"] == "decode-0"
    ]
    with e2e.timed_loop(url, MODEL, every=0.1, timeout=30) as outcomes:
        e2e.wait_for(
            lambda: sum(o.status == 200 for o in outcomes) >= 8,
            timeout=20,
            what="requests served before the kill",
        )
        killed_at = time.time()
        os.kill(decode.pid, signal.SIGKILL)
        e2e.wait_for(
            lambda: e2e.state(run_dir)["processes"]["decode-0"]["state"] == "healthy",
            timeout=30,
            what="decode-0 healthy again",
        )
        back = len(outcomes)
        e2e.wait_for(
            lambda: sum(o.status == 200 for o in outcomes[back:]) >= 8,
            timeout=40,
            what="requests served by the restarted decode",
        )
    # Requests in flight at the kill end at once too: the prefill would hold them for
    # SGLANG_DISAGGREGATION_BOOTSTRAP_TIMEOUT (20 s here), but the last decode's death aborts
    # them (POST /abort_request abort_all on the prefill).
    inflight = [o for o in outcomes if o.sent < killed_at < o.sent + o.latency]
    assert inflight and all(o.sent + o.latency < killed_at + 3 for o in inflight), inflight
    late = [o for o in outcomes if o.sent >= killed_at + 1.0]
    slowest = max(o.latency for o in late)
    failed = [o for o in late if o.status != 200]
    print(
        f"{len(outcomes)} requests, {len(late)} sent >= 1 s after the kill: {len(failed)} "
        f"failed ({sorted({o.status for o in failed})}), slowest {slowest:.3f} s"
    )
    assert slowest < 2.0, [o for o in late if o.latency >= 2.0][:3]  # none waits on the dead one
    assert failed and all(o.status == 503 and "No decode workers" in o.detail for o in failed)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 0 and e2e.state(run_dir)["phase"] == "done"
    assert e2e.nothing_left(run_dir)
