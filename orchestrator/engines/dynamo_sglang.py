"""`python3 -m dynamo.sglang`: Dynamo's SGLang worker, the default engine (Dynamo's gpt-oss guide)."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import Issue
from orchestrator.engines.base import (
    DYNAMO_PORT_LIMIT,
    DYNAMO_PORT_REASON,
    EngineDefaults,
    WorkerProcess,
    bootstrap_args,
    disagg_args,
    dynamo_health_url,
    dynamo_planes,
    dynamo_worker_env,
    extra_args,
    flag_if,
    multinode_args,
    parallel_args,
    sglang_host_env,
    sglang_worker_ports,
)
from orchestrator.plan.model import Plan


class DynamoSglang(EngineDefaults):
    """Workers register themselves through Dynamo discovery; health on the Dynamo system port."""

    kind = "dynamo_sglang"
    frontends: tuple[str, ...] = ("dynamo",)
    max_port = DYNAMO_PORT_LIMIT
    max_port_reason = DYNAMO_PORT_REASON
    memory_flag = "mem-fraction-static"  # dynamo.sglang passes SGLang's flags on
    loads_model = True

    def worker_ports(self, group: str, rank: int, nnodes: int) -> list[str]:
        """NCCL and the Dynamo system port (leader), plus SGLang's bootstrap / dist-init."""
        return sglang_worker_ports(("nccl", "system"), group, rank, nnodes)

    def argv(self, cfg: RootConfig, w: WorkerProcess, discovery: str) -> list[str]:
        """Every flag of Dynamo's gpt-oss guide, plus what many processes on many nodes
        additionally need (each addition commented)."""
        m = cfg.model
        argv = [cfg.engine.python, "-m", "dynamo.sglang", "--model-path", m.path]
        argv += ["--served-model-name", m.served_name or m.path]
        argv += flag_if("--revision", m.revision)
        # The guide's `--tp` is argparse's prefix abbreviation of --tp-size; kept verbatim so the
        # default reproduces the guide.
        argv += parallel_args(w, "--tp")
        argv += ["--trust-remote-code"] if m.trust_remote_code else []
        argv += ["--skip-tokenizer-init"] if m.skip_tokenizer_init else []
        argv += disagg_args(cfg, w.group)
        argv += flag_if("--dyn-reasoning-parser", m.dynamo_reasoning_parser)
        argv += flag_if("--dyn-tool-call-parser", m.dynamo_tool_call_parser)
        # SGLang binds the prefill bootstrap server on --host (default 127.0.0.1): a decode
        # worker reaching it by the node address (other node, or as advertised by Dynamo) would
        # be refused.
        argv += ["--host", w.ip]
        argv += bootstrap_args(w)
        # Each process its own NCCL port: SGLang's free-port probing races when workers start
        # together.
        argv += ["--nccl-port", w.port("nccl")]
        argv += multinode_args(w)
        argv += dynamo_planes(discovery)
        return argv + extra_args(cfg, w)

    def env(self, cfg: RootConfig, w: WorkerProcess) -> dict[str, str]:
        """SGLang's advertised address and Dynamo's planes and system server."""
        return {**sglang_host_env(w), **dynamo_worker_env(w)}

    def health_url(self, w: WorkerProcess) -> str:
        """Dynamo's system server `/health`."""
        return dynamo_health_url(w)

    def check_argvs(self, items: Sequence[tuple[RootConfig, Plan]]) -> list[list[Issue]]:
        """Dynamo's own dynamo.sglang parsing (its flags plus SGLang's) on every worker argv,
        one subprocess for all items (orchestrator.engines.dynamo_check)."""
        from orchestrator.engines.dynamo_check import dynamo_sglang_argv_issues_many

        return dynamo_sglang_argv_issues_many(items)


ENGINE = DynamoSglang()
