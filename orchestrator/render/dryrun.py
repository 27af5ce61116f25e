"""Dry-run output: a readable plan (text) or the stable JSON contract. Writes nothing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from orchestrator.plan.model import Plan, Process, plan_to_dict, process_to_dict
from orchestrator.plan.placeholders import node_host
from orchestrator.render.shell import quote_argv, sbatch_script
from orchestrator.runtime.router import WORKER_TYPES, registration_payload
from orchestrator.slurm.request import sbatch_directives, srun_argv, submitit_parameters

RUN_DIR_SHOWN = "<run_dir>"  # the real run directory is created only when launching
JOB_ID_SHOWN = "{job_id}"


def gpu_ranges(gpus: Sequence[int]) -> str:
    """`0-3` for contiguous GPUs, `0,2` otherwise, `-` for none."""
    if not gpus:
        return "-"
    if list(gpus) == list(range(gpus[0], gpus[-1] + 1)) and len(gpus) > 1:
        return f"{gpus[0]}-{gpus[-1]}"
    return ",".join(str(g) for g in gpus)


def slurm_section(
    plan: Plan, launcher: str, *, python: str, overrides: Sequence[str]
) -> dict[str, Any]:
    """What would be handed to Slurm: directives, submitit parameters, srun steps, script."""
    section: dict[str, Any] = {
        "launcher": launcher,
        "nodes": plan.num_nodes,
        "sbatch": sbatch_directives(plan.slurm),
        "submitit": submitit_parameters(plan.slurm),
        "srun": {
            p.name: srun_argv(p, plan.slurm, hostname=node_host(p.node_index), job_id=JOB_ID_SHOWN)
            for p in plan.processes
        },
    }
    if launcher == "sbatch":
        section["script"] = sbatch_script(
            plan, run_dir=RUN_DIR_SHOWN, python=python, overrides=overrides
        )
    return section


def render_json(plan: Plan, launcher: str, *, python: str, overrides: Sequence[str]) -> str:
    """`dry_run=json`: {"processes": [...], "slurm": {...}, ...} with sorted, stable keys."""
    data = plan_to_dict(plan)
    data["launcher"] = launcher
    data["processes"] = [process_to_dict(p) for p in plan.processes]
    data["slurm"] = slurm_section(plan, launcher, python=python, overrides=overrides)
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def _table(plan: Plan) -> list[str]:
    rows = [("PROCESS", "ROLE", "NODE", "GPUS", "PORTS")]
    for p in plan.processes:
        ports = " ".join(f"{k}={v}" for k, v in p.ports.items()) or "-"
        rows.append((p.name, p.role, str(p.node_index), gpu_ranges(p.gpus), ports))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[4] for r in rows
    ]


def _process_block(p: Process) -> list[str]:
    lines = [f"--- {p.name} ({p.role}, node {p.node_index}, GPUs {gpu_ranges(p.gpus)})"]
    lines += ["env:"] + [f"  {k}={v}" for k, v in p.env.items()] if p.env else ["env: (none)"]
    if p.health:
        lines.append(f"health: GET {p.health.url} -> {p.health.expect_status}")
    lines.append("argv:")
    lines.append("  " + _wrapped(p.argv))
    return lines


def _wrapped(argv: Sequence[str]) -> str:
    """The quoted command with a line continuation before each option; the break goes between
    words, so a value that itself contains " --" is not split (the text stays copy-pastable)."""
    parts = []
    for i, arg in enumerate(argv):
        sep = "" if i == 0 else " \\\n    " if arg.startswith("--") else " "
        parts.append(sep + quote_argv([arg]))
    return "".join(parts)


def render_text(
    plan: Plan, launcher: str, *, python: str, overrides: Sequence[str], config_yaml: str
) -> str:
    """`dry_run=true`: config, plan table, per-process env and argv, readiness, Slurm request."""
    r = plan.readiness
    out = [f"=== CONFIG ({quote_argv(overrides) or 'defaults'}) ===", config_yaml.rstrip(), ""]
    out.append(f"=== PLAN {plan.name}: {plan.num_nodes} node(s) x {plan.gpus_per_node} GPUs ===")
    out += _table(plan) + [""]
    for p in plan.processes:
        out += _process_block(p) + [""]
    expected = ", ".join(f"{k} {v}" for k, v in r.expected.items())
    out.append("=== READINESS ===")
    out.append(f"workers healthy ({expected}) -> GET {r.frontend_url}{r.ready_path} -> "
               f"{'canary chat completion' if r.canary else 'no canary'}; deadline {r.timeout_s:g} s")  # fmt: skip
    out += _registration_text(plan)
    out += [f"frontend URL: {r.frontend_url}", ""]
    out += _slurm_text(plan, launcher, python=python, overrides=overrides)
    return "\n".join(out) + "\n"


def _registration_text(plan: Plan) -> list[str]:
    """sglang-router: the POST /workers each worker gets once healthy, then the router's gate."""
    r = plan.readiness
    if r.frontend_kind != "sglang_router":
        return []
    want = ", ".join(f"{v} {WORKER_TYPES.get(k, k)}" for k, v in r.expected.items())
    out = [f"register each worker when its /health is 200: POST {r.frontend_url}/workers (id kept for "
           "DELETE /workers/<id> at stop)"]  # fmt: skip
    out += [f"  {p.name}: {json.dumps(registration_payload(p))}" for p in plan.processes
            if p.url and p.role in WORKER_TYPES]  # fmt: skip
    out.append(
        f"router gate: GET {r.frontend_url}/workers lists {want} healthy, then GET {r.ready_path} == 200"
    )
    return out


def _slurm_text(plan: Plan, launcher: str, *, python: str, overrides: Sequence[str]) -> list[str]:
    section = slurm_section(plan, launcher, python=python, overrides=overrides)
    out = [f"=== SLURM REQUEST (launcher={launcher}) ==="]
    if launcher == "local":
        out.append("local launcher: processes start on this machine; on a cluster this would be:")
    out.append(quote_argv(["sbatch", *section["sbatch"]]))
    out.append("submitit parameters: " + json.dumps(section["submitit"], sort_keys=True))
    out.append("srun steps issued by the driver on node 0:")
    out += [f"  {quote_argv(argv)}" for argv in section["srun"].values()]
    if "script" in section:
        out += ["--- sbatch script ---", section["script"].rstrip()]
    return out
