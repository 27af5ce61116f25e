"""`python -m orchestrator.ctl watch RUN_DIR|SWEEP_DIR`: a live view of a run or a sweep.

On a terminal: a rich live screen redrawn every second, `q` or Ctrl-C quits. Otherwise (a pipe,
a CI log): the screen's lines are printed whenever they change, and the command ends when the
run (or every point of the sweep) is done or failed.
"""

from __future__ import annotations

import contextlib
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from orchestrator.core.effects import SubprocessRunner
from orchestrator.ctl.ls import Run, find_runs, load_runs
from orchestrator.ctl.watch_view import WIDTH, gather, lines, sweep_lines
from orchestrator.rundir.phase import OVER
from orchestrator.runtime.logscan import Progress
from orchestrator.slurm.client import SlurmClient

REFRESH_S = 1.0
SLURM_EVERY_S = 5.0  # polite to slurmctld: one batched squeue/sacct every 5 s
STYLES = (
    ("healthy", "green"),
    ("ready", "green"),
    ("done", "green"),
    ("starting", "yellow"),
    ("exited", "red"),
    ("unhealthy", "red"),
    ("failed", "red"),
    ("lost", "red"),
    ("restarting", "red"),
)


class Screen:
    """The lines of one redraw, with the Slurm lookups throttled."""

    def __init__(self, path: Path, client: SlurmClient | None) -> None:
        self.path, self.client = path, client
        self.sweep = (path / "manifest.json").exists()
        self.seen: dict[str, tuple[str, float]] = {}
        self.progress: dict[str, Progress | None] = {}
        self.runs: dict[str, Run] = {}
        self.next_slurm = 0.0

    def _load(self, now: float) -> list[Run]:
        paths = find_runs(self.path) if self.sweep else [self.path]
        client = self.client if now >= self.next_slurm else None
        if client is not None:
            self.next_slurm = now + SLURM_EVERY_S
        fresh = load_runs(paths, client)
        for run in fresh:
            old = self.runs.get(str(run.path))
            # Between Slurm lookups keep the last reconciled phase unless state.json moved on.
            if client is None and old is not None and old.state.phase == run.state.phase:
                run = Run(run.path, run.launch, run.state, old.view)
            self.runs[str(run.path)] = run
        return fresh

    def lines(self, now: float | None = None, *, times: bool = True) -> list[str]:
        """The screen now (`times=False`: without the columns that change every second)."""
        now = time.time() if now is None else now
        runs = self._load(now)
        if self.sweep:
            return sweep_lines(self.path, self.runs)
        return lines(gather(runs[0], self.seen, now, self.progress), now, times=times)

    def finished(self) -> bool:
        """Every run shown has ended."""
        return bool(self.runs) and all(r.view.phase in OVER for r in self.runs.values())


def plain(
    screen: Screen,
    out: IO[str],
    *,
    interval_s: float = REFRESH_S,
    stop: threading.Event | None = None,
) -> int:
    """Print the screen's lines when they change, until every run has ended (or `stop`)."""
    stop = stop or threading.Event()
    last: list[str] = []
    while True:
        now_lines = screen.lines(times=False)
        if now_lines != last:
            # Only lines that changed: a log stays readable, one line per change.
            for line in now_lines:
                if line not in last:
                    out.write(line + "\n")
            out.flush()
            last = now_lines
        if screen.finished() or stop.wait(interval_s):
            return 0


@contextlib.contextmanager
def _cbreak(stream: IO[str]) -> Iterator[Callable[[], str]]:
    """Single keys from a terminal without Enter; yields a non-blocking `read_key()`."""
    fd = stream.fileno()
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read_key() -> str:
        ready, _, _ = select.select([stream], [], [], 0)
        return stream.read(1) if ready else ""

    try:
        yield read_key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def live(screen: Screen) -> int:
    """The rich live view until `q` or Ctrl-C."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console(width=min(WIDTH, Console().width))

    def render() -> Text:
        note = "finished; q quits" if screen.finished() else "q quits"
        text = Text("\n".join([*screen.lines(), note]))
        text.stylize("bold", 0, text.plain.find("\n"))
        for word, style in STYLES:
            text.highlight_words([word], style)
        return text

    try:
        with (
            _cbreak(sys.stdin) as read_key,
            Live(render(), console=console, screen=False, auto_refresh=False) as view,
        ):
            while True:
                deadline = time.monotonic() + REFRESH_S
                while time.monotonic() < deadline:
                    if read_key() in ("q", "Q"):
                        return 0
                    threading.Event().wait(0.05)
                view.update(render(), refresh=True)
    except KeyboardInterrupt:
        return 0


def watch(path: Path, *, tty_out: bool | None = None) -> int:
    """`ctl watch`: live on a terminal, plain lines otherwise."""
    client = SlurmClient(SubprocessRunner())
    screen = Screen(path, client)
    interactive = sys.stdout.isatty() and sys.stdin.isatty() if tty_out is None else tty_out
    if interactive:
        return live(screen)
    try:
        return plain(screen, sys.stdout)
    except KeyboardInterrupt:
        return 0
