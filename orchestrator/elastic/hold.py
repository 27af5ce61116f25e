"""A worker job of a frontend.placement=here run, told to stop by Slurm rather than by us,
keeps serving a while (WorkerJobPlan.hold_s) so that the run can replace it first.

Slurm sends the batch shell -- this driver -- SIGTERM `launcher.signal_before_limit_s` before
the time limit (`--signal=B:TERM@N`: the workers' steps get nothing yet). A preempting Slurm
22.05 signals the steps instead (SIGTERM at the start of the partition's GraceTime, seen on the
testbed), which their holding stop wrapper keeps from the workers (slurm/stepwrap.py): the run's
driver learns of the preemption from squeue (orchestrator.elastic.rollover). Our own stops
(ctl stop, a scale-down, a rollover's drain) always leave the stop file first. So a signal
without the stop file is recorded in state.json (`stop_signal_at`), which the run's driver reads
on its next tick and answers with a replacement at once (orchestrator.elastic.rollover); this
driver stops when the drain asks (the stop file), at a second signal, or when the hold ends.
"""

from __future__ import annotations

import signal
import time
from types import FrameType

from orchestrator.rundir import Phase, RunDir
from orchestrator.runtime.hooks import DriverView
from orchestrator.runtime.processes import Running

# Signals Slurm sends (the time-limit --signal, preemption, scancel --signal); Ctrl-C and
# SIGHUP (not sent by Slurm) still stop at once.
HELD = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Hold:
    """The signal handlers and the tick that ends the hold."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.signalled = ""  # set by the handler (nothing else is safe there)
        self.until: float | None = None

    def handler(self, d: DriverView) -> signal.Handlers | object:
        """The handler of HELD signals for driver `d` (it only sets a flag or asks a stop)."""

        def handle(signum: int, _frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            asked = RunDir(d.run_dir).stop_requested()
            if asked or self.signalled or d.state.view().phase != Phase.READY:
                d.request_stop(f"received {name}")  # ours, a second one, or not serving yet
            else:
                self.signalled = name

        return handle

    def tick(self, d: DriverView) -> None:
        """Record a held signal once; stop when the hold is over."""
        if not self.signalled:
            return
        if self.until is None:
            self.until = d.clock.now() + self.hold_s
            d.state.update(stop_signal=self.signalled, stop_signal_at=time.time())
            d.say(
                f"received {self.signalled} without a stop request (time limit or preemption): "
                f"serving up to {self.hold_s:g} s more while the run replaces this job"
            )
        elif d.clock.now() >= self.until:
            d.request_stop(f"received {self.signalled}; held {self.hold_s:g} s for a replacement")

    def lost(self, d: DriverView, running: Running) -> None:
        """A worker exiting during the hold got the signal too (scancel, or a preemption that
        signals every step): the job is ending anyway, so stop now rather than restart it."""
        if self.signalled:
            d.request_stop(
                f"received {self.signalled} and {running.proc.name} exited: the whole "
                "job is being stopped by Slurm"
            )


def attach_hold(driver: DriverView) -> None:
    """Hold stop signals in a worker job of a placement=here run (after the driver's own
    handlers are installed: these replace them for the signals Slurm sends)."""
    if driver.plan.job is None or driver.plan.job.hold_s <= 0:
        return
    hold = Hold(driver.plan.job.hold_s)
    for sig in HELD:
        signal.signal(sig, hold.handler(driver))  # type: ignore[arg-type]
    driver.on_tick.append(hold.tick)
    driver.on_process_lost.append(hold.lost)
