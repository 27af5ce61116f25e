"""Driver bootstrap inside the allocation: nodes -> port offset -> bound plan -> Driver."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config.load import config_from_dict
from orchestrator.config.schema import RootConfig
from orchestrator.effects import RequestsHttp, SubprocessRunner, SystemClock
from orchestrator.errors import OrchestratorError
from orchestrator.plan.build import build_plan
from orchestrator.plan.model import Plan, plan_to_dict
from orchestrator.plan.placeholders import Bindings, bind_plan
from orchestrator.plan.ports import port_offset_for_job
from orchestrator.runtime import nodes
from orchestrator.runtime.attempts import begin_attempt
from orchestrator.runtime.driver import Driver, default_say
from orchestrator.runtime.processes import Backend, LocalBackend, SrunBackend
from orchestrator.runtime.state import StateFile, write_json_atomic


@dataclass(frozen=True)
class Allocation:
    job_id: str
    hosts: tuple[str, ...]
    ips: tuple[str, ...]
    busy: tuple[tuple[int, ...], ...] = ()  # per node: planned ports someone already holds


def gpus_in_allocation(env: Mapping[str, str]) -> int | None:
    """GPUs per node the allocation holds, from Slurm's environment (None when unknown)."""
    for key in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        value = env.get(key, "").split("(")[0].split(":")[-1]
        if value.isdigit():
            return int(value)
    gpus = env.get("SLURM_JOB_GPUS", "")
    return len(gpus.split(",")) if gpus else None


def allocation_issues(plan: Plan, env: Mapping[str, str]) -> list[str]:
    """Why the current allocation cannot hold `plan` (empty when it can or when unknown)."""
    problems = []
    nodes_held = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or ""
    if nodes_held.isdigit() and int(nodes_held) < plan.num_nodes:
        problems.append(f"allocation {env.get('SLURM_JOB_ID')} has {nodes_held} node(s); the plan needs "
                        f"{plan.num_nodes} (salloc/sbatch --nodes={plan.num_nodes})")  # fmt: skip
    gpus = gpus_in_allocation(env)
    if gpus is not None and gpus < plan.gpus_per_node:
        problems.append(f"allocation {env.get('SLURM_JOB_ID')} has {gpus} GPU(s) per node; the plan needs "
                        f"{plan.gpus_per_node} (--gpus-per-node={plan.gpus_per_node}, or lower "
                        "cluster.gpus_per_node)")  # fmt: skip
    return problems


def slurm_allocation(
    cfg: RootConfig, plan: Plan, env: Mapping[str, str], say: Callable[[str], None]
) -> Allocation:
    """The current job's nodes (checked against the plan) with addresses resolved on them."""
    runner = SubprocessRunner()
    job_id = env["SLURM_JOB_ID"]
    problems = allocation_issues(plan, env)
    if problems:
        raise OrchestratorError("; ".join(problems))
    hosts = nodes.expand_hostlist(
        runner, env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", ""))
    )
    if len(hosts) < plan.num_nodes:
        raise OrchestratorError(f"allocation {job_id} has {len(hosts)} node(s) ({', '.join(hosts)}); "
                                f"the plan needs {plan.num_nodes} (request --nodes={plan.num_nodes})")  # fmt: skip
    if len(hosts) > plan.num_nodes:
        say(
            f"warning: allocation {job_id} has {len(hosts)} nodes; the plan uses the first {plan.num_nodes}"
        )
    if gpus_in_allocation(env) is None:
        say("warning: the allocation does not say how many GPUs it holds; assuming the plan's")
    hosts = hosts[: plan.num_nodes]
    ports = [p for proc in job_plan(cfg, job_id).processes for p in proc.ports.values()]
    infos = nodes.probe_nodes(runner, job_id=job_id, hosts=hosts, python=sys.executable,
                              ip_source=cfg.cluster.ip_source, interface=cfg.cluster.network_interface,
                              ports=ports)  # fmt: skip
    return Allocation(
        job_id, tuple(hosts), tuple(i.ip for i in infos), tuple(i.busy for i in infos)
    )


def local_allocation(cfg: RootConfig) -> Allocation:
    """This machine as node 0, reached on loopback (nothing is exposed beyond it)."""
    ports = [p for proc in job_plan(cfg, "").processes for p in proc.ports.values()]
    return Allocation("", ("localhost",), ("127.0.0.1",), (tuple(nodes.busy_ports(ports)),))


def job_plan(cfg: RootConfig, job_id: str) -> Plan:
    """The plan with this job's port block (placeholders still unbound)."""
    offset = port_offset_for_job(job_id, gpus_per_node=cfg.cluster.gpus_per_node,
                                 job_blocks=cfg.cluster.port_job_blocks)  # fmt: skip
    return build_plan(cfg, port_offset=offset)


def port_conflicts(plan: Plan, alloc: Allocation) -> list[str]:
    """Planned ports that are already taken on their node, named by process and node."""
    problems = []
    for proc in plan.processes:
        busy = set(alloc.busy[proc.node_index]) if proc.node_index < len(alloc.busy) else set()
        for kind, port in proc.ports.items():
            if port in busy:
                problems.append(f"port {port} ({proc.name} {kind}) is already in use on "
                                f"{alloc.hosts[proc.node_index]} (node {proc.node_index})")  # fmt: skip
    return problems


def prepare_files(plan: Plan) -> None:
    """Create what the processes expect to exist (the mocker's tiny tokenizer directory)."""
    tiny = plan.prepare.get("tiny_model_dir")
    if tiny:
        from orchestrator.tiny_tokenizer import ensure_tiny_model_dir

        ensure_tiny_model_dir(Path(tiny))


def bound_plan(cfg: RootConfig, alloc: Allocation, run_dir: Path) -> Plan:
    """The plan for this job: its port block, checked free on every node, placeholders bound."""
    plan = job_plan(cfg, alloc.job_id)
    conflicts = port_conflicts(plan, alloc)
    if conflicts:
        raise OrchestratorError("; ".join(conflicts) + " (stop what holds it, or move cluster.port_base "
                                "/ frontend.http_port)")  # fmt: skip
    bindings = Bindings(
        node_ips=alloc.ips, node_hosts=alloc.hosts, job_id=alloc.job_id, run_dir=str(run_dir)
    )
    return bind_plan(plan, bindings)


def make_say(run_dir: Path) -> Callable[[str], None]:
    """Progress to stderr and to driver.log."""
    log = run_dir / "driver.log"

    def say(message: str) -> None:
        default_say(message)
        with log.open("a") as fh:
            fh.write(message + "\n")

    return say


def use_our_interpreter_first(cfg: RootConfig) -> None:
    """Put this interpreter's bin directory first on PATH (inherited by local processes and by
    srun steps), so that `python3` in the plan is the environment the orchestrator runs from
    even when it was not activated. Not with containers: their own PATH must win there."""
    if cfg.cluster.container_image:
        return
    bindir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def run_driver(run_dir: Path, env: Mapping[str, str] | None = None) -> int:
    """Run the deployment described in `run_dir`; returns the exit code (0 done, 1 failed)."""
    env = dict(os.environ if env is None else env)
    run_dir = run_dir.resolve()
    launch = json.loads((run_dir / "launch.json").read_text())
    cfg = config_from_dict(json.loads((run_dir / "config.json").read_text()))
    state, say = StateFile(run_dir), make_say(run_dir)
    begin_attempt(state, env)  # a requeued job re-runs its driver here: a new attempt
    use_our_interpreter_first(cfg)
    state.update(driver_pid=os.getpid(), driver_host=socket.gethostname())
    try:
        local = launch["launcher"] == "local"
        alloc = local_allocation(cfg) if local else slurm_allocation(cfg, build_plan(cfg), env, say)
        plan = bound_plan(cfg, alloc, run_dir)
        write_json_atomic(run_dir / "plan.bound.json", plan_to_dict(plan))
        state.update(job_id=alloc.job_id or state.data.get("job_id", ""), nodes=list(alloc.hosts),
                     node_ips=list(alloc.ips), frontend_url=plan.readiness.frontend_url)  # fmt: skip
        prepare_files(plan)
        backend: Backend = LocalBackend() if local else SrunBackend(plan.slurm, alloc.job_id, alloc.hosts,
                                                                      SubprocessRunner())  # fmt: skip
    except OrchestratorError as exc:
        say(f"failed: {exc}")
        state.phase("failed", error=str(exc))
        return 1
    driver = Driver(plan, run_dir=run_dir, backend=backend, http=RequestsHttp(), clock=SystemClock(),
                    state=state, say=say)  # fmt: skip
    driver.install_signal_handlers()
    attach_frontend_hooks(driver, cfg)
    from orchestrator.bench.step import attach_benchmark  # bench imports the driver module

    attach_benchmark(driver, cfg)
    return driver.run()


def attach_frontend_hooks(driver: Driver, cfg: RootConfig) -> None:
    """Frontend-specific steps (sglang-router: register workers over HTTP once healthy)."""
    if cfg.frontend.kind == "sglang_router":
        from orchestrator.runtime.router import attach_router_registration

        attach_router_registration(driver)


def submitit_job(run_dir: str) -> None:
    """The function submitit runs on the first node. A failed deployment fails the job."""
    code = run_driver(Path(run_dir))
    if code:
        raise RuntimeError(f"deployment failed (exit {code}); see {run_dir}/state.json and logs/")
