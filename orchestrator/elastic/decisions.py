"""Where the run's driver gets Dynamo's planner decisions from: `DecisionSource`, a small
interface (the fake is tests/fakes.py's FakeDecisions), and `PlannerLink`, the real one: the
child process orchestrator/elastic/planner_link.py holding a `VirtualConnectorClient`, read by a
thread so that the driver's tick never blocks on it."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from orchestrator.core.errors import OrchestratorError

LINK_SCRIPT = Path(__file__).with_name("planner_link.py")
NOT_SET = -1  # PlannerDecision's value for a count the planner did not decide
RESTART_AFTER_S = 10.0  # a link that died is started again at most this often


@dataclass(frozen=True, slots=True)
class Decision:
    """One planner decision: target worker counts (NOT_SET: keep that group as it is)."""

    decision_id: int
    prefill: int
    decode: int


class DecisionSource(Protocol):
    """The planner's side of the executor."""

    def poll(self) -> Decision | None:
        """The decision published and not yet completed, if one arrived (never blocks)."""
        ...

    def complete(self, decision: Decision) -> None:
        """Tell the planner that `decision` was carried out (or cannot be: it moves on)."""
        ...

    def close(self) -> None:
        """Stop listening (teardown)."""
        ...


class PlannerLink:
    """DecisionSource through the child process `argv` (python -I planner_link.py NAMESPACE):
    decisions are read by a thread into a queue; a child that died is started again on the next
    poll (it then hands over the last unacknowledged decision again)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.argv, self.env, self.log = list(argv), dict(env), log
        self.proc: subprocess.Popen[str] | None = None
        self.decisions: queue.Queue[Decision] = queue.Queue()
        self.starts = 0
        self.started_at = -RESTART_AFTER_S  # time.monotonic() of the last start

    def poll(self) -> Decision | None:
        """The newest decision read since the last poll (None: none)."""
        dead = self.proc is None or self.proc.poll() is not None
        if dead and time.monotonic() - self.started_at >= RESTART_AFTER_S:
            self._start()
        latest = None
        while True:
            try:
                latest = self.decisions.get_nowait()
            except queue.Empty:
                return latest

    def complete(self, decision: Decision) -> None:
        """Acknowledge through the child (a dead child: its successor hands the decision over
        again and it is completed then)."""
        if self.proc is None or self.proc.stdin is None or self.proc.poll() is not None:
            return
        try:
            self.proc.stdin.write(json.dumps({"complete": decision.decision_id}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass

    def close(self) -> None:
        """End the child (its stdin closes: it shuts its runtime down), killing it if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _start(self) -> None:
        self.starts += 1
        self.started_at = time.monotonic()
        with self.log.open("a") as err:
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=self.env,
                    text=True,
                    start_new_session=True,  # the driver's stop signals are the driver's own
                )
            except OSError as exc:
                raise OrchestratorError(f"cannot start {self.argv[0]}: {exc}") from exc
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, out: IO[str]) -> None:
        for line in out:
            try:
                data = json.loads(line)
                self.decisions.put(Decision(int(data["id"]), data["prefill"], data["decode"]))
            except (ValueError, KeyError, TypeError):
                continue  # not ours (a library printing to stdout): its stderr has the story
