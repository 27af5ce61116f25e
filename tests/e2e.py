"""Helpers for end-to-end tests: run the real CLI, read state, inspect the processes it started.

Every wait here polls a real condition with a deadline; nothing sleeps in place of readiness.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests

from orchestrator.runtime.nodes import busy_ports

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _ephemeral_range() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


def free_port() -> int:
    """A TCP port nobody holds on any address right now, outside the kernel's ephemeral range.
    A port the kernel hands out (bind to port 0) can be taken, between our pick and the
    service's bind, as the local end of any outgoing connection (Slurm RPCs, etcd clients,
    request loops), and then the run refuses it as 'already in use' (seen in CI, port 52041)."""
    ephemeral = _ephemeral_range()
    # Above the worker ports of the cluster.port_base the local tests pick (22000-29900, and
    # each run's range reaches about 1760 ports beyond it).
    candidates = [p for p in range(31800, 32768) if p not in ephemeral]
    free = sorted(set(candidates) - set(busy_ports(candidates)))  # the driver's own check
    if not free:
        raise AssertionError("no free TCP port in 31800-32767")
    return random.choice(free)


def cli(
    args: Sequence[str], *, timeout: float = 240, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """Run `python -m orchestrator ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def ctl(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run `python -m orchestrator.ctl ARGS`."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.ctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def state(run_dir: Path) -> dict[str, Any]:
    """state.json of a run ({} before it exists)."""
    try:
        return dict(json.loads((run_dir / "state.json").read_text()))
    except (FileNotFoundError, ValueError):
        return {}


@dataclass(frozen=True)
class OsProcess:
    pid: int
    argv: list[str]
    env: dict[str, str]


def _read_proc(pid: int) -> OsProcess | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        env_raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    env = dict(e.decode(errors="replace").split("=", 1) for e in env_raw if b"=" in e)
    return OsProcess(pid, [a.decode(errors="replace") for a in argv if a], env)


def processes_mentioning(text: str) -> list[OsProcess]:
    """Every live process whose command line or ORCHESTRATOR_RUN_DIR contains `text` (e.g. the
    run directory): srun clients and the real engine processes inside the node namespaces."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        proc = _read_proc(int(entry.name))
        if proc is None or proc.argv[:1] == ["pytest"]:
            continue
        if any(text in a for a in proc.argv) or text in proc.env.get("ORCHESTRATOR_RUN_DIR", "\0"):
            found.append(proc)
    return found


def engine_processes(run_dir: Path, module: str) -> list[OsProcess]:
    """The real Python processes running `-m <module>` for this run (not srun or env wrappers);
    each carries its planned name in ORCHESTRATOR_PROCESS."""
    out = []
    for p in processes_mentioning(str(run_dir)):
        if (
            module in p.argv
            and Path(p.argv[0]).name.startswith("python")
            and "ORCHESTRATOR_PROCESS" in p.env
        ):
            out.append(p)
    return out


def netns_of(pid: int) -> str:
    """Name of the network namespace `pid` lives in ('' for the host's)."""
    res = subprocess.run(
        ["ip", "netns", "identify", str(pid)], capture_output=True, text=True, check=False
    )
    return res.stdout.strip()


def admin_auth(run_dir: Path) -> dict[str, str]:
    """The header the run's router/SMG control plane wants: its own key, RUN_DIR/secrets/."""
    key = (run_dir / "secrets" / "admin_key").read_text().strip()
    return {"Authorization": f"Bearer {key}"}


def nothing_left(run_dir: Path) -> bool:
    """True when no process mentions the run directory any more."""
    return not processes_mentioning(str(run_dir))


def chat(
    base_url: str,
    model: str,
    *,
    stream: bool = False,
    max_tokens: int = 12,
    prompt: str = "Hello there",
    timeout: float = 60,
    **sampling: Any,
) -> str:
    """One chat completion; returns the generated text (joined deltas when streaming)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": stream,
        **sampling,
    }
    resp = requests.post(
        f"{base_url}/v1/chat/completions", json=body, timeout=timeout, stream=stream
    )
    assert resp.status_code == 200, resp.text
    if not stream:
        return str(resp.json()["choices"][0]["message"]["content"])
    text = []
    for line in resp.iter_lines(decode_unicode=True):
        if line and line.startswith("data: ") and line != "data: [DONE]":
            delta = json.loads(line[6:])["choices"]
            if delta and delta[0].get("delta", {}).get("content"):
                text.append(delta[0]["delta"]["content"])
    return "".join(text)


def frontend_port(run_dir: Path) -> int:
    """The port the run's frontend listens on (plan.bound.json: on the testbed, whose nodes
    are shared, a port of the job's block)."""
    bound = json.loads((run_dir / "plan.bound.json").read_text())
    return int(next(p for p in bound["processes"] if p["role"] == "frontend")["ports"]["http"])


def job_state(job_id: str) -> str:
    """The job's state from sacct ('' when not known yet)."""
    res = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id],
        capture_output=True,
        text=True,
        check=False,
    )
    return res.stdout.strip().split(" ")[0] if res.returncode == 0 else ""


def job_ended(job_id: str, timeout: float = 30) -> str:
    """The job's final state in sacct, once it has one (so a failed assert shows which)."""
    return wait_for(
        lambda: (s := job_state(job_id)) not in ("", "PENDING", "RUNNING", "COMPLETING") and s,
        timeout=timeout,
        what=f"job {job_id} to end in sacct",
    )


def kill_run(run_dir: Path) -> None:
    """Cleanup for failed local tests: SIGKILL whatever still mentions the run directory."""
    for p in processes_mentioning(str(run_dir)):
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def submit_output(proc: subprocess.CompletedProcess[str]) -> tuple[str, Path]:
    """(job id, run dir) from the CLI's stdout: exactly those two lines."""
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, (
        f"stdout should be the job id and run dir, got {proc.stdout!r}; stderr: {proc.stderr}"
    )
    return lines[0], Path(lines[1])


@dataclass(frozen=True)
class Outcome:
    """One request of a `timed_loop`: when it was sent (time.time()), how long it took, and its
    HTTP status (0: no answer, e.g. a client timeout) and error text."""

    sent: float
    latency: float
    status: int
    detail: str = ""


def timed_chat(url: str, model: str, timeout: float) -> Outcome:
    """One non-streaming chat completion, timed."""
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
    sent = time.time()
    try:
        resp = requests.post(f"{url}/v1/chat/completions", json=body, timeout=timeout)
    except requests.RequestException as exc:
        return Outcome(sent, time.time() - sent, 0, str(exc)[:200])
    return Outcome(sent, time.time() - sent, resp.status_code, resp.text[:200])


@contextmanager
def timed_loop(
    url: str, model: str, *, every: float = 0.1, timeout: float = 30
) -> Iterator[list[Outcome]]:
    """A request through `url` every `every` s, each in its own thread (open loop: a request
    that hangs does not hold up the next ones), until the block ends and all have answered."""
    results: list[Outcome] = []
    done = threading.Event()
    threads: list[threading.Thread] = []

    def send() -> None:
        while not done.wait(every):
            thread = threading.Thread(
                target=lambda: results.append(timed_chat(url, model, timeout))
            )
            thread.start()
            threads.append(thread)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        yield results
    finally:
        done.set()
        sender.join()
        for thread in threads:
            thread.join()


def chat_outcome(url: str, model: str, stream: bool, timeout: float = 30) -> Outcome:
    """One chat completion (streamed or not), timed. A stream counts as answered only when it
    ends with [DONE] and carries no error event (Dynamo reports a failure inside a 200 stream)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 16,
        "stream": stream,
    }
    sent = time.time()
    try:
        resp = requests.post(
            f"{url}/v1/chat/completions", json=body, timeout=timeout, stream=stream
        )
        text = resp.text
    except requests.RequestException as exc:
        return Outcome(sent, time.time() - sent, 0, str(exc)[:200])
    broken = stream and resp.status_code == 200 and ('"error"' in text or "[DONE]" not in text)
    status = 599 if broken else resp.status_code  # 599: an error inside a 200 stream
    return Outcome(sent, time.time() - sent, status, "" if status == 200 else text[-200:])


@contextmanager
def client_loop(url: str, model: str, *, clients: int = 16) -> Iterator[list[Outcome]]:
    """`clients` threads sending chats one after another (every other one streamed) until the
    block ends; every request's send time and outcome."""
    results: list[Outcome] = []
    done = threading.Event()

    def client(k: int) -> None:
        while not done.is_set():
            k += 1
            results.append(chat_outcome(url, model, stream=k % 2 == 0))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield results
    finally:
        done.set()
        for thread in threads:
            thread.join()


@contextmanager
def request_loop(url: str, model: str) -> Iterator[list[str]]:
    """Chats through `url`, one after another, until the block ends: 'ok' or why it failed."""
    results: list[str] = []
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            try:
                results.append("ok" if chat(url, model).strip() else "empty")
            except (AssertionError, requests.RequestException, ValueError, KeyError) as exc:
                results.append(f"failed: {exc}")

    looper = threading.Thread(target=loop)
    looper.start()
    try:
        yield results
    finally:
        done.set()
        looper.join()
