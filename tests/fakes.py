"""Fakes of the side-effect interfaces in orchestrator.effects, shared by unit tests."""

from __future__ import annotations

import threading


class FakeClock:
    """Time moves only when the code under test sleeps or waits."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def wait(self, event: threading.Event, seconds: float) -> bool:
        self.t += seconds
        return event.is_set()
