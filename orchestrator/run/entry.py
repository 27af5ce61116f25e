"""The driver's entry point inside the allocation: plan.json -> nodes -> bound plan -> Driver.

`python -m orchestrator.run.entry RUN_DIR` (what the sbatch script execs; submitit calls
`submitit_job`). The plan is run exactly as saved at submission: only what the job knows is
bound (nodes, their addresses, the job id and its port block, the run directory). Nothing here
imports Hydra or OmegaConf, or re-plans from the config.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.bench.step import attach_benchmark
from orchestrator.core.effects import RequestsHttp, SubprocessRunner, SystemClock
from orchestrator.core.errors import OrchestratorError
from orchestrator.elastic.autoscale import attach_autoscale, link_argv, link_env
from orchestrator.elastic.decisions import PlannerLink
from orchestrator.elastic.hold import attach_hold
from orchestrator.elastic.jobwatch import attach_job_watch
from orchestrator.elastic.retire import attach_retire
from orchestrator.elastic.rollover import attach_rollover
from orchestrator.frontends import get_frontend
from orchestrator.observe.fingerprint import start_fingerprint
from orchestrator.observe.scrape import attach_metrics
from orchestrator.plan.model import Plan
from orchestrator.plan.placeholders import Bindings, bind_plan, shift_port
from orchestrator.plan.ports import port_offset_for_job
from orchestrator.run.driver import Driver, default_say
from orchestrator.run.early_stop import EarlyStop, StopBeforeStart
from orchestrator.rundir import Phase, RunDir
from orchestrator.rundir.secrets import export_secrets
from orchestrator.runtime import fetch, nodes, preflight, stage_step
from orchestrator.runtime.attempts import begin_attempt
from orchestrator.runtime.heartbeat import attach_heartbeat
from orchestrator.runtime.pernode import NodeBackend
from orchestrator.runtime.processes import Backend, LocalBackend, SrunBackend
from orchestrator.runtime.state import StateFile
from orchestrator.slurm.client import SlurmClient
from orchestrator.slurm.request import PER_NODE, holds_slurm_term


@dataclass(frozen=True)
class Allocation:
    """The job's nodes as the driver found them."""

    job_id: str
    hosts: tuple[str, ...]
    ips: tuple[str, ...]
    busy: tuple[tuple[int, ...], ...] = ()  # per node: planned ports someone already holds
    port_offset: int = 0  # the job's port block
    gpus: tuple[tuple[str, ...], ...] = ()  # per node: the job's GPU ids there (NodeInfo.gpus)


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
    job = env.get("SLURM_JOB_ID")
    nodes_held = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or ""
    if nodes_held.isdigit() and int(nodes_held) < plan.num_nodes:
        problems.append(
            f"allocation {job} has {nodes_held} node(s); the plan needs "
            f"{plan.num_nodes} (salloc/sbatch --nodes={plan.num_nodes})"
        )
    gpus, need = gpus_in_allocation(env), plan.slurm.gpus_per_node
    if gpus is not None and gpus < need:
        problems.append(
            f"allocation {job} has {gpus} GPU(s) per node; the plan needs "
            f"{need} (--gpus-per-node={need}, or lower cluster.gpus_per_node)"
        )
    return problems


def job_port_offset(plan: Plan, job_id: str) -> int:
    """This job's port block (0 without a job id)."""
    return port_offset_for_job(
        job_id,
        gpus_per_node=plan.gpus_per_node,
        job_blocks=plan.port_job_blocks,
        workers_per_gpu=plan.workers_per_gpu,
    )


def job_ports(plan: Plan, offset: int) -> list[int]:
    """Every port the job's processes will listen on."""
    return [shift_port(plan, p, offset) for proc in plan.processes for p in proc.ports.values()]


def _hosts(plan: Plan, env: Mapping[str, str], say: Callable[[str], None]) -> list[str]:
    """The allocation's first `plan.num_nodes` hostnames, checked against the plan."""
    job_id = env["SLURM_JOB_ID"]
    problems = allocation_issues(plan, env)
    if problems:
        raise OrchestratorError("; ".join(problems))
    nodelist = env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", ""))
    hosts = nodes.expand_hostlist(SubprocessRunner(), nodelist)
    if len(hosts) < plan.num_nodes:
        raise OrchestratorError(
            f"allocation {job_id} has {len(hosts)} node(s) ({', '.join(hosts)}); "
            f"the plan needs {plan.num_nodes} (request --nodes={plan.num_nodes})"
        )
    if len(hosts) > plan.num_nodes:
        say(
            f"warning: allocation {job_id} has {len(hosts)} nodes; the plan uses the first "
            f"{plan.num_nodes}"
        )
    if gpus_in_allocation(env) is None:
        say("warning: the allocation does not say how many GPUs it holds; assuming the plan's")
    return hosts[: plan.num_nodes]


def slurm_allocation(plan: Plan, env: Mapping[str, str], say: Callable[[str], None]) -> Allocation:
    """The current job's nodes with addresses and busy ports resolved on the nodes themselves."""
    job_id = env["SLURM_JOB_ID"]
    hosts = _hosts(plan, env, say)
    offset = job_port_offset(plan, job_id)
    infos = nodes.probe_nodes(
        SubprocessRunner(),
        job_id=job_id,
        hosts=hosts,
        python=sys.executable,
        ip_source=plan.ip_source,
        interface=plan.network_interface,
        ports=job_ports(plan, offset),
    )
    return Allocation(
        job_id,
        tuple(hosts),
        tuple(i.ip for i in infos),
        tuple(i.busy for i in infos),
        offset,
        tuple(i.gpus for i in infos),
    )


def local_allocation(plan: Plan) -> Allocation:
    """This machine as node 0, reached on loopback (nothing is exposed beyond it); with
    frontend.placement=here on the address the compute nodes reach (plan.serve.host)."""
    busy = tuple(nodes.busy_ports(job_ports(plan, 0)))
    if plan.serve is not None:
        return Allocation("", (socket.gethostname(),), (plan.serve.host,), (busy,))
    return Allocation("", ("localhost",), ("127.0.0.1",), (busy,))


def port_conflicts(plan: Plan, alloc: Allocation) -> list[str]:
    """Ports of the bound `plan` that are already taken on their node, named by process and node."""
    problems = []
    for proc in plan.processes:
        busy = set(alloc.busy[proc.node_index]) if proc.node_index < len(alloc.busy) else set()
        for kind, port in proc.ports.items():
            if port in busy:
                problems.append(
                    f"port {port} ({proc.name} {kind}) is already in use on "
                    f"{alloc.hosts[proc.node_index]} (node {proc.node_index})"
                )
    return problems


def with_job_gpus(plan: Plan, node_gpus: Sequence[Sequence[str]]) -> Plan:
    """Planned GPU indices (0..n-1 of the job's GPUs on a node) -> the GPU ids Slurm gave the
    job there. Without device cgroups (ConstrainDevices) Slurm hands a job sharing a node
    physical ids such as CUDA_VISIBLE_DEVICES=4,5,6,7 (seen on the Slurm 22.05 testbed), and
    the plan's 0-3 would be the other job's GPUs; with them the ids are 0-3 and this changes
    nothing. Nodes that reported no ids keep the planned indices."""
    procs = []
    for proc in plan.processes:
        ids = node_gpus[proc.node_index] if proc.node_index < len(node_gpus) else ()
        planned = proc.env.get("CUDA_VISIBLE_DEVICES", "")
        indices = [int(i) for i in planned.split(",") if i.isdigit()]
        if ids and indices and max(indices) < len(ids):
            env = {**proc.env, "CUDA_VISIBLE_DEVICES": ",".join(ids[i] for i in indices)}
            proc = dataclasses.replace(proc, env=env)
        procs.append(proc)
    return dataclasses.replace(plan, processes=tuple(procs))


def bound_plan(plan: Plan, alloc: Allocation, run_dir: Path) -> Plan:
    """The saved plan bound to this job, its ports checked free on every node."""
    bindings = Bindings(
        node_ips=alloc.ips,
        node_hosts=alloc.hosts,
        job_id=alloc.job_id,
        run_dir=str(run_dir),
        port_offset=alloc.port_offset,
    )
    bound = with_job_gpus(bind_plan(plan, bindings), alloc.gpus)
    conflicts = port_conflicts(bound, alloc)
    if conflicts:
        raise OrchestratorError(
            "; ".join(conflicts) + " (stop what holds it, or move "
            "cluster.port_base / frontend.http_port)"
        )
    return bound


def prepare_files(plan: Plan) -> None:
    """Create what the processes expect to exist (the mocker's tiny tokenizer directory)."""
    tiny = plan.prepare.get("tiny_model_dir")
    if tiny:
        from orchestrator.tiny.tokenizer import ensure_tiny_model_dir

        ensure_tiny_model_dir(Path(tiny))


def make_say(run_dir: Path) -> Callable[[str], None]:
    """Progress to stderr and to driver.log."""
    log = RunDir(run_dir).driver_log

    def say(message: str) -> None:
        default_say(message)
        with log.open("a") as fh:
            fh.write(message + "\n")

    return say


def use_our_interpreter_first(plan: Plan) -> None:
    """Put this interpreter's bin directory first on PATH (inherited by local processes and by
    srun steps), so that `python3` in the plan is the environment the orchestrator runs from
    even when it was not activated. Not with containers: their own PATH must win there."""
    if plan.slurm.container_image:
        return
    bindir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def load_plan(run_dir: Path) -> Plan:
    """plan.json of a run: the contract written at submission."""
    return RunDir(run_dir).plan()


def _setup(
    plan: Plan, run_dir: Path, env: Mapping[str, str], state: StateFile, say: Callable[[str], None]
) -> tuple[Plan, Backend]:
    """Find the nodes, bind the plan, write plan.bound.json, create the backend."""
    local = plan.driver_on_this_host  # recorded by the launcher (orchestrator.launchers)
    alloc = local_allocation(plan) if local else slurm_allocation(plan, env, say)
    job_id = "" if local else alloc.job_id
    fetched = None
    if plan.fetch is not None:  # one download on node 0, before anything else reads the model
        fetched = fetch.before_workers(
            plan.fetch,
            hosts=alloc.hosts,
            job_id=job_id,
            timeout_s=plan.readiness.timeout_s,
            say=say,
            runner=SubprocessRunner(),
            record=lambda entry: state.update(fetch=entry),
        )
    if local:
        preflight.run_local(plan.preflight)
    else:  # one srun step over every node, before any worker starts
        preflight.run_on_nodes(
            SubprocessRunner(),
            plan.preflight,
            job_id=alloc.job_id,
            hosts=alloc.hosts,
            python=sys.executable,
        )
    bound = bound_plan(plan, alloc, run_dir)
    if plan.stage is not None:  # after the preflight checked the source on the nodes
        source = plan.stage.source or (fetched or {}).get("path", "")
        dest = stage_step.before_workers(
            plan.stage,
            source=source,
            hosts=alloc.hosts,
            job_id=job_id,
            run_dir=run_dir,
            env=os.environ,
            timeout_s=plan.readiness.timeout_s,
            runner=SubprocessRunner(),
            say=say,
            record=lambda entry: state.update(stage=entry),
        )
        bound = stage_step.use_staged(bound, dest, alloc.hosts)
    RunDir(run_dir).write_bound_plan(bound)
    state.update(
        job_id=alloc.job_id or state.data.get("job_id", ""),
        nodes=list(alloc.hosts),
        node_ips=list(alloc.ips),
        frontend_url=bound.readiness.frontend_url,
    )
    prepare_files(bound)
    if local:
        return bound, LocalBackend(alloc.hosts[0])
    if bound.slurm.launch_per == PER_NODE:
        return bound, NodeBackend(
            bound.slurm,
            alloc.job_id,
            alloc.hosts,
            SubprocessRunner(),
            python=sys.executable,
            log_dir=RunDir(run_dir).logs_dir,
        )
    hold = holds_slurm_term(bound)
    return bound, SrunBackend(bound.slurm, alloc.job_id, alloc.hosts, SubprocessRunner(), hold=hold)


def run_driver(run_dir: Path, env: Mapping[str, str] | None = None) -> int:
    """Run the deployment saved in `run_dir`; returns the exit code (0 done, 1 failed)."""
    early = EarlyStop()
    early.install()  # first: a stop signal during setup is neither lost nor fatal
    env = dict(os.environ if env is None else env)
    run_dir = run_dir.resolve()
    state, say = StateFile(run_dir), make_say(run_dir)
    begin_attempt(state, env)  # a requeued job re-runs its driver here: a new attempt
    state.update(driver_pid=os.getpid(), driver_host=socket.gethostname())
    try:
        with early.armed():
            plan = load_plan(run_dir)
            # Handed to every process through the environment, never through plan or argv.
            export_secrets(run_dir, plan.job.run_dir if plan.job else "", os.environ)
            use_our_interpreter_first(plan)
            bound, backend = _setup(plan, run_dir, env, state, say)
            start_fingerprint(run_dir, bound, backend)  # per node, in a thread, bounded
    except StopBeforeStart as stop:
        say(f"stopping before any process started ({stop})")
        state.phase(Phase.DONE, reason=str(stop))
        return 0
    except OrchestratorError as exc:
        say(f"failed: {exc}")
        state.phase(Phase.FAILED, error=str(exc))
        return 1
    driver = Driver(
        bound,
        run_dir=run_dir,
        backend=backend,
        http=RequestsHttp(),
        clock=SystemClock(),
        state=state,
        say=say,
    )
    driver.install_signal_handlers(pending=early.reason)
    attach_hold(driver)  # a worker job of a placement=here run: Slurm's stop signals are held
    attach_heartbeat(driver)  # an attached job stops itself when its run's driver is gone
    attach_retire(driver)  # ctl scale down: single workers
    get_frontend(bound.readiness.frontend_kind).attach(driver)
    attach_metrics(driver, bound.metrics)  # before the benchmark: it scrapes the benchmark too
    attach_benchmark(driver, bound.benchmark)
    if bound.serve is not None:  # placement=here: every worker is in a worker job
        attach_rollover(driver, bound.serve)
    else:  # ctl scale's worker jobs
        attach_job_watch(driver, SlurmClient(SubprocessRunner()))
    if bound.autoscale is not None:  # the planner decides, this driver carries it out
        link = RunDir(run_dir).log("planner-link")
        argv, link_vars = link_argv(bound, bound.autoscale), link_env(bound, bound.autoscale)
        attach_autoscale(driver, PlannerLink(argv, link_vars, link))
    return driver.run()


def submitit_job(run_dir: str) -> None:
    """The function submitit runs on the first node. A failed deployment fails the job."""
    code = run_driver(Path(run_dir))
    if code:
        raise RuntimeError(f"deployment failed (exit {code}); see {run_dir}/state.json and logs/")


def main(argv: list[str] | None = None) -> int:
    """`python -m orchestrator.run.entry RUN_DIR` (what the sbatch script execs)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m orchestrator.run.entry RUN_DIR\n")
        return 2
    return run_driver(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
