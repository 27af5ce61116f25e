"""Restart policies of the plan's processes, from the config (pure)."""

from __future__ import annotations

from typing import cast

from orchestrator.config.schema import RootConfig
from orchestrator.plan.model import RestartMode, RestartPolicy

# Groups whose processes can be restarted in place. "discovery" is the run's etcd: restarted on
# its data directory (same member, ports, users), it keeps every lease (etcd's lessor renews
# each by its TTL when a member starts), and Dynamo 1.6.1's processes reconnect on their own
# (etcd Connector: "Reconnection failed (remaining time: 28.7s)" every 0.5-5 s, then
# "Successfully reconnected"), so the workers keep their leases and registrations and the
# frontend its instances. Measured with kill -9 under 16 clients: etcd back in 3.3 s, 0 failed
# requests, no worker restarted. It follows the frontend's restart mode; its backoff stays far
# below that ~30 s reconnection deadline, after which every Dynamo process exits at once.
DISCOVERY_BACKOFF_MAX_S = 5.0
# "planner" is Dynamo's planner (autoscale): supervised like the frontend, with its mode.
RESTARTABLE = ("prefill", "decode", "aggregated", "frontend", "discovery", "planner")


def restart_policy(cfg: RootConfig, group: str) -> RestartPolicy:
    """The policy of every process in `group` (prefill | decode | aggregated | frontend |
    discovery | planner | infra): the group's `restart` mode with the deployment's limits and backoff."""
    if group not in RESTARTABLE:
        return RestartPolicy(mode="never")
    groups = {"prefill": cfg.prefill, "decode": cfg.decode, "aggregated": cfg.aggregated}
    mode = groups[group].restart if group in groups else cfg.frontend.restart  # etcd, planner too
    d = cfg.deployment
    return RestartPolicy(
        mode=cast(RestartMode, mode),
        max_restarts=d.max_restarts,
        window_s=d.restart_window_s,
        backoff_s=d.restart_backoff_s,
        backoff_max_s=min(d.restart_backoff_max_s, DISCOVERY_BACKOFF_MAX_S)
        if group == "discovery"
        else d.restart_backoff_max_s,
    )
