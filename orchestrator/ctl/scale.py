"""`ctl scale RUN_DIR GROUP.workers=N ...`: validate, then attach a job with more workers or
remove single workers (orchestrator.elastic)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestrator.ctl.status import run_view
from orchestrator.slurm.client import SlurmClient


def scale(
    run_dir: Path, items: Sequence[str], client: SlurmClient | None = None, *, wait: bool = True
) -> int:
    """Validate a scale request (exit 2 before anything is submitted), submit the attached job,
    wait for its workers to serve through the run's frontend (`wait`; the autoscaler's executor,
    orchestrator.elastic.autoscale, watches the job itself)."""
    # Scaling plans (OmegaConf, the engines): imported only for this command, not status/stop.
    from orchestrator.elastic import scale_down
    from orchestrator.elastic import scale_up as scaling
    from orchestrator.launchers.follow import follow

    request = scaling.parse_request(items)
    view, _ = run_view(run_dir, client)
    scaling.check_ready(run_dir, view.phase)
    removals = scale_down.plan_removal(run_dir, request.counts)
    if removals:  # single workers, newest first; their drivers deregister and stop them
        print("\n".join(scale_down.remove(run_dir, removals)), flush=True)
        return 0
    job = scaling.scale_up(run_dir, request)
    print(job.job_id, flush=True)
    print(job.run_dir, flush=True)
    if not wait:
        return 0
    return follow(Path(job.run_dir), job.job_id, until_done=False)
