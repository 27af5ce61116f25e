"""`python3 -m sglang.launch_server`: plain SGLang workers behind sglang-router."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import Issue
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
from orchestrator.plan.model import Plan

PORT_LIMIT = 65535
# Readiness follows SGLang's own "ready" (sglang/srt/entrypoints/http_server.py, 0.5.15 and
# 0.5.21): `health_generate`, the handler of both /health and /health_generate, answers 503
# while `server_status` is Starting or the server is draining (`gracefully_exit`); the status
# turns Up only in `_execute_server_warmup`, after the warmup request (P/D: the "pd
# disaggregation warmup") succeeded, just before "The server is fired up and ready to roll!".
# Past that, by default (SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=true) every /health submits
# a 1-token generation and `await asyncio.sleep(1)` before it looks for output, polling up to
# SGLANG_HEALTH_CHECK_TIMEOUT (20 s): never under ~1 s, seconds on a cold or busy GPU. Our 1-s
# probe saw ReadTimeout for 27 s after "ready to roll" on an H100 (issue 26). With the variable
# false, `/health` returns 200 as soon as the status leaves Starting: the driver's probe, the
# router's registration check and its periodic checks become cheap liveness checks, the
# canary keeps the deep one through the frontend, and the serving health watch asks
# /health_generate (the variable only shortcuts the path "/health"). A P/D warmup that failed
# sets UnHealthy, which /health then reports as 200 too: the canary is what catches that.
# A user's engine.env may set the variable back to true.
HEALTH_ENV = {"SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION": "false"}


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
        """SGLang's advertised address, and a `/health` that answers at once (HEALTH_ENV)."""
        return {**sglang_host_env(w), **HEALTH_ENV}

    def health_url(self, w: WorkerProcess) -> str:
        """SGLang's `/health`: with HEALTH_ENV, 200 once the server is Up (after its warmup)."""
        return f"{self.worker_url(w)}/health" if w.rank == 0 else ""

    def serve_health_url(self, w: WorkerProcess) -> str:
        """SGLang's `/health_generate` (a 1-token generation, whatever HEALTH_ENV says): while
        serving, a hung scheduler behind a live HTTP server must still fail the check."""
        return f"{self.worker_url(w)}/health_generate" if w.rank == 0 else ""

    def worker_url(self, w: WorkerProcess) -> str:
        """The leader's HTTP server: what the router registers."""
        return f"http://{w.ip}:{w.port('http')}" if w.rank == 0 else ""

    def check_argvs(self, items: Sequence[tuple[RootConfig, Plan]]) -> list[list[Issue]]:
        """SGLang's own parser on every `sglang.launch_server` argv of every item, in one
        subprocess (orchestrator.engines.sglang_check)."""
        from orchestrator.engines.sglang_check import sglang_argv_issues_many

        return sglang_argv_issues_many(items)


ENGINE = Sglang()
