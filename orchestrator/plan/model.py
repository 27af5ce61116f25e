"""The plan: frozen data saying which process runs on which node, GPUs, ports, argv and env.

It is built by pure functions (`orchestrator.plan.build`) and serialized into the run directory,
where it is the contract between the submit side and the in-allocation driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from orchestrator.plan.fetch import FetchSpec
from orchestrator.plan.preflight import PathCheck
from orchestrator.plan.stage import StageSpec

Role = Literal["frontend", "prefill", "decode", "worker", "infra", "benchmark"]
ROLES: tuple[str, ...] = ("frontend", "prefill", "decode", "worker", "infra", "benchmark")

# Start order; teardown runs the tiers in reverse except that workers and the frontend stop
# together before infrastructure (etcd must outlive the workers that deregister from it).
TIER_INFRA = 0
TIER_FRONTEND = 1
TIER_WORKER = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthProbe:
    """An HTTP check that says a single process is up (not that the deployment is ready)."""

    url: str  # may contain placeholders such as {node_ip:0}
    expect_status: int = 200
    # The serving-time check of a process that is up (health_watch.py), when it differs from
    # `url`: a deeper one that may answer slowly (SGLang's /health_generate runs a 1-token
    # generation and answers after >= 1 s). '' = `url`.
    serve_url: str = ""


RestartMode = Literal["never", "on_failure", "always"]
RESTART_MODES: tuple[str, ...] = ("never", "on_failure", "always")


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    """What the driver does when this process exits while the deployment serves: `never` fails
    the run; `on_failure` restarts after a non-zero exit, `always` after any exit. At most
    `max_restarts` within `window_s`; the n-th restart of the window waits
    `backoff_s` x 2^(n-1), capped at `backoff_max_s`. Processes of one multi-node worker
    (same group and worker_index) restart together."""

    mode: RestartMode = "never"
    max_restarts: int = 3
    window_s: float = 3600.0
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0

    def applies(self, exit_code: int) -> bool:
        """Whether an exit with `exit_code` is restarted (before counting the limit)."""
        return self.mode == "always" or (self.mode == "on_failure" and exit_code != 0)

    def backoff(self, recent: int) -> float:
        """Delay before the restart that follows `recent` restarts within the window."""
        return float(min(self.backoff_s * 2**recent, self.backoff_max_s))


@dataclass(frozen=True, slots=True, kw_only=True)
class Process:
    """One OS process of the deployment (a multi-node worker is one process per node)."""

    name: str
    role: Role
    group: str  # prefill | decode | aggregated | frontend | infra
    worker_index: int  # index of the worker within its group (0 for singletons)
    rank: int  # node rank within a multi-node worker (0 otherwise)
    node_index: int
    gpus: tuple[int, ...]
    ports: Mapping[str, int]
    env: Mapping[str, str]
    argv: tuple[str, ...]
    tier: int
    health: HealthProbe | None = None
    # Where the worker is reachable for registration (router) and in messages; rank 0 only.
    url: str = ""
    bootstrap_port: int = 0
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    # A worker sharing its GPUs (deployment.workers_per_gpu > 1, orchestrator.plan.sharing):
    # its part of each GPU's memory, the processes that must be healthy before it starts, and
    # the arguments appended when it restarts while they run (argparse: the last copy wins).
    gpu_share: float = 0.0
    start_after: tuple[str, ...] = ()
    restart_args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Readiness:
    """How the driver decides the deployment is usable."""

    frontend_kind: str  # dynamo | sglang_router
    frontend_url: str  # base URL, e.g. http://{node_ip:0}:8000
    ready_path: str  # dynamo: /v1/models/<model>/ready ; router: /readiness
    model: str  # served model name (used by the canary)
    expected: Mapping[str, int]  # workers expected per role, e.g. {"prefill": 1, "decode": 1}
    timeout_s: float
    interval_s: float
    canary: bool
    canary_max_tokens: int
    serve_failures: int = 3
    serve_check_s: float = 30.0
    # frontend.replicas=2: each replica's own base URL (frontend_url is then the proxy's); the
    # gate waits for every one of them, not only the one the proxy happens to ask.
    replica_urls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SlurmRequest:
    """The allocation: one job holding every node of the deployment."""

    job_name: str
    nodes: int
    gpus_per_node: int
    time_limit_min: int
    partition: str = ""
    account: str = ""
    qos: str = ""
    exclusive: bool = True
    gpu_directive: str = "gpus-per-node"
    signal_before_limit_s: int = 120
    sbatch_extra: tuple[str, ...] = ()
    srun_extra: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    container_image: str = ""
    container_mounts: tuple[str, ...] = ()
    launch_per: str = "process"  # process | node (cluster.launch_per)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadPoint:
    """One benchmark load point with every default resolved."""

    index: int
    concurrency: int
    isl: int
    osl: int
    requests: int
    warmup: int
    tasks: tuple[str, ...] = ()  # an accuracy point (benchmark=lm_eval): its lm-eval tasks

    def label(self) -> str:
        """Directory-friendly name, e.g. `00-c4-i1024-o128`, or `00-eval` for an accuracy point."""
        if self.tasks:
            return f"{self.index:02d}-eval"
        return f"{self.index:02d}-c{self.concurrency}-i{self.isl}-o{self.osl}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchmarkPlan:
    """The load points the driver runs once the deployment is ready, and their clients."""

    tool: str  # aiperf | sglang_bench | lm_eval
    points: tuple[LoadPoint, ...]
    clients: tuple[Process, ...]  # one per point, role "benchmark", node 0
    max_error_rate: float
    keep_serving: bool
    point_timeout_s: float
    allow_restarts: bool = False  # a worker restart during a point keeps the point valid
    # Accuracy points: {task: lowest acceptable value of its first metric} (bench/evals.py).
    min_accuracy: Mapping[str, float] = field(default_factory=dict)
    # Facts every result row carries: name, plan_hash, gpus by role, topology.
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsPlan:
    """Scraping of the frontend's and workers' Prometheus endpoints while serving
    (orchestrator.observe.scrape; the targets follow from the processes)."""

    interval_s: float = 10.0
    max_bytes: int = 50_000_000  # results/metrics.jsonl rotates to metrics.1.jsonl past this


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerJobPlan:
    """What makes a plan a worker job's (orchestrator.rundir.jobs: `ctl scale`'s, or one of a
    frontend.placement=here run's): workers only, joining the frontend and discovery of the run
    in `run_dir` (readiness.frontend_url and the discovery env are that run's real addresses)."""

    run_dir: str = ""  # the run it joins ('' in a placement=here run's template: set per job)
    # It stops itself when the run's heartbeat is this long unchanged
    # (orchestrator.runtime.heartbeat; launcher.heartbeat_timeout_s).
    heartbeat_timeout_s: float = 60.0
    # placement=here: on a stop signal that no stop request explains (time limit, preemption)
    # it keeps serving this long for its replacement (elastic/hold.py; serve.signal_hold_s).
    hold_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ServePlan:
    """frontend.placement=here: the plan runs the frontend (and etcd) on this host, and its
    driver submits the workers as Slurm jobs attached to it, replacing them before their time
    limit (`rollover`) or when they are lost (orchestrator.elastic.rollover)."""

    host: str  # the address the frontend and etcd bind (this plan's node 0)
    workers: Plan  # one worker job; the run it joins and the run's files are set per job
    launcher: str = ""  # sbatch | submitit: how the worker jobs are submitted
    request: Mapping[str, Any] = field(default_factory=dict)  # its request, with {run_dir}
    rollover: bool = False
    lead_s: float = 0.0  # 0: measured submit -> ready (at least the stop signal) + margin_s
    margin_s: float = 60.0
    attempts: int = 3  # replacements failing in a row before the driver stops trying
    signal_before_limit_s: float = 0.0  # when Slurm tells a worker job's driver to stop


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoscalePlan:
    """autoscale=dynamo_planner: Dynamo's SLA planner (the head process `process`, started with
    `environment: virtual`) decides prefill/decode counts; the run's driver carries each decision
    out with attached worker jobs (orchestrator.elastic.autoscale), clipped to these bounds."""

    process: str = "planner"  # the planner's process in this plan
    namespace: str = ""  # the Dynamo namespace its VirtualConnectorCoordinator publishes in
    min_prefill: int = 1
    max_prefill: int = 1
    min_decode: int = 1
    max_decode: int = 1
    max_gpus: int = 0  # the planner's GPU budget (0: none)
    # A worker job still PENDING this long (or failed) makes the decision one that cannot be met.
    pending_timeout_s: float = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Everything that will run, where. Pure data; see `plan_to_dict` for the JSON contract.

    Planned for port block 0: worker ports appear as `{port:N}` placeholders (and as N in
    `Process.ports`); the driver shifts every port of [port_base, port_base + block) by the job's
    block (`port_offset`, 0 until bound)."""

    name: str
    num_nodes: int
    gpus_per_node: int
    port_base: int
    port_job_blocks: int
    port_offset: int
    processes: tuple[Process, ...]
    readiness: Readiness
    slurm: SlurmRequest
    ip_source: str = "hostname"
    network_interface: str = ""
    stop_grace_s: float = 20.0
    prepare: Mapping[str, str] = field(default_factory=dict)  # e.g. {"tiny_model_dir": path}
    benchmark: BenchmarkPlan | None = None
    metrics: MetricsPlan | None = None
    preflight: tuple[PathCheck, ...] = ()  # paths each node must hold before workers start
    fetch: FetchSpec | None = None  # model.fetch: one download on node 0 before any worker
    stage: StageSpec | None = None  # model.stage=node_local: a copy on each worker node first
    job: WorkerJobPlan | None = None  # a worker job's plan: the run it joins
    serve: ServePlan | None = None  # frontend.placement=here: the worker jobs
    autoscale: AutoscalePlan | None = None  # autoscale=dynamo_planner: decisions carried out
    # Workers sharing one GPU at most (deployment.workers_per_gpu): the port block has a slot
    # per worker process a node can hold.
    workers_per_gpu: int = 1
    # Where the driver runs, recorded by the launcher (orchestrator.launchers): a process of the
    # submitting host (launcher=local, frontend.placement=here) or inside a Slurm allocation.
    driver_on_this_host: bool = False

    def process(self, name: str) -> Process:
        """The process called `name` (KeyError if there is none)."""
        for proc in self.processes:
            if proc.name == name:
                return proc
        raise KeyError(name)


def process_to_dict(proc: Process) -> dict[str, Any]:
    """JSON form of one process; the first keys are the stable dry-run contract."""
    data = asdict(proc)
    ordered = {
        key: data.pop(key) for key in ("name", "role", "node_index", "gpus", "ports", "env", "argv")
    }
    ordered["gpus"] = list(proc.gpus)
    ordered["argv"] = list(proc.argv)
    ordered["ports"] = dict(proc.ports)
    ordered["env"] = dict(proc.env)
    # Only for workers sharing a GPU: every other plan.json stays as it was.
    shared = {key: data.pop(key) for key in ("gpu_share", "start_after", "restart_args")}
    ordered.update(data)
    if ordered.get("health") and not ordered["health"]["serve_url"]:
        del ordered["health"]["serve_url"]  # plans of engines without a deeper check unchanged
    ordered.update({k: list(v) if isinstance(v, tuple) else v for k, v in shared.items() if v})
    return ordered


def _benchmark_to_dict(bench: BenchmarkPlan | None) -> dict[str, Any] | None:
    if bench is None:
        return None
    data = asdict(bench)
    data["clients"] = [process_to_dict(c) for c in bench.clients]
    return data


def _readiness_to_dict(readiness: Readiness) -> dict[str, Any]:
    """The gate; replica_urls only for a frontend pair (a single frontend's plan.json as before)."""
    out = asdict(readiness)
    if not readiness.replica_urls:
        del out["replica_urls"]
    return out


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain JSON-able data (what plan.json holds; `plan_from_dict` reads it back)."""
    return {
        "name": plan.name,
        "num_nodes": plan.num_nodes,
        "gpus_per_node": plan.gpus_per_node,
        "port_base": plan.port_base,
        "port_job_blocks": plan.port_job_blocks,
        "port_offset": plan.port_offset,
        "ip_source": plan.ip_source,
        "network_interface": plan.network_interface,
        "stop_grace_s": plan.stop_grace_s,
        "prepare": dict(plan.prepare),
        "processes": [process_to_dict(p) for p in plan.processes],
        "readiness": _readiness_to_dict(plan.readiness),
        "slurm": asdict(plan.slurm),
        "benchmark": _benchmark_to_dict(plan.benchmark),
        "metrics": asdict(plan.metrics) if plan.metrics else None,
        "preflight": [asdict(c) for c in plan.preflight],
        # Only in worker jobs' plans: every other plan.json stays as it was.
        **({"job": asdict(plan.job)} if plan.job else {}),
        **({"serve": _serve_to_dict(plan.serve)} if plan.serve else {}),
        **({"autoscale": asdict(plan.autoscale)} if plan.autoscale else {}),
        **({"workers_per_gpu": plan.workers_per_gpu} if plan.workers_per_gpu != 1 else {}),
        **({"driver_on_this_host": True} if plan.driver_on_this_host else {}),
        **({"fetch": asdict(plan.fetch)} if plan.fetch else {}),
        **({"stage": asdict(plan.stage)} if plan.stage else {}),
    }


def _serve_to_dict(serve: ServePlan) -> dict[str, Any]:
    return {**asdict(serve), "workers": plan_to_dict(serve.workers), "request": dict(serve.request)}


def _serve_from_dict(raw: Mapping[str, Any] | None) -> ServePlan | None:
    if not raw:
        return None
    return ServePlan(**{**raw, "workers": plan_from_dict(raw["workers"])})


def process_from_dict(raw: Mapping[str, Any]) -> Process:
    """Inverse of `process_to_dict`."""
    item = dict(raw)
    health = item.pop("health", None)
    restart = item.pop("restart", None)  # absent in plans written before restarts existed
    for key in ("start_after", "restart_args"):
        item[key] = tuple(item.get(key, ()))
    return Process(
        **{**item, "gpus": tuple(item["gpus"]), "argv": tuple(item["argv"])},
        health=HealthProbe(**health) if health else None,
        restart=RestartPolicy(**restart) if restart else RestartPolicy(),
    )


def _benchmark_from_dict(raw: Mapping[str, Any] | None) -> BenchmarkPlan | None:
    if raw is None:
        return None
    return BenchmarkPlan(
        **{
            **raw,
            "points": tuple(
                LoadPoint(**{**p, "tasks": tuple(p.get("tasks", ()))}) for p in raw["points"]
            ),
            "clients": tuple(process_from_dict(c) for c in raw["clients"]),
        }
    )


def plan_from_dict(data: Mapping[str, Any]) -> Plan:
    """Inverse of `plan_to_dict`."""
    slurm = dict(data["slurm"])
    for key in ("sbatch_extra", "srun_extra", "setup", "container_mounts"):
        slurm[key] = tuple(slurm[key])
    scalars = ("name", "num_nodes", "gpus_per_node", "port_base", "port_job_blocks", "port_offset")
    return Plan(
        **{key: data[key] for key in scalars},
        ip_source=data["ip_source"],
        network_interface=data["network_interface"],
        stop_grace_s=data["stop_grace_s"],
        prepare=dict(data.get("prepare", {})),
        processes=tuple(process_from_dict(p) for p in data["processes"]),
        readiness=Readiness(
            **{
                **data["readiness"],
                "replica_urls": tuple(data["readiness"].get("replica_urls", ())),
            }
        ),
        slurm=SlurmRequest(**slurm),
        benchmark=_benchmark_from_dict(data.get("benchmark")),
        metrics=MetricsPlan(**data["metrics"]) if data.get("metrics") else None,
        preflight=tuple(
            PathCheck(**{**c, "nodes": tuple(c["nodes"])}) for c in data.get("preflight", ())
        ),
        job=WorkerJobPlan(**data["job"]) if data.get("job") else None,
        serve=_serve_from_dict(data.get("serve")),
        autoscale=AutoscalePlan(**data["autoscale"]) if data.get("autoscale") else None,
        workers_per_gpu=data.get("workers_per_gpu", 1),
        driver_on_this_host=data.get("driver_on_this_host", False),
        fetch=FetchSpec(**data["fetch"]) if data.get("fetch") else None,
        stage=(
            StageSpec(**{**data["stage"], "nodes": tuple(data["stage"]["nodes"])})
            if data.get("stage")
            else None
        ),
    )
