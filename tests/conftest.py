"""Shared fixtures of the unit suite: `--update-golden`, cached composition, plan helpers, and a
config search path without the developer's own config dirs."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.config.load import PATH_ENV, compose_config, user_config_dirs
from orchestrator.config.schema import RootConfig
from orchestrator.plan.build import build_plan
from orchestrator.plan.model import Plan

GOLDEN_DIR = Path(__file__).parent / "golden"

# The suite composes the packaged configs only: a developer's own $ORCHESTRATOR_CONFIG_PATH or
# ~/.config/orchestrator (searched first, orchestrator/config/load.py) would change the goldens.
# Set here, at import, so CLI subprocesses and Slurm jobs started by tests inherit it too.
os.environ.pop(PATH_ENV, None)
if user_config_dirs():
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="orchestrator-tests-xdg-")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/* from the current output instead of comparing with it",
    )


@functools.cache
def _compose_cached(overrides: tuple[str, ...]) -> RootConfig:
    # Hydra composition costs ~80 ms; many tests share a topology. Nothing mutates a RootConfig.
    return compose_config(overrides)


@pytest.fixture(scope="session")
def compose() -> Callable[..., RootConfig]:
    """compose("+model=gpt_oss_120b", "prefill.workers=2") -> RootConfig (cached per overrides)."""
    return lambda *overrides: _compose_cached(tuple(overrides))


@pytest.fixture(scope="session")
def plan_of(compose: Callable[..., RootConfig]) -> Callable[..., Plan]:
    """plan_of(*overrides) -> Plan of gpt-oss-120b with those overrides (not validated)."""
    return lambda *overrides: build_plan(compose("+model=gpt_oss_120b", *overrides))


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """golden(name, text): compare `text` with tests/golden/<name>.

    `pytest --update-golden` rewrites the file instead.
    """
    update = bool(request.config.getoption("--update-golden"))

    def check(name: str, text: str) -> None:
        path = GOLDEN_DIR / name
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        if not path.exists():
            pytest.fail(f"missing golden file {path}; create it with pytest --update-golden")
        expected = path.read_text(encoding="utf-8")
        assert text == expected, f"output differs from {path}; if intended: pytest --update-golden"

    return check
