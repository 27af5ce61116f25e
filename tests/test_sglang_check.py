"""engine=sglang command lines: what engines.md asks of them, and the pre-submit check with
SGLang's own argument parser (the real one when installed: scripts/install.sh --with-sglang)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from orchestrator.config.schema import RootConfig
from orchestrator.core import tools
from orchestrator.core.effects import CommandResult, SubprocessRunner
from orchestrator.core.errors import InvalidConfig
from orchestrator.engines import sglang_check
from orchestrator.plan.build import build_plan
from orchestrator.plan.model import Plan

REPO = Path(__file__).resolve().parent.parent
DOUBLE = REPO / "tests" / "doubles" / "sglang_test_double.py"
SGLANG = ("engine=sglang", "frontend=sglang_router")
MULTINODE = (*SGLANG, "prefill.tp=16", "decode.tp=16")
TWO_TWO = (
    *SGLANG,
    "prefill.workers=2",
    "decode.workers=2",
    "decode.tp=8",
    "prefill.tp=4",
    "model.requires_equal_pd_tp=false",
)


def flag(argv: tuple[str, ...], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


# --- the generated argv against engines.md §1 -------------------------------------------------------
@pytest.mark.parametrize(
    "overrides", [SGLANG, MULTINODE, TWO_TWO, (*SGLANG, "deployment=aggregated")]
)
def test_sglang_argv_follows_the_engine_contract(
    plan_of: Callable[..., Plan], overrides: tuple[str, ...]
) -> None:
    plan = plan_of(*overrides)
    workers = [p for p in plan.processes if p.role != "frontend"]
    assert workers
    for p in workers:
        argv = p.argv
        assert argv[1:3] == ("-m", "sglang.launch_server")
        assert flag(argv, "--host") == f"{{node_ip:{p.node_index}}}"  # reachable from other nodes
        assert flag(argv, "--port") is not None  # SGLang and the router both default to 30000
        assert (
            flag(argv, "--reasoning-parser") == "gpt-oss"
            and flag(argv, "--tool-call-parser") == "gpt-oss"
        )
        assert "--tp" not in argv and flag(argv, "--tp-size") is not None  # long names only
        assert "--skip-tokenizer-init" not in argv  # behind the router the worker tokenizes
        if p.role == "prefill":
            leader = plan.process(f"prefill-{p.worker_index}")
            assert (
                flag(argv, "--disaggregation-bootstrap-port") == f"{{port:{leader.bootstrap_port}}}"
            )
        else:
            assert "--disaggregation-bootstrap-port" not in argv
        if p.rank == 0:
            assert p.url == f"http://{{node_ip:{p.node_index}}}:{flag(argv, '--port')}"
    bootstraps = [p.bootstrap_port for p in workers if p.role == "prefill" and p.rank == 0]
    assert (
        len(set(bootstraps)) == len(bootstraps) and 8998 not in bootstraps
    )  # explicit, one per prefill


def test_multinode_workers_share_a_rendezvous(plan_of: Callable[..., Plan]) -> None:
    plan = plan_of(*MULTINODE)
    for group in ("prefill", "decode"):
        ranks = [p for p in plan.processes if p.group == group]
        assert [p.rank for p in ranks] == [0, 1]
        leader = ranks[0]
        addr = f"{{node_ip:{leader.node_index}}}:{{port:{leader.ports['dist_init']}}}"
        for p in ranks:
            assert (
                flag(p.argv, "--dist-init-addr"),
                flag(p.argv, "--nnodes"),
                flag(p.argv, "--node-rank"),
            ) == (addr, "2", str(p.rank))
        assert not ranks[1].url and ranks[1].health is None  # ranks >= 1 serve no HTTP


# --- pure parts of the check ------------------------------------------------------------------------
def test_sglang_argvs_takes_the_tail_after_the_module(plan_of: Callable[..., Plan]) -> None:
    plan = plan_of(*SGLANG, f"engine.python={DOUBLE}")
    argvs = sglang_check.sglang_argvs(plan)
    assert set(argvs) == {"decode-0", "prefill-0"}
    assert argvs["prefill-0"][:2] == ["--model-path", "openai/gpt-oss-120b"]
    assert "{" not in " ".join(argvs["prefill-0"])  # placeholders bound to stand-ins
    assert sglang_check.sglang_argvs(plan_of()) == {}  # dynamo.sglang is not checked


@pytest.mark.parametrize(
    ("error", "flag_"),
    [
        ("unrecognized arguments: --no-such-flag", "--no-such-flag"),
        ("unrecognized arguments: --a --b", "--a"),
        ("argument --tp-size/--tensor-parallel-size: invalid int value: 'four'", "--tp-size"),
        (
            "argument --disaggregation-mode: invalid choice: 'x' (choose from 'null', 'prefill', 'decode')",
            "--disaggregation-mode",
        ),
        ("ValueError: something", ""),
    ],
)
def test_offending_flag(error: str, flag_: str) -> None:
    assert sglang_check.offending_flag(error) == flag_


def test_issues_name_the_processes_the_flag_and_its_config_key(
    compose: Callable[..., RootConfig],
) -> None:
    cfg = compose(
        "+model=gpt_oss_120b", *SGLANG, "prefill.workers=2", "prefill.extra_args=[--no-such-flag]"
    )
    plan = build_plan(cfg)
    bad = ["unrecognized arguments: --no-such-flag"]
    issues = sglang_check.issues_from(
        cfg, plan, {"prefill-0": bad, "prefill-1": bad, "decode-0": []}
    )
    (issue,) = issues
    assert (issue.key, issue.found) == ("prefill.extra_args", "--no-such-flag")
    assert "prefill-0, prefill-1" in issue.problem and "unrecognized arguments" in issue.problem


def test_skipped_check_is_announced_once(
    compose: Callable[..., RootConfig],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sglang_check, "_skip_reported", False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(tools, "install_locations", lambda tool: [Path("/nonexistent/python")])
    cfg = compose("+model=gpt_oss_120b", *SGLANG, "prefill.extra_args=[--no-such-flag]")
    for _ in range(2):
        sglang_check.check_sglang_argv(cfg, build_plan(cfg), env={})
    err = capsys.readouterr().err
    assert err.count("sglang is not installed: skipped checking 2 SGLang command line(s)") == 1
    dynamo = compose("+model=gpt_oss_120b")
    monkeypatch.setattr(sglang_check, "_skip_reported", False)
    sglang_check.check_sglang_argv(dynamo, build_plan(dynamo), env={})
    assert capsys.readouterr().err == ""  # nothing to check, nothing said


def test_broken_sglang_interpreter_is_a_config_error(compose: Callable[..., RootConfig]) -> None:
    cfg = compose("+model=gpt_oss_120b", *SGLANG)
    with pytest.raises(InvalidConfig, match="SGLang's parser did not run"):
        sglang_check.parse_in_subprocess(
            sys.executable, sglang_check.sglang_argvs(build_plan(cfg)), SubprocessRunner()
        )


class ParserStub:
    """Stands in for the SGLang interpreter: records each batch, rejects argvs with a bad flag."""

    def __init__(self) -> None:
        self.batches: list[dict[str, list[str]]] = []

    def run(self, argv: Sequence[str], *, stdin: str = "", **_: object) -> CommandResult:
        batch = json.loads(stdin)
        self.batches.append(batch)
        errors = {
            k: ["unrecognized arguments: --bad"] if "--bad" in a else [] for k, a in batch.items()
        }
        return CommandResult(tuple(argv), 0, json.dumps(errors), "")


def test_many_plans_are_checked_in_one_subprocess_each_argv_once(
    compose: Callable[..., RootConfig],
) -> None:
    good = compose("+model=gpt_oss_120b", *SGLANG, "prefill.workers=2")
    same = compose("+model=gpt_oss_120b", *SGLANG, "decode.workers=2")
    bad = compose("+model=gpt_oss_120b", *SGLANG, "decode.extra_args=[--bad]")
    stub = ParserStub()
    items = [(cfg, build_plan(cfg)) for cfg in (good, same, bad)]
    issues = sglang_check.sglang_argv_issues_many(
        items, env={"ORCHESTRATOR_SGLANG_PYTHON": sys.executable}, runner=stub
    )
    (batch,) = stub.batches  # one subprocess for the three plans
    every = [tuple(a) for _, plan in items for a in sglang_check.sglang_argvs(plan).values()]
    assert len(batch) == len(set(every)) < len(every)  # a repeated command line is parsed once
    assert issues[0] == [] and issues[1] == []
    (issue,) = issues[2]
    assert issue.key == "decode.extra_args" and "decode-0" in issue.problem


# --- the real parser ----------------------------------------------------------------------------------
def sglang_python() -> str:
    found = sglang_check.sglang_python(os.environ)
    if found is None:
        pytest.skip("sglang not installed (scripts/install.sh --with-sglang)")
    return str(found)


@pytest.fixture(scope="module")
def parsed(plan_of: Callable[..., Plan]) -> dict[str, list[str]]:
    """One run of SGLang's parser over every case below (starting SGLang costs ~2 s)."""
    python = sglang_python()
    cases: dict[str, list[str]] = {}
    for label, overrides in (
        ("p1d1", SGLANG),
        ("multinode", MULTINODE),
        ("2p2d", TWO_TWO),
        ("agg", (*SGLANG, "deployment=aggregated")),
    ):
        for name, argv in sglang_check.sglang_argvs(plan_of(*overrides)).items():
            cases[f"{label}/{name}"] = argv
    base = cases["p1d1/prefill-0"]
    cases["bad/unknown"] = [*base, "--no-such-flag"]
    cases["bad/int"] = [*base, "--tp-size", "four"]
    cases["bad/choice"] = [*base, "--disaggregation-transfer-backend", "carrier-pigeon"]
    cases["bad/abbrev"] = [*base, "--context-len", "4096"]
    return sglang_check.parse_in_subprocess(python, cases, SubprocessRunner())


def test_real_parser_accepts_every_generated_argv(parsed: dict[str, list[str]]) -> None:
    good = {k: v for k, v in parsed.items() if not k.startswith("bad/")}
    assert len(good) == 2 + 4 + 4 + 1
    assert all(errors == [] for errors in good.values()), good


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("bad/unknown", "unrecognized arguments: --no-such-flag"),
        ("bad/int", "argument --tp-size/--tensor-parallel-size: invalid int value: 'four'"),
        (
            "bad/choice",
            "argument --disaggregation-transfer-backend: invalid choice: 'carrier-pigeon'",
        ),
        (
            "bad/abbrev",
            "argument --context-len: abbreviated flag name (full names: --context-length)",
        ),
    ],
)
def test_real_parser_rejects(parsed: dict[str, list[str]], case: str, message: str) -> None:
    (error,) = parsed[case]
    assert error.startswith(message)


def test_cli_rejects_a_bad_extra_flag_before_submitting(tmp_path: Path) -> None:
    sglang_python()
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "+model=gpt_oss_120b",
            *SGLANG,
            "launcher=local",
            "prefill.extra_args=[--no-such-flag]",
            f"run_dir={run_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "prefill.extra_args=--no-such-flag" in proc.stderr and "prefill-0" in proc.stderr
    assert (
        "unrecognized arguments: --no-such-flag" in proc.stderr and "Traceback" not in proc.stderr
    )
    assert not run_dir.exists()  # nothing was created, started or submitted
