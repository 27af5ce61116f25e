"""`python3 -m dynamo.mocker`: Dynamo's simulated engine; registers and answers like a
dynamo.sglang worker, on CPU (the GPU stand-in for demos and tests)."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import Issue
from orchestrator.engines.base import (
    DYNAMO_PORT_LIMIT,
    DYNAMO_PORT_REASON,
    EngineDefaults,
    WorkerProcess,
    args_argv,
    dynamo_health_url,
    dynamo_planes,
    dynamo_worker_env,
    layered_args,
    sglang_host_env,
    sglang_worker_ports,
)
from orchestrator.plan.model import Plan
from orchestrator.plan.placeholders import RUN_DIR
from orchestrator.plan.placement import WorkerSlot


class Mocker(EngineDefaults):
    """One process per worker (it cannot span nodes); a tiny tokenizer is generated for it."""

    kind = "mocker"
    frontends: tuple[str, ...] = ("dynamo",)
    max_port = DYNAMO_PORT_LIMIT
    max_port_reason = DYNAMO_PORT_REASON
    memory_flag = ""  # simulated: no GPU memory
    loads_model = False

    def worker_ports(self, group: str, rank: int, nnodes: int) -> list[str]:
        """The Dynamo system port, plus the prefill's KV bootstrap port."""
        return sglang_worker_ports(("system",), group, rank, nnodes)

    def model_dir(self, cfg: RootConfig) -> str:
        """Tokenizer directory the mocker loads (generated into the run directory by default)."""
        return cfg.engine.mocker_model_dir or f"{RUN_DIR}/tiny-model"

    def argv(self, cfg: RootConfig, w: WorkerProcess, discovery: str) -> list[str]:
        """The mocker with the model's served name and the worker's role."""
        argv = [cfg.engine.python, "-m", "dynamo.mocker", "--model-path", self.model_dir(cfg)]
        argv += ["--model-name", cfg.model.served_name or cfg.model.path, "--engine-type", "sglang"]
        argv += ["--disaggregation-mode", "agg" if w.group == "aggregated" else w.group]
        if w.group == "prefill":
            # The mocker's KV rendezvous: the prefill listens on its planned bootstrap port.
            argv += ["--bootstrap-ports", w.leader_port("bootstrap")]
        argv += ["--speedup-ratio", f"{cfg.engine.mocker_speedup_ratio:g}"]
        argv += dynamo_planes(discovery)
        # Model and role `args` are SGLang server flags, which the mocker does not take (it
        # stands in for the real engine under the same config); engine.args are the mocker's.
        engine_args = args_argv(layered_args(cfg.engine.args))
        return argv + engine_args + list(cfg.engine.extra_args) + list(w.group_extra_args)

    def env(self, cfg: RootConfig, w: WorkerProcess) -> dict[str, str]:
        """Dynamo's planes and system server (as for dynamo.sglang)."""
        return {**sglang_host_env(w), **dynamo_worker_env(w)}

    def health_url(self, w: WorkerProcess) -> str:
        """Dynamo's system server `/health`."""
        return dynamo_health_url(w)

    def prepare(self, cfg: RootConfig) -> dict[str, str]:
        """The tiny tokenizer directory, unless engine.mocker_model_dir names one."""
        return {} if cfg.engine.mocker_model_dir else {"tiny_model_dir": self.model_dir(cfg)}

    def local_tokenizer(self, cfg: RootConfig) -> str:
        """Benchmark clients tokenize with the mocker's tokenizer."""
        return self.model_dir(cfg)

    def validate(self, cfg: RootConfig, slots: Sequence[WorkerSlot]) -> list[Issue]:
        """The mocker is one process: a worker may not span nodes."""
        spanning = [s for s in slots if len(s.ranks) > 1]
        if not spanning:
            return []
        group = spanning[0].group
        tp = getattr(cfg, group).tp or cfg.model.tp
        return [
            Issue(
                f"{group}.tp",
                str(tp),
                "the mocker is one process and cannot span nodes",
                "use a TP that fits in cluster.gpus_per_node with engine=mocker",
            )
        ]

    def check_argvs(self, items: Sequence[tuple[RootConfig, Plan]]) -> list[list[Issue]]:
        """The mocker's own parser on every worker argv, one subprocess for all items
        (orchestrator.engines.dynamo_check)."""
        from orchestrator.engines.dynamo_check import mocker_argv_issues_many

        return mocker_argv_issues_many(items)


ENGINE = Mocker()
