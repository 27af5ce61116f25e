"""What the benchmark step runs: load points and client command lines (pure, no I/O).

The client is a plan-like `Process` (role "benchmark", node 0) so the driver's backend runs it as
an srun step under Slurm and as a local process otherwise. Both tools are run offline: synthetic
prompts from a local tokenizer, never a dataset download.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from orchestrator.bench import evals
from orchestrator.bench.client_key import with_api_key_arg, with_openai_key
from orchestrator.config.schema import BenchmarkConfig, RootConfig
from orchestrator.core.tools import AIPERF, tool_or_default
from orchestrator.engines import get_engine
from orchestrator.plan import groups
from orchestrator.plan.model import (
    TIER_WORKER,
    BenchmarkPlan,
    LoadPoint,
    Plan,
    Process,
    plan_to_dict,
)
from orchestrator.plan.placeholders import RUN_DIR
from orchestrator.rundir.layout import RESULTS_DIR

TOOLS = ("aiperf", "sglang_bench", "lm_eval")
BENCHMARK_KINDS = ("none", *TOOLS)
# Start-up estimate per point: aiperf spends ~10 s spawning its services and processing records
# (measured 13 s for a 0.7 s run against the mocker); bench_serving imports torch.
TOOL_OVERHEAD_S = {"aiperf": 20.0, "sglang_bench": 30.0}  # lm_eval: evals.estimate_s
# Pessimistic serving speed for the time estimate when no benchmark.duration_estimate_min is set.
ESTIMATE_TTFT_S = 2.0
ESTIMATE_TOKENS_PER_S_PER_USER = 20.0
AIPERF_DONE_MARKER = ".aiperf_results_ready.json"
BENCH_SERVING_FILE = "bench_serving.jsonl"


RESULTS = RESULTS_DIR  # under the run directory: one folder per point + points.jsonl


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """What the client talks to."""

    url: str  # frontend base URL, e.g. http://10.0.0.1:8000
    model: str  # served model name
    tokenizer: str  # local directory or HF id


def load_points(b: BenchmarkConfig) -> tuple[LoadPoint, ...]:
    """The configured points with request and warm-up counts filled in (benchmark=lm_eval: its
    single accuracy point)."""
    if b.kind == "lm_eval":
        return (evals.eval_point(b),)
    return tuple(
        LoadPoint(
            index=i,
            concurrency=p.concurrency,
            isl=p.isl,
            osl=p.osl,
            requests=p.requests or b.requests_per_concurrency * p.concurrency,
            warmup=p.concurrency if p.warmup < 0 else p.warmup,
        )
        for i, p in enumerate(b.points)
    )


def estimate_s(b: BenchmarkConfig) -> float:
    """Seconds the benchmark is expected to take: `duration_estimate_min` when set, else per point
    tool start-up + rounds x (TTFT + osl / tokens-per-s-per-user), rounds = requests / concurrency
    (warm-up included)."""
    if b.duration_estimate_min > 0 or b.kind not in TOOLS:
        return b.duration_estimate_min * 60.0
    if b.kind == "lm_eval":
        return evals.estimate_s(b)
    total = 0.0
    for p in load_points(b):
        rounds = math.ceil((p.requests + p.warmup) / max(p.concurrency, 1))
        total += TOOL_OVERHEAD_S[b.kind] + rounds * (
            ESTIMATE_TTFT_S + p.osl / ESTIMATE_TOKENS_PER_S_PER_USER
        )
    return total


def tokenizer_for(cfg: RootConfig) -> str:
    """benchmark.tokenizer, else the engine's own tokenizer directory (the mocker's), else the
    model itself."""
    return (
        cfg.benchmark.tokenizer
        or get_engine(cfg.engine.kind).local_tokenizer(cfg)
        or cfg.model.path
    )


def aiperf_binary(b: BenchmarkConfig) -> str:
    """benchmark.binary, else aiperf on PATH, else install.sh's .venvs/aiperf (see tools.py)."""
    return tool_or_default(AIPERF, explicit=b.binary)


def _is_local_path(tokenizer: str) -> bool:
    return tokenizer.startswith(("/", "./", "../", "~", RUN_DIR))


def aiperf_argv(
    b: BenchmarkConfig, p: LoadPoint, t: Target, out_dir: str, *, api_key: bool = False
) -> list[str]:
    """`aiperf profile` for one point; artifacts (and the completion marker) land in `out_dir`.
    With `api_key`, it sends the run's client key (added inside the process: client_key.py)."""
    args = ["profile", "--model", t.model, "--url", t.url]
    args += ["--endpoint-type", "chat", "--streaming", "--tokenizer", t.tokenizer]
    args += ["--isl", str(p.isl), "--osl", str(p.osl)]
    # Generate exactly osl tokens (the mocker and SGLang honour ignore_eos) and count with the
    # server's usage numbers: the client tokenizer may differ from the server's.
    args += ["--extra-inputs", "ignore_eos:true", "--use-server-token-count"]
    args += ["--concurrency", str(p.concurrency), "--request-count", str(p.requests)]
    if p.warmup:
        args += ["--warmup-request-count", str(p.warmup)]
    args += ["--random-seed", str(b.seed), "--output-artifact-dir", out_dir, "--ui-type", "none"]
    args += list(b.extra_args)
    binary = aiperf_binary(b)
    # With HF_HUB_OFFLINE=1 aiperf rejects a local tokenizer directory (it calls
    # snapshot_download(path)); `env -u` also works inside `srun ... env K=V`.
    argv = ["env", "-u", "HF_HUB_OFFLINE"] if _is_local_path(t.tokenizer) else []
    return argv + (with_api_key_arg(binary, args) if api_key else [binary, *args])


def bench_serving_argv(
    b: BenchmarkConfig, python: str, p: LoadPoint, t: Target, out_dir: str
) -> list[str]:
    """`python -m sglang.bench_serving` for one point; it appends a JSON line to the output file."""
    argv = [
        python,
        "-m",
        "sglang.bench_serving",
        "--backend",
        "sglang-oai-chat",
        "--base-url",
        t.url,
    ]
    argv += ["--model", t.model, "--tokenizer", t.tokenizer]
    # random-ids needs no dataset download (`random` fetches ShareGPT); range ratio 1 = exact
    # lengths.
    argv += ["--dataset-name", "random-ids", "--random-input-len", str(p.isl)]
    argv += ["--random-output-len", str(p.osl), "--random-range-ratio", "1.0"]
    argv += ["--num-prompts", str(p.requests), "--max-concurrency", str(p.concurrency)]
    argv += ["--request-rate", "inf", "--warmup-requests", str(p.warmup), "--seed", str(b.seed)]
    argv += ["--output-file", f"{out_dir}/{BENCH_SERVING_FILE}", "--disable-tqdm"]
    return argv + list(b.extra_args)


def client_process(cfg: RootConfig, p: LoadPoint, t: Target, out_dir: str) -> Process:
    """The benchmark client of point `p` as a plan process on node 0 (no GPUs)."""
    b = cfg.benchmark
    env = {"CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    if cfg.cluster.hf_home:  # lm-eval's datasets and the clients' tokenizers: the shared cache
        env["HF_HOME"] = cfg.cluster.hf_home
    api_key = bool(cfg.frontend.api_key_env)  # the clients must send the run's client key
    if b.kind == "aiperf":
        argv = aiperf_argv(b, p, t, out_dir, api_key=api_key)
    elif b.kind == "lm_eval":
        argv = evals.lm_eval_argv(b, url=t.url, model=t.model, out_dir=out_dir)
    else:
        argv = bench_serving_argv(b, b.python or cfg.engine.python, p, t, out_dir)
        # bench_serving looks the model name up on the Hub (5 retries, ~50 s without network)
        # before it starts; offline mode skips that and still loads a local tokenizer directory.
        env["HF_HUB_OFFLINE"] = "1"
    if api_key and b.kind != "aiperf":
        argv = with_openai_key(argv)
    env.update(b.env)
    return Process(
        name=f"benchmark-{p.index}",
        role="benchmark",
        group="benchmark",
        worker_index=p.index,
        rank=0,
        node_index=0,
        gpus=(),
        ports={},
        env=env,
        argv=tuple(argv),
        tier=TIER_WORKER,
    )


def planned_clients(cfg: RootConfig, plan: Plan) -> tuple[Process, ...]:
    """The benchmark clients the driver starts once ready, one per load point (the frontend URL
    and the run directory are placeholders until the plan is bound)."""
    r = plan.readiness
    target = Target(url=r.frontend_url, model=r.model, tokenizer=tokenizer_for(cfg))
    return tuple(
        client_process(cfg, p, target, f"{RUN_DIR}/{RESULTS}/{p.label()}")
        for p in load_points(cfg.benchmark)
    )


def run_context(cfg: RootConfig, plan: Plan) -> dict[str, Any]:
    """Facts every result row carries: GPUs by role, topology and the plan hash (same topology =
    same hash; computed on the unbound plan without its benchmark, so job ids, addresses, port
    blocks and load points do not count)."""
    gpus: dict[str, int] = {}
    for proc in plan.processes:
        if proc.role in ("prefill", "decode", "worker"):
            key = "aggregated" if proc.role == "worker" else proc.role
            gpus[key] = gpus.get(key, 0) + len(proc.gpus)
    gpus["total"] = sum(gpus.values())
    gpus["allocated"] = plan.num_nodes * plan.slurm.gpus_per_node  # what Slurm holds
    active = groups.active_groups(cfg)
    topology: dict[str, Any] = {"name": plan.name, "mode": cfg.deployment.mode}
    for group in ("prefill", "decode", "aggregated"):
        on = group in active
        topology[f"{group}_workers"] = groups.group_config(cfg, group).workers if on else 0
        topology[f"{group}_tp"] = groups.tp_of(cfg, group) if on else 0
    topology.update(engine=cfg.engine.kind, frontend=cfg.frontend.kind, nodes=plan.num_nodes)
    unbound = json.dumps(plan_to_dict(dataclasses.replace(plan, benchmark=None)), sort_keys=True)
    return {
        "name": plan.name,
        "plan_hash": hashlib.sha256(unbound.encode()).hexdigest()[:12],
        "gpus": gpus,
        "topology": topology,
    }


def benchmark_plan(cfg: RootConfig, plan: Plan) -> BenchmarkPlan | None:
    """What the driver's benchmark step runs (None without a benchmark)."""
    b = cfg.benchmark
    if b.kind not in TOOLS:
        return None
    return BenchmarkPlan(
        tool=b.kind,
        points=load_points(b),
        clients=planned_clients(cfg, plan),
        max_error_rate=b.max_error_rate,
        keep_serving=b.keep_serving,
        point_timeout_s=b.point_timeout_s,
        allow_restarts=b.allow_restarts,
        context=run_context(cfg, plan),
        min_accuracy=dict(b.min_accuracy),
    )
