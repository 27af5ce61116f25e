"""Every option of every group under orchestrator/conf/ (and every experiment) composes, validates,
plans and renders a dry-run for every launcher. Options are discovered from the directory, so a
new YAML file is tested without editing this file."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Callable

import pytest
from omegaconf import OmegaConf

from orchestrator.config.load import (
    CONF_DIR,
    compose_config,
    quote_override_value,
)
from orchestrator.config.schema import RootConfig, config_to_dict
from orchestrator.config.validate import validate
from orchestrator.launchers import materialize
from orchestrator.plan.build import build_plan
from orchestrator.render.dryrun import all_processes, render_json, render_text

Compose = Callable[..., RootConfig]
LAUNCHERS = ("local", "submitit", "sbatch")
# Groups selected with `+group=option` (not in the defaults list) and groups that are not options.
APPEND_GROUPS = {"model", "experiment"}
SKIP_GROUPS = {"local"}  # gitignored site overrides
# What an option needs next to it to be a valid deployment.
COMPANIONS: dict[str, tuple[str, ...]] = {
    "engine=sglang": ("frontend=sglang_router",),
    "frontend=sglang_router": ("engine=sglang",),
    "frontend=smg": ("engine=sglang",),
    # The testbed's 30 min limit is meant for the mocker's short readiness deadline.
    "cluster=testbed": ("engine=mocker", "readiness.timeout_s=600"),
    # Experiments of another model than gpt-oss-120b name it (tests/test_catalog.py EXPERIMENTS).
    "+experiment=deepseek_r1_wideep": ("+model=deepseek_r1",),
}


def options() -> list[str]:
    found = []
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in SKIP_GROUPS):
        prefix = "+" if group.name in APPEND_GROUPS else ""
        found += [f"{prefix}{group.name}={f.stem}" for f in sorted(group.glob("*.yaml"))]
    return found


OPTIONS = options()


def overrides_for(option: str) -> tuple[str, ...]:
    companions = COMPANIONS.get(option, ())
    named = option.startswith("+model=") or any(c.startswith("+model=") for c in companions)
    model = () if named else ("+model=gpt_oss_120b",)
    return (*model, *sorted((option, *companions)))


def test_discovery_finds_every_group() -> None:
    groups = {o.lstrip("+").split("=")[0] for o in OPTIONS}
    expected = {"cluster", "engine", "frontend", "launcher", "deployment", "model", "experiment"}
    assert expected <= groups
    assert "+experiment=gpt_oss_2p2d" in OPTIONS


@pytest.mark.parametrize("option", OPTIONS)
def test_option_composes_validates_plans_and_renders(compose: Compose, option: str) -> None:
    overrides = overrides_for(option)
    cfg = compose(*overrides)
    assert validate(cfg) == [], option
    group, _, name = option.lstrip("+").partition("=")
    if group in ("engine", "frontend", "launcher", "benchmark"):
        assert getattr(cfg, group).kind == name
    as_dict = config_to_dict(cfg)
    # config.json (the run directory's copy) reads back as the same typed config
    merged = OmegaConf.merge(OmegaConf.structured(RootConfig), json.loads(json.dumps(as_dict)))
    assert OmegaConf.to_object(merged) == cfg
    config_yaml = OmegaConf.to_yaml(as_dict)  # as the CLI does (once: it costs ~25 ms)
    plan = build_plan(cfg)
    assert plan.processes and plan.slurm.nodes == plan.num_nodes
    for launcher in LAUNCHERS:
        chosen = dataclasses.replace(cfg.launcher, kind=launcher)
        variant = dataclasses.replace(cfg, launcher=chosen)
        problems = validate(variant)
        # One machine cannot hold several nodes, nor the attached jobs autoscaling submits.
        if launcher == "local" and (plan.num_nodes > 1 or cfg.autoscale.enabled):
            assert [i.key for i in problems] == ["launcher.kind"]
            continue
        assert problems == []
        planned = build_plan(variant)
        request = materialize(
            planned,
            launcher,
            python=cfg.engine.python,
            overrides=overrides,
            git_sha="abc1234",
            cwd="/work",
        )
        data = json.loads(render_json(planned, request))
        assert [p["name"] for p in data["processes"]] == [p.name for p in all_processes(plan)]
        assert data["slurm"]["launcher"] == launcher
        text = render_text(planned, request, config_yaml=config_yaml, overrides=overrides)
        assert f"=== PLAN {plan.name}: {plan.num_nodes} node(s)" in text
        assert f"=== SLURM REQUEST (launcher={launcher}) ===" in text
        if launcher == "sbatch":
            script = data["slurm"]["script"]
            assert script in text
            syntax = subprocess.run(
                ["bash", "-n"], input=script, text=True, capture_output=True, check=False
            )
            assert syntax.returncode == 0, syntax.stderr


@pytest.mark.parametrize(
    "value",
    ["/tmp/a b/'q' \\x $d", "a\\'b", "end\\", 'a"=0"', "a'; echo foo", r"a\=0", "a$(touch pwned)b"],
)
def test_quoted_override_values_survive_composition(value: str) -> None:
    # What the sweep and the tests use to pass run directories with awkward paths through Hydra.
    cfg = compose_config(["+model=gpt_oss_120b", f"run_dir={quote_override_value(value)}"])
    assert cfg.run_dir == value
