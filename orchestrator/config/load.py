"""Hydra composition at the CLI boundary: overrides in, typed `RootConfig` out.

Config search path, first match wins (Hydra looks a config up in each source in turn:
hydra/_internal/config_repository.py `_find_object_source`):
1. every directory in `$ORCHESTRATOR_CONFIG_PATH` (os.pathsep-separated), in order;
2. `$XDG_CONFIG_HOME/orchestrator` (default `~/.config/orchestrator`), when it exists;
3. the packaged `orchestrator/conf`.
The root `config.yaml` is always the packaged one: a user `config.yaml` would be found first and
silently replace the whole defaults list (schema included), so it is refused.
Each user directory holds the same groups as the packaged one (`cluster/<site>.yaml`,
`model/<name>.yaml`, `experiment/<name>.yaml`, `local/default.yaml`, ...), merged onto the typed
schema exactly like the packaged files.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra import compose, version
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestrator.config.schema import RootConfig
from orchestrator.config.sources import resolve_hf_path
from orchestrator.core.errors import InvalidConfig, Issue

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PATH_ENV = "ORCHESTRATOR_CONFIG_PATH"
USER_PROVIDER = "orchestrator user config"  # how Hydra names these sources in its messages


def user_config_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """The user config directories, searched before the packaged configs (first wins).

    A directory named in $ORCHESTRATOR_CONFIG_PATH must exist (a typo is an error, not a
    silently ignored site config); the XDG directory is optional."""
    env = os.environ if env is None else env
    named = [Path(d).expanduser().resolve() for d in env.get(PATH_ENV, "").split(os.pathsep) if d]
    missing = [d for d in named if not d.is_dir()]
    if missing:
        fix = f"create it or remove it from ${PATH_ENV}"
        raise InvalidConfig([Issue(PATH_ENV, str(d), "is not a directory", fix) for d in missing])
    xdg = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config").expanduser()
    home = (xdg / "orchestrator").resolve()
    dirs = list(dict.fromkeys(named + ([home] if home.is_dir() else [])))
    roots = [d / "config.yaml" for d in dirs if (d / "config.yaml").exists()]
    if roots:
        problem = "would replace the packaged root config.yaml (its defaults list and schema)"
        fix = "put site defaults in local/default.yaml next to it, then remove config.yaml"
        raise InvalidConfig([Issue("config search path", str(r), problem, fix) for r in roots])
    return dirs


@contextmanager
def _initialized(conf_dir: Path, user_dirs: Sequence[Path]) -> Iterator[None]:
    """`hydra.initialize_config_dir(conf_dir)` with `user_dirs` ahead of `conf_dir`.

    Why not `hydra.searchpath`: Hydra appends those entries after the primary config directory
    (config_loader_impl.py `_process_config_searchpath`), so a packaged file would always beat a
    user file of the same name. This builds the search path the way initialize_config_dir does
    (hydra/initialize.py, hydra-core 1.3) and prepends the user directories to it."""
    backup = get_gh_backup()
    version.setbase("1.3")
    search_path = create_config_search_path(search_path_dir=str(conf_dir))
    for d in user_dirs:  # each goes right before the packaged directory: order is kept
        search_path.prepend(USER_PROVIDER, f"file://{d}", anchor=SearchPathQuery(provider="main"))
    Hydra.create_main_hydra2(task_name="app", config_search_path=search_path)
    try:
        yield
    finally:
        restore_gh_from_backup(backup)


def _register_schema() -> None:
    ConfigStore.instance().store(name="schema", node=RootConfig)


def compose_config(
    overrides: Sequence[str], conf_dir: Path = CONF_DIR, user_dirs: Sequence[Path] | None = None
) -> RootConfig:
    """Compose orchestrator/conf/config.yaml with Hydra overrides; return plain typed objects.

    `user_dirs` (default: `user_config_dirs()`) are searched before `conf_dir`. Composition
    errors (unknown key, wrong type, unknown group option) become `InvalidConfig`.
    """
    cfg, unknown = compose_checked(overrides, conf_dir, user_dirs)
    if unknown:
        raise InvalidConfig(unknown)
    return cfg


def compose_checked(
    overrides: Sequence[str], conf_dir: Path = CONF_DIR, user_dirs: Sequence[Path] | None = None
) -> tuple[RootConfig, list[Issue]]:
    """`compose_config` that returns the keys the schema does not have (one Issue each) instead
    of raising, so they are reported together with the validation problems."""
    _register_schema()
    dirs = user_config_dirs() if user_dirs is None else list(user_dirs)
    try:
        with _initialized(conf_dir, dirs):
            cfg = compose(config_name="config", overrides=list(overrides))
        unknown = unknown_keys(cfg)
        obj = OmegaConf.to_object(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        raise InvalidConfig([_composition_issue(exc, overrides, [*dirs, conf_dir])]) from exc
    assert isinstance(obj, RootConfig)
    obj, bad_source = resolve_hf_path(obj)
    return obj, unknown + bad_source


def unknown_keys(node: Any, prefix: str = "") -> list[Issue]:
    """Keys of typed groups that their dataclass does not define. Hydra's `+` adds a key even
    to a structured node (it opens the struct flag: config_loader_impl.py
    `_apply_overrides_to_config`, force_add=True) and `OmegaConf.to_object` then drops it
    silently: `+prefill.foo=1` would be accepted and ignored."""
    if isinstance(node, ListConfig):
        return [i for n, item in enumerate(node) for i in unknown_keys(item, f"{prefix}[{n}]")]
    if not isinstance(node, DictConfig):
        return []
    schema = OmegaConf.get_type(node)
    if schema is None or not is_dataclass(schema):
        return []  # a plain mapping (env, args): any key is valid
    known = {f.name for f in fields(schema)}
    issues = []
    for key in node.keys():
        path = prefix + str(key)
        if key not in known:
            valid = ", ".join(sorted(known))
            issues.append(
                Issue(
                    path, str(node[key]), f"not a key of {schema.__name__}", f"use one of: {valid}"
                )
            )
        else:
            issues += unknown_keys(node[key], f"{path}.")
    return issues


Composed = tuple[RootConfig, list[Issue]]  # the config and its unknown keys (compose_checked)


def compose_configs(
    override_lists: Sequence[Sequence[str]],
    conf_dir: Path = CONF_DIR,
    user_dirs: Sequence[Path] | None = None,
) -> list[Composed | InvalidConfig]:
    """`compose_checked` of each override list (a config with its unknown keys, or the
    InvalidConfig it would raise), with one Hydra initialization for all of them.

    Hydra builds the defaults list from the group overrides (`engine=mocker`, `+model=...`)
    and then applies the value overrides (`prefill.workers=2`) to the composed config with
    `ConfigLoaderImpl._apply_overrides_to_config` (hydra/_internal/config_loader_impl.py,
    `_load_configuration_impl`, hydra-core 1.3). Sweep points mostly differ in value overrides:
    here the config of each distinct set of group overrides is composed once (~150 ms), and
    each point applies its value overrides to a copy with that same Hydra function (~10 ms).
    An override is a group override exactly when Hydra's defaults list takes it as one
    (defaults_list.py `Overrides`: the group exists and the value is not a dict). A list that
    fails this way, or holds `hydra.*` overrides, is composed by `compose_config` itself, so
    errors read exactly as for a single launch."""
    _register_schema()
    dirs = user_config_dirs() if user_dirs is None else list(user_dirs)
    with _initialized(conf_dir, dirs):
        fast = _CachedComposer()
        results = [fast.compose(list(overrides)) for overrides in override_lists]
    return [
        cfg if cfg is not None else _compose_or_issue(overrides, conf_dir, dirs)
        for cfg, overrides in zip(results, override_lists, strict=True)
    ]


def _compose_or_issue(
    overrides: Sequence[str], conf_dir: Path, dirs: Sequence[Path]
) -> Composed | InvalidConfig:
    try:
        return compose_checked(overrides, conf_dir, dirs)
    except InvalidConfig as exc:
        return exc


class _CachedComposer:
    """Compositions under one initialized Hydra, cached per distinct group overrides."""

    def __init__(self) -> None:
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        self._repo = hydra.config_loader.repository  # type: ignore[attr-defined]
        self._parser = OverridesParser.create()
        self._parsed: dict[str, Override] = {}
        self._base: dict[tuple[str, ...], DictConfig] = {}

    def _parse(self, line: str) -> Override:
        if line not in self._parsed:
            (self._parsed[line],) = self._parser.parse_overrides([line])
        return self._parsed[line]

    def compose(self, overrides: list[str]) -> Composed | None:
        """The typed config and its unknown keys, or None when `compose_checked` must compose
        it (see `compose_configs`)."""
        try:
            parsed = [self._parse(line) for line in overrides]
            if any(o.is_hydra_override() or o.is_sweep_override() for o in parsed):
                return None
            groups = [o for o in parsed if self._is_group(o)]
            values = [o for o in parsed if not self._is_group(o)]
            key = tuple(str(o.input_line) for o in groups)
            if key not in self._base:
                self._base[key] = compose(config_name="config", overrides=list(key))
            cfg = copy.deepcopy(self._base[key])
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
            unknown = unknown_keys(cfg)
            obj = OmegaConf.to_object(cfg)
        except (HydraException, OmegaConfBaseException, ValueError):
            return None
        if not isinstance(obj, RootConfig):
            return None
        obj, bad_source = resolve_hf_path(obj)
        return obj, unknown + bad_source

    def _is_group(self, o: Override) -> bool:
        return bool(self._repo.group_exists(o.key_or_group)) and not isinstance(o.value(), dict)


def _composition_issue(
    exc: Exception, overrides: Sequence[str], search: Sequence[Path] = (CONF_DIR,)
) -> Issue:
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
        fix="check the key against orchestrator/config/schema.py and the group options in "
        + ", ".join(str(d) for d in search),
    )


@dataclass
class _Debug:
    debug: bool = False


def debug_requested(overrides: Sequence[str]) -> bool:
    """Whether the overrides set `debug` (RootConfig.debug) to true, read without composing: the
    CLI shows a traceback with debug=true even when composition itself fails. The value is
    converted like the schema's bool (true/True/yes/1 ...); the last `debug=` wins, as in Hydra."""
    values = [o.partition("=")[2] for o in overrides if o.lstrip("+").partition("=")[0] == "debug"]
    if not values:
        return False
    try:
        return bool(OmegaConf.merge(OmegaConf.structured(_Debug), {"debug": values[-1]}).debug)
    except OmegaConfBaseException:
        return False  # not a bool: composition reports it


def quote_override_value(value: str) -> str:
    """A Hydra override value that stays exactly `value` (e.g. run_dir=... with spaces, quotes or
    backslashes in the path). Hydra's quoted strings take `\\'` for a quote, and backslashes need
    doubling only where they precede a quote or end the string."""
    doubled = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    return "'" + doubled.replace("'", "\\'") + "'"
