"""Typed configuration schema. Hydra composes YAML into these dataclasses; core code sees only them.

Kinds (engine, frontend, launcher, ...) are plain strings checked by `orchestrator.config.validate`, so an
unknown kind is reported together with every other problem and lists the valid choices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MISSING_PATH = ""
# frontend.placement: the home of its values (nothing else compares them; tests/test_architecture).
PLACEMENT_JOB = "job"  # the frontend (and its discovery) on node 0 of the job
PLACEMENT_HERE = "here"  # the frontend on this host, the workers in Slurm jobs attached to it
PLACEMENTS = (PLACEMENT_JOB, PLACEMENT_HERE)


@dataclass
class ModelConfig:
    """What to serve and how the engines must treat it."""

    name: str = ""  # short name for run directories and job names, e.g. gpt-oss-120b
    path: str = MISSING_PATH  # --model-path: HF id or a directory visible on every node
    served_name: str = ""  # --served-model-name; defaults to `path`
    tp: int = 1  # default tensor parallel size of a worker (prefill.tp / decode.tp override it)
    trust_remote_code: bool = False
    skip_tokenizer_init: bool = False
    # Parser names differ between engines: Dynamo's registry uses gpt_oss/harmony, SGLang gpt-oss.
    dynamo_reasoning_parser: str = ""
    dynamo_tool_call_parser: str = ""
    sglang_reasoning_parser: str = ""
    sglang_tool_call_parser: str = ""
    # SGLang refuses different prefill/decode TP for non-MLA SWA hybrid models such as gpt-oss
    # ("PD Disaggregation does NOT support PD different TP sizes ...", sgl-project/sglang #38552).
    requires_equal_pd_tp: bool = False
    # The tiktoken encoding the frontend needs to parse reasoning / tool calls (gpt-oss's harmony
    # format: o200k_base); with cluster.tiktoken_dir it is read from a local copy (offline).
    tiktoken_encoding: str = ""
    revision: str = ""  # --revision: the model's HF revision (prefill and decode must agree)
    # Download `path` (an HF id) into cluster.hf_home once, on one node, before any worker starts
    # (orchestrator.plan.fetch); model.path=hf:ORG/NAME[@REVISION] sets it.
    fetch: bool = False
    # none | node_local: copy the model to cluster.local_dir on every worker node before the
    # workers start, once per revision (orchestrator.plan.stage); method copy | sbcast.
    stage: str = "none"
    stage_method: str = "copy"
    # Engine flags for every worker of this model, by name without the leading dashes:
    # {mem-fraction-static: 0.8, disable-radix-cache: true}. Layered model -> engine -> role
    # (orchestrator.engines.base.layered_args); null removes an inherited flag.
    args: dict[str, Any] = field(default_factory=dict)
    extra_args: list[str] = field(
        default_factory=list
    )  # verbatim engine args for every worker of this model (after `args`)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class ClusterConfig:
    """Site facts. Nothing here is auto-detected while planning."""

    name: str = "default"
    gpus_per_node: int = 8
    partition: str = ""
    account: str = ""
    qos: str = ""
    time_limit_min: int = 240  # Slurm --time in minutes
    gpu_directive: str = (
        "gpus-per-node"  # "gpus-per-node" (--gpus-per-node=N) or "gres" (--gres=gpu:N)
    )
    exclusive: bool = True
    container_image: str = ""  # pyxis --container-image for every process step
    container_mounts: list[str] = field(default_factory=list)  # pyxis --container-mounts entries
    ip_source: str = "hostname"  # how a node's address is found on the node: hostname | interface
    network_interface: str = ""  # with ip_source=interface, e.g. ib0 or eth0
    sbatch_extra: list[str] = field(
        default_factory=list
    )  # extra sbatch options, e.g. --constraint=h100
    srun_extra: list[str] = field(default_factory=list)  # extra srun options for every process step
    setup: list[str] = field(
        default_factory=list
    )  # shell lines run before the driver (module load ...)
    # Directory holding local tiktoken encodings (<dir>/o200k_base.tiktoken), exported as
    # TIKTOKEN_ENCODINGS_BASE and checked on every node before start; air-gapped clusters.
    tiktoken_dir: str = ""
    # The shared Hugging Face cache (a directory every node sees), exported as HF_HOME to every
    # process; model.fetch downloads into it.
    hf_home: str = ""
    local_dir: str = ""  # node-local disk for model.stage=node_local; "" = $TMPDIR or /tmp
    port_base: int = 20000  # first port of the per-job port blocks
    port_job_blocks: int = 16  # jobs sharing a node get different blocks: block = job_id % this
    # Octal mode of the run directory: 0700 (only you), e.g. 0750 for a group that should read
    # results and logs. RUN_DIR/secrets stays 0700 whatever this says.
    run_dir_mode: str = "0700"
    # How processes become Slurm steps: node = one step per node running our node agent, which
    # starts and supervises that node's processes; process = one srun step per process.
    launch_per: str = "process"


@dataclass
class EngineConfig:
    """Which engine runs the prefill/decode workers."""

    kind: str = "dynamo_sglang"  # dynamo_sglang | sglang | mocker
    python: str = "python3"  # interpreter on the nodes (inside the container when one is set)
    transfer_backend: str = "nixl"  # --disaggregation-transfer-backend
    args: dict[str, Any] = field(default_factory=dict)  # engine flags (see ModelConfig.args)
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    mocker_model_dir: str = (
        ""  # mocker only: tokenizer dir; empty = generate a tiny one in the run dir
    )
    mocker_speedup_ratio: float = 10.0  # mocker only: --speedup-ratio


@dataclass
class FrontendConfig:
    """The OpenAI-compatible entry point on node 0."""

    kind: str = "dynamo"  # dynamo | sglang_router | smg
    python: str = "python3"
    http_port: int = 8000
    discovery: str = "auto"  # dynamo only: auto (file on one node, else etcd) | etcd | file
    namespace: str = "dynamo"  # dynamo only: DYN_NAMESPACE shared by the frontend and its workers
    router_mode: str = ""  # dynamo --router-mode / router --policy; empty = the frontend's default
    # smg only: the NAME of an environment variable holding SMG's admin (control-plane) key,
    # exported where you launch. The key itself is never written into plans, scripts or logs.
    admin_key_env: str = ""
    # sglang_router/smg: the NAME of an environment variable (set where you launch) holding the
    # key clients must send on /v1/... (`Authorization: Bearer <key>`; the router's --api-key).
    # Empty = the OpenAI endpoint is open to the cluster network. Dynamo 1.6.1 has no such key.
    api_key_env: str = ""
    etcd_binary: str = "etcd"
    # dynamo only: mutual TLS on the TCP request plane (frontend <-> workers) with a per-run CA
    # made at launch (needs `openssl` where you launch); only the run's processes can talk to
    # its workers.
    request_plane_tls: bool = False
    # dynamo only: --migration-limit, how often a request whose worker stream broke is re-run on
    # another worker. 0 by default: with Dynamo 1.6.1 migration after a worker's death can shut
    # out every live prefill for seconds (frontends/dynamo.py, README).
    migration_limit: int = 0
    # 1 | 2: two frontends (on nodes 0 and 1 where the job has several) behind one HAProxy
    # (Debian's haproxy, a plan process on node 0 serving http_port) that health-checks both and
    # sends a request refused by a dead replica to the other (frontends/pair.py). dynamo only.
    replicas: int = 1
    proxy_binary: str = "haproxy"
    # job: the frontend (and its discovery) runs on node 0 of the job | here: on the machine the
    # command runs on (a login or service node), under a detached driver, and every worker group
    # runs in Slurm jobs that attach to it (needed by serve.rollover).
    placement: str = PLACEMENT_JOB
    # placement=here: the address the frontend and etcd bind, which the compute nodes reach;
    # empty = this host's address for its hostname (refused when that is a loopback address).
    host: str = ""
    restart: str = (
        "on_failure"  # never | on_failure | always, while serving (deployment.max_restarts)
    )
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def placement_known(self) -> bool:
        """frontend.placement is one of PLACEMENTS."""
        return self.placement in PLACEMENTS

    @property
    def placed_here(self) -> bool:
        """frontend.placement=here: the frontend on this host, the workers in attached jobs."""
        return self.placement == PLACEMENT_HERE

    @property
    def placed_in_job(self) -> bool:
        """frontend.placement=job: the frontend on node 0 of the job."""
        return self.placement == PLACEMENT_JOB


@dataclass
class LauncherConfig:
    """How the plan reaches the machines."""

    kind: str = "auto"  # auto | submitit | sbatch | local
    job_name: str = ""  # default: orch-<deployment name>
    stop_grace_s: float = 20.0  # SIGTERM → SIGKILL escalation per tier
    signal_before_limit_s: int = 120  # Slurm sends SIGTERM to the driver this long before the limit
    heartbeat_timeout_s: float = 60.0  # an attached job stops when its run's driver is silent


@dataclass
class WorkerGroupConfig:
    """One group of identical workers (prefill, decode or aggregated)."""

    workers: int = 1
    tp: int = 0  # 0 = model.tp
    dp: int = 1  # data-parallel ranks of one worker (--dp-size)
    # true: DP attention inside the TP group (SGLang --enable-dp-attention; GPUs per worker =
    # tp, dp must divide tp); false: dp replicas of the TP group (GPUs per worker = tp x dp).
    dp_attention: bool = False
    ep: int = 1  # expert parallel size (--ep-size); must divide the worker's GPUs
    gpus_per_worker: int = 0  # 0 = derived from tp, dp and dp_attention; else it must match
    args: dict[str, Any] = field(
        default_factory=dict
    )  # this role's engine flags (ModelConfig.args)
    # A worker that exits while serving: never (fail the run) | on_failure (restart after a
    # non-zero exit) | always (after any exit). Same node, GPUs and ports; all ranks together.
    restart: str = "on_failure"
    # deployment.workers_per_gpu > 1: this group's weight when a GPU's memory is split between
    # the workers sharing it (decode.memory_weight=3 prefill.memory_weight=1: decode gets 3/4).
    memory_weight: float = 1.0
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class DeploymentConfig:
    mode: str = "disaggregated"  # disaggregated | aggregated
    separate_nodes: bool = False  # keep prefill and decode workers on different nodes
    # Workers that share one GPU (workstations, small models): 2 puts 1 prefill + 1 decode on a
    # GPU. Each gets --mem-fraction-static for its planned part of shared_memory_fraction and
    # starts only once the workers before it on its GPUs are healthy (orchestrator.plan.sharing).
    workers_per_gpu: int = 1
    # Fraction of a shared GPU's memory for the static pools (weights + KV cache) of all the
    # workers on it together; the rest is left for their activations, CUDA graphs and contexts.
    shared_memory_fraction: float = 0.8
    # Restarts of one worker (or the frontend) while serving: at most max_restarts within
    # restart_window_s, else the run fails; the n-th waits restart_backoff_s x 2^(n-1), capped.
    max_restarts: int = 3
    restart_window_s: float = 3600.0
    restart_backoff_s: float = 1.0
    restart_backoff_max_s: float = 60.0


@dataclass
class ReadinessConfig:
    timeout_s: float = 3600.0  # 120B-class cold loads routinely take 15-30+ min (srt-slurm #180)
    interval_s: float = 0.25  # health polls are one cheap GET per unready process
    canary: bool = True  # one real generation through the frontend (exercises prefill -> decode)
    canary_max_tokens: int = 8
    # While serving: a process whose health check fails this many times in a row is treated as
    # dead (hung, not exited); checks every serve_check_s. 0 disables. sglang-router marks a
    # worker unhealthy after 3 failures as well.
    serve_failures: int = 3
    serve_check_s: float = 30.0


@dataclass
class ServeConfig:
    """Serving beyond one job (frontend.placement=here): rollover of the worker jobs."""

    # Before a worker job reaches its time limit, submit a replacement, move the traffic to it
    # once it serves, then drain and end the old one; preemption or a lost node does it at once.
    rollover: bool = False
    # How long before the limit the replacement is submitted; 0 = the job's measured
    # submit -> ready time (at least launcher.signal_before_limit_s) plus rollover_margin_s.
    rollover_lead_min: float = 0.0
    rollover_margin_s: float = 60.0
    # Replacements that fail in a row before the run gives up (it keeps serving with the old).
    rollover_attempts: int = 3
    # A worker job's driver told to stop by Slurm rather than by us (the time-limit signal,
    # preemption) keeps serving up to this long while the run replaces it; < the stop signal's
    # lead (launcher.signal_before_limit_s), so that it ends before the limit.
    signal_hold_s: float = 60.0


@dataclass
class LoadPointConfig:
    """One load point, run against the ready deployment (points run in sequence)."""

    concurrency: int = 1  # requests in flight
    isl: int = 1024  # input tokens per request (synthetic prompts)
    osl: int = 1024  # output tokens per request (max_tokens)
    requests: int = 0  # 0 = benchmark.requests_per_concurrency x concurrency
    warmup: int = -1  # warm-up requests before measuring; -1 = concurrency


@dataclass
class BenchmarkConfig:
    """Load sweep on node 0 once the deployment is ready (orchestrator/bench)."""

    kind: str = "none"  # none | aiperf | sglang_bench | lm_eval
    points: list[LoadPointConfig] = field(default_factory=list)
    requests_per_concurrency: int = 10  # default request count of a point (recipe perf jobs)
    tokenizer: str = ""  # local dir or HF id; empty = the mocker's tiny tokenizer, else model.path
    binary: str = ""  # aiperf executable; empty = aiperf on PATH, else .venvs/aiperf (tools.py)
    python: str = ""  # interpreter for sglang.bench_serving; empty = engine.python
    max_error_rate: float = 0.05  # a point above this error rate is invalid and fails the run
    keep_serving: bool = False  # after the benchmark: false = end the job, true = keep serving
    # A worker restart while a point is measured makes that point invalid (its numbers mix a
    # degraded deployment with a healthy one); true keeps the point valid.
    allow_restarts: bool = False
    point_timeout_s: float = 3600.0  # a client running longer than this fails the run
    seed: int = 42
    extra_args: list[str] = field(default_factory=list)  # appended to every client command
    env: dict[str, str] = field(default_factory=dict)
    # Counted against cluster.time_limit_min together with readiness.timeout_s; 0 = estimate it
    # from the points (orchestrator.bench.spec.estimate_s).
    duration_estimate_min: int = 0
    # benchmark=lm_eval (orchestrator/bench/evals.py): lm-evaluation-harness tasks against the
    # frontend, one accuracy point with a row per task and metric.
    tasks: list[str] = field(default_factory=list)  # lm-eval task names, e.g. [gsm8k]
    limit: int = 0  # documents per task; 0 = every document
    num_fewshot: int = -1  # -1 = the task's own default
    include_path: str = ""  # a directory of your own task YAMLs (local data files: offline)
    # local-chat-completions (chat template applied by the server) | local-completions
    lm_eval_model: str = "local-chat-completions"
    num_concurrent: int = 8  # requests lm-eval keeps in flight
    # {task: lowest acceptable value of the task's first metric}: below it the point is invalid
    min_accuracy: dict[str, float] = field(default_factory=dict)


@dataclass
class MetricsConfig:
    """Prometheus scraping of the frontend and workers while serving (results/metrics.jsonl)."""

    enabled: bool = True
    interval_s: float = 10.0  # one scrape of every target per interval
    max_mb: float = 50.0  # metrics.jsonl rotates (one older file kept) past this size


@dataclass
class AutoscaleConfig:
    """autoscale=dynamo_planner: NVIDIA Dynamo's own planner (`python -m dynamo.planner`,
    `environment: virtual`) decides the prefill/decode counts; the run's driver carries each
    decision out with attached worker jobs (orchestrator.elastic.autoscale)."""

    kind: str = "off"  # off | dynamo_planner
    # The planner's own names: latency | load | throughput (load-based scaling from the
    # workers' forward-pass metrics, no Prometheus) | sla (needs NVIDIA's aisimulate).
    optimization_target: str = "latency"
    ttft_ms: float = 500.0  # the targets (the planner uses them with optimization_target=sla)
    itl_ms: float = 50.0
    min_prefill: int = 1  # bounds every decision is clipped to; prefill.workers and
    max_prefill: int = 1  # decode.workers (the start) must lie within them
    min_decode: int = 1
    max_decode: int = 1
    max_gpus: int = 0  # the planner's GPU budget (max_gpu_budget); 0 = what the maxima use
    interval_s: int = 10  # load_adjustment_interval_seconds: one decision per interval at most
    # A worker job still PENDING this long (or failed) makes a decision one that cannot be met.
    pending_timeout_s: float = 600.0
    # The planner's interpreter; "" = scripts/install.sh --with-planner's .venvs/planner.
    python: str = ""
    # Any other PlannerConfig field (dynamo/planner/config/planner_config.py), checked by the
    # planner's own pydantic model before submission: {load_predictor: constant}.
    args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        """A planner runs (autoscale is not `off`)."""
        return self.kind != "off"


@dataclass
class RootConfig:
    """The whole configuration (`python -m orchestrator ... dry_run=true` prints it resolved)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)
    prefill: WorkerGroupConfig = field(default_factory=WorkerGroupConfig)
    decode: WorkerGroupConfig = field(default_factory=WorkerGroupConfig)
    aggregated: WorkerGroupConfig = field(default_factory=WorkerGroupConfig)
    readiness: ReadinessConfig = field(default_factory=ReadinessConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    autoscale: AutoscaleConfig = field(default_factory=AutoscaleConfig)
    name: str = ""  # deployment name; default <model.name>-p<P>d<D> or <model.name>-a<N>
    dry_run: str = "false"  # false | true (text) | json
    wait: bool = True  # follow the run until ready (or failed); false = return after submission
    run_dir: str = ""  # default outputs/<timestamp>-<name>; never reused
    debug: bool = False  # debug=true: errors show their traceback (config.load.debug_requested)

    def dry_run_mode(self) -> str:
        """`false`, `true` or `json` (Hydra parses dry_run=true as a boolean, stored as "True")."""
        return self.dry_run.strip().lower()


def config_to_dict(cfg: RootConfig) -> dict[str, Any]:
    """Plain-dict form of the typed config (config.json, the dry-run's config section). The
    config holds only dataclasses, lists, dicts and scalars, so `asdict` is the whole of it; no
    OmegaConf needed where run directories are written."""
    return asdict(cfg)
