"""Offline clusters: what each node must hold before a worker starts (pure; planned here, run by
orchestrator.runtime.preflight as one srun step over every node), and the environment that keeps
processes from reaching for the Hugging Face Hub or OpenAI's blob store.

- A model path that is a directory means the weights are local: every process gets the hub
  offline variables (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE), so a missing file is an error
  instead of a download attempt that hangs on an air-gapped cluster.
- gpt-oss's harmony format needs the `o200k_base` tiktoken encoding where reasoning and tool
  calls are parsed (Dynamo's gpt-oss recipe notes; openai-harmony reads
  `$TIKTOKEN_ENCODINGS_BASE/o200k_base.tiktoken`, else downloads it, and parsing silently breaks
  when that fails): `cluster.tiktoken_dir` names a local copy, exported to the frontend and the
  workers and checked on every node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.config.schema import RootConfig
from orchestrator.plan.placement import WorkerSlot

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TIKTOKEN_ENV = "TIKTOKEN_ENCODINGS_BASE"
# What counts as weights in a model directory (SGLang's loaders: safetensors, PyTorch bins, GGUF).
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")


@dataclass(frozen=True, slots=True, kw_only=True)
class PathCheck:
    """One path that must exist on some nodes before workers start."""

    kind: str  # model_dir | container_image | tiktoken
    path: str  # as seen on the node (container paths mapped to their host source)
    nodes: tuple[int, ...]
    key: str  # the config key that names it


def is_local_path(path: str) -> bool:
    """An absolute path rather than a hub id or a URI (docker://...)."""
    return path.startswith("/")


def host_path(cfg: RootConfig, path: str) -> str:
    """`path` as the node sees it: inside a container, through the `src:dst` mount it is under."""
    if not cfg.cluster.container_image:
        return path
    for mount in cfg.cluster.container_mounts:
        src, _, dst = mount.partition(":")
        dst = (dst.split(":")[0] or src).rstrip("/")
        if path == dst or path.startswith(dst + "/"):
            return src.rstrip("/") + path[len(dst) :]
    return path


def tiktoken_file(cfg: RootConfig) -> str:
    """The encoding file openai-harmony reads from TIKTOKEN_ENCODINGS_BASE ('' when not needed)."""
    if not (cfg.model.tiktoken_encoding and cfg.cluster.tiktoken_dir):
        return ""
    return f"{cfg.cluster.tiktoken_dir.rstrip('/')}/{cfg.model.tiktoken_encoding}.tiktoken"


def offline_env(cfg: RootConfig) -> dict[str, str]:
    """Environment additions of the frontend and every worker."""
    env = dict(OFFLINE_ENV) if is_local_path(cfg.model.path) else {}
    if tiktoken_file(cfg):
        env[TIKTOKEN_ENV] = cfg.cluster.tiktoken_dir
    return env


def preflight_checks(
    cfg: RootConfig, slots: Sequence[WorkerSlot], num_nodes: int, *, loads_model: bool
) -> tuple[PathCheck, ...]:
    """The paths to look at on each node: the model directory where workers load it, the
    container image and the tiktoken file everywhere."""
    everywhere = tuple(range(num_nodes))
    worker_nodes = tuple(sorted({n for s in slots for n, _ in s.ranks}))
    checks = []
    if loads_model and is_local_path(cfg.model.path):
        checks.append(
            PathCheck(
                kind="model_dir",
                path=host_path(cfg, cfg.model.path),
                nodes=worker_nodes,
                key="model.path",
            )
        )
    if is_local_path(cfg.cluster.container_image):
        checks.append(
            PathCheck(
                kind="container_image",
                path=cfg.cluster.container_image,
                nodes=everywhere,
                key="cluster.container_image",
            )
        )
    if tiktoken_file(cfg):
        checks.append(
            PathCheck(
                kind="tiktoken",
                path=host_path(cfg, tiktoken_file(cfg)),
                nodes=everywhere,
                key="cluster.tiktoken_dir",
            )
        )
    return tuple(checks)
