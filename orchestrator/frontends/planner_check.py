"""The planner's configuration checked by the planner's own pydantic model (Dynamo 1.6.1's
`dynamo.planner.config.planner_config.PlannerConfig`) before anything is submitted, in the
planner's interpreter (`.venvs/planner`, scripts/install.sh --with-planner), like the engines'
argv checks (engines/dynamo_check.py): every field it refuses, every key it does not know (it
ignores unknown keys silently), and `optimization_target=sla` where NVIDIA's aisimulate is not
installed (the planner then fails at start-up)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.config.schema import RootConfig
from orchestrator.core.effects import CommandRunner, SubprocessRunner
from orchestrator.core.errors import Issue
from orchestrator.engines.dynamo_check import subprocess_source
from orchestrator.frontends.dynamo_planner import OWN_FIELDS, planner_config, planner_python

TIMEOUT_S = 120.0
INSTALL = "scripts/install.sh --with-planner"


def check_planner_configs(configs: dict[str, dict[str, object]]) -> dict[str, list[str]]:
    """PlannerConfig.model_validate on each config; name -> errors ([] = accepted). Runs in the
    planner's interpreter (inspect.getsource: no imports from outside this function)."""
    import logging

    from dynamo.planner.config.planner_config import PlannerConfig
    from pydantic import ValidationError

    logging.disable(logging.WARNING)  # its warnings about unused targets are not errors
    known = set()
    for name, info in PlannerConfig.model_fields.items():
        known.add(name)
        known.update(str(c) for c in getattr(info.validation_alias, "choices", ()))
    try:
        import aisimulate_core

        ais = "a stand-in" if getattr(aisimulate_core, "STAND_IN", False) else ""
    except ImportError:
        ais = "missing"
    out: dict[str, list[str]] = {}
    for key, data in configs.items():
        errors = [f"{k}: not a PlannerConfig field" for k in data if k not in known]
        try:
            PlannerConfig.model_validate(data)
        except ValidationError as exc:
            errors += [f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}" for e in exc.errors()]
        if data.get("optimization_target") == "sla" and ais:
            errors.append(f"optimization_target: aisimulate_core is {ais}")
        out[key] = errors
    return out


def planner_issues_many(
    cfgs: Sequence[RootConfig], *, runner: CommandRunner | None = None
) -> list[list[Issue]]:
    """Per config: what the planner's own model refuses in its configuration (none for
    autoscale=off). One subprocess per planner interpreter."""
    out: list[list[Issue]] = [[] for _ in cfgs]
    todo = [(i, c) for i, c in enumerate(cfgs) if c.autoscale.enabled]
    for python in dict.fromkeys(planner_python(c) for _, c in todo):
        same = [(i, c) for i, c in todo if planner_python(c) == python]
        found = _run(python, {str(i): planner_config(c) for i, c in same}, same[0][1], runner)
        for i, c in same:
            out[i] = found if isinstance(found, list) else _issues(c, found.get(str(i), []))
    return out


def _run(
    python: str, configs: dict[str, dict[str, Any]], cfg: RootConfig, runner: CommandRunner | None
) -> dict[str, list[str]] | list[Issue]:
    """Errors per config, or the issue that the planner's interpreter cannot check them."""
    if not Path(python).exists():
        if cfg.autoscale.python:  # an interpreter on the nodes (a container's): not here
            sys.stderr.write(
                f"note: the planner's configuration is not checked: {python} is not here\n"
            )
            return {}
        return [_unusable(python, "not installed")]
    res = (runner or SubprocessRunner()).run(
        [python, "-c", subprocess_source((check_planner_configs,))],
        stdin=json.dumps(configs),
        timeout=TIMEOUT_S,
    )
    try:
        data = json.loads(res.stdout) if res.returncode == 0 else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("missing"), str):
        return [_unusable(python, f"cannot import Dynamo's planner ({data['missing']})")]
    if not isinstance(data, dict) or not isinstance(data.get("errors"), dict):
        tail = " / ".join(res.stderr.strip().splitlines()[-3:]) or f"exit code {res.returncode}"
        return [_unusable(python, f"the check did not run: {tail}")]
    return {str(k): [str(e) for e in v] for k, v in data["errors"].items()}


def _unusable(python: str, why: str) -> Issue:
    return Issue(
        "autoscale.python",
        python,
        f"Dynamo's planner cannot run with this interpreter: {why}",
        f"install it with {INSTALL}, or set autoscale.python=<an interpreter with ai-dynamo's planner>",
    )


def _issues(cfg: RootConfig, errors: list[str]) -> list[Issue]:
    """One issue per error, named by the key that sets the field."""
    data = planner_config(cfg)
    out = []
    for error in errors:
        field, _, msg = error.partition(": ")
        top = field.split(".")[0]
        if field == "optimization_target" and msg.startswith("aisimulate_core is"):
            out.append(_sla_issue(msg))
            continue
        key = OWN_FIELDS.get(top, "").split(" ")[0] or f"autoscale.args.{field}"
        value = repr(data.get(top, "")) if top in data else "-"
        out.append(
            Issue(
                key,
                value,
                f"refused by Dynamo's planner (PlannerConfig): {msg}",
                "fix the value; dynamo/planner/config/planner_config.py lists the fields",
            )
        )
    return out


def _sla_issue(found: str) -> Issue:
    return Issue(
        "autoscale.optimization_target",
        "sla",
        "sla scales with NVIDIA's aisimulate performance model, and the planner fails at "
        f"start-up without it ({found}: aisimulate on PyPI is a stub that downloads from "
        "NVIDIA's own package index); its throughput part also reads a Prometheus "
        "(PROMETHEUS_ENDPOINT)",
        "use optimization_target=latency or load (load-based scaling from the workers' own "
        "metrics, no Prometheus), or install NVIDIA's aisimulate into the planner's venv",
    )
