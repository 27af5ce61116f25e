"""Check every generated `sglang.launch_server` command line with SGLang's own argument parser.

Before anything is submitted (and in dry-run), the argv after `-m sglang.launch_server` of each
SGLang process, user extra args included, goes through `prepare_server_args` of the installed
SGLang (0.5.21: argparse; a bad flag raises SystemExit(2) with a clear message on stderr). It
parses in ~0.03 s with no GPU or network (engines.md §1.10). Failures become one InvalidConfig
(exit code 2) naming each process, the flag and the config key it most likely came from.

The parser runs once per check, for all processes of all plans checked together (a sweep's
points; each distinct argv once), in a subprocess of the first of:
1. this interpreter, when `sglang` is importable here;
2. `$ORCHESTRATOR_SGLANG_PYTHON`, else `.venvs/sglang/bin/python` next to the checkout or the
   running venv (orchestrator/core/tools.py), what `scripts/install.sh --with-sglang` creates: SGLang
   is installed there with --no-deps, which `pip check` would flag in the main venv.
Neither: one line on stderr says the check was skipped. User flags come from the lists
`prefill.extra_args`, `decode.extra_args` (`aggregated.extra_args`), `engine.extra_args` and
`model.extra_args`, e.g. `'prefill.extra_args=[--mem-fraction-static,0.85]'`.

engine=dynamo_sglang and engine=mocker are checked by Dynamo's own parsers
(orchestrator/engines/dynamo_check.py), which reuse this module's argv extraction and issues.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence

from orchestrator.config.schema import RootConfig
from orchestrator.core.effects import CommandRunner, SubprocessRunner
from orchestrator.core.errors import InvalidConfig, Issue
from orchestrator.core.tools import SGLANG_PYTHON, find_tool
from orchestrator.plan.model import Plan
from orchestrator.plan.placeholders import Bindings, bind_text, renumbered

LAUNCH_MODULE = ("-m", "sglang.launch_server")
PYTHON_ENV = "ORCHESTRATOR_SGLANG_PYTHON"
SUBPROCESS_TIMEOUT_S = 120.0
_skip_reported = False  # "say once" per process (a sweep prepares many configs)


def sglang_argvs(plan: Plan, module: tuple[str, str] = LAUNCH_MODULE) -> dict[str, list[str]]:
    """Process name -> argv after `-m sglang.launch_server` (or `module`), placeholders
    renumbered (`renumbered`: what the parser sees does not depend on which node or port block
    a worker has, so a 1024-node plan has as many distinct argvs as a 1-node one) and bound to
    stand-ins (addresses are plain strings to the parser; binding keeps typed flags such as
    ports parseable)."""
    stand_in = Bindings(
        node_ips=tuple(f"10.0.0.{i + 1}" for i in range(plan.num_nodes)),
        node_hosts=tuple(f"node{i}" for i in range(plan.num_nodes)),
        job_id="0",
        run_dir="/tmp/run",
    )
    out = {}
    for proc in plan.processes:
        argv = list(proc.argv)
        for i in range(len(argv) - 1):
            if (argv[i], argv[i + 1]) == module:
                out[proc.name] = [bind_text(a, stand_in) for a in renumbered(argv[i + 2 :])]
                break
    return out


def parse_with_sglang(argvs: dict[str, list[str]]) -> dict[str, list[str]]:
    """Run SGLang's parser on each argv; name -> errors ([] when accepted).

    Self-contained with its helpers (their source is what the subprocess runs, so they import
    what they use themselves and annotate with builtins only) and never called in the CLI's own
    process: `prepare_server_args` reconfigures the root logger (basicConfig(force=True))."""
    full_names = _sglang_flag_names()
    return {name: _argv_errors(argv, full_names) for name, argv in argvs.items()}


def _sglang_flag_names() -> set[str]:
    """Every full option string SGLang's parser defines."""
    import argparse

    from sglang.srt.server_args import ServerArgs

    reference = argparse.ArgumentParser()
    ServerArgs.add_cli_args(reference)
    return {s for action in reference._actions for s in action.option_strings}


def _argv_errors(argv: list[str], full_names: set[str]) -> list[str]:
    """SGLang's complaints about one argv ([] when accepted), its own output swallowed."""
    import contextlib
    import io

    from sglang.srt.server_args import prepare_server_args

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(io.StringIO()):
            prepare_server_args(list(argv))
        return _abbreviated_flags(argv, full_names)  # accepted, but full flag names only
    except SystemExit as exc:
        lines = [ln for ln in captured.getvalue().splitlines() if ln.strip()]
        # argparse: "<prog>: error: unrecognized arguments: --x" -> the part after "error: "
        return [lines[-1].split("error: ", 1)[-1] if lines else f"SystemExit({exc.code})"]
    except Exception as exc:  # SGLang's own post-parse checks (ValueError, ...)
        return [f"{type(exc).__name__}: {exc}"]


def _abbreviated_flags(argv: list[str], full_names: set[str]) -> list[str]:
    """One error per flag given by a prefix of its name. argparse accepts unique prefixes
    (--tp for --tp-size), which break as soon as SGLang adds a flag with the same prefix."""
    short = [
        a.split("=")[0] for a in argv if a.startswith("--") and a.split("=")[0] not in full_names
    ]
    return [
        f"argument {flag}: abbreviated flag name (full names: "
        f"{', '.join(sorted(n for n in full_names if n.startswith(flag)))})"
        for flag in short
    ]


# What the subprocess runs: parse_with_sglang and every helper it calls.
_SUBPROCESS_FUNCTIONS = (parse_with_sglang, _sglang_flag_names, _argv_errors, _abbreviated_flags)


def _subprocess_source() -> str:
    body = "\n\n".join(textwrap.dedent(inspect.getsource(f)) for f in _SUBPROCESS_FUNCTIONS)
    main = "import json, sys\njson.dump(parse_with_sglang(json.load(sys.stdin)), sys.stdout)\n"
    return f"{body}\n{main}"


def parse_in_subprocess(
    python: str, argvs: dict[str, list[str]], runner: CommandRunner
) -> dict[str, list[str]]:
    """`parse_with_sglang` in another interpreter (the sglang venv); name -> errors. The argvs
    go on stdin: on one command line a large plan's exceed the kernel's limit (E2BIG)."""
    res = runner.run(
        [python, "-c", _subprocess_source()], stdin=json.dumps(argvs), timeout=SUBPROCESS_TIMEOUT_S
    )
    try:
        result = json.loads(res.stdout) if res.returncode == 0 else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        tail = " / ".join(res.stderr.strip().splitlines()[-3:]) or f"exit code {res.returncode}"
        fix = f"reinstall with scripts/install.sh --with-sglang or unset ${PYTHON_ENV}"
        raise InvalidConfig(
            [Issue("engine argv", python, f"SGLang's parser did not run: {tail}", fix)]
        )
    return {str(k): [str(e) for e in v] for k, v in result.items()}


def sglang_python(env: Mapping[str, str]) -> str | None:
    """The interpreter to run the parser in, or None when SGLang is not installed."""
    if importlib.util.find_spec("sglang") is not None:
        return sys.executable
    return find_tool(SGLANG_PYTHON, env=env, env_var=PYTHON_ENV)


FLAG = re.compile(
    r"(?:unrecognized arguments?: |argument |ambiguous option: )(--?[A-Za-z0-9][\w-]*)"
)


def offending_flag(error: str) -> str:
    """The flag argparse complains about ('' when the message names none)."""
    match = FLAG.search(error)
    return match.group(1) if match else ""


def config_key_of(cfg: RootConfig, group: str, flag: str) -> str:
    """The config key a flag most likely came from (user extra args first)."""
    groups = {"prefill": cfg.prefill, "decode": cfg.decode, "aggregated": cfg.aggregated}
    name = flag.lstrip("-")
    layers = [
        (f"{group}.args", groups[group].args if group in groups else {}),
        ("engine.args", cfg.engine.args),
        ("model.args", cfg.model.args),
    ]
    for where, mapping in layers:
        if name and mapping.get(name) not in (None, False):
            return f"{where}.{name}"
    candidates = [
        (f"{group}.extra_args", groups[group].extra_args if group in groups else []),
        ("engine.extra_args", cfg.engine.extra_args),
        ("model.extra_args", cfg.model.extra_args),
    ]
    for key, args in candidates:
        if flag and any(a == flag or a.startswith(flag + "=") for a in args):
            return key
    return "engine argv"


SGLANG_FIX = "fix or remove the flag; `python -m sglang.launch_server --help` lists the valid ones"


def issues_from(
    cfg: RootConfig,
    plan: Plan,
    errors: Mapping[str, list[str]],
    *,
    parser: str = "SGLang's parser",
    fix: str = SGLANG_FIX,
) -> list[Issue]:
    """One Issue per distinct (flag source, message), naming every process it hit."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for name, found in errors.items():
        for error in found:
            flag = offending_flag(error)
            key = config_key_of(cfg, plan.process(name).group, flag)
            grouped.setdefault((key, flag, error), []).append(name)
    return [
        Issue(
            key,
            flag or "?",
            f"{parser} rejects the argv of {', '.join(names)}: {error}",
            fix,
        )
        for (key, flag, error), names in grouped.items()
    ]


def distinct_argvs(per_item: Sequence[Mapping[str, list[str]]]) -> dict[tuple[str, ...], str]:
    """Each distinct argv of all items with a short key for the parser batch (sweep points
    mostly repeat the same command lines: each is parsed once)."""
    unique: dict[tuple[str, ...], str] = {}
    for argvs in per_item:
        for argv in argvs.values():
            unique.setdefault(tuple(argv), str(len(unique)))
    return unique


def sglang_argv_issues(
    cfg: RootConfig,
    plan: Plan,
    *,
    env: Mapping[str, str] | None = None,
    runner: CommandRunner | None = None,
) -> list[Issue]:
    """Issues for every SGLang process argv of one plan SGLang's parser rejects."""
    return sglang_argv_issues_many([(cfg, plan)], env=env, runner=runner)[0]


def sglang_argv_issues_many(
    items: Sequence[tuple[RootConfig, Plan]],
    *,
    env: Mapping[str, str] | None = None,
    runner: CommandRunner | None = None,
) -> list[list[Issue]]:
    """Per (cfg, plan): issues for every SGLang argv SGLang's parser rejects. One subprocess
    for all items, each distinct argv parsed once (sweep points mostly repeat the same worker
    command lines). Says once on stderr when SGLang is not installed; items without SGLang
    processes pass untouched."""
    global _skip_reported
    per_item = [sglang_argvs(plan) for _, plan in items]
    unique = distinct_argvs(per_item)
    if not unique:
        return [[] for _ in items]
    python = sglang_python(os.environ if env is None else env)
    if python is None:
        if not _skip_reported:
            sys.stderr.write(
                f"note: sglang is not installed: skipped checking {len(unique)} SGLang command "
                "line(s) with its parser (scripts/install.sh --with-sglang, or set "
                f"${PYTHON_ENV})\n"
            )
            _skip_reported = True
        return [[] for _ in items]
    batch = {key: list(argv) for argv, key in unique.items()}
    errors = parse_in_subprocess(python, batch, SubprocessRunner() if runner is None else runner)
    return [
        issues_from(
            cfg, plan, {name: errors.get(unique[tuple(a)], []) for name, a in argvs.items()}
        )
        for (cfg, plan), argvs in zip(items, per_item, strict=True)
    ]


def check_sglang_argv(
    cfg: RootConfig,
    plan: Plan,
    *,
    env: Mapping[str, str] | None = None,
    runner: CommandRunner | None = None,
) -> None:
    """Raise InvalidConfig when SGLang's parser rejects any SGLang process's argv."""
    issues = sglang_argv_issues(cfg, plan, env=env, runner=runner)
    if issues:
        raise InvalidConfig(issues)
