"""Launch per node with fakes: a fake `srun` (drops its options, runs the node agent here) and
small shell processes. The real node agent and the driver's NodeBackend: per-process logs, exit
codes, GPU binding from the plan's env, leader-only SIGTERM, group SIGKILL, restarts, a lost
agent step, and no orphans when the agent dies or is closed."""

from __future__ import annotations

import dataclasses
import os
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.core.effects import SystemClock
from orchestrator.plan.model import Process, SlurmRequest
from orchestrator.runtime.pernode import AgentProcess, NodeBackend
from orchestrator.runtime.processes import Running, exit_detail, stop_tier
from tests.fake_slurm import FakeSlurm

FAKE_SRUN = '#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n'
REQ = SlurmRequest(job_name="t", nodes=2, gpus_per_node=8, time_limit_min=10, launch_per="node")


def wait_until(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def proc(name: str, script: str, node: int = 0, gpus: str = "0") -> Process:
    return Process(
        name=name,
        role="decode",
        group="decode",
        worker_index=0,
        rank=0,
        node_index=node,
        gpus=(0,),
        ports={},
        tier=2,
        env={"CUDA_VISIBLE_DEVICES": gpus, "ORCHESTRATOR_PROCESS": name},
        argv=("sh", "-c", script),
    )


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NodeBackend]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "srun").write_text(FAKE_SRUN)
    (bindir / "srun").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    slurm = FakeSlurm()
    nodes = NodeBackend(
        REQ, "7", ["nodeA", "nodeB"], slurm, python="python3", log_dir=tmp_path / "run" / "logs"
    )
    yield nodes
    nodes.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return state != "Z"


def child_pid(log: Path) -> int:
    wait_until(lambda: log.exists() and "child " in log.read_text(), f"the child pid in {log}")
    return int(log.read_text().split("child ")[1].split()[0])


def test_one_agent_per_node_runs_each_process_with_its_log_env_and_exit_code(
    backend: NodeBackend, tmp_path: Path
) -> None:
    logs = tmp_path / "run" / "logs"
    a = backend.start(
        proc("a", 'echo "gpus=$CUDA_VISIBLE_DEVICES"; exit 3', gpus="0,1"), logs / "a.log"
    )
    b = backend.start(
        proc("b", 'echo "gpus=$CUDA_VISIBLE_DEVICES"; exit 0', gpus="2"), logs / "b.log"
    )
    c = backend.start(proc("c", "echo on B; exit 5", node=1), logs / "c.log")
    assert a.popen.wait(timeout=10) == 3 and b.popen.wait(timeout=10) == 0
    assert c.popen.wait(timeout=10) == 5 and c.host == "nodeB"
    assert (logs / "a.log").read_text() == "gpus=0,1\n"
    assert (logs / "b.log").read_text() == "gpus=2\n"
    assert backend.agents_alive() == ["nodeA", "nodeB"]  # two agents for three processes
    wait_until(lambda: not backend.leftovers([a, b, c]), "every group gone")
    # A restart reuses the name and the node's agent and appends to the log.
    again = backend.start(proc("a", "echo second; exit 0", gpus="0,1"), logs / "a.log")
    assert again.popen.wait(timeout=10) == 0
    assert (logs / "a.log").read_text() == "gpus=0,1\nsecond\n"
    assert backend.agents_alive() == ["nodeA", "nodeB"]


def test_sigterm_reaches_the_leader_alone_and_sigkill_the_whole_group(
    backend: NodeBackend, tmp_path: Path
) -> None:
    logs = tmp_path / "run" / "logs"
    # The leader drains on TERM (exit 0); its child ignores nothing: a group-wide TERM would
    # kill it, and a leader-only TERM leaves it running.
    script = 'sleep 1000 & echo "child $!"; trap "echo drained; exit 0" TERM; wait'
    r = backend.start(proc("w", script), logs / "w.log")
    child = child_pid(logs / "w.log")
    backend.signal([r], signal.SIGTERM)
    assert r.popen.wait(timeout=10) == 0
    assert "drained" in (logs / "w.log").read_text()
    assert pid_alive(child) and backend.leftovers([r]) == ["w"]  # its group still has the child
    backend.signal([r], signal.SIGKILL)
    wait_until(lambda: not backend.leftovers([r]), "the group gone")
    assert not pid_alive(child)


def test_stop_tier_through_agents_kills_what_ignores_the_grace(
    backend: NodeBackend, tmp_path: Path
) -> None:
    logs = tmp_path / "run" / "logs"
    stubborn = backend.start(
        proc("s", 'trap "" TERM; echo "child $$"; sleep 1000 & wait'), logs / "s.log"
    )
    polite = backend.start(proc("p", "sleep 1000 & wait", node=1), logs / "p.log")
    wait_until(lambda: stubborn.popen.pid and polite.popen.pid, "both started")
    killed = stop_tier(backend, [stubborn, polite], grace_s=0.5, clock=SystemClock())
    assert killed == ["s"] and stubborn.popen.poll() == -9 and polite.popen.poll() == -15
    assert backend.leftovers([stubborn, polite]) == []


def test_a_killed_agent_step_reports_its_processes_lost_and_leaves_nothing(
    backend: NodeBackend, tmp_path: Path
) -> None:
    logs = tmp_path / "run" / "logs"
    r = backend.start(proc("x", 'sleep 1000 & echo "child $!"; wait'), logs / "x.log")
    other = backend.start(proc("y", "sleep 1000", node=1), logs / "y.log")
    child = child_pid(logs / "x.log")
    wait_until(lambda: r.popen.pid, "x started")  # its pid comes with the agent's event
    agent = backend.agent(0)
    agent.popen.send_signal(signal.SIGKILL)  # the fake srun exec'ed the agent: its step dies
    assert r.popen.wait(timeout=10) == -9  # the step's exit code (srun's: 137 on the testbed)
    assert isinstance(r.popen, AgentProcess) and "lost: node agent step on nodeA" in r.popen.lost
    assert "lost: node agent step on nodeA ended" in (logs / "x.log").read_text()
    # The leader dies with its agent (parent-death signal), what it spawned with its group (the
    # agent's reaper): nothing left even where Slurm's proctrack misses new sessions (pgid).
    wait_until(lambda: not pid_alive(r.popen.pid) and not pid_alive(child), "x's group gone")
    assert backend.leftovers([r]) == [] and other.popen.poll() is None
    assert exit_detail(backend, r) == ""  # node fine (fake Slurm): restarted by its policy
    restarted = backend.start(proc("x", "exit 0"), logs / "x.log")
    assert restarted.popen.wait(timeout=10) == 0 and backend.agent(0) is not agent


def test_a_lost_step_on_a_down_node_is_a_node_failure(tmp_path: Path, backend: NodeBackend) -> None:
    logs = tmp_path / "run" / "logs"
    r = backend.start(proc("x", "sleep 1000"), logs / "x.log")
    wait_until(lambda: r.popen.pid, "started")
    slurm: FakeSlurm = backend._slurm._runner  # type: ignore[attr-defined]
    slurm.set_node_state("nodeA", "down*")
    backend.agent(0).popen.send_signal(signal.SIGKILL)
    r.popen.wait(timeout=10)
    assert "lost: node agent step on nodeA" in exit_detail(backend, r)
    assert "node failure: nodeA" in exit_detail(backend, r)


def test_closing_stops_every_process_and_agent(backend: NodeBackend, tmp_path: Path) -> None:
    logs = tmp_path / "run" / "logs"
    running: list[Running] = [
        backend.start(
            proc(f"w{i}", 'sleep 1000 & echo "child $!"; wait', node=i % 2), logs / f"w{i}.log"
        )
        for i in range(4)
    ]
    children = [child_pid(r.log) for r in running]
    backend.close()
    assert backend.agents_alive() == []
    wait_until(lambda: not any(pid_alive(p) for p in children), "every child gone")


def test_the_agent_refuses_nothing_silently(backend: NodeBackend, tmp_path: Path) -> None:
    logs = tmp_path / "run" / "logs"
    missing = dataclasses.replace(proc("n", ""), argv=("/no/such",))
    r = backend.start(missing, logs / "n.log")
    assert r.popen.wait(timeout=10) == 127
    assert "cannot start ['/no/such']" in (logs / "n.log").read_text()
    wait_until(lambda: not backend.leftovers([r]), "nothing to wait for")


def http_server(tmp_path: Path) -> tuple[str, int]:
    """A shell command serving `tmp_path/www/health` on a free port, and the port."""
    import socket

    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    (www / "health").write_text("ok")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"exec python3 -m http.server {port} --bind 127.0.0.1 --directory {www}", port


def test_the_agent_checks_health_and_reports_misses_only_when_they_change(
    backend: NodeBackend, tmp_path: Path
) -> None:
    from orchestrator.runtime.nodeagent import probe

    script, port = http_server(tmp_path)
    r = backend.start(proc("w", script), tmp_path / "run" / "logs" / "w.log")
    url = f"http://127.0.0.1:{port}/health"
    wait_until(lambda: probe(url, 200, 1.0) == "", "the server answers")
    handle = r.popen
    assert isinstance(handle, AgentProcess)
    handle.watch_health(url, 200, every_s=0.05, timeout_s=0.3)
    time.sleep(0.5)  # ~10 checks, all passing: no event, no miss
    assert handle.misses == 0 and handle.health_detail == ""
    os.kill(handle.pid, signal.SIGSTOP)  # hung: the kernel accepts, nobody answers
    wait_until(lambda: handle.misses >= 2, "misses reported")
    assert "timed out" in handle.health_detail
    os.kill(handle.pid, signal.SIGCONT)
    wait_until(lambda: handle.misses == 0, "back to no misses")


def test_the_serving_watch_kills_a_hung_process_from_its_agents_misses(
    backend: NodeBackend, tmp_path: Path
) -> None:
    """launch_per=node: the driver probes nothing itself (its HTTP client is never called)."""
    from types import SimpleNamespace

    from orchestrator.plan.model import HealthProbe, RestartPolicy
    from orchestrator.runtime.health_watch import HealthWatch
    from orchestrator.runtime.nodeagent import probe
    from tests.fakes import FakeHttp

    script, port = http_server(tmp_path)
    health = HealthProbe(url=f"http://127.0.0.1:{port}/health")
    p = dataclasses.replace(
        proc("w", script), health=health, restart=RestartPolicy(mode="on_failure")
    )
    r = backend.start(p, tmp_path / "run" / "logs" / "w.log")
    wait_until(lambda: probe(health.url, 200, 1.0) == "", "the server answers")
    readiness = SimpleNamespace(serve_check_s=0.05, serve_failures=3)
    http, said = FakeHttp({}), []
    watch = HealthWatch(SimpleNamespace(readiness=readiness), http, backend, None, said.append)  # type: ignore[arg-type]
    watch.check({"w": r}, skip=())  # hands the check to the agent
    os.kill(r.popen.pid, signal.SIGSTOP)

    def checked() -> bool:
        watch.check({"w": r}, skip=())
        return r.popen.poll() is not None

    wait_until(checked, "the hung process killed")
    assert r.popen.poll() == -9 and http.calls == []
    assert said and "failed 3 health checks in a row" in said[0]
