#!/usr/bin/env python3
"""TEST DOUBLE part: how an SGLang server process lives and dies (used by sglang_test_double.py).

Mimics SGLang 0.5.21 / 0.5.15 (`sglang/srt/managers/tokenizer_manager.py`,
`sglang/srt/utils/watchdog.py`, `sglang/srt/utils/common.py` kill_process_tree), as seen on an
H100 (issue 26):
- The server starts a "scheduler" child in its own process group (SGLang's scheduler/detokenizer
  processes; SGLANG_DOUBLE_SCHEDULER=0 leaves it out) and watches it every second
  (SubprocessWatchdog):
  a child that ends with a non-zero code makes the server log "SIGQUIT received ... It usually
  means one child failed.", sleep SGLANG_DOUBLE_CRASH_SLEEP_S (5 s in SGLang: crash dumps),
  then kill its tree and itself with SIGKILL (exit -9). A SIGTERM to the whole group kills the
  child first, so the server crash-exits.
- SIGTERM to the server alone: "Draining requests and shutting down...", /health answers 503
  (`gracefully_exit`), in-flight requests finish (polled every SGLANG_DOUBLE_DRAIN_POLL_S; SGLang's
  sigterm_watchdog polls every 5 s, longer than the child watchdog's 1 s), then the child is
  asked to exit (ShutdownReq) and the server exits 0.
The child is `double_lifecycle.py scheduler`: it exits 0 when its stdin closes (its server
asked, or died) and keeps the default action of every signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

WATCH_INTERVAL_S = 1.0  # SubprocessWatchdog(interval=1.0)


class Lifecycle:
    """The server side: in-flight requests, the scheduler child, SIGTERM and crash handling."""

    def __init__(self, env: dict[str, str], label: str) -> None:
        self.label = label
        self.exiting = False  # SGLang's tokenizer_manager.gracefully_exit
        self.inflight = 0
        self.lock = threading.Lock()
        self.child: subprocess.Popen[bytes] | None = None
        self.children_stopping = threading.Event()
        self.crashing = threading.Event()
        self.crash_sleep_s = float(env.get("SGLANG_DOUBLE_CRASH_SLEEP_S", "5"))
        self.drain_poll_s = float(env.get("SGLANG_DOUBLE_DRAIN_POLL_S", "2"))
        self.with_child = env.get("SGLANG_DOUBLE_SCHEDULER", "1") != "0"

    def say(self, text: str) -> None:
        print(f"[double {self.label}] {text}", flush=True)

    def start(self) -> None:
        """Install the SIGTERM handler; start the scheduler child and its watchdog."""
        signal.signal(signal.SIGTERM, lambda _s, _f: self.on_sigterm())
        if not self.with_child:
            return
        self.child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "scheduler"], stdin=subprocess.PIPE
        )
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        assert self.child is not None
        while not self.children_stopping.wait(WATCH_INTERVAL_S):
            code = self.child.poll()
            if code not in (None, 0):
                self.say(
                    f"Subprocess scheduler (pid={self.child.pid}) crashed with exit code "
                    f"{code}. Triggering SIGQUIT for cleanup..."
                )
                self.crash()

    def crash(self) -> None:
        """SGLang's running_phase_sigquit_handler and kill_process_tree(include_parent=True)."""
        self.crashing.set()
        self.say("SIGQUIT received. It usually means one child failed.")
        time.sleep(self.crash_sleep_s)
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
        os.kill(os.getpid(), signal.SIGKILL)

    def on_sigterm(self) -> None:
        self.say("SIGTERM received. Draining requests and shutting down...")
        self.exiting = True
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while True:
            time.sleep(self.drain_poll_s)
            if self.crashing.is_set():
                return  # SGLang's SIGQUIT handler blocks its event loop: no drain after it
            with self.lock:
                remaining = self.inflight
            self.say(f"Gracefully exiting... Remaining number of requests {remaining}.")
            if not remaining:
                break
        self.children_stopping.set()
        if self.child is not None:
            assert self.child.stdin is not None
            self.child.stdin.close()  # ShutdownReq
            self.child.wait()
        os._exit(0)

    def request(self, delta: int) -> None:
        """Count a generation request in (+1) or out (-1)."""
        with self.lock:
            self.inflight += delta


def scheduler_main() -> int:
    """The child: wait until the server closes our stdin, then exit 0."""
    sys.stdin.buffer.read()
    return 0


if __name__ == "__main__":
    sys.exit(scheduler_main() if sys.argv[1:] == ["scheduler"] else 2)
