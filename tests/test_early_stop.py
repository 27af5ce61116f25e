"""A stop signal during the driver's setup is neither lost nor fatal (orchestrator.run.early_stop):
scancel or Slurm's time-limit warning can arrive seconds after the job starts, while submitit's
own handler would drop SIGTERM and Python's default would kill the driver mid-setup."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.run.early_stop import STOP_SIGNALS, EarlyStop, StopBeforeStart
from tests.fakes import FakeHttp
from tests.test_runtime_units import READY, make_driver


@pytest.fixture(autouse=True)
def restore_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_signal_during_setup_interrupts_it() -> None:
    early = EarlyStop()
    early.install()
    reached = []
    with pytest.raises(StopBeforeStart, match="received SIGTERM"):
        with early.armed():
            os.kill(os.getpid(), signal.SIGTERM)
            reached.append("after the signal")
    assert reached == []  # the setup step did not go on
    assert early.reason == "received SIGTERM"


def test_a_signal_before_or_after_setup_is_kept_for_the_driver() -> None:
    early = EarlyStop()
    early.install()
    os.kill(os.getpid(), signal.SIGUSR1)  # not armed: recorded, nothing raised
    assert early.reason == "received SIGUSR1"
    os.kill(os.getpid(), signal.SIGTERM)  # the first reason is the one that counts
    assert early.reason == "received SIGUSR1"
    with pytest.raises(StopBeforeStart):  # a setup that begins after it does not run
        with early.armed():
            pytest.fail("setup ran although a stop signal had arrived")


def test_a_pending_stop_starts_nothing_and_ends_done(plan_of: Any, tmp_path: Path) -> None:
    driver, backend = make_driver(plan_of, tmp_path, FakeHttp(dict(READY)))
    driver.install_signal_handlers(pending="received SIGTERM")
    assert driver.run() == 0
    assert backend.started == []
    st = json.loads((tmp_path / "state.json").read_text())
    assert st["phase"] == "done" and st["reason"] == "received SIGTERM"
