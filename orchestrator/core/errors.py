"""Error hierarchy. The CLI prints these as one message, without a traceback unless debug=true
(exit code 2 for bad input, 1 at runtime)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class OrchestratorError(Exception):
    """Base class of every error the orchestrator reports to the user."""

    exit_code = 1


@dataclass(frozen=True)
class Issue:
    """One configuration problem: which key, what was found, and what to do about it."""

    key: str
    found: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}={self.found}: {self.problem} ({self.fix})"


class InvalidConfig(OrchestratorError):
    """The configuration cannot work; raised before anything is submitted or started."""

    exit_code = 2

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = tuple(issues)
        lines = [f"invalid configuration ({len(self.issues)} problem(s)):"]
        lines += [f"  - {issue}" for issue in self.issues]
        super().__init__("\n".join(lines))


class UnresolvedPlaceholder(OrchestratorError):
    """A late-bound placeholder ({node_ip:1}, {job_id}, ...) had no value when the plan was bound."""


class SubmissionError(OrchestratorError):
    """A Slurm command failed (sbatch, scancel, ...)."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(argv)} failed with exit code {returncode}: {stderr.strip()}")


class WorkersNotReady(OrchestratorError):
    """The deployment did not become ready before the deadline."""


class ProcessFailed(OrchestratorError):
    """A process of the deployment exited while it should have been running."""
