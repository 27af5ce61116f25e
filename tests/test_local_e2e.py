"""The local launcher end to end: real Dynamo frontend + mocker processes on this machine."""

from __future__ import annotations

import importlib.util
import os
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
        importlib.util.find_spec("dynamo") is None,
        reason="Dynamo not installed (scripts/install.sh)",
    ),
]
MODEL = "openai/gpt-oss-120b"
SILENT = Path(__file__).parent / "doubles" / "silent_worker.py"


def overrides(run_dir: Path, port: int, *extra: str) -> list[str]:
    return [
        "+model=gpt_oss_120b",
        "engine=mocker",
        "launcher=local",
        f"run_dir={quote_override_value(str(run_dir))}",
        f"frontend.http_port={port}",
        f"cluster.port_base={22000 + e2e.free_port() % 80 * 100}",
        "readiness.timeout_s=60",
        "readiness.interval_s=0.2",
        *extra,
    ]


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "run dir with 'quotes' and $dollar"
    yield path
    e2e.kill_run(path)


def start(run_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    port = e2e.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *overrides(run_dir, port, *extra)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=e2e.REPO,
    )
    return proc, port


def wait_ready(proc: subprocess.Popen[str], run_dir: Path) -> dict:
    def ready() -> dict | None:
        assert proc.poll() is None, proc.communicate()[1]
        st = e2e.state(run_dir)
        return st if st.get("phase") == "ready" else None

    return e2e.wait_for(ready, timeout=60, what="phase ready")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_serves_on_loopback_and_stops_on_signal(run_dir: Path, sig: signal.Signals) -> None:
    proc, port = start(run_dir)
    st = wait_ready(proc, run_dir)
    assert st["frontend_url"] == f"http://127.0.0.1:{port}"
    assert e2e.chat(st["frontend_url"], MODEL).strip()
    assert e2e.chat(st["frontend_url"], MODEL, stream=True).strip()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines() == [str(run_dir)]  # stdout: only the run directory
    final = e2e.state(run_dir)
    assert final["phase"] == "done" and sig.name in final["reason"]
    assert [t["phase"] for t in final["timeline"]] == ["starting", "ready", "stopping", "done"]
    assert e2e.nothing_left(run_dir)


def test_crashed_worker_fails_fast_with_its_log(run_dir: Path) -> None:
    proc, _ = start(run_dir, "prefill.restart=never")
    wait_ready(proc, run_dir)
    prefill = [
        p
        for p in e2e.engine_processes(run_dir, "dynamo.mocker")
        if p.env["ORCHESTRATOR_PROCESS"] == "prefill-0"
    ]
    assert len(prefill) == 1
    os.kill(prefill[0].pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    st = e2e.state(run_dir)
    assert st["phase"] == "failed"
    assert "prefill-0 (prefill) on localhost (node 0) exited with code -9" in st["error"]
    assert "prefill-0 (prefill)" in err
    assert e2e.nothing_left(run_dir)


def test_readiness_deadline_names_missing_workers(run_dir: Path) -> None:
    proc, _ = start(run_dir, f"engine.python={SILENT}", "readiness.timeout_s=3")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    st = e2e.state(run_dir)
    assert st["phase"] == "failed"
    assert "not ready after 3 s: waiting for decode-0, prefill-0" in st["error"]
    assert "ConnectionError" in st["error"]  # why: nothing listens on their health ports
    assert "not ready after 3 s" in err
    assert e2e.nothing_left(run_dir)


def test_run_dirs_are_never_reused(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    res = e2e.cli(overrides(run_dir, e2e.free_port()))
    assert res.returncode == 1 and "already exists" in res.stderr
    assert list(run_dir.iterdir()) == []


def test_hung_worker_is_caught_and_killed(run_dir: Path) -> None:
    # SIGSTOP: the prefill neither exits nor answers. Its health checks fail, the run fails, and
    # teardown has to escalate to SIGKILL (a stopped process ignores SIGTERM until continued).
    proc, _ = start(
        run_dir, "readiness.serve_check_s=1", "launcher.stop_grace_s=2", "prefill.restart=never"
    )
    wait_ready(proc, run_dir)
    prefill = [
        p
        for p in e2e.engine_processes(run_dir, "dynamo.mocker")
        if p.env["ORCHESTRATOR_PROCESS"] == "prefill-0"
    ]
    os.kill(prefill[0].pid, signal.SIGSTOP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    st = e2e.state(run_dir)
    assert (
        "prefill-0 (prefill) on localhost (node 0) failed 3 health checks in a row while serving"
        in st["error"]
    )
    assert st["processes"]["prefill-0"]["state"] == "killed"
    assert e2e.nothing_left(run_dir)


def mocker(run_dir: Path, name: str) -> e2e.OsProcess | None:
    found = [
        p
        for p in e2e.engine_processes(run_dir, "dynamo.mocker")
        if p.env["ORCHESTRATOR_PROCESS"] == name
    ]
    return found[0] if len(found) == 1 else None


def test_killed_decode_restarts_in_place_and_serves_again(run_dir: Path) -> None:
    proc, _ = start(run_dir)
    url = wait_ready(proc, run_dir)["frontend_url"]
    old = mocker(run_dir, "decode-0")
    assert old is not None
    os.kill(old.pid, signal.SIGKILL)
    degraded = e2e.wait_for(
        lambda: (s := e2e.state(run_dir)).get("degraded") and s,
        timeout=10,
        what="decode-0 restarting",
    )
    assert degraded["phase"] == "ready" and degraded["degraded"] == ["decode-0"]
    back = e2e.wait_for(
        lambda: (s := e2e.state(run_dir))["processes"]["decode-0"]["state"] == "healthy" and s,
        timeout=30,
        what="decode-0 healthy again",
    )
    assert back["phase"] == "ready" and back["degraded"] == []
    (entry,) = back["processes"]["decode-0"]["restarts"]
    assert entry["exit_code"] == -9 and entry["tail"]
    new = mocker(run_dir, "decode-0")
    assert new is not None and new.pid != old.pid
    assert new.env["CUDA_VISIBLE_DEVICES"] == old.env["CUDA_VISIBLE_DEVICES"]
    assert new.argv == old.argv  # same ports
    # The frontend routes to the new decode (the only one): chats succeed again. Dynamo may fail
    # a request routed while the stale instance is still listed, so ask for 3 in a row.
    e2e.wait_for(
        lambda: all(_chat_ok(url) for _ in range(3)),
        timeout=30,
        what="3 chats in a row through the restarted decode",
    )
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 0 and e2e.state(run_dir)["phase"] == "done"
    assert e2e.nothing_left(run_dir)


def _chat_ok(url: str) -> bool:
    try:
        return bool(e2e.chat(url, MODEL).strip())
    except (AssertionError, OSError):
        return False


def test_sigkilled_driver_leaves_nothing(run_dir: Path) -> None:
    proc, port = start(run_dir)
    wait_ready(proc, run_dir)
    assert len(e2e.processes_mentioning(str(run_dir))) >= 3
    proc.kill()  # SIGKILL: no handler, no teardown
    proc.communicate(timeout=30)
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=15, what="no process of the run left")
    e2e.wait_for(lambda: _port_free(port), timeout=15, what=f"port {port} free again")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        # As a server binds (TIME_WAIT entries of finished connections do not hold the port).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
