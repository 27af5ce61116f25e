"""The node agent: one per node and run, started as ONE srun step on that node
(`cluster.launch_per=node`, runtime/pernode.py), it starts and supervises every process the
driver places there. Slurm then holds one step and the batch host one `srun` client per node,
whatever the number of processes (issue 22: 8 TP1 workers per node were 8 steps per node).

Protocol, one JSON object per line. Driver -> agent on stdin (srun forwards its stdin to the task):
  {"op": "start", "name": N, "argv": [...], "env": {...}, "log": PATH}
  {"op": "signal", "names": [N, ...], "sig": 15}   SIGKILL: the process group, else the leader
  {"op": "watch", "name": N, "url": U, "expect": 200, "every": S, "timeout": T}   serving health
Agent -> driver on stdout:
  {"ev": "hello", "host": H, "pid": P}
  {"ev": "started", "name": N, "pid": P} / {"ev": "exit", "name": N, "code": C} (Popen's code:
  -N when signal N killed it) / {"ev": "gone", "name": N} (its process group is empty) /
  {"ev": "health", "name": N, "misses": K, "detail": D} (K consecutive failed checks; sent
  only when K changes, so a healthy fleet sends nothing).

Serving health checks run here, next to the processes (issue 22): from the driver, one probe
through `requests` cost ~0.9 ms of its CPU, 768 probes every check interval most of its 5.4 %
of a core while serving; here each node probes its own processes (a pool of PROBE_THREADS:
a hung process makes its probe wait its timeout) and the driver reads misses off the events.

Every process gets its own session (its group: a SIGKILL reaches what it spawned), its log
opened for append (stdout and stderr), and the environment of the step plus the plan's (which
binds its GPUs with CUDA_VISIBLE_DEVICES, as the per-process step's `env` prefix did). A SIGTERM
goes to the leader alone, for the reason of slurm/stepwrap.py (SGLang's stop). No orphans: each
child dies with the agent (Linux parent-death signal; the agent is single-threaded), what the
children spawned dies with their group, which the agent's watchdog (reaper.py, as for local
runs) SIGKILLs once the agent is gone however it ended (Slurm's proctrack/pgid would miss these
sessions; proctrack/cgroup gets them anyway), and when
stdin ends (the driver closed it, or its srun client died) or Slurm signals the agent (job
cancel, time limit), the agent TERMs every leader, waits STOP_GRACE_S, SIGKILLs every group left
and exits.

Standard library only: it runs with the driver's interpreter but must not import the package.
Its one argument, the run directory, only labels it (ps, "nothing left of the run" checks).
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

STOP_GRACE_S = 20.0  # the plan's default stop grace: the driver normally stops each tier itself
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PROBE_THREADS = 16  # health probes in flight at once on a node
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_agent() -> None:
    """preexec_fn: SIGKILL the child when the agent dies (whatever kills it)."""
    _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def emit(event: dict[str, Any]) -> None:
    """One event line to the driver (gone: nothing to tell; stdin's end stops the agent)."""
    try:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass


def group_alive(pgid: int) -> bool:
    """Whether process group `pgid` still has a member."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def probe(url: str, expect: int, timeout: float) -> str:
    """GET `url`: '' when it answers `expect`, else what went wrong (no proxies: node-local)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        resp = conn.getresponse()
        body = resp.read(200)
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__} on {url}: {exc}"
    finally:
        conn.close()
    if resp.status == expect:
        return ""
    return f"HTTP {resp.status} from {url}: {body.decode(errors='replace')}"


@dataclass
class Watch:
    """The serving health check of one process: what to probe, how often, misses so far."""

    url: str
    expect: int
    every: float
    timeout: float
    due: float
    misses: int = 0
    inflight: Future[str] | None = None


class HealthChecks:
    """Probe each watched process every `every` s on a small pool; report changed misses."""

    def __init__(self) -> None:
        self.watched: dict[str, Watch] = {}
        self.pool: ThreadPoolExecutor | None = None  # started with the first watch

    def add(self, name: str, url: str, expect: int, every: float, timeout: float) -> None:
        """Watch `name` (again: a restarted process starts with no misses)."""
        self.watched[name] = Watch(url, expect, every, timeout, due=time.monotonic() + every)
        if self.pool is None:
            self.pool = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="health")

    def step(self) -> float:
        """Collect answered probes, start due ones; seconds until something is due."""
        now, wait_s = time.monotonic(), 5.0
        for name, w in self.watched.items():
            if w.inflight is not None and w.inflight.done():
                self._judge(name, w, w.inflight.result())
            if w.inflight is None and w.due <= now and self.pool is not None:
                w.inflight = self.pool.submit(probe, w.url, w.expect, w.timeout)
                w.due = now + w.every
            wait_s = min(wait_s, 0.2 if w.inflight is not None else max(w.due - now, 0.0))
        return wait_s

    def _judge(self, name: str, w: Watch, detail: str) -> None:
        w.inflight = None
        misses = w.misses + 1 if detail else 0
        if misses != w.misses:
            emit({"ev": "health", "name": name, "misses": misses, "detail": detail})
        w.misses = misses


class Agent:
    """The processes of one node: started, their exits reaped, their groups watched."""

    def __init__(self, label: str) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.exited: set[str] = set()  # exit reported, group may still have members
        self.stopping = False
        self.health = HealthChecks()
        # Its own session: Slurm's signal to the agent's step must not take the watchdog first.
        reaper = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reaper.py")
        self.reaper = subprocess.Popen(
            [sys.executable, reaper, label],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    def watch(self, sign: str, pgid: int) -> None:
        """Tell the watchdog a group started (+) or is gone (-)."""
        assert self.reaper.stdin is not None
        try:
            self.reaper.stdin.write(f"{sign}{pgid}\n".encode())
            self.reaper.stdin.flush()
        except BrokenPipeError:  # killed: the parent-death signal still holds for the leaders
            pass

    def start(self, name: str, argv: list[str], env: dict[str, str], log: str) -> None:
        """Start one process (a restart reuses its name and appends to its log)."""
        os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env={**os.environ, **env},
                start_new_session=True,
                preexec_fn=_die_with_agent,
            )
        except OSError as exc:  # no such program: an exit the driver reports with the log
            os.write(fd, f"[node agent] cannot start {argv[:1]}: {exc}\n".encode())
            emit({"ev": "exit", "name": name, "code": 127})
            emit({"ev": "gone", "name": name})
            return
        finally:
            os.close(fd)
        self.procs[name] = popen
        self.exited.discard(name)
        self.watch("+", popen.pid)
        emit({"ev": "started", "name": name, "pid": popen.pid})

    def signal(self, names: list[str], sig: int) -> None:
        """SIGKILL to each named process group; any other signal to the live leader alone."""
        for name in names:
            popen = self.procs.get(name)
            if popen is None:
                continue
            try:
                if sig == signal.SIGKILL:
                    os.killpg(popen.pid, sig)
                elif popen.poll() is None:
                    os.kill(popen.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def reap(self) -> None:
        """Report every exit, then every emptied group."""
        for name, popen in self.procs.items():
            if name not in self.exited and popen.poll() is not None:
                self.exited.add(name)
                self.health.watched.pop(name, None)  # exits are the driver's, not misses
                emit({"ev": "exit", "name": name, "code": popen.returncode})
        for name in [n for n in self.exited if not group_alive(self.procs[n].pid)]:
            self.exited.discard(name)
            self.watch("-", self.procs.pop(name).pid)
            emit({"ev": "gone", "name": name})

    def busy(self) -> bool:
        """Whether a process or a member of its group is still running."""
        return bool(self.procs)

    def handle(self, line: str) -> None:
        """One command line from the driver (malformed lines are reported, not fatal)."""
        try:
            cmd = json.loads(line)
            if cmd["op"] == "start":
                self.start(cmd["name"], list(cmd["argv"]), dict(cmd["env"]), cmd["log"])
            elif cmd["op"] == "signal":
                self.signal(list(cmd["names"]), int(cmd["sig"]))
            elif cmd["op"] == "watch" and cmd["name"] in self.procs:
                self.health.add(
                    cmd["name"],
                    str(cmd["url"]),
                    int(cmd["expect"]),
                    float(cmd["every"]),
                    float(cmd["timeout"]),
                )
        except (ValueError, KeyError, TypeError) as exc:
            sys.stderr.write(f"[node agent] bad command {line.strip()!r}: {exc}\n")

    def shutdown(self, grace_s: float) -> None:
        """TERM every leader, wait up to `grace_s`, SIGKILL every group still there."""
        if self.health.pool is not None:  # probes in flight end with their timeout, unwaited
            self.health.pool.shutdown(wait=False, cancel_futures=True)
        self.health.watched.clear()
        self.signal(list(self.procs), signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs.values()):
            self.reap()
            time.sleep(0.1)
        self.signal(list(self.procs), signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.procs and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)


def serve(agent: Agent, wake: int) -> None:
    """Read commands until stdin ends or a stop signal comes; reap on every SIGCHLD."""
    stdin = sys.stdin.fileno()
    buffered = b""
    timeout = 5.0
    while not agent.stopping:
        timeout = min(timeout, 0.2) if agent.exited else timeout  # watch emptying groups closely
        ready, _, _ = select.select([stdin, wake], [], [], timeout)
        if wake in ready:
            os.read(wake, 4096)
        if stdin in ready:
            chunk = os.read(stdin, 65536)
            if not chunk:
                return
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                if line.strip():
                    agent.handle(line.decode())
        agent.reap()
        timeout = agent.health.step()


def main() -> int:
    """Run the agent until the driver or Slurm ends it; exit 0 once nothing is left."""
    agent = Agent(sys.argv[1] if len(sys.argv) > 1 else "")
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd fires

    def stop(_signum: int, _frame: object) -> None:
        agent.stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    emit({"ev": "hello", "host": socket.gethostname(), "pid": os.getpid()})
    serve(agent, read_end)
    agent.shutdown(STOP_GRACE_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
