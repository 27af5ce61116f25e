"""Where the helper tools live: aiperf and lm_eval (benchmark clients) and the SGLang interpreter (argv check).

One lookup order for every tool, first hit wins:
1. an explicit value: a config key (`benchmark.binary`) or an environment variable
   (`$ORCHESTRATOR_SGLANG_PYTHON`), taken as given (it may be a path only valid on the nodes);
2. the tool's name on `PATH` (`shutil.which`);
3. the venv `scripts/install.sh` creates, next to the checkout (`<repo>/.venvs/<tool>/bin/...`)
   or next to the running venv (`<sys.prefix>/../.venvs/<tool>/bin/...`, install.sh's layout
   when the orchestrator itself is installed from a wheel into `<dir>/.venv`).
Nothing here assumes a checkout exists: in a wheel install `<repo>` is site-packages' parent,
where no `.venvs` is found, and the lookup falls through to the next candidate.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]  # the repo root in a checkout (orchestrator/core/..)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """A helper executable and where install.sh puts it (relative to a `.venvs` directory)."""

    command: str  # looked up on PATH
    venv_path: str  # e.g. "aiperf/bin/aiperf" under .venvs/


AIPERF = Tool(command="aiperf", venv_path="aiperf/bin/aiperf")
LM_EVAL = Tool(command="lm_eval", venv_path="lm_eval/bin/lm_eval")
# Not `python` on PATH: that is any interpreter; only install.sh's sglang venv is meant.
SGLANG_PYTHON = Tool(command="", venv_path="sglang/bin/python")


def install_locations(tool: Tool) -> list[Path]:
    """install.sh's location of `tool`: next to the checkout, then next to the running venv."""
    bases = [CHECKOUT / ".venvs", Path(sys.prefix).resolve().parent / ".venvs"]
    return list(dict.fromkeys(base / tool.venv_path for base in bases))


def find_tool(
    tool: Tool, *, explicit: str = "", env: Mapping[str, str] | None = None, env_var: str = ""
) -> str | None:
    """The executable for `tool` by the lookup order above; None when none exists."""
    if explicit:
        return explicit
    if env_var and env is not None and env.get(env_var):
        return env[env_var]
    on_path = shutil.which(tool.command) if tool.command else None
    if on_path:
        return on_path
    return next((str(p) for p in install_locations(tool) if p.exists()), None)


def tool_or_default(tool: Tool, *, explicit: str = "") -> str:
    """`find_tool`, else install.sh's first location (so a missing tool's error names it)."""
    return find_tool(tool, explicit=explicit) or str(install_locations(tool)[0])
