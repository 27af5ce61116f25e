"""The plan is the contract: the dry-run shows exactly what is submitted, and the driver runs
plan.json as saved (no config, no Hydra inside the allocation)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api import dry_run, prepare
from orchestrator.core.effects import CommandResult
from orchestrator.launch import launch
from orchestrator.launchers.select import Site
from orchestrator.plan.model import plan_from_dict, plan_to_dict
from tests import e2e

SLURM_SITE = Site(has_sbatch=True, allocation_job_id="")


class RecordingSbatch:
    """Answers `sbatch --parsable` with a job id and remembers what it was asked to run."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
    ) -> CommandResult:
        self.calls.append((tuple(argv), cwd))
        return CommandResult(tuple(argv), 0, "4242\n", "")


def sbatch_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


@pytest.mark.parametrize("extra", [(), ("+experiment=gpt_oss_2p2d", "cluster.partition=gpu")])
def test_submitted_script_is_the_dry_run_script_with_the_run_dir_bound(
    tmp_path: Path, extra: tuple[str, ...]
) -> None:
    run_dir = tmp_path / "run"
    overrides = ["+model=gpt_oss_120b", "launcher=sbatch", f"run_dir={run_dir}", *extra]
    shown = json.loads(dry_run(prepare([*overrides, "dry_run=json"], SLURM_SITE)))
    runner = RecordingSbatch()
    assert launch(prepare([*overrides, "wait=false"], SLURM_SITE), runner) == 0
    written = (run_dir / "job.sbatch").read_text()
    assert written == shown["request"]["script"].replace("{run_dir}", str(run_dir))
    assert sbatch_lines(written) == sbatch_lines(shown["slurm"]["script"])
    assert sbatch_lines(written) == [f"#SBATCH {o}" for o in shown["slurm"]["sbatch"]]
    assert runner.calls == [(tuple(shown["request"]["argv"]), str(run_dir))]
    launched = json.loads((run_dir / "launch.json").read_text())
    assert launched["request"]["script"] == written
    assert json.loads((run_dir / "state.json").read_text())["job_id"] == "4242"


class RecordingExecutor:
    """Stands in for submitit.SlurmExecutor (which needs a cluster to exist)."""

    seen: dict[str, Any] = {}

    def __init__(self, *, folder: str, python: str) -> None:
        self.seen.update(folder=folder, python=python)

    def update_parameters(self, **params: Any) -> None:
        self.seen["parameters"] = params

    def submit(self, fn: Any, run_dir: str) -> Any:
        self.seen.update(function=f"{fn.__module__}:{fn.__name__}", run_dir=run_dir)
        return type("Job", (), {"job_id": "77"})()


def test_submitit_gets_the_dry_run_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import submitit

    monkeypatch.setattr(submitit, "SlurmExecutor", RecordingExecutor)
    run_dir = tmp_path / "run"
    overrides = ["+model=gpt_oss_120b", "launcher=submitit", f"run_dir={run_dir}"]
    shown = json.loads(dry_run(prepare([*overrides, "dry_run=json"], SLURM_SITE)))["request"]
    assert launch(prepare([*overrides, "wait=false"], SLURM_SITE)) == 0
    assert RecordingExecutor.seen == {
        "folder": shown["folder"].replace("{run_dir}", str(run_dir)),
        "python": shown["python"],
        "parameters": shown["parameters"],
        "function": shown["function"],
        "run_dir": str(run_dir),
    }


HYDRA_BLOCKED = (
    "import sys\n"
    "sys.modules['hydra'] = None; sys.modules['omegaconf'] = None  # any import of them fails\n"
    "from orchestrator.run.entry import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.engines
def test_driver_runs_plan_json_without_hydra_or_the_config(tmp_path: Path) -> None:
    """A local run dir is written by the launch path; then the driver is started with Hydra and
    OmegaConf unimportable and config.json gone: it must serve from plan.json alone."""
    run_dir = tmp_path / "run"
    port = e2e.free_port()
    overrides = [
        "+model=gpt_oss_120b",
        "engine=mocker",
        "launcher=local",
        f"run_dir={run_dir}",
        f"frontend.http_port={port}",
        f"cluster.port_base={22000 + e2e.free_port() % 80 * 100}",
        "readiness.timeout_s=120",
    ]
    prepared = prepare(overrides, Site(has_sbatch=False, allocation_job_id=""))
    from orchestrator.launchers import bind
    from orchestrator.launchers.rundir import create_run_dir, write_run_files

    made = create_run_dir(prepared.cfg, prepared.plan.name)
    write_run_files(
        made,
        prepared.cfg,
        prepared.plan,
        launcher="local",
        overrides=overrides,
        request={"kind": "local", "argv": list(bind(prepared.request, str(made)).argv)},
    )
    (made / "config.json").unlink()  # the driver must not need it
    driver = subprocess.Popen(
        [sys.executable, "-c", HYDRA_BLOCKED, str(made)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        st = e2e.wait_for(
            lambda: (s := e2e.state(made)).get("phase") in ("ready", "failed") and s,
            timeout=120,
            what="ready",
        )
        assert st["phase"] == "ready", st.get("error")
        assert e2e.chat(f"http://127.0.0.1:{port}", "openai/gpt-oss-120b")  # generated text
        os.kill(driver.pid, signal.SIGTERM)
        assert driver.wait(timeout=60) == 0, driver.stderr.read() if driver.stderr else ""
    finally:
        if driver.poll() is None:
            driver.kill()
    assert e2e.state(made)["phase"] == "done"
    assert e2e.nothing_left(made)


READ_BLOCKED = (
    "import json, sys\n"
    "sys.modules['hydra'] = None; sys.modules['omegaconf'] = None  # any import of them fails\n"
    "from orchestrator.plan.model import plan_from_dict\n"
    "plan = plan_from_dict(json.load(open(sys.argv[1])))\n"
    "print(json.dumps([plan.job is None, plan.serve.workers.job.hold_s]))\n"
)


def test_a_worker_jobs_plan_says_what_it_joins_in_one_record(tmp_path: Path) -> None:
    """frontend.placement=here: the worker-job template carries the `job` record (the run it
    joins is set per job); the head's own plan has none; the driver reads both without Hydra."""
    here = [
        "+model=gpt_oss_120b",
        "engine=mocker",
        "cluster=testbed",
        "frontend.placement=here",
        "frontend.host=10.77.0.1",
        "serve.signal_hold_s=20",
        "launcher=sbatch",
        "readiness.timeout_s=60",
    ]
    plan = prepare(here, SLURM_SITE).plan
    data = json.loads(json.dumps(plan_to_dict(plan)))
    workers = data["serve"]["workers"]
    assert workers["job"] == {"run_dir": "", "heartbeat_timeout_s": 60.0, "hold_s": 20.0}
    assert not {"attach_to", "hold_s", "heartbeat_timeout_s"} & set(workers)
    assert "job" not in data and plan_from_dict(data) == plan
    (tmp_path / "plan.json").write_text(json.dumps(data))
    done = subprocess.run(
        [sys.executable, "-c", READ_BLOCKED, str(tmp_path / "plan.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, 20.0]
