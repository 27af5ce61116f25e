"""Supervision cost at scale (issue 22), with fakes: state.json is written once per supervision
tick, not once per process event, and the serving health watch probes on a bounded pool of
threads, not a thread per process."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.effects import HttpResponse
from orchestrator.runtime import state
from orchestrator.runtime.health_watch import PROBE_THREADS, HealthWatch
from orchestrator.runtime.processes import Running
from orchestrator.runtime.state import StateFile
from tests.test_runtime_units import READY, FakeHttp, FakePopen, make_driver


def count_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    writes: list[int] = []
    real = state.write_json_atomic

    def counting(path: Path, data: Any) -> None:
        writes.append(len(data.get("processes", {})))
        real(path, data)

    monkeypatch.setattr(state, "write_json_atomic", counting)
    return writes


def test_a_batch_writes_state_once_with_every_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = count_writes(monkeypatch)
    sf = StateFile(tmp_path)
    with pytest.raises(RuntimeError), sf.batched():
        with sf.batched():
            for i in range(100):
                sf.process(f"w{i}", state="starting")
        assert writes == []  # the inner batch ended inside the outer one
        raise RuntimeError("a failure still writes what happened")
    assert writes == [100]
    assert StateFile(tmp_path).data["processes"]["w99"] == {"state": "starting"}
    sf.process("w0", state="healthy")  # outside a batch: at once
    assert writes == [100, 100]


def test_starting_many_workers_writes_state_per_tick_not_per_process(
    plan_of: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = count_writes(monkeypatch)
    driver, backend = make_driver(
        plan_of,
        tmp_path,
        FakeHttp(dict(READY)),
        "prefill.workers=8",
        "decode.workers=8",
        "prefill.tp=1",
        "decode.tp=1",
        "deployment.workers_per_gpu=1",
    )
    driver.on_ready.append(lambda d: d.request_stop("test"))
    assert driver.run() == 0
    assert len(backend.started) == 18  # etcd, frontend, 16 workers
    # Before: a write per start, per healthy and per stop (3 x 18 + phases: 59 writes).
    assert len(writes) <= 12, writes
    st = StateFile(tmp_path).data
    assert all(p["state"] == "stopped" for p in st["processes"].values())


class SlowHttp(FakeHttp):
    """Answers /health after `delay` s, counting the probes in flight at once."""

    def __init__(self, delay: float) -> None:
        super().__init__({})
        self.delay, self.inflight, self.peak = delay, 0, 0
        self.lock = threading.Lock()

    def get(self, url: str, *, timeout: float) -> HttpResponse:
        with self.lock:
            self.inflight += 1
            self.peak = max(self.peak, self.inflight)
        time.sleep(self.delay)
        with self.lock:
            self.inflight -= 1
        return HttpResponse(200, "ok")


def test_the_health_watch_probes_a_thousand_processes_on_a_bounded_pool(
    plan_of: Any, tmp_path: Path
) -> None:
    driver, _ = make_driver(plan_of, tmp_path, FakeHttp(dict(READY)))
    proc = driver.plan.process("decode-0")
    running = {
        f"w{i}": Running(
            proc=dataclasses.replace(proc, name=f"w{i}"),
            popen=FakePopen(),
            log=tmp_path / "x.log",
            host="n",
        )
        for i in range(1000)
    }
    http = SlowHttp(0.002)
    watch = HealthWatch(driver.plan, http, driver.backend, driver.state, lambda _m: None)
    before = threading.active_count()
    watch.check(running, skip=())
    assert threading.active_count() - before <= PROBE_THREADS
    wait([f for _, f in watch.round.inflight.values()], timeout=30)  # the round finishes
    watch.check(running, skip=())  # judges every verdict, starts the next round
    assert http.peak <= PROBE_THREADS and set(watch.misses) == set(running)
    assert not any(watch.misses.values())


def test_the_stub_worker_answers_each_whole_request_from_one_process(tmp_path: Path) -> None:
    """benchmarks/fleet.py's stub: one process serves every connection (no fork per request);
    a request is answered only once its body has arrived whole (hyper, sglang-router's client,
    takes an early answer as UnexpectedMessage); SIGTERM is a clean stop (exit 0)."""
    import socket
    import subprocess

    stub = Path(__file__).parent / "doubles" / "stub_worker.sh"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "stub.log").open("w")
    argv = [str(stub), "-m", "sglang.launch_server", "--served-model-name", "org/m"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while "listening" not in (tmp_path / "stub.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        body = b'{"model": "m", "messages": []}'
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            conn.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
            conn.settimeout(0.3)
            with pytest.raises(TimeoutError):  # part of the body missing: no answer yet
                conn.recv(1)
            conn.settimeout(5)
            conn.sendall(body[5:])
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK") and b'"chat.completion"' in answer
        assert b'"model":"org/m"' in answer and b'"served_model_name":"org/m"' in answer
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 200 OK")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b'"data":[{"id":"org/m"' in conn.recv(4096)
        assert proc.poll() is None  # the same process answered all, itself:
        assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "perl"
        assert not Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
        log.close()
