"""The here launcher (frontend.placement=here): a detached driver on this host (logout and
Ctrl-C do not reach it) runs the frontend and submits the worker jobs as sbatch scripts, the
ones launcher=sbatch writes, whatever launcher.kind says, so that it needs no pickled submitit
function. Chosen by the placement, never named in the config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.config.schema import PLACEMENT_HERE
from orchestrator.launchers.base import LauncherFacts, Materials, Session
from orchestrator.launchers.local import DriverRequest, driver_argv
from orchestrator.launchers.sbatch import KIND as SBATCH
from orchestrator.launchers.sbatch import LAUNCHER as SBATCH_LAUNCHER
from orchestrator.plan.model import Plan

KIND = PLACEMENT_HERE  # the launcher is named after the placement that picks it


@dataclass(frozen=True, slots=True, kw_only=True)
class HereRequest(DriverRequest):
    """The detached driver's command line."""

    kind: str = KIND

    def execute(self, session: Session) -> int:
        """Start the driver detached, then follow it."""
        return session.detached(self.argv)


@dataclass(frozen=True, slots=True, kw_only=True)
class HereLauncher(LauncherFacts):
    """Records the worker jobs' sbatch request in the plan; its own request is the driver."""

    def place(self, plan: Plan, materials: Materials) -> Plan:
        """`plan` with its driver on this host and the worker jobs' request in `serve`."""
        assert plan.serve is not None  # build_plan made a serve plan: frontend.placement=here
        workers = SBATCH_LAUNCHER.materialize(plan.serve.workers, materials)
        serve = dataclasses.replace(plan.serve, launcher=SBATCH, request=workers.to_dict())
        return dataclasses.replace(plan, serve=serve, driver_on_this_host=True)

    def materialize(self, plan: Plan, materials: Materials) -> HereRequest:
        """`python -m orchestrator.run.entry {run_dir}`, detached."""
        return HereRequest(argv=driver_argv(materials.python))

    def request_from_dict(self, data: Mapping[str, Any]) -> HereRequest:
        """Inverse of `HereRequest.to_dict`."""
        return HereRequest(argv=tuple(data["argv"]))


LAUNCHER = HereLauncher(kind=KIND, selectable=False, driver_on_this_host=True)
