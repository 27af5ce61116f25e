"""Stop signals that arrive while the driver is still setting up, before it starts anything.

Slurm sends them at any moment: `scancel`, and the time-limit warning (`--signal=B:TERM@N`),
which slurmctld's once-every-30-s time-limit pass may deliver seconds after the job starts when
N is close to the limit. Two things used to lose such a signal:
- under submitit, `submitit.core.submission.process_job` installs `JobEnvironment`'s handlers,
  which *bypass* SIGTERM ("Bypassing signal SIGTERM"), before it calls our job function; a
  SIGTERM during the driver's setup (allocation lookup, preflight step, fetch, staging) was
  dropped, so the run served on until Slurm killed it at the limit (TIMEOUT, not COMPLETED);
- under the sbatch script, Python's default SIGTERM action killed the driver mid-setup, leaving
  state.json at "submitted" with nothing to say why.

`EarlyStop` is installed on the driver's first line. While armed (setup), a stop signal raises
`StopBeforeStart` out of whatever setup step runs (subprocess.run kills its child on the way
out); afterwards it only records the reason, which the Driver takes over with its own handlers.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

# SIGHUP: the terminal of a local run closed (or the login shell of an salloc session ended).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


class StopBeforeStart(BaseException):  # noqa: N818  (not an error: a stop, like KeyboardInterrupt)
    """A stop signal arrived during setup; nothing of the run has started yet."""


class EarlyStop:
    """Catches the stop signals from the driver's first line until the Driver's own handlers."""

    def __init__(self) -> None:
        self.reason = ""
        self._armed = False

    def install(self) -> None:
        """Take the stop signals now (replacing submitit's bypass and Python's defaults)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        self.reason = self.reason or f"received {signal.Signals(signum).name}"
        if self._armed:
            self._armed = False  # raise once: the handling code must not be interrupted again
            raise StopBeforeStart(self.reason)

    @contextmanager
    def armed(self) -> Iterator[None]:
        """Within: a stop signal (or one already received) interrupts with StopBeforeStart."""
        if self.reason:
            raise StopBeforeStart(self.reason)
        self._armed = True
        try:
            yield
        finally:
            self._armed = False
