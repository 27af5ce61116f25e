"""Fixtures for tests that need the real Slurm testbed (scripts/slurm-testbed.sh up).

The fixture never starts the cluster: CI runs ``scripts/slurm-testbed.sh up`` first.
When ``sinfo`` cannot reach a controller the tests are skipped.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DEFAULT_LAB = "/var/lib/orchestrator-slurm-lab"


@dataclasses.dataclass(frozen=True)
class SlurmTestbed:
    nodes: tuple[str, ...]
    slurm_conf: str | None


def _resolve_slurm_conf() -> str | None:
    """Point host-side clients at the testbed config when nothing else does."""
    if os.environ.get("SLURM_CONF"):
        return os.environ["SLURM_CONF"]
    if Path("/etc/slurm/slurm.conf").exists():
        return None
    lab_conf = Path(os.environ.get("LAB", DEFAULT_LAB)) / "etc" / "slurm.conf"
    if lab_conf.exists():
        os.environ["SLURM_CONF"] = str(lab_conf)
        return str(lab_conf)
    return None


def _node_states() -> dict[str, str]:
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N %T"],
        capture_output=True,
        text=True,
        timeout=15,
        check=True,
    ).stdout
    states: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


@pytest.fixture(scope="session")
def slurm_testbed() -> SlurmTestbed:
    if shutil.which("sinfo") is None:
        pytest.skip("Slurm client tools not installed (run scripts/slurm-testbed.sh up)")
    conf = _resolve_slurm_conf()
    try:
        states = _node_states()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        pytest.skip(
            f"Slurm testbed not reachable (run scripts/slurm-testbed.sh up): {detail.strip()}"
        )
    if not states:
        pytest.skip("Slurm testbed reports no nodes (run scripts/slurm-testbed.sh up)")

    # A previous run may leave nodes briefly 'completing': wait for exact 'idle'.
    deadline = time.monotonic() + 60
    while any(s != "idle" for s in states.values()):
        if time.monotonic() > deadline:
            pytest.fail(f"testbed nodes not idle after 60 s: {states}")
        time.sleep(0.2)
        states = _node_states()
    nodes = tuple(sorted(states, key=lambda n: (len(n), n)))
    return SlurmTestbed(nodes=nodes, slurm_conf=conf)


@pytest.fixture
def slurm_jobs(slurm_testbed: SlurmTestbed) -> Iterator[list[str]]:
    """Job ids a test submitted; whatever a failed test left running is cancelled afterwards."""
    ids: list[str] = []
    yield ids
    for job in ids:
        subprocess.run(["scancel", job], capture_output=True, check=False)
