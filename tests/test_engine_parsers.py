"""Every engine argv of every conf option, model and experiment goes through that engine's own
parser (SGLang's for engine=sglang, Dynamo's dynamo.sglang parsing for the default engine,
dynamo.mocker's for engine=mocker), one subprocess per parser for all of them; and a bad flag is
refused before submission naming the process, the flag and the config key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config.load import CONF_DIR
from orchestrator.config.schema import RootConfig
from orchestrator.core.effects import CommandResult, SubprocessRunner
from orchestrator.core.errors import InvalidConfig
from orchestrator.engines import dynamo_check, sglang_check
from orchestrator.plan.build import build_plan
from tests.test_catalog import EXPERIMENTS
from tests.test_config_compose import OPTIONS, overrides_for

REPO = Path(__file__).resolve().parent.parent
Compose = Callable[..., RootConfig]
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
ENGINES = {
    "dynamo_sglang": (),
    "sglang": ("engine=sglang", "frontend=sglang_router"),
    "mocker": ("engine=mocker",),
}
MODULES = {
    "sglang": sglang_check.LAUNCH_MODULE,
    "dynamo_sglang": dynamo_check.DYNAMO_SGLANG,
    "mocker": dynamo_check.MOCKER,
}


def cases() -> list[tuple[str, tuple[str, ...]]]:
    """(label, overrides): every conf option, every model x engine, every experiment x engine."""
    found = [(o, overrides_for(o)) for o in OPTIONS if not o.startswith("+model=")]
    for model in MODELS:
        found += [(f"{model}/{e}", (f"+model={model}", *extra)) for e, extra in ENGINES.items()]
    for experiment, model in EXPERIMENTS.items():
        for engine, extra in ENGINES.items():
            if engine != "mocker":  # the mocker is one process: it cannot span nodes
                found.append(
                    (
                        f"{experiment}/{engine}",
                        (f"+model={model}", f"+experiment={experiment}", *extra),
                    )
                )
    return found


@pytest.fixture(scope="module")
def argvs(compose: Compose) -> dict[str, dict[str, list[str]]]:
    """Engine kind -> {"<case>|<process>": argv after `-m <module>`} over every case."""
    out: dict[str, dict[str, list[str]]] = {kind: {} for kind in MODULES}
    for label, overrides in cases():
        plan = build_plan(compose(*overrides))
        for kind, module in MODULES.items():
            for name, argv in sglang_check.sglang_argvs(plan, module).items():
                out[kind][f"{label}|{name}"] = argv
    return out


def python_with(kind: str) -> str:
    found = (
        dynamo_check.dynamo_sglang_python(os.environ)
        if kind == "dynamo_sglang"
        else sglang_check.sglang_python(os.environ)
        if kind == "sglang"
        else sys.executable
    )
    if found is None:
        pytest.skip(f"no interpreter for the {kind} parser (scripts/install.sh --with-sglang)")
    return str(found)


def parse(kind: str, argvs: dict[str, list[str]]) -> dict[str, list[str]]:
    python = python_with(kind)
    if kind == "sglang":
        return sglang_check.parse_in_subprocess(python, argvs, SubprocessRunner())
    functions = (
        dynamo_check.DYNAMO_SGLANG_FUNCTIONS
        if kind == "dynamo_sglang"
        else dynamo_check.MOCKER_FUNCTIONS
    )
    found = dynamo_check.run_parser(python, functions, argvs, SubprocessRunner())
    if isinstance(found, str):
        pytest.skip(f"the {kind} parser does not load in {python}: {found}")
    return found


def test_every_engine_is_exercised(argvs: dict[str, dict[str, list[str]]]) -> None:
    assert all(len(found) >= 10 for found in argvs.values()), {k: len(v) for k, v in argvs.items()}
    assert any(k.startswith("deepseek_r1_wideep/dynamo_sglang|") for k in argvs["dynamo_sglang"])


@pytest.mark.parametrize("kind", sorted(MODULES))
def test_the_engines_own_parser_accepts_every_generated_argv(
    argvs: dict[str, dict[str, list[str]]], kind: str
) -> None:
    errors = parse(kind, argvs[kind])
    assert set(errors) == set(argvs[kind])
    rejected = {name: found for name, found in errors.items() if found}
    assert rejected == {}


@pytest.mark.parametrize(
    ("kind", "extra", "message"),
    [
        ("dynamo_sglang", ["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        ("dynamo_sglang", ["--dyn-tool-call-parser", "nope"], "--dyn-tool-call-parser"),
        ("dynamo_sglang", ["--cuda-graph-bs", "8"], "ambiguous option: --cuda-graph-bs"),
        ("dynamo_sglang", ["--context-len", "8"], "abbreviated flag name"),
        ("mocker", ["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        ("mocker", ["--speedup-ratio", "fast"], "argument --speedup-ratio"),
    ],
)
def test_the_engines_own_parser_rejects(
    argvs: dict[str, dict[str, list[str]]], kind: str, extra: list[str], message: str
) -> None:
    base = next(v for k, v in argvs[kind].items() if k.endswith("|prefill-0"))
    (error,) = parse(kind, {"bad": [*base, *extra]})["bad"]
    assert message in error


@pytest.mark.parametrize(
    ("engine", "override", "key"),
    [
        ((), "+decode.args.no-such-flag=1", "decode.args.no-such-flag"),
        (("engine=mocker",), "prefill.extra_args=[--no-such-flag]", "prefill.extra_args"),
    ],
)
def test_cli_refuses_a_bad_flag_before_submitting(
    tmp_path: Path, engine: tuple[str, ...], override: str, key: str
) -> None:
    python_with("mocker" if engine else "dynamo_sglang")
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "+model=gpt_oss_120b",
            *engine,
            "launcher=local",
            override,
            f"run_dir={run_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
    assert f"{key}=--no-such-flag" in proc.stderr
    assert "rejects the argv of" in proc.stderr and "unrecognized arguments" in proc.stderr
    assert not run_dir.exists()  # nothing created, nothing submitted


class ScriptedRunner:
    """A CommandRunner answering every command with one scripted result."""

    def __init__(self, stdout: str, returncode: int = 0, stderr: str = "") -> None:
        self.answer = (returncode, stdout, stderr)
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], *, timeout: float = 60.0, **_: Any) -> CommandResult:
        self.calls.append(list(argv))
        return CommandResult(tuple(argv), *self.answer)


def test_an_interpreter_without_dynamo_skips_with_one_note(
    compose: Compose, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dynamo_check, "_skipped", set())
    monkeypatch.setattr(dynamo_check, "dynamo_sglang_python", lambda env: "/venv/bin/python")
    cfg = compose("+model=gpt_oss_120b", "+decode.args.no-such-flag=1")
    runner = ScriptedRunner(json.dumps({"missing": "No module named 'dynamo'"}))
    for _ in range(2):
        found = dynamo_check.dynamo_sglang_argv_issues_many([(cfg, build_plan(cfg))], runner=runner)
        assert found == [[]]
    err = capsys.readouterr().err
    assert err.count("skipped checking 2 dynamo.sglang command line(s)") == 1
    assert "No module named 'dynamo'" in err and len(runner.calls) == 2  # one run per check


def test_a_parser_that_does_not_run_is_a_config_error(compose: Compose) -> None:
    cfg = compose("+model=gpt_oss_120b")
    runner = ScriptedRunner("", returncode=1, stderr="Traceback ...\nSegmentation fault")
    with pytest.raises(InvalidConfig, match="the parser did not run: .*Segmentation fault"):
        dynamo_check.dynamo_sglang_argv_issues_many([(cfg, build_plan(cfg))], env={}, runner=runner)


class PrefillRejecter:
    """A parser run that rejects every prefill argv it is given (keys are chosen by the caller)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, list[str]]] = []

    def run(self, argv: Sequence[str], *, stdin: str = "", **_: Any) -> CommandResult:
        argvs = json.loads(stdin)
        self.calls.append(argvs)
        errors = {
            k: ["unrecognized arguments: --x"] if "prefill" in a else [] for k, a in argvs.items()
        }
        return CommandResult(tuple(argv), 0, json.dumps({"errors": errors}), "")


def test_every_argv_of_every_plan_goes_in_one_subprocess(compose: Compose) -> None:
    one = compose("+model=gpt_oss_120b", "prefill.workers=2", "decode.workers=2")
    two = compose("+model=gpt_oss_120b", "decode.workers=2")
    runner = PrefillRejecter()
    found = dynamo_check.dynamo_sglang_argv_issues_many(
        [(one, build_plan(one)), (two, build_plan(two)), (one, build_plan(one))],
        env={},
        runner=runner,
    )
    (call,) = runner.calls  # one interpreter start for a whole sweep
    assert len(call) == 2  # one prefill and one decode argv: the others differ only in ports
    assert [[i.key for i in issues] for issues in found] == [["engine argv"]] * 3
    assert "prefill-0, prefill-1" in found[0][0].problem and "prefill-0" in found[1][0].problem
