"""Static checks that keep the code base honest: strict typing, ruff (lint and format) and
shellcheck-clean scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_orchestrator_is_strictly_typed() -> None:
    pytest.importorskip("mypy")
    res = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(
    "script", sorted(p.name for p in (REPO / "scripts").iterdir() if p.suffix in (".sh", ".sbatch"))
)
def test_scripts_are_shellcheck_clean(script: str) -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    res = subprocess.run(
        [shellcheck, "-S", "warning", "-x", str(REPO / "scripts" / script)],
        cwd=REPO / "scripts",
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(args: list[str]) -> None:
    """`ruff check` and `ruff format --check` over everything Python in the repository."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed (it is in the test extra: pip install -e .[test])")
    res = subprocess.run(
        [ruff, *args, "orchestrator", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
