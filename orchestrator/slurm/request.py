"""Pure builders of what is handed to Slurm: sbatch directives, submitit parameters, srun argv."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from orchestrator.plan.model import Plan, Process, SlurmRequest
from orchestrator.slurm.stepwrap import wrap

SBATCH = "sbatch"  # the command (also the name of the launcher that runs it)

# What may follow `#SBATCH `. Slurm does not shell-parse these lines (whitespace splits options,
# quotes are stripped), so spaces, quotes, backslashes, `$` and backticks cannot be written
# faithfully. `&` and `|` stay allowed: Slurm's own --constraint syntax uses them (a100&ib).
# `\Z`, not `$`: `$` also matches before a trailing newline.
SAFE_DIRECTIVE = re.compile(r"^--[A-Za-z0-9-]+(=[^\s'\"\\$`;<>()]*)?\Z")


# How the job lives through node loss and requeue (tested on the Slurm 22.05 testbed):
# --no-kill: when a node goes DOWN, Slurm otherwise cancels the whole job (NODE_FAIL) and SIGTERMs
#   the driver at the very moment the steps die, so the driver cannot tell it from a scancel, and
#   with JobRequeue=1 the job silently starts over 120 s later. With --no-kill the allocation
#   shrinks, the step on the lost node ends ("srun: error: Node failure on node2") and the driver
#   fails the run naming the node, then stops what runs on the other nodes.
# --open-mode=append: a requeued job re-runs its batch script into the same slurm-<job>.out;
#   Slurm truncates it by default (JobFileAppend=0), losing the first attempt's output.
JOB_LIFECYCLE = ("--no-kill", "--open-mode=append")


def gpu_directive(req: SlurmRequest) -> str:
    """`--gpus-per-node=N` or `--gres=gpu:N`: sites differ, so this is a cluster setting."""
    if req.gpu_directive == "gres":
        return f"--gres=gpu:{req.gpus_per_node}"
    return f"--gpus-per-node={req.gpus_per_node}"


def sbatch_directives(req: SlurmRequest) -> list[str]:
    """Options for `#SBATCH` lines, in a fixed order. `--output` is given on the sbatch command
    line instead, because #SBATCH lines are not shell-parsed and paths may hold spaces."""
    opts = [f"--job-name={req.job_name}", f"--nodes={req.nodes}", "--ntasks-per-node=1"]
    opts.append(gpu_directive(req))
    opts.append(f"--time={req.time_limit_min}")
    opts += [
        f"--{k}={v}"
        for k, v in (("partition", req.partition), ("account", req.account), ("qos", req.qos))
        if v
    ]
    if req.exclusive:
        opts.append("--exclusive")
    # SIGTERM to the driver (the batch shell, which execs it) before the time limit, so that it
    # tears everything down in order instead of Slurm killing all steps at once.
    opts.append(f"--signal=B:TERM@{req.signal_before_limit_s}")
    return opts + list(JOB_LIFECYCLE) + list(req.sbatch_extra)


def submitit_parameters(req: SlurmRequest) -> dict[str, Any]:
    """Keyword arguments for `submitit.SlurmExecutor.update_parameters` (no executor is built,
    so this works without Slurm: submitit's executor refuses to start off-cluster)."""
    params: dict[str, Any] = {
        "job_name": req.job_name,
        "nodes": req.nodes,
        "ntasks_per_node": 1,
        "time": req.time_limit_min,
        # The driver runs once, on the first node, and starts its own srun steps; srun inside
        # a step launched by srun triggers invalid-resource errors (submitit PR #1745).
        "use_srun": False,
        "setup": list(req.setup),
    }
    if req.gpu_directive == "gres":
        params["gres"] = f"gpu:{req.gpus_per_node}"
    else:
        params["gpus_per_node"] = req.gpus_per_node
    for key in ("partition", "account", "qos"):
        if getattr(req, key):
            params[key] = getattr(req, key)
    if req.exclusive:
        params["exclusive"] = True
    # submitit's default is USR2@90 to every step (our workers would die of it); replace it.
    params["additional_parameters"] = {"signal": f"B:TERM@{req.signal_before_limit_s}"}
    # --no-kill as for sbatch (JOB_LIFECYCLE); submitit sets open-mode=append itself.
    params["additional_parameters"]["no_kill"] = True
    params["additional_parameters"].update(_extra_as_parameters(req.sbatch_extra))
    return params


def _extra_as_parameters(extra: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for opt in extra:
        key, _, value = opt.lstrip("-").partition("=")
        out[key.replace("-", "_")] = value if value else True
    return out


def env_prefix(env: Mapping[str, str]) -> list[str]:
    """`env K=V ...` so the values apply inside the step, after Slurm set its own
    (srun overrides CUDA_VISIBLE_DEVICES in the task from the step's GPU allocation)."""
    return ["env", *(f"{k}={v}" for k, v in env.items())] if env else []


LAUNCH_PER = ("process", "node")  # cluster.launch_per
PER_NODE = "node"


def agent_srun_argv(
    index: int,
    req: SlurmRequest,
    *,
    hostname: str,
    job_id: str,
    python: str,
    agent: str,
    run_dir: str,
) -> list[str]:
    """The srun step of node `index`'s agent (`cluster.launch_per=node`): it starts every
    process of the node itself (runtime/nodeagent.py), so it needs no stop wrapper (it sends a
    stop to each leader alone) and no GPUs of its own (each process's CUDA_VISIBLE_DEVICES comes
    from the plan, as with per-process steps). `--overlap` as in `srun_argv`; `--input=0`: the
    driver's commands go to the one task. The run dir is the agent's label (what `ps` and "nothing
    left of the run" checks see)."""
    argv = ["srun", f"--jobid={job_id}", "--overlap", "--nodes=1", "--ntasks=1", "--input=0"]
    argv += [f"--nodelist={hostname}", f"--job-name=agent-node{index}", "--kill-on-bad-exit=1"]
    return argv + list(req.srun_extra) + [python, agent, run_dir]


def srun_argv(
    proc: Process, req: SlurmRequest, *, hostname: str, job_id: str, hold: bool = False
) -> list[str]:
    """The srun step that runs `proc` on its node.

    `--overlap`: steps share the allocation with the driver and each other (CPUs are not split);
    GPUs are bound by CUDA_VISIBLE_DEVICES from the plan, because with --overlap Slurm 22.05 gives
    every overlapping step the same GRES, and --exact would pick device indices itself.
    The command runs under the stop wrapper (stepwrap.py), so that a stop reaches its leader alone;
    `hold`: under the holding one (see `holds_slurm_term`).
    """
    argv = ["srun", f"--jobid={job_id}", "--overlap", "--nodes=1", "--ntasks=1"]
    argv += [f"--nodelist={hostname}", f"--job-name={proc.name}", "--kill-on-bad-exit=1"]
    if req.container_image:
        argv += [f"--container-image={req.container_image}", "--no-container-mount-home"]
        if req.container_mounts:
            argv.append(f"--container-mounts={','.join(req.container_mounts)}")
    argv += list(req.srun_extra)
    return argv + wrap([*env_prefix(proc.env), *proc.argv], proc.name, hold=hold)


def holds_slurm_term(plan: Plan) -> bool:
    """Whether `plan`'s steps keep Slurm's first SIGTERM from their command (stepwrap.py): a
    worker job of a frontend.placement=here run, which keeps serving while the run replaces it."""
    return plan.job is not None and plan.job.hold_s > 0
