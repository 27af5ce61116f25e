"""Dynamo 1.4.x beside the pinned 1.6.1: the GPU machine's torch 2.11 fits SGLang 0.5.16 only, whose
Dynamo is 1.4.x (scripts/wheelhouse/dynamo-1.4.2.toml). Seen with ai-dynamo 1.4.2 on CPU (frontend
+ P/D mocker from our argv and env): DYN_TCP_RESPONSE_STREAM_HOST must name an interface there, and
its dynamo.sglang parsing has neither the worker-router stage nor SGLang compat aliases."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.config.schema import RootConfig
from orchestrator.core.effects import SubprocessRunner
from orchestrator.engines import dynamo_check
from orchestrator.plan.build import build_plan
from orchestrator.plan.placeholders import node_ip

Compose = Callable[..., RootConfig]


def frontend_env(cfg: RootConfig) -> dict[str, str]:
    (front,) = [p for p in build_plan(cfg).processes if p.role == "frontend"]
    return front.env


@pytest.mark.parametrize(
    ("launcher", "expected"),
    [
        # 1.4.2 with 127.0.0.1: "build_preprocessed_routing: Generic error: Interface not found:
        # 127.0.0.1", /v1/models/{model}/ready stays 503-like (ready=false) for ever; with "lo"
        # (and on 1.6.1 with either) the P/D mocker deployment is ready in ~1 s and serves.
        ("local", "lo"),
        ("sbatch", node_ip(0)),
        ("submitit", node_ip(0)),
    ],
)
def test_the_frontend_names_loopback_by_interface(
    compose: Compose, launcher: str, expected: str
) -> None:
    cfg = compose("+model=gpt_oss_120b", f"launcher={launcher}")
    assert frontend_env(cfg)["DYN_TCP_RESPONSE_STREAM_HOST"] == expected


def test_frontend_env_still_overrides_the_stream_host(compose: Compose) -> None:
    cfg = compose(
        "+model=gpt_oss_120b", "launcher=sbatch", "+frontend.env.DYN_TCP_RESPONSE_STREAM_HOST=ib0"
    )
    assert frontend_env(cfg)["DYN_TCP_RESPONSE_STREAM_HOST"] == "ib0"


# Just enough of Dynamo's and SGLang's modules for the parser check to import: the groups add a
# few real flag names; `new` adds what Dynamo >= 1.5 has and 1.4.x lacks.
FAKE = {
    "dynamo/__init__.py": "",
    "dynamo/common/__init__.py": "",
    "dynamo/common/configuration/__init__.py": "",
    "dynamo/common/configuration/groups/__init__.py": "",
    "dynamo/common/configuration/groups/runtime_args.py": """
        class DynamoRuntimeArgGroup:
            def add_arguments(self, parser):
                parser.add_argument("--discovery-backend", choices=["etcd", "file"])
        """,
    "dynamo/sglang/__init__.py": "",
    "dynamo/sglang/backend_args.py": """
        class DynamoSGLangArgGroup:
            def add_arguments(self, parser):
                parser.add_argument("--dyn-tool-call-parser", choices=["harmony"])
        """,
    "sglang/__init__.py": "",
    "sglang/srt/__init__.py": "",
    "sglang/srt/server_args.py": """
        class ServerArgs:
            @staticmethod
            def add_cli_args(parser):
                parser.add_argument("--model-path")
                parser.add_argument("--tp-size", type=int)
                parser.add_argument("--load-format", choices=["auto"])
        """,
}
NEW = {
    "dynamo/common/configuration/groups/router_args.py": """
        def add_worker_router_arguments(parser):
            parser.add_argument("--router-temperature")

        def parse_worker_router_config(rest):
            out = []
            skip = False
            for i, word in enumerate(rest):
                if skip:
                    skip = False
                elif word == "--router-temperature":
                    skip = True
                else:
                    out.append(word)
            return None, out
        """,
    "dynamo/sglang/_compat.py": """
        def add_sglang_cli_compat(parser):
            parser.add_argument("--old-alias")
        """,
}


def fake_python(root: Path, files: dict[str, str]) -> str:
    """An interpreter (a shell wrapper) that imports the fake packages in `root`."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    wrapper = root / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={root} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.mark.parametrize(
    ("version", "files", "errors"),
    [
        # 1.4.x: stage 1 and SGLang's plain parser; a 1.6 flag is unknown there.
        (
            "1.4",
            FAKE,
            {
                "ok": [],
                "bad": ["unrecognized arguments: --nope"],
                "new-only": ["unrecognized arguments: --router-temperature 1"],
            },
        ),
        (
            "1.6",
            {**FAKE, **NEW},
            {"ok": [], "bad": ["unrecognized arguments: --nope"], "new-only": []},
        ),
    ],
)
def test_the_dynamo_sglang_check_runs_on_both_dynamo_lines(
    tmp_path: Path, version: str, files: dict[str, str], errors: dict[str, list[str]]
) -> None:
    python = fake_python(tmp_path / version, files)
    ok = [
        "--model-path",
        "m",
        "--tp-size",
        "1",
        "--discovery-backend",
        "file",
        "--dyn-tool-call-parser",
        "harmony",
        "--load-format",
        "gms",
    ]
    argvs = {"ok": ok, "bad": [*ok, "--nope"], "new-only": [*ok, "--router-temperature", "1"]}
    found = dynamo_check.run_parser(
        python, dynamo_check.DYNAMO_SGLANG_FUNCTIONS, argvs, SubprocessRunner()
    )
    assert found == errors
