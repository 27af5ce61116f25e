"""Launch per node (`cluster.launch_per=node`): one srun step per node runs our node agent
(runtime/nodeagent.py), which starts and supervises every process of that node.

The driver talks to each agent over its srun client's stdin/stdout (one JSON line per command or
event) and reads every agent with one thread (a selector), so supervision costs one srun client
and one pipe per node, not per process. A process's handle (`AgentProcess`) answers poll/wait/
kill like a Popen, so the driver, restarts, the health watch and the tiered stop are the same as
with one step per process. When an agent's step ends (its node's step killed, the node lost),
every process of that node that had not exited is reported exited with the step's exit code and
marked lost in its log; its restart starts a new agent on the node.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.core.effects import CommandRunner
from orchestrator.plan.model import Process, SlurmRequest
from orchestrator.runtime.processes import Running, node_failure, open_log
from orchestrator.slurm.client import SlurmClient
from orchestrator.slurm.request import agent_srun_argv

AGENT = Path(__file__).with_name("nodeagent.py")
CLOSE_WAIT_S = 30.0  # an agent given no more commands stops what is left within its own grace


class AgentProcess:
    """One process run by a node agent, with the subset of Popen the driver uses."""

    def __init__(self, agent: NodeAgent, name: str, log: Path) -> None:
        self.agent, self.name, self.log = agent, name, log
        self.pid = 0  # the agent's pid for it, once started
        self.code: int | None = None
        self.gone = False  # its process group is empty (or its agent ended)
        self.lost = ""  # why it ended with its agent, not by itself
        self.watched = False  # its agent runs its serving health checks
        self.misses = 0  # consecutive failed checks the agent reported
        self.health_detail = ""  # the last failed check's reason

    def watch_health(self, url: str, expect: int, every_s: float, timeout_s: float) -> None:
        """Have its agent check `url` every `every_s` s and report changed misses."""
        self.watched = True
        self.agent.send(
            {
                "op": "watch",
                "name": self.name,
                "url": url,
                "expect": expect,
                "every": every_s,
                "timeout": timeout_s,
            }
        )

    def poll(self) -> int | None:
        """Its exit code once the agent reported the exit (or ended)."""
        return self.code

    def wait(self, timeout: float | None = None) -> int:
        """Block until it exited; subprocess.TimeoutExpired after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.agent.changed:
            while self.code is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.name, timeout or 0.0)
                self.agent.changed.wait(left)
        return self.code

    def send_signal(self, sig: int) -> None:
        """`sig` through the agent (SIGKILL: the process group)."""
        self.agent.send({"op": "signal", "names": [self.name], "sig": int(sig)})

    def kill(self) -> None:
        """SIGKILL its process group."""
        self.send_signal(signal.SIGKILL)


class NodeAgent:
    """The driver's end of one node's agent step: its srun client and its processes."""

    def __init__(self, index: int, host: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.index, self.host, self.popen, self.log = index, host, popen, log
        self.procs: dict[str, AgentProcess] = {}
        self.changed = threading.Condition()
        self.ended: int | None = None  # the srun client's exit code once the step ended
        self._write = threading.Lock()
        self._buffer = b""

    def send(self, command: dict[str, Any]) -> None:
        """One command line to the agent (dropped once its step ended)."""
        stdin = self.popen.stdin
        if self.ended is not None or stdin is None:
            return
        with self._write:
            try:
                stdin.write(json.dumps(command).encode() + b"\n")
                stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    def feed(self, chunk: bytes) -> None:
        """Apply the complete event lines in `chunk` (b'' = the step ended)."""
        if not chunk:
            self._end()
            return
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        with self.changed:
            for line in lines:
                self._event(line)
            self.changed.notify_all()

    def _event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            proc = self.procs.get(str(event.get("name", "")))
        except ValueError:
            return  # not ours (e.g. srun's own notice on stdout): the agent log has it
        if proc is None:
            return
        if event["ev"] == "started":
            proc.pid = int(event["pid"])
        elif event["ev"] == "exit":
            proc.code = int(event["code"])
        elif event["ev"] == "gone":
            proc.gone = True
        elif event["ev"] == "health":
            proc.misses, proc.health_detail = int(event["misses"]), str(event["detail"])

    def _end(self) -> None:
        """The step ended: what had not exited is lost with it (said in its log, where the
        exit message and `ctl logs` show it)."""
        code = self.popen.wait()
        with self.changed:
            self.ended = code
            for proc in self.procs.values():
                if proc.code is None:
                    proc.code = code if code else -int(signal.SIGKILL)
                    proc.lost = f"lost: node agent step on {self.host} ended (srun exit {code})"
                    _note(proc.log, f"[orchestrator] {proc.name} {proc.lost}\n")
                proc.gone = True
            self.changed.notify_all()


def _note(log: Path, line: str) -> None:
    fd = open_log(log)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class NodeBackend:
    """Every process of a node through that node's agent (see the module docstring)."""

    def __init__(
        self,
        req: SlurmRequest,
        job_id: str,
        hosts: Sequence[str],
        runner: CommandRunner,
        *,
        python: str,
        log_dir: Path,
    ) -> None:
        self._req, self._job_id, self._hosts = req, job_id, list(hosts)
        self._python, self._log_dir = python, log_dir
        self._slurm = SlurmClient(runner)
        self._agents: dict[int, NodeAgent] = {}
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._reader: threading.Thread | None = None

    def agent(self, index: int) -> NodeAgent:
        """Node `index`'s live agent, started (one srun step) when there is none."""
        with self._lock:
            agent = self._agents.get(index)
            if agent is None or agent.ended is not None:
                agent = self._launch(index)
                self._agents[index] = agent
            return agent

    def _launch(self, index: int) -> NodeAgent:
        host = self._hosts[index]
        argv = agent_srun_argv(
            index,
            self._req,
            hostname=host,
            job_id=self._job_id,
            python=self._python,
            agent=str(AGENT),
            run_dir=str(self._log_dir.parent),
        )
        log = self._log_dir / f"agent-node{index}.log"
        fd = open_log(log)
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=fd,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        agent = NodeAgent(index, host, popen, log)
        assert popen.stdout is not None
        os.set_blocking(popen.stdout.fileno(), False)
        self._selector.register(popen.stdout, selectors.EVENT_READ, agent)
        if self._reader is None:
            self._reader = threading.Thread(target=self._read, name="node-agents", daemon=True)
            self._reader.start()
        return agent

    def _read(self) -> None:
        """The one thread reading every agent's events."""
        while True:
            if not self._selector.get_map():
                time.sleep(0.2)  # no agent step running (all ended, or the next one starting)
                continue
            for key, _ in self._selector.select(timeout=1.0):
                agent: NodeAgent = key.data
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    self._selector.unregister(key.fileobj)
                agent.feed(chunk)

    def start(self, proc: Process, log: Path) -> Running:
        """Start `proc` through its node's agent (the plan's env binds its GPUs)."""
        agent = self.agent(proc.node_index)
        handle = AgentProcess(agent, proc.name, log)
        with agent.changed:
            agent.procs[proc.name] = handle
        agent.send(
            {
                "op": "start",
                "name": proc.name,
                "argv": list(proc.argv),
                "env": dict(proc.env),
                "log": str(log),
            }
        )
        return Running(proc=proc, popen=handle, log=log, host=agent.host)

    def signal(self, running: Sequence[Running], sig: signal.Signals) -> None:
        """`sig` to each process through its agent, one command per node."""
        by_agent: dict[int, tuple[NodeAgent, list[str]]] = {}
        for r in running:
            handle = r.popen
            if isinstance(handle, AgentProcess):
                by_agent.setdefault(id(handle.agent), (handle.agent, []))[1].append(r.proc.name)
        for agent, names in by_agent.values():
            agent.send({"op": "signal", "names": names, "sig": int(sig)})

    def leftovers(self, running: Sequence[Running]) -> list[str]:
        """Names whose process or process group the agents still report."""
        return sorted(
            r.proc.name for r in running if isinstance(r.popen, AgentProcess) and not r.popen.gone
        )

    def describe_exit(self, running: Running) -> str:
        """For a process lost with its agent's step: the node failure Slurm reports (no
        restart there), else '' (restarted by its policy with a new agent on the node)."""
        handle = running.popen
        if not isinstance(handle, AgentProcess) or not handle.lost:
            return ""
        found = node_failure(self._slurm, self._job_id, self._hosts, handle.agent.log)
        return f"; {handle.lost}{found}" if found else ""

    def close(self) -> None:
        """End every agent: stdin closed (it stops what is left), then its srun client."""
        for agent in self._agents.values():
            if agent.popen.stdin is not None:
                with agent._write:
                    agent.popen.stdin.close()
        deadline = time.monotonic() + CLOSE_WAIT_S
        for agent in self._agents.values():
            try:
                agent.popen.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                agent.popen.kill()
                agent.popen.wait()

    def agents_alive(self) -> list[str]:
        """Hosts whose agent step's srun client still runs."""
        return [a.host for a in self._agents.values() if a.popen.poll() is None]
