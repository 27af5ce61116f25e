"""The node agent: one per node and run, started as ONE srun step on that node
(`cluster.launch_per=node`, runtime/pernode.py), it starts and supervises every process the
driver places there. Slurm then holds one step and the batch host one `srun` client per node,
whatever the number of processes (issue 22: 8 TP1 workers per node were 8 steps per node).

Protocol, one JSON object per line. Driver -> agent on stdin (srun forwards its stdin to the task):
  {"op": "start", "name": N, "argv": [...], "env": {...}, "log": PATH}
  {"op": "signal", "names": [N, ...], "sig": 15}   SIGKILL: the process group, else the leader
Agent -> driver on stdout:
  {"ev": "hello", "host": H, "pid": P}
  {"ev": "started", "name": N, "pid": P} / {"ev": "exit", "name": N, "code": C} (Popen's code:
  -N when signal N killed it) / {"ev": "gone", "name": N} (its process group is empty).

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
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

STOP_GRACE_S = 20.0  # the plan's default stop grace: the driver normally stops each tier itself
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
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


class Agent:
    """The processes of one node: started, their exits reaped, their groups watched."""

    def __init__(self, label: str) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.exited: set[str] = set()  # exit reported, group may still have members
        self.stopping = False
        # Its own session: Slurm's signal to the agent's step must not take the watchdog first.
        reaper = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reaper.py")
        self.reaper = subprocess.Popen([sys.executable, reaper, label], stdin=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

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
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                     env={**os.environ, **env}, start_new_session=True,
                                     preexec_fn=_die_with_agent)  # fmt: skip
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
        except (ValueError, KeyError, TypeError) as exc:
            sys.stderr.write(f"[node agent] bad command {line.strip()!r}: {exc}\n")

    def shutdown(self, grace_s: float) -> None:
        """TERM every leader, wait up to `grace_s`, SIGKILL every group still there."""
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
    while not agent.stopping:
        timeout = 0.2 if agent.exited else 5.0  # watch emptying groups closely
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
