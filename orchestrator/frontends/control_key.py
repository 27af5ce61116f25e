"""The control-plane admin key of sglang-router and SMG, kept off every command line.

Both take it only as `--control-plane-api-keys id:name:admin:<key>` (sglang-router 0.3.2
`router_args.py`, SMG 1.13 `router_args.py`: argparse, no environment variable, no file), and
`/proc/PID/cmdline` is readable by every user of the node. Both launchers are Python
(`launch_router.main()` parses `sys.argv[1:]`), so the step runs `python -c LAUNCH_WITH_KEY
VAR MODULE ARGS...`: the key is read from `$VAR` and appended to `sys.argv` inside the process,
which changes nothing in /proc/PID/cmdline; the variable is dropped from os.environ before the
router starts (its initial environment, /proc/PID/environ, is readable by its owner only).

The key is the run's own (RUN_DIR/secrets/admin_key, exported by the driver as
ORCHESTRATOR_ADMIN_KEY) unless `frontend.admin_key_env` names a variable holding your own.
With a key set, `POST/GET/DELETE /workers` without `Authorization: Bearer <key>` answer 401.

The clients' key (`frontend.api_key_env`, the routers' `--api-key`: `/v1/...` without
`Authorization: Bearer <key>` answer 401) goes the same way: copied into RUN_DIR/secrets/api_key
at launch, exported by every driver of the run as ORCHESTRATOR_API_KEY, appended inside the
process by LAUNCH_WITH_KEYS.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from orchestrator.config.schema import RootConfig
from orchestrator.core.effects import HttpClient
from orchestrator.plan.model import Plan
from orchestrator.rundir.secrets import ADMIN_KEY_ENV, API_KEY_ENV, placeholder

if TYPE_CHECKING:
    from orchestrator.runtime.hooks import DriverView

# The control-plane key format is id:name:role:key; this is the orchestrator's admin entry.
ADMIN_KEY_ID = "orchestrator:orchestrator:admin"
# The name of the variable holding the key, in the frontend's and the workers' plan environment
# (so that the driver of an attached job, which has no frontend process, finds it).
KEY_ENV_REF = "ORCHESTRATOR_ADMIN_KEY_ENV"
LAUNCH_WITH_KEY = (
    "import os, runpy, sys; "
    "key = os.environ.pop(sys.argv[1], ''); "
    "key or sys.exit('orchestrator: no control-plane admin key in $' + sys.argv[1]); "
    f"sys.argv = [sys.argv[2], *sys.argv[3:], '--control-plane-api-keys', '{ADMIN_KEY_ID}:' + key]; "
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)

# As LAUNCH_WITH_KEY, with the clients' key from a second variable: VAR CLIENT_VAR MODULE ARGS...
LAUNCH_WITH_KEYS = (
    "import os, runpy, sys; "
    "key, api = (os.environ.pop(name, '') for name in sys.argv[1:3]); "
    "key or sys.exit('orchestrator: no control-plane admin key in $' + sys.argv[1]); "
    "api or sys.exit('orchestrator: no client API key in $' + sys.argv[2]); "
    f"sys.argv = [sys.argv[3], *sys.argv[4:], '--control-plane-api-keys', '{ADMIN_KEY_ID}:' + key, "
    "'--api-key', api]; "
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


def key_env_name(cfg: RootConfig) -> str:
    """The variable the admin key is read from."""
    return cfg.frontend.admin_key_env or ADMIN_KEY_ENV


def client_key_env(cfg: RootConfig) -> str:
    """The variable the clients' key reaches the frontend in ('' when the endpoint is open)."""
    return API_KEY_ENV if cfg.frontend.api_key_env else ""


def keyed_launch(
    python: str, module: str, args: list[str], env_name: str, client_env: str = ""
) -> list[str]:
    """`python -m module args` with `--control-plane-api-keys` (and `--api-key` from
    `$client_env` when given) added inside the process."""
    if client_env:
        return [python, "-c", LAUNCH_WITH_KEYS, env_name, client_env, module, *args]
    return [python, "-c", LAUNCH_WITH_KEY, env_name, module, *args]


def authorized(http: HttpClient, env_name: str, env: dict[str, str] | None = None) -> HttpClient:
    """`http` sending the admin key from `$env_name` (unchanged without a key or for clients that
    cannot add headers, such as the unit tests' fakes)."""
    key = (os.environ if env is None else env).get(env_name, "") if env_name else ""
    with_headers: Any = getattr(http, "with_headers", None)
    if not key or with_headers is None:
        return http
    client: HttpClient = with_headers({"Authorization": f"Bearer {key}"})
    return client


class AuthorizedView:
    """The driver as the registration hooks see it, with the authorized HTTP client."""

    def __init__(self, driver: DriverView, http: HttpClient) -> None:
        self._driver, self.http = driver, http

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)


def planned_key_env(plan: Plan) -> str:
    """The key's variable as the plan names it ('' for a plan without a key)."""
    return next((p.env[KEY_ENV_REF] for p in plan.processes if KEY_ENV_REF in p.env), "")


def planned_client_key(plan: Plan) -> bool:
    """The plan's router takes the clients' key (frontend.api_key_env)."""
    return any(p.argv[2:3] == (LAUNCH_WITH_KEYS,) for p in plan.processes)


def key_lines(env_name: str, client_key: bool = False) -> list[str]:
    """Dry-run and status lines saying how the control plane and the client endpoint are locked."""
    clients = (
        f"clients: /v1/... needs Authorization: Bearer {placeholder('api_key')} (401 "
        f"without; yours, from frontend.api_key_env)"
        if client_key
        else "clients: open to the cluster network (no frontend.api_key_env)"
    )
    if not env_name:
        return ["control plane: open (no admin key)", clients]
    shown = placeholder("admin_key") if env_name == ADMIN_KEY_ENV else f"${env_name}"
    return [
        f"control plane: /workers needs Authorization: Bearer {shown} (401 without); the "
        f"key reaches the router from ${env_name}, added to its argv inside the process",
        clients,
    ]
