"""Start, watch and stop the plan's processes: directly (local) or as srun steps (Slurm)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from orchestrator.core.effects import Clock, CommandRunner
from orchestrator.plan.model import Process, SlurmRequest
from orchestrator.slurm.client import SlurmClient
from orchestrator.slurm.parse import failed_nodes_in_log
from orchestrator.slurm.request import srun_argv
from orchestrator.slurm.stepwrap import scancel_signal

# Node states (sinfo %T) in which a node still serves its job.
NODE_OK = ("IDLE", "ALLOCATED", "MIXED", "COMPLETING", "PLANNED", "RESERVED")


class Handle(Protocol):
    """What the driver uses of a started process: a Popen (the process itself, or its srun
    client), or a node agent's handle for it (runtime/pernode.py)."""

    pid: int

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


@dataclass
class Running:
    """A started process: the plan entry, its OS handle and its log."""

    proc: Process
    popen: Handle
    log: Path
    host: str
    exit_code: int | None = field(default=None)

    def poll(self) -> int | None:
        """Exit code once the process (or its srun client) has ended."""
        if self.exit_code is None:
            self.exit_code = self.popen.poll()
        return self.exit_code


class Backend(Protocol):
    def start(self, proc: Process, log: Path) -> Running: ...
    def signal(self, running: Sequence[Running], sig: signal.Signals) -> None: ...
    def leftovers(self, running: Sequence[Running]) -> list[str]: ...


def open_log(log: Path) -> int:
    """An append-only descriptor on `log` (its directory created)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    return os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with(parent: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL this child when the thread that forked it dies (Linux
    PR_SET_PDEATHSIG; it fires on the *thread's* exit, so processes are started from the
    driver's main thread), and exit at once if the parent died before prctl ran."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: nothing to import in the child

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class LocalBackend:
    """Processes on this machine, each in its own session (process group) so that a signal
    reaches everything it spawned and nothing survives teardown -- nor the driver: each child
    dies with the driver (parent-death signal) and a watchdog (`reaper.py`) kills their groups
    when the driver's end of its pipe closes, however the driver ended."""

    def __init__(self, host: str = "localhost") -> None:
        self._reaper: subprocess.Popen[str] | None = None
        self.host = host  # as status shows it (frontend.placement=here: this host's name)

    def _watch(self, pgid: int, log: Path, sign: str = "+") -> None:
        if self._reaper is None:
            # Its own session: a closing terminal or Ctrl-C must not take the watchdog first.
            # The run dir in its argv lets "nothing left of the run" checks see it too.
            self._reaper = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).with_name("reaper.py")),
                    str(log.parent.parent),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
        assert self._reaper.stdin is not None
        try:
            self._reaper.stdin.write(f"{sign}{pgid}\n")
            self._reaper.stdin.flush()
        except BrokenPipeError:  # the watchdog was killed: the parent-death signal still holds
            pass

    def start(self, proc: Process, log: Path) -> Running:
        """Spawn `proc` with the plan's env added to ours (secrets stay in the inherited env)."""
        fd = open_log(log)
        try:
            popen = subprocess.Popen(
                list(proc.argv),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env={**os.environ, **proc.env},
                start_new_session=True,
                preexec_fn=_die_with(os.getpid()),
            )
        finally:
            os.close(fd)
        self._watch(popen.pid, log)
        return Running(proc=proc, popen=popen, log=log, host=self.host)

    def signal(self, running: Sequence[Running], sig: signal.Signals) -> None:
        """SIGKILL each process group; any other signal goes to the process we started alone.
        A stop must reach the server only: SGLang's SIGTERM handler drains and then stops its
        own scheduler processes, while a group-wide SIGTERM kills those first, its subprocess
        watchdog raises SIGQUIT ("It usually means one child failed"), it sleeps 5 s and ends
        its tree with SIGKILL (exit -9: a stop that looks like a crash, issue 26). stop_tier
        kills what the group still holds once the leader is gone."""
        for r in running:
            try:
                if sig == signal.SIGKILL:
                    os.killpg(r.popen.pid, sig)
                elif r.poll() is None:  # never a reused pid
                    os.kill(r.popen.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def leftovers(self, running: Sequence[Running]) -> list[str]:
        """Names of processes whose group still has members (gone groups leave the watchdog)."""
        alive = []
        for r in running:
            r.poll()
            try:
                os.killpg(r.popen.pid, 0)
                alive.append(r.proc.name)
            except (ProcessLookupError, PermissionError):
                if r.exit_code is not None:
                    self._watch(r.popen.pid, r.log, "-")
        return alive


class SrunBackend:
    """Each process is an srun step on its node. Steps are stopped with `scancel --signal` on the
    step id (signalling the local srun client instead made Slurm SIGKILL the remote task,
    NVIDIA/srt-slurm #428), so workers get a real SIGTERM and can deregister. A graceful stop is
    sent as the stop wrapper's signal (stepwrap.py), which turns it into a SIGTERM to the step's
    leader alone: with proctrack/pgid or linuxproc a SIGTERM would reach SGLang's schedulers too."""

    def __init__(
        self,
        req: SlurmRequest,
        job_id: str,
        hosts: Sequence[str],
        runner: CommandRunner,
        *,
        hold: bool = False,
    ) -> None:
        self._req, self._job_id, self._hosts = req, job_id, list(hosts)
        self._slurm, self._hold = SlurmClient(runner), hold

    def start(self, proc: Process, log: Path) -> Running:
        """Run `srun ... env K=V argv` on the process's node, output into its log."""
        host = self._hosts[proc.node_index]
        argv = srun_argv(proc, self._req, hostname=host, job_id=self._job_id, hold=self._hold)
        fd = open_log(log)
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        return Running(proc=proc, popen=popen, log=log, host=host)

    def step_ids(self, names: set[str]) -> dict[str, str]:
        """Our step ids by process name, from squeue."""
        return {n: i for i, n in self._slurm.steps(self._job_id) if n in names}

    def signal(self, running: Sequence[Running], sig: signal.Signals) -> None:
        """scancel --signal the steps (SIGTERM as the wrapper's stop signal); srun clients whose
        step is unknown yet get `sig` itself, which srun passes on to its task, the wrapper."""
        names = {r.proc.name for r in running}
        ids = self.step_ids(names)
        if ids:
            self._slurm.cancel(self._job_id, signal=scancel_signal(sig), steps=list(ids.values()))
        for r in running:
            if r.proc.name not in ids or sig == signal.SIGKILL:
                try:
                    r.popen.send_signal(sig)
                except ProcessLookupError:
                    pass

    def leftovers(self, running: Sequence[Running]) -> list[str]:
        """Names whose srun client still runs; once all clients ended, steps Slurm still lists."""
        alive = sorted(r.proc.name for r in running if r.poll() is None)
        return alive or sorted(self.step_ids({r.proc.name for r in running}))

    def describe_exit(self, running: Running) -> str:
        """What Slurm says about the nodes when a step ended: the node srun reported failed,
        nodes no longer in the job's allocation, and nodes in a state other than in use / idle
        (`; node failure: node2 (removed from job 35; now DOWN)`); '' when every node looks fine.

        Submitted with --no-kill, Slurm 22.05 keeps the job when a node goes DOWN: it ends the
        step on that node (srun prints "Node failure on node2") and drops the node from the
        allocation. The node may already be back (ReturnToService=2 returns it at once), so the
        log and the allocation are checked as well as the node's state."""
        return node_failure(self._slurm, self._job_id, self._hosts, running.log)


def node_failure(slurm: SlurmClient, job_id: str, hosts: Sequence[str], log: Path) -> str:
    """`; node failure: node2 (...)` for the nodes srun reported failed in `log`, dropped from
    the job's allocation or in a state other than in use / idle; '' when every node looks fine."""
    reported = failed_nodes_in_log(log_tail(log, 200))
    held = set(slurm.job_nodes(job_id))
    states = slurm.node_states(hosts)
    unusable = [h for h in hosts if states.get(h, "IDLE").split("+")[0] not in NODE_OK]
    dropped = [h for h in hosts if held and h not in held]
    nodes = list(dict.fromkeys([*reported, *dropped, *unusable]))
    if not nodes:
        return ""
    notes = []
    for node in nodes:
        why = ["srun reported a node failure"] if node in reported else []
        if node in dropped:
            why.append(f"removed from job {job_id}")
        why.append(f"now {states.get(node, 'in an unknown state')}")
        notes.append(f"{node} ({'; '.join(why)})")
    return f"; node failure: {', '.join(notes)}"


def exit_detail(backend: Backend, running: Running) -> str:
    """What the backend knows about why `running` ended (node failures under Slurm), to append
    to the exit message; '' for backends that know nothing more than the exit code."""
    describe: Callable[[Running], str] | None = getattr(backend, "describe_exit", None)
    return describe(running) if describe is not None else ""


def close_backend(backend: Backend) -> None:
    """End what the backend itself runs besides the processes (node agents), after teardown."""
    close: Callable[[], None] | None = getattr(backend, "close", None)
    if close is not None:
        close()


def stop_tier(
    backend: Backend, running: Sequence[Running], *, grace_s: float, clock: Clock
) -> list[str]:
    """SIGTERM each process (its leader only: locally by pid, under Slurm through the step's stop
    wrapper; it drains and stops its own children), wait up to `grace_s` for each to exit on
    its own, then SIGKILL the groups of those still running and whatever the exited ones left
    behind. Returns the names that had to be killed
    (a process that exited by itself within the grace is a clean stop, whatever it left)."""
    if not running:
        return []
    backend.signal(running, signal.SIGTERM)
    deadline = clock.now() + grace_s
    while clock.now() < deadline and any(r.poll() is None for r in running):
        clock.sleep(0.1)
    killed = sorted(r.proc.name for r in running if r.poll() is None)
    left = backend.leftovers(running)
    if left:
        backend.signal([r for r in running if r.proc.name in left], signal.SIGKILL)
        deadline = clock.now() + 10.0
        while clock.now() < deadline and backend.leftovers(running):
            clock.sleep(0.1)
    for r in running:
        try:
            r.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            r.popen.kill()
        r.poll()
    return killed


def log_tail(log: Path, lines: int = 50) -> str:
    """The last `lines` lines of a log (for failure messages)."""
    try:
        data = log.read_bytes()[-256 * 1024 :].decode(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(data.splitlines()[-lines:])
