"""Hydra composition at the CLI boundary: overrides in, typed `RootConfig` out."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestrator.config.schema import RootConfig
from orchestrator.errors import InvalidConfig, Issue

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def _register_schema() -> None:
    ConfigStore.instance().store(name="schema", node=RootConfig)


def compose_config(overrides: Sequence[str], conf_dir: Path = CONF_DIR) -> RootConfig:
    """Compose orchestrator/conf/config.yaml with Hydra overrides; return plain typed objects.

    Composition errors (unknown key, wrong type, unknown group option) become `InvalidConfig`.
    """
    _register_schema()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
        obj = OmegaConf.to_object(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        raise InvalidConfig([_composition_issue(exc, overrides)]) from exc
    assert isinstance(obj, RootConfig)
    return obj


def _composition_issue(exc: Exception, overrides: Sequence[str]) -> Issue:
    """Name the override Hydra rejected (key and value), with Hydra's reason on one line."""
    text = str(exc).split("Config search path")[0]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        lines += [line.strip() for line in str(cause).strip().splitlines()[:1]]
    parsed = [(o, o.lstrip("+~").partition("=")[0], o.partition("=")[2]) for o in overrides]
    candidates = [(n, v) for o, n, v in parsed if o in text or f"'{n}/{v}'" in text]
    candidates += [(n, v) for _, n, v in parsed if f"'{n}'" in text]  # less specific: key only
    key, found = candidates[0] if candidates else ("overrides", type(exc).__name__)
    return Issue(
        key=key,
        found=found,
        problem=" / ".join(lines) or type(exc).__name__,
        fix="check the key against orchestrator/config/schema.py and the group options under "
        "orchestrator/conf/",
    )


def config_to_dict(cfg: RootConfig) -> dict[str, Any]:
    """Plain-dict form of the typed config (for the run directory and dry-run)."""
    container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def config_from_dict(data: dict[str, Any]) -> RootConfig:
    """Inverse of `config_to_dict`: what the in-allocation driver reads from the run directory."""
    merged = OmegaConf.merge(OmegaConf.structured(RootConfig), data)
    obj = OmegaConf.to_object(merged)
    assert isinstance(obj, RootConfig)
    return obj


def quote_override_value(value: str) -> str:
    """A Hydra override value that stays exactly `value` (e.g. run_dir=... with spaces, quotes or
    backslashes in the path). Hydra's quoted strings take `\\'` for a quote, and backslashes need
    doubling only where they precede a quote or end the string."""
    doubled = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    return "'" + doubled.replace("'", "\\'") + "'"
