"""Fakes of the side-effect interfaces in orchestrator.core.effects, shared by unit tests."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from orchestrator.core.effects import HttpError, HttpResponse


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


Answer = HttpResponse | HttpError
Key = tuple[str, str] | str  # (method, exact url), or a URL suffix for any method


class Call(NamedTuple):
    method: str
    url: str
    payload: Any


class FakeHttp:
    """The HttpClient of orchestrator.core.effects with scripted answers; records every call.

    A call is answered by the exact `(method, url)` key, else by the longest URL-suffix key (any
    method). A list of answers is consumed in order and its last entry repeats; an HttpError is
    raised. Anything unscripted is refused like a closed port. Tests may edit `script` mid-run
    (a worker that stops answering)."""

    def __init__(self, script: Mapping[Key, Answer | list[Answer]]) -> None:
        self.script: dict[Key, Answer | list[Answer]] = dict(script)
        self.calls: list[Call] = []

    def _answer(self, method: str, url: str, payload: Any = None) -> HttpResponse:
        self.calls.append(Call(method, url, payload))
        suffixes = [k for k in self.script if isinstance(k, str) and url.endswith(k)]
        key = (
            (method, url) if (method, url) in self.script else max(suffixes, key=len, default=None)
        )
        if key is None:
            raise HttpError(f"ConnectionError on {url} (not scripted)")
        answers = self.script[key]
        answer = (
            (answers.pop(0) if len(answers) > 1 else answers[0])
            if isinstance(answers, list)
            else answers
        )
        if isinstance(answer, HttpError):
            raise answer
        return answer

    def get(self, url: str, *, timeout: float) -> HttpResponse:
        return self._answer("GET", url)

    def post(self, url: str, payload: Any, *, timeout: float) -> HttpResponse:
        return self._answer("POST", url, payload)

    def delete(self, url: str, *, timeout: float) -> HttpResponse:
        return self._answer("DELETE", url)

    def urls(self) -> list[str]:
        """Every URL called, in order."""
        return [c.url for c in self.calls]

    def posts(self) -> list[Any]:
        """The payload of every POST, in order."""
        return [c.payload for c in self.calls if c.method == "POST"]


class FakeDecisions:
    """The DecisionSource of orchestrator.elastic.decisions as Dynamo's planner behaves with
    `environment: virtual`: `publish` a decision; `poll` hands over the unacknowledged one
    (again after `restart`, as a new link gets it from etcd); `complete` acknowledges it."""

    def __init__(self) -> None:
        self.pending: Any = None  # a Decision not completed yet
        self.handed = False  # handed over since the last (re)start
        self.completed: list[int] = []
        self.closed = False
        self._next = 1

    def publish(self, prefill: int, decode: int) -> Any:
        from orchestrator.elastic.decisions import Decision

        self.pending, self.handed = Decision(self._next, prefill, decode), False
        self._next += 1
        return self.pending

    def restart(self) -> None:
        """A new link: the last unacknowledged decision comes again."""
        self.handed = False

    def poll(self) -> Any:
        if self.pending is None or self.handed:
            return None
        self.handed = True
        return self.pending

    def complete(self, decision: Any) -> None:
        self.completed.append(decision.decision_id)
        if self.pending is not None and self.pending.decision_id == decision.decision_id:
            self.pending = None

    def close(self) -> None:
        self.closed = True
