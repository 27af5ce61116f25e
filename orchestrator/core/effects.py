"""Side effects behind small interfaces: commands, HTTP and the clock (fakes live in tests)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
    ) -> CommandResult: ...


class SubprocessRunner:
    """Runs argv lists (never a shell string); stdout and stderr are captured separately, so
    nothing a command prints on stderr can end up in a value parsed from stdout."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
    ) -> CommandResult:
        """Run `argv` to completion (in `cwd`, `stdin` as its input: large data goes there, since
        argv and environment share one kernel limit, E2BIG); a timeout is return code 124."""
        try:
            done = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                timeout=timeout,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                input=stdin,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return CommandResult(
                tuple(argv), 124, _text(exc.stdout), _text(exc.stderr) + "\ntimeout"
            )
        except FileNotFoundError as exc:
            return CommandResult(tuple(argv), 127, "", str(exc))
        return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...
    def wait(self, event: threading.Event, seconds: float) -> bool: ...


class SystemClock:
    """Monotonic time for deadlines."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0))

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to `seconds` for `event`; True when it is set (a stop request)."""
        return event.wait(max(seconds, 0.0))


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: str

    def json(self) -> Any:
        """The body parsed as JSON (None when it is not JSON)."""
        import json

        try:
            return json.loads(self.body)
        except ValueError:
            return None


class HttpError(Exception):
    """The request did not get an HTTP answer (refused, timed out, reset)."""


class HttpClient(Protocol):
    def get(self, url: str, *, timeout: float) -> HttpResponse: ...
    def post(self, url: str, payload: Any, *, timeout: float) -> HttpResponse: ...
    def delete(self, url: str, *, timeout: float) -> HttpResponse: ...


class RequestsHttp:
    """`requests`-based client; proxies from the environment are ignored (job-local traffic)."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.headers.update(headers or {})

    def with_headers(self, headers: dict[str, str]) -> RequestsHttp:
        """A client sending `headers` with every request (e.g. an Authorization bearer)."""
        current = {str(k): str(v) for k, v in self._session.headers.items()}
        return RequestsHttp({**current, **headers})

    def _call(self, method: str, url: str, timeout: float, payload: Any = None) -> HttpResponse:
        try:
            resp = self._session.request(method, url, json=payload, timeout=timeout)
        except requests.RequestException as exc:
            raise HttpError(f"{type(exc).__name__} on {url}") from exc
        return HttpResponse(resp.status_code, resp.text)

    def get(self, url: str, *, timeout: float) -> HttpResponse:
        return self._call("GET", url, timeout)

    def post(self, url: str, payload: Any, *, timeout: float) -> HttpResponse:
        return self._call("POST", url, timeout, payload)

    def delete(self, url: str, *, timeout: float) -> HttpResponse:
        return self._call("DELETE", url, timeout)
