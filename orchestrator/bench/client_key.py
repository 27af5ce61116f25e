"""The clients' key (`frontend.api_key_env`) handed to the benchmark clients, never on argv.

Every driver of the run exports the key as ORCHESTRATOR_API_KEY (orchestrator.rundir.secrets);
a client step inherits it. The clients read it differently:
- lm-eval 0.4 (`local-completions`, `local-chat-completions`: `api_key` is `$OPENAI_API_KEY`)
  and sglang.bench_serving (`benchmark/serving.py` `get_auth_headers()`: `$OPENAI_API_KEY`)
  read it from the environment: a `sh -c` prefix copies the variable, by name only.
- aiperf 0.13 takes it only as `--api-key` (an ambient `$OPENAI_API_KEY` is ignored unless the
  config already holds a redacted key: `common/endpoint_credentials.py`). Its command is a
  Python console script, so it runs as `python -c RUN_WITH_API_KEY VAR SCRIPT ARGS...`: the key
  is appended to `sys.argv` inside the process (as for the router's admin key,
  frontends/control_key.py), which leaves /proc/PID/cmdline without it. aiperf hands the key to
  its own services through `AIPERF_INJECTED_API_KEY`, not argv (`orchestrator/local_executor.py`).
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.rundir.secrets import API_KEY_ENV

OPENAI_KEY_FROM_ENV = f'export OPENAI_API_KEY="${API_KEY_ENV}"; exec "$@"'
RUN_WITH_API_KEY = (
    "import os, runpy, sys; "
    "key = os.environ.pop(sys.argv[1], ''); "
    "key or sys.exit('orchestrator: no client API key in $' + sys.argv[1]); "
    "sys.argv = [sys.argv[2], *sys.argv[3:], '--api-key', key]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def with_openai_key(argv: list[str]) -> list[str]:
    """`argv` run with `$OPENAI_API_KEY` set from the run's client key (by name, in the shell)."""
    return ["sh", "-c", OPENAI_KEY_FROM_ENV, "sh", *argv]


def script_python(script: str) -> str:
    """The interpreter of a Python console script: its `#!` line, else the `python` beside it
    (a venv's layout; the script may be a path valid only on the nodes)."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline().decode(errors="replace").strip()
    except OSError:
        first = ""
    if first.startswith("#!") and "python" in first and " " not in first[2:].strip():
        return first[2:].strip()
    return str(Path(script).parent / "python")


def with_api_key_arg(script: str, args: list[str]) -> list[str]:
    """`script args --api-key <key>`, the key added inside the process from the run's variable."""
    return [script_python(script), "-c", RUN_WITH_API_KEY, API_KEY_ENV, script, *args]
