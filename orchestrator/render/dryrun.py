"""Dry-run output: a readable plan (text) or the stable JSON contract. Writes nothing.

It shows the plan as saved to plan.json and the launch request exactly as it is executed; only
run-time placeholders remain: {run_dir}, {job_id}, {node_ip:N}, {node_host:N} and {port:N}
(planned port N shifted into the job's port block).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from orchestrator.frontends import get_frontend, lock_lines
from orchestrator.launchers import LaunchRequest, get_launcher, request_from_dict
from orchestrator.launchers.submitit import KIND as SUBMITIT
from orchestrator.plan.model import (
    AutoscalePlan,
    Plan,
    Process,
    ServePlan,
    plan_to_dict,
    process_to_dict,
)
from orchestrator.plan.placeholders import RUN_DIR, node_host
from orchestrator.plan.ports import block_size
from orchestrator.render.shell import quote_argv
from orchestrator.runtime.pernode import AGENT
from orchestrator.slurm.request import (
    PER_NODE,
    SBATCH,
    agent_srun_argv,
    holds_slurm_term,
    sbatch_directives,
    srun_argv,
    submitit_parameters,
)

JOB_ID_SHOWN = "{job_id}"


def gpu_ranges(gpus: Sequence[int]) -> str:
    """`0-3` for contiguous GPUs, `0,2` otherwise, `-` for none."""
    if not gpus:
        return "-"
    if list(gpus) == list(range(gpus[0], gpus[-1] + 1)) and len(gpus) > 1:
        return f"{gpus[0]}-{gpus[-1]}"
    return ",".join(str(g) for g in gpus)


def all_processes(plan: Plan) -> tuple[Process, ...]:
    """The deployment's processes, then the benchmark clients (started once ready)."""
    return plan.processes + (plan.benchmark.clients if plan.benchmark else ())


def port_shift(plan: Plan) -> dict[str, Any]:
    """How the planned ports move per job (the dry-run shows block 0)."""
    size = block_size(plan.gpus_per_node, plan.workers_per_gpu)
    return {
        "base": plan.port_base,
        "block_size": size,
        "job_blocks": plan.port_job_blocks,
        "rule": f"{{port:N}} = N + (SLURM_JOB_ID % {plan.port_job_blocks}) * {size}; "
        + (
            f"ports below {plan.port_base} (the frontend's) are fixed"
            if _fixed_ports(plan)
            else "every port shifts (nodes may be shared: the frontend's too)"
        ),
    }


def _fixed_ports(plan: Plan) -> bool:
    """Whether some planned port lies outside the job's block (the frontend's on exclusive
    clusters), so that it stays the same for every job."""
    return any(p < plan.port_base for proc in plan.processes for p in proc.ports.values())


def slurm_section(plan: Plan, request: LaunchRequest) -> dict[str, Any]:
    """What would be handed to Slurm: directives, submitit parameters, srun steps, script."""
    section: dict[str, Any] = {
        "launcher": request.kind,
        "nodes": plan.num_nodes,
        SBATCH: sbatch_directives(plan.slurm),
        SUBMITIT: submitit_parameters(plan.slurm),
        "srun": srun_steps(plan),
    }
    section.update(request.slurm_view())  # the request's own parameters, its script
    return section


def srun_steps(plan: Plan) -> dict[str, list[str]]:
    """Step name -> srun argv: one per process, or one node agent per node
    (cluster.launch_per=node; the agent then runs each process's env and argv)."""
    if plan.slurm.launch_per == PER_NODE:
        return {
            f"agent-node{i}": agent_srun_argv(
                i,
                plan.slurm,
                hostname=node_host(i),
                job_id=JOB_ID_SHOWN,
                python=sys.executable,
                agent=str(AGENT),
                run_dir=RUN_DIR,
            )
            for i in range(plan.num_nodes)
        }
    hold = holds_slurm_term(plan)
    return {
        p.name: srun_argv(
            p, plan.slurm, hostname=node_host(p.node_index), job_id=JOB_ID_SHOWN, hold=hold
        )
        for p in all_processes(plan)
    }


def render_json(plan: Plan, request: LaunchRequest) -> str:
    """`dry_run=json`: {"processes": [...], "slurm": {...}, "request": {...}, ...}."""
    data = plan_to_dict(plan)
    data["launcher"] = request.kind
    data["processes"] = [process_to_dict(p) for p in all_processes(plan)]
    data["ports"] = port_shift(plan)
    if plan.serve is not None:  # what goes to Slurm is the worker jobs' request
        data["slurm"] = slurm_section(plan.serve.workers, request_from_dict(plan.serve.request))
    else:
        data["slurm"] = slurm_section(plan, request)
    data["request"] = request.to_dict()
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def _table(plan: Plan) -> list[str]:
    """One row per process; a MEMORY column (each worker's planned part of its GPUs) only when
    workers share GPUs."""
    shared = any(p.gpu_share for p in all_processes(plan))
    rows = [("PROCESS", "ROLE", "NODE", "GPUS") + (("MEMORY",) if shared else ()) + ("PORTS",)]
    for p in all_processes(plan):
        ports = " ".join(f"{k}={v}" for k, v in p.ports.items()) or "-"
        memory = ((f"{p.gpu_share:g}" if p.gpu_share else "-"),) if shared else ()
        rows.append((p.name, p.role, str(p.node_index), gpu_ranges(p.gpus), *memory, ports))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows
    ]


def _sharing_lines(p: Process) -> list[str]:
    """How a worker sharing its GPUs gets its part (orchestrator.plan.sharing)."""
    if not p.gpu_share:
        return []
    after = f"once {', '.join(p.start_after)} is healthy" if p.start_after else "first"
    lines = [
        f"gpu share: {p.gpu_share:g} of GPU {gpu_ranges(p.gpus)}'s memory (weights + KV "
        f"cache); starts {after}"
    ]
    if p.restart_args:
        lines.append(f"on a restart (the others running) appends: {quote_argv(p.restart_args)}")
    return lines


def _process_block(p: Process) -> list[str]:
    lines = [f"--- {p.name} ({p.role}, node {p.node_index}, GPUs {gpu_ranges(p.gpus)})"]
    lines += ["env:"] + [f"  {k}={v}" for k, v in p.env.items()] if p.env else ["env: (none)"]
    if p.health:
        lines.append(f"health: GET {p.health.url} -> {p.health.expect_status}")
    lines += _sharing_lines(p)
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
    plan: Plan, request: LaunchRequest, *, overrides: Sequence[str], config_yaml: str
) -> str:
    """`dry_run=true`: config, plan table, per-process env and argv, readiness, launch request."""
    r = plan.readiness
    out = [f"=== CONFIG ({quote_argv(overrides) or 'defaults'}) ===", config_yaml.rstrip(), ""]
    out.append(f"=== PLAN {plan.name}: {plan.num_nodes} node(s) x {plan.gpus_per_node} GPUs ===")
    out += _table(plan)
    out += [f"ports: {port_shift(plan)['rule']}", ""]
    for p in all_processes(plan):
        out += _process_block(p) + [""]
    expected = ", ".join(f"{k} {v}" for k, v in r.expected.items())
    out.append("=== READINESS ===")
    out += [
        f"preflight (one srun step, before any worker): {c.kind} {c.path} ({c.key}) on "
        f"node(s) {','.join(str(n) for n in c.nodes)}"
        for c in plan.preflight
    ]
    out.append(
        f"workers healthy ({expected}) -> GET {r.frontend_url}{r.ready_path} -> "
        f"{'canary chat completion' if r.canary else 'no canary'}; deadline {r.timeout_s:g} s"
    )
    out += get_frontend(r.frontend_kind).registration_lines(plan)
    out += [f"frontend URL: {r.frontend_url}", ""]
    out += ["=== LOCKS ===", *lock_lines(plan), ""]
    out += _autoscale_text(plan.autoscale) if plan.autoscale else []
    out += _slurm_text(plan, request) if plan.serve is None else _serve_text(plan.serve, request)
    return "\n".join(out) + "\n"


def _autoscale_text(a: AutoscalePlan) -> list[str]:
    """autoscale: who decides, within which bounds, and who carries it out."""
    budget = f"{a.max_gpus} GPUs" if a.max_gpus else "no GPU budget"
    return [
        "=== AUTOSCALE ===",
        f"Dynamo's planner (process {a.process}, environment: virtual, namespace {a.namespace}) "
        f"decides; the driver carries each decision out with attached worker jobs, clipped to "
        f"prefill {a.min_prefill}-{a.max_prefill}, decode {a.min_decode}-{a.max_decode}, {budget}; "
        f"a job PENDING over {a.pending_timeout_s:g} s fails its decision",
        "",
    ]


def _serve_text(serve: ServePlan, request: LaunchRequest) -> list[str]:
    """frontend.placement=here: the driver on this host, then the worker job it submits."""
    workers = serve.workers
    out = [
        f"=== DRIVER ON THIS HOST (detached; frontend and discovery bind {serve.host}) ===",
        request.describe()[0],
        "",
    ]
    if serve.rollover:
        lead = (
            f"{serve.lead_s:g} s"
            if serve.lead_s
            else (
                f"measured submit -> ready (at least {serve.signal_before_limit_s:g} s) + "
                f"{serve.margin_s:g} s, at most half the limit"
            )
        )
        out.append(
            f"rollover: a copy of each worker job is submitted {lead} before its time limit "
            f"({workers.slurm.time_limit_min} min); the old one is drained once the copy "
            "serves. A worker job that ends unasked is replaced at once."
        )
    out += [
        f"=== WORKER JOB {workers.name}: {workers.num_nodes} node(s), attached to this "
        "host's frontend ===",
        *_table(workers),
        f"ports: {port_shift(workers)['rule']}",
        "",
    ]
    for p in all_processes(workers):
        out += _process_block(p) + [""]
    return out + _slurm_text(workers, request_from_dict(serve.request))


def _slurm_text(plan: Plan, request: LaunchRequest) -> list[str]:
    section = slurm_section(plan, request)
    out = [f"=== SLURM REQUEST (launcher={request.kind}) ==="]
    if get_launcher(request.kind).one_machine:
        out.append(
            f"{request.kind} launcher: processes start on this machine; on a cluster this would be:"
        )
    out.append(quote_argv([SBATCH, *section[SBATCH]]))
    out.append(f"{SUBMITIT} parameters: " + json.dumps(section[SUBMITIT], sort_keys=True))
    out.append("srun steps issued by the driver on node 0:")
    out += [f"  {quote_argv(argv)}" for argv in section["srun"].values()]
    out += request.describe()
    return out
