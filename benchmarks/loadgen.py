"""What the benchmarks share: a steady chat-completion load and a polling wait."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests

T = TypeVar("T")
MODEL = "openai/gpt-oss-120b"


def wait(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.01) -> T:
    """Poll `check` until it returns something truthy (SystemExit after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return value


def stop_run(run_dir: Path, cwd: Path, timeout: float = 60.0) -> None:
    """`ctl stop RUN_DIR`, then wait until no process mentions the run directory."""
    from tests.e2e import nothing_left

    subprocess.run(
        [sys.executable, "-m", "orchestrator.ctl", "stop", str(run_dir)],
        capture_output=True,
        cwd=cwd,
        check=False,
    )
    wait(lambda: nothing_left(run_dir), timeout, "teardown", interval=0.2)


class Load:
    """`clients` threads, each sending one chat completion at a time until stopped."""

    def __init__(self, url: str, clients: int, model: str = MODEL) -> None:
        self.url, self.model, self.stop = url, model, threading.Event()
        self.done: list[tuple[float, float, str]] = []  # (sent, answered, "" or why it failed)
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(clients)]

    def _loop(self) -> None:
        session = requests.Session()
        session.trust_env = False  # testbed addresses: never through a proxy
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 8,
        }
        while not self.stop.is_set():
            t0 = time.time()
            try:
                resp = session.post(f"{self.url}/v1/chat/completions", json=body, timeout=30)
                why = (
                    "" if resp.status_code == 200 else f"HTTP {resp.status_code}: {resp.text[:120]}"
                )
            except requests.RequestException as exc:
                why = f"{type(exc).__name__}: {exc}"[:160]
            self.done.append((t0, time.time(), why))

    def window(self, start: float, end: float) -> tuple[int, list[str]]:
        """Requests sent in [start, end): how many, and why the failed ones failed."""
        inside = [d for d in list(self.done) if start <= d[0] < end]
        return len(inside), [why for *_, why in inside if why]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=40)
