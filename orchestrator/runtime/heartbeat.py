"""The driver's heartbeat, and an attached job's watch over the run it attaches to.

Every driver touches RUN_DIR/heartbeat every few seconds while it supervises (on_tick). An
attached job (`ctl scale`, plan.job) stops itself when the run it attaches to recorded its
end (done or failed in state.json), or when that run's heartbeat has not changed for
`plan.job.heartbeat_timeout_s`: a driver killed with SIGKILL (or lost with its node) writes no final
phase, and Slurm then ends its job and with it the run's frontend, so the attached workers would
serve nobody until their time limit.

Staleness is measured on the attached driver's own clock from the last time it saw the mtime
change, never as "mtime vs now": the two drivers run on different hosts whose clocks may differ
(and a shared filesystem stamps mtimes with the file server's clock).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.rundir import RunDir

if TYPE_CHECKING:
    from orchestrator.runtime.hooks import DriverView

BEAT_EVERY_S = 5.0  # well below any sensible timeout; one utime() on a shared filesystem
WATCH_EVERY_S = 2.0  # how often an attached driver reads the run's state.json and heartbeat


class Beat:
    """Touches RUN_DIR/heartbeat at most every BEAT_EVERY_S of the driver's clock."""

    def __init__(self) -> None:
        self.next_at: float | None = None

    def on_tick(self, d: DriverView) -> None:
        """Touch the heartbeat when it is due."""
        now = d.clock.now()
        if self.next_at is not None and now < self.next_at:
            return
        self.next_at = now + BEAT_EVERY_S
        RunDir(d.run_dir).beat()


class RunWatch:
    """An attached driver's watch: stop when the run ended or its heartbeat went stale."""

    def __init__(self, run_dir: Path, timeout_s: float) -> None:
        self.run_dir, self.timeout_s = RunDir(run_dir), timeout_s
        self.next_at: float | None = None
        self.mtime: int | None = None
        self.changed_at: float | None = None  # our clock when we last saw the mtime change

    def on_tick(self, d: DriverView) -> None:
        """Every WATCH_EVERY_S: request a stop when the run is gone."""
        now = d.clock.now()
        if self.next_at is not None and now < self.next_at:
            return
        self.next_at = now + WATCH_EVERY_S
        reason = self.gone(now)
        if reason:
            d.say(reason)
            d.run_gone = reason  # its frontend went with it: no deregistration
            d.request_stop(reason)

    def gone(self, now: float) -> str:
        """Why the run is gone ('' while it lives), from one look at `now` (our clock)."""
        if self.run_dir.ended():  # its frontend is gone
            return f"the run it attaches to has ended ({self.run_dir.path})"
        mtime = self.run_dir.heartbeat_mtime()
        if self.changed_at is None or mtime != self.mtime:
            self.mtime, self.changed_at = mtime, now
            return ""
        if now - self.changed_at < self.timeout_s:
            return ""
        return (
            f"the run it attaches to has not beaten for {now - self.changed_at:.0f} s "
            f"(its driver is gone: {self.run_dir.heartbeat_file} unchanged; "
            f"launcher.heartbeat_timeout_s={self.timeout_s:g})"
        )


def attach_heartbeat(driver: DriverView) -> None:
    """Every driver beats; an attached one also watches the run it attaches to."""
    driver.on_tick.append(Beat().on_tick)
    if driver.plan.job is not None:
        watch = RunWatch(Path(driver.plan.job.run_dir), driver.plan.job.heartbeat_timeout_s)
        driver.on_tick.append(watch.on_tick)
