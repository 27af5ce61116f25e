"""The srun steps' stop wrapper (orchestrator/slurm/stepwrap.py), run by a real bash in its own
process group as Slurm runs a step: with proctrack/pgid `scancel --signal` reaches the whole
group, with proctrack/cgroup only the wrapper (Slurm 22.05 proctrack_p_signal). The engine is
the SGLang test double with its scheduler child (tests/doubles/double_lifecycle.py)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from orchestrator.slurm.stepwrap import (
    HOLD_MESSAGE,
    HOLDING_WRAPPER,
    HOLDING_WRAPPER_LINES,
    STOP_SIGNAL,
    WRAPPER,
    WRAPPER_LINES,
    scancel_signal,
    wrap,
)
from tests import e2e

DOUBLE = e2e.REPO / "tests" / "doubles" / "sglang_test_double.py"
SHELLCHECK = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))


def default_signals() -> None:
    """In the child: the dispositions slurmstepd starts a task with. A test run from a shell's
    background job (`cmd &` without job control) inherits SIGINT/SIGQUIT ignored, and bash
    cannot reset a signal ignored on entry, so without this the wrapper's `trap - INT QUIT`
    would be tested against an environment no step has."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def start(argv: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    """`argv` in a new session (the step's process group), output into `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env},
            preexec_fn=default_signals,  # noqa: PLW1509 (no threads to race in the child)
        )


def start_double(
    log: Path, *, wrapped: bool, hold: bool = False, port: int = 0
) -> subprocess.Popen[bytes]:
    """The double on a free port with its scheduler child; returns once it is ready. Its drain
    polls every 2 s, its child watchdog every 1 s (SGLang: 5 s and 1 s), and a crash-exit
    sleeps 0.5 s (SGLang: 5 s)."""
    argv = [
        sys.executable,
        str(DOUBLE),
        "-m",
        "sglang.launch_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port or e2e.free_port()),
    ]
    proc = start(
        wrap(argv, "decode-0", hold=hold) if wrapped else argv,
        log,
        SGLANG_DOUBLE_CRASH_SLEEP_S="0.5",
    )
    e2e.wait_for(lambda: "ready to roll" in log.read_text(), timeout=20, what="double ready")
    return proc


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_wrapper_is_valid_shellcheck_clean_bash(tmp_path: Path) -> None:
    script = tmp_path / "wrapper.sh"
    for lines in (WRAPPER_LINES, HOLDING_WRAPPER_LINES):
        texts = ("\n".join(lines) + "\n", "; ".join(lines) + "\n")
        assert HOLDING_WRAPPER + "\n" in texts or WRAPPER + "\n" in texts
        check_bash(script, texts)


def check_bash(script: Path, texts: tuple[str, ...]) -> None:
    for text in texts:
        script.write_text(text)
        assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
        res = subprocess.run(
            [SHELLCHECK, "-s", "bash", "-S", "warning", str(script)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert res.returncode == 0, res.stdout


@pytest.mark.parametrize(
    ("code", "want"),
    [
        ("pass", 0),
        ("raise SystemExit(3)", 3),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 128 + 9),
    ],
)
def test_exit_status_and_output_are_the_commands(tmp_path: Path, code: str, want: int) -> None:
    log = tmp_path / "step.log"
    proc = start(wrap([sys.executable, "-c", f"print('out'); {code}"], "x"), log)
    assert proc.wait(timeout=20) == want
    assert log.read_text() == "out\n"


def test_awkward_arguments_reach_the_command_unchanged(tmp_path: Path) -> None:
    args = ["a 0", 'a"=0"', "a'; echo foo", r"a\=0", "a\n0", "$HOME", "*", ""]
    line = shlex.join(wrap([sys.executable, "-c", "import sys; print(sys.argv[1:])", *args], "x"))
    res = subprocess.run(
        ["bash", "-c", line], capture_output=True, text=True, timeout=20, cwd=tmp_path, check=False
    )
    assert (res.returncode, res.stdout) == (0, f"{args}\n")


def test_group_wide_sigterm_crashes_sglang_without_the_wrapper(tmp_path: Path) -> None:
    """The problem (what proctrack/pgid does with `scancel --signal=TERM JOB.STEP`)."""
    log = tmp_path / "step.log"
    proc = start_double(log, wrapped=False)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=20) == -signal.SIGKILL
    assert "SIGQUIT received" in log.read_text()


def test_group_wide_stop_signal_drains_sglang_to_exit_0(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    proc = start_double(log, wrapped=True)
    os.killpg(proc.pid, STOP_SIGNAL)
    time.sleep(0.1)
    os.killpg(proc.pid, STOP_SIGNAL)  # a second stop while it drains changes nothing
    assert proc.wait(timeout=20) == 0
    text = log.read_text()
    assert "Gracefully exiting" in text and "SIGQUIT" not in text, text
    e2e.wait_for(lambda: group_gone(proc.pid), timeout=10, what="no process left in the group")


@pytest.mark.parametrize("sig", [signal.SIGTERM, STOP_SIGNAL])
def test_a_signal_to_the_wrapper_alone_reaches_the_leader(tmp_path: Path, sig: int) -> None:
    """proctrack/cgroup: Slurm's SIGTERM (job cancel, time limit) reaches the wrapper only."""
    log = tmp_path / "step.log"
    proc = start_double(log, wrapped=True)
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=20) == 0
    assert "Gracefully exiting" in log.read_text() and "SIGQUIT" not in log.read_text()
    e2e.wait_for(lambda: group_gone(proc.pid), timeout=10, what="no process left in the group")


def test_sigint_and_sigquit_keep_their_default_action_and_sigint_is_passed_on(
    tmp_path: Path,
) -> None:
    log = tmp_path / "step.log"
    code = (
        "import signal, sys, time; print(open('/proc/self/status').read().split('SigIgn:')[1]"
        ".split()[0], flush=True); time.sleep(30)"
    )
    proc = start(wrap([sys.executable, "-c", code], "x"), log)
    e2e.wait_for(lambda: log.read_text().strip(), timeout=20, what="the command's SigIgn line")
    ignored = int(log.read_text().split()[0], 16)
    assert not ignored & (1 << (signal.SIGINT - 1) | 1 << (signal.SIGQUIT - 1))
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=20) == 128 + signal.SIGINT  # Python re-raises an uncaught SIGINT


def test_scancel_gets_the_stop_signal_by_number_and_kill_by_name() -> None:
    assert scancel_signal(signal.SIGTERM) == str(int(signal.SIGWINCH)) == "28"
    assert scancel_signal(signal.SIGKILL) == "KILL"


@pytest.mark.parametrize("then", [signal.SIGTERM, STOP_SIGNAL])
def test_the_holding_wrapper_keeps_slurms_first_sigterm_from_the_command(
    tmp_path: Path, then: int
) -> None:
    """Preemption (Slurm 22.05): the steps get SIGTERM at the start of GraceTime; the worker
    serves on until the run's drain (STOP_SIGNAL) or Slurm's second SIGTERM at the end."""
    log, port = tmp_path / "step.log", e2e.free_port()
    proc = start_double(log, wrapped=True, hold=True, port=port)
    os.kill(proc.pid, signal.SIGTERM)
    e2e.wait_for(lambda: HOLD_MESSAGE in log.read_text(), timeout=10, what="the hold message")
    health = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
    assert health.status_code == 200  # 503 once SGLang drains on a SIGTERM
    assert proc.poll() is None
    os.kill(proc.pid, then)
    assert proc.wait(timeout=20) == 0
    assert "Gracefully exiting" in log.read_text() and "SIGQUIT" not in log.read_text()
