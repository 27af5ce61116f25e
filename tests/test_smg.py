"""frontend=smg: the gateway's command line, its own metrics port, the admin key passed by name
only, the registration plan, and the authorized client (unit level; the real SMG runs in
tests/slurm/test_e2e_smg.py)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest

from orchestrator.config.schema import RootConfig
from orchestrator.config.validate import validate
from orchestrator.core.effects import RequestsHttp
from orchestrator.frontends.control_key import KEY_ENV_REF, authorized
from orchestrator.launchers import materialize
from orchestrator.plan.build import build_plan
from orchestrator.render.dryrun import render_text
from orchestrator.rundir.secrets import ADMIN_KEY_ENV
from tests.fakes import FakeHttp

Compose = Callable[..., RootConfig]
SMG = ("+model=gpt_oss_120b", "frontend=smg", "engine=sglang")


def test_gateway_starts_with_no_workers_on_its_own_ports(compose: Compose) -> None:
    plan = build_plan(compose(*SMG))
    front = plan.process("frontend")
    argv = list(front.argv)
    assert argv[:2] == ["python3", "-c"]  # the admin key is added inside (control_key)
    assert argv[3:6] == [ADMIN_KEY_ENV, "smg.launch_router", "--pd-disaggregation"]
    assert argv[argv.index("--host") + 1] == "{node_ip:0}" and "--port" in argv
    metrics = front.ports["metrics"]
    assert argv[argv.index("--prometheus-port") + 1] == f"{{port:{metrics}}}"
    assert not any(a in argv for a in ("--worker-urls", "--prefill", "--decode"))
    assert plan.readiness.ready_path == "/readiness"


def test_regular_mode_when_aggregated(compose: Compose) -> None:
    argv = build_plan(compose(*SMG, "deployment=aggregated")).process("frontend").argv
    assert "--pd-disaggregation" not in argv


def test_admin_key_travels_by_name_only(compose: Compose) -> None:
    front = build_plan(compose(*SMG, "frontend.admin_key_env=SMG_KEY")).process("frontend")
    assert front.argv[:2] == ("python3", "-c") and front.argv[3:5] == (
        "SMG_KEY",
        "smg.launch_router",
    )
    assert front.env[KEY_ENV_REF] == "SMG_KEY"
    default = build_plan(compose(*SMG)).process("frontend")  # the run's own key by default
    assert default.argv[3] == default.env[KEY_ENV_REF] == ADMIN_KEY_ENV


@pytest.mark.parametrize("value", ["my secret", "sk-abc=1", "$X"])
def test_admin_key_env_must_be_a_variable_name(compose: Compose, value: str) -> None:
    cfg = compose(*SMG)  # cached: replaced, never mutated
    cfg = dataclasses.replace(cfg, frontend=dataclasses.replace(cfg.frontend, admin_key_env=value))
    (issue,) = [i for i in validate(cfg) if i.key == "frontend.admin_key_env"]
    assert "export SMG_ADMIN_KEY" in issue.fix


def test_sglang_engine_lists_smg_and_dynamo_does_not(compose: Compose) -> None:
    assert validate(compose(*SMG)) == []
    issues = validate(compose("+model=gpt_oss_120b", "frontend=smg"))
    assert [i.key for i in issues] == ["frontend.kind"]


def test_dry_run_lists_the_registration_plan(compose: Compose) -> None:
    cfg = compose(*SMG, "frontend.admin_key_env=SMG_KEY")
    plan = build_plan(cfg)
    request = materialize(
        plan, "submitit", python="python3", overrides=[], git_sha="abc1234", cwd="/work"
    )
    text = render_text(plan, request, config_yaml="", overrides=())
    assert "POST http://{node_ip:0}:8000/workers" in text and "SMG gate" in text
    assert "/workers needs Authorization: Bearer $SMG_KEY (401 without)" in text
    prefill = json.loads(text.split("prefill-0: ", 1)[1].splitlines()[0])
    assert prefill["worker_type"] == "prefill" and prefill["bootstrap_port"]


def test_authorized_client_sends_the_bearer_key() -> None:
    http = authorized(RequestsHttp(), "K", {"K": "s3"})
    assert isinstance(http, RequestsHttp)
    assert http._session.headers["Authorization"] == "Bearer s3"
    fake = FakeHttp({})
    assert authorized(fake, "K", {"K": "s3"}) is fake  # fakes take no headers
    assert authorized(RequestsHttp(), "", {}) is not None
