"""On the Slurm testbed: `ctl watch` in a real 80x24 terminal (tmux) shows a live run's phase and
processes and quits on `q`; every node's fingerprint is probed inside the job; `ctl ls` and
`ctl report` see the run."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import e2e
from tests.slurm.test_e2e_dynamo import start, stop_and_check_clean

pytestmark = pytest.mark.slurm


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """A tmux server of our own (its own socket), killed afterwards."""
    argv = ["tmux", "-L", f"orch-watch-{os.getpid()}"]
    yield argv
    subprocess.run([*argv, "kill-server"], capture_output=True, check=False)


def screen(tmux: list[str]) -> str:
    done = subprocess.run(
        [*tmux, "capture-pane", "-p", "-t", "w"], capture_output=True, text=True, check=False
    )
    return done.stdout


def test_watch_fingerprint_ls_on_a_live_testbed_run(
    slurm_jobs: list[str], tmp_path: Path, tmux: list[str]
) -> None:
    job_id, run_dir = start(slurm_jobs, tmp_path / "run")
    command = (
        f"env PYTHONPATH={shlex.quote(os.environ.get('PYTHONPATH', str(e2e.REPO)))} "
        f"{sys.executable} -m orchestrator.ctl watch {shlex.quote(str(run_dir))}"
    )
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "w", "-x", "80", "-y", "24", command],
        check=True,
        cwd=e2e.REPO,
    )
    text = e2e.wait_for(
        lambda: "prefill-0" in (s := screen(tmux)) and s, timeout=20, what="the watch screen"
    )
    st = e2e.state(run_dir)
    lines = text.splitlines()
    assert lines[0].startswith("gpt-oss-120b-p1d1  ready") and f"job {job_id}" in lines[0]
    host = st["nodes"][0]
    for name in ("frontend", "decode-0", "prefill-0"):
        (row,) = [x for x in lines if x.startswith(name + " ")]
        assert f"{host}:0" in row and "healthy" in row, row
    assert "endpoint registered" in text and "q quits" in text
    assert all(len(x) <= 80 for x in lines)
    subprocess.run([*tmux, "send-keys", "-t", "w", "q"], check=True)
    e2e.wait_for(
        lambda: (
            subprocess.run(
                [*tmux, "has-session", "-t", "w"], capture_output=True, check=False
            ).returncode
            != 0
        ),
        timeout=10,
        what="watch to quit on q",
    )

    fp = e2e.wait_for(
        lambda: (
            (run_dir / "fingerprint.json").exists()
            and json.loads((run_dir / "fingerprint.json").read_text())
        ),
        timeout=30,
        what="fingerprint.json",
    )
    assert fp["slurm_version"].startswith("slurm") and fp["job_id"] == job_id
    assert fp["node_list"] == st["nodes"]
    (node,) = fp["nodes"]  # probed on the node (its network namespace) by an srun step
    assert node["host"] == host and node["packages"]["ai-dynamo"] == "1.6.1"

    ls = e2e.ctl("ls", str(tmp_path))
    (row,) = [x for x in ls.stdout.splitlines() if x.startswith("run ")]
    assert row.split()[1:3] == ["ready", job_id] and row.endswith(st["frontend_url"])
    stop_and_check_clean(run_dir, job_id)
    assert e2e.ctl("report", str(run_dir)).returncode == 0
    assert "section-timeline" in (run_dir / "report.html").read_text()
