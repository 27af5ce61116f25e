"""Restart policies of the plan's processes, from the config (pure)."""

from __future__ import annotations

from typing import cast

from orchestrator.config.schema import RootConfig
from orchestrator.plan.model import RestartMode, RestartPolicy

# Groups whose processes can be restarted in place. etcd ("infra") is not: Dynamo workers keep
# their registration alive through etcd leases and watch streams, and a restarted etcd (even with
# its data dir) comes back with those leases expired or revoked, so every worker's registration
# would vanish underneath it; an etcd death is fatal and the run fails with its log tail.
RESTARTABLE = ("prefill", "decode", "aggregated", "frontend")


def restart_policy(cfg: RootConfig, group: str) -> RestartPolicy:
    """The policy of every process in `group` (prefill | decode | aggregated | frontend |
    infra): the group's `restart` mode with the deployment's limits and backoff."""
    if group not in RESTARTABLE:
        return RestartPolicy(mode="never")
    groups = {"prefill": cfg.prefill, "decode": cfg.decode, "aggregated": cfg.aggregated}
    mode = groups[group].restart if group in groups else cfg.frontend.restart
    d = cfg.deployment
    return RestartPolicy(
        mode=cast(RestartMode, mode),
        max_restarts=d.max_restarts,
        window_s=d.restart_window_s,
        backoff_s=d.restart_backoff_s,
        backoff_max_s=d.restart_backoff_max_s,
    )
