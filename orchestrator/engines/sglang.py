"""`python3 -m sglang.launch_server`: plain SGLang workers behind sglang-router."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.config.schema import RootConfig
from orchestrator.engines.base import (
    EngineDefaults,
    WorkerProcess,
    bootstrap_args,
    disagg_args,
    extra_args,
    flag_if,
    multinode_args,
    parallel_args,
    sglang_host_env,
    sglang_worker_ports,
)
from orchestrator.errors import Issue
from orchestrator.plan.model import Plan

PORT_LIMIT = 65535


class Sglang(EngineDefaults):
    """Workers serve HTTP themselves; the router registers them by URL."""

    kind = "sglang"
    frontends: tuple[str, ...] = ("sglang_router", "smg")
    max_port = PORT_LIMIT
    max_port_reason = ""
    memory_flag = "mem-fraction-static"
    loads_model = True

    def worker_ports(self, group: str, rank: int, nnodes: int) -> list[str]:
        """HTTP (leader) and NCCL, plus the bootstrap / dist-init ports."""
        return sglang_worker_ports(("http", "nccl"), group, rank, nnodes)

    def argv(self, cfg: RootConfig, w: WorkerProcess, discovery: str) -> list[str]:
        """Long flag names only (prefix abbreviations break when SGLang adds a flag with the same
        prefix)."""
        m = cfg.model
        argv = [cfg.engine.python, "-m", "sglang.launch_server", "--model-path", m.path]
        argv += ["--served-model-name", m.served_name or m.path]
        argv += flag_if("--revision", m.revision)
        argv += parallel_args(w, "--tp-size")
        argv += ["--trust-remote-code"] if m.trust_remote_code else []
        # No --skip-tokenizer-init here: behind sglang-router the worker itself must tokenize.
        argv += disagg_args(cfg, w.group)
        argv += flag_if("--reasoning-parser", m.sglang_reasoning_parser)
        argv += flag_if("--tool-call-parser", m.sglang_tool_call_parser)
        # Bind HTTP and the bootstrap server to this node's address: reachable by the router and
        # by decode workers on other nodes, and not by every interface of the node.
        argv += ["--host", w.ip]
        # Always set --port: SGLang and sglang-router both default to 30000.
        argv += ["--port", w.leader_port("http")]
        argv += bootstrap_args(w)
        argv += ["--nccl-port", w.port("nccl")]
        argv += multinode_args(w)
        return argv + extra_args(cfg, w)

    def env(self, cfg: RootConfig, w: WorkerProcess) -> dict[str, str]:
        """SGLang's advertised address."""
        return sglang_host_env(w)

    def health_url(self, w: WorkerProcess) -> str:
        """SGLang's own `/health` (a 1-token generation once the server is up)."""
        return f"{self.worker_url(w)}/health" if w.rank == 0 else ""

    def worker_url(self, w: WorkerProcess) -> str:
        """The leader's HTTP server: what the router registers."""
        return f"http://{w.ip}:{w.port('http')}" if w.rank == 0 else ""

    def check_argvs(self, items: Sequence[tuple[RootConfig, Plan]]) -> list[list[Issue]]:
        """SGLang's own parser on every `sglang.launch_server` argv of every item, in one
        subprocess (orchestrator.engines.sglang_check)."""
        from orchestrator.engines.sglang_check import sglang_argv_issues_many

        return sglang_argv_issues_many(items)


ENGINE = Sglang()
