"""Fetch once: the model's weights downloaded from the Hugging Face Hub by one step on one node into
the shared cache, before any worker starts (pure: the spec and its checks; the download is
orchestrator.runtime.fetch).

`model.path=hf:ORG/NAME[@REVISION]` (or an HF id in model.path with `model.fetch=true`) selects
it. The cache is `cluster.hf_home`, exported as HF_HOME to every process; once fetched, the
workers and the frontend read the snapshot from it with the hub offline variables set, so N
workers never ask the Hub at all (without this, every worker of every node resolves the model
against the Hub at start, and downloads it where the cache is cold).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import Issue

OFFLINE_VALUES = ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchSpec:
    """What the fetch step downloads, and where to."""

    repo_id: str  # ORG/NAME
    revision: str  # branch, tag or commit; "" = main
    hf_home: str  # the shared cache (HF_HOME); snapshots under <hf_home>/hub


def fetch_spec(cfg: RootConfig) -> FetchSpec | None:
    """The fetch step of this config (None without model.fetch)."""
    if not cfg.model.fetch:
        return None
    return FetchSpec(
        repo_id=cfg.model.path, revision=cfg.model.revision, hf_home=cfg.cluster.hf_home
    )


def is_offline(env: Mapping[str, str]) -> bool:
    """HF_HUB_OFFLINE set to a true value (huggingface_hub's own reading of it)."""
    return env.get("HF_HUB_OFFLINE", "").strip().lower() in OFFLINE_VALUES


def fetch_issues(cfg: RootConfig, launch_env: Mapping[str, str]) -> list[Issue]:
    """model.fetch needs a hub id, a shared cache, a reachable Hub and huggingface_hub here."""
    m = cfg.model
    if not m.fetch:
        return []
    issues = []
    if m.path.startswith("/") or m.path.count("/") != 1:
        fix = "use model.path=hf:ORG/NAME[@REVISION], or a directory without model.fetch"
        issues.append(Issue("model.path", m.path, "model.fetch downloads a Hub repository", fix))
    if not cfg.cluster.hf_home.startswith("/"):
        why = "model.fetch needs the shared Hugging Face cache every node reads"
        issues.append(
            Issue(
                "cluster.hf_home", repr(cfg.cluster.hf_home), why, "set cluster.hf_home=/shared/hf"
            )
        )
    issues += _offline_issues(cfg, launch_env)
    if importlib.util.find_spec("huggingface_hub") is None:
        why = "huggingface_hub is not installed where the orchestrator runs (the fetch step runs there)"
        issues.append(Issue("model.fetch", "true", why, "pip install huggingface_hub"))
    return issues


def _offline_issues(cfg: RootConfig, launch_env: Mapping[str, str]) -> list[Issue]:
    """HF_HUB_OFFLINE where the job's environment comes from: the Hub is out of reach."""
    places = (
        ("the environment you launch from", launch_env),
        ("model.env", cfg.model.env),
        ("engine.env", cfg.engine.env),
    )
    offline = [where for where, env in places if is_offline(env)]
    if not offline:
        return []
    why = f"HF_HUB_OFFLINE is set in {offline[0]}: an offline cluster cannot reach the Hub"
    fix = "put the model on the shared filesystem and set model.path=/that/dir"
    return [Issue("model.fetch", "true", why, fix + " (or fetch where the Hub is reachable)")]


def hf_env(cfg: RootConfig) -> dict[str, str]:
    """HF_HOME for every process when a shared cache is configured; with model.fetch also the hub
    offline variables, since the snapshot is in the cache before any of them starts."""
    env = {"HF_HOME": cfg.cluster.hf_home} if cfg.cluster.hf_home else {}
    if cfg.model.fetch:
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env
