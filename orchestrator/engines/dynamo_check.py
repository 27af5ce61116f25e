"""Check `python -m dynamo.sglang` and `python -m dynamo.mocker` command lines with Dynamo's own
argument parsers before anything is submitted (the SGLang engine's check is sglang_check.py).

dynamo.sglang (ai-dynamo 1.6.1, dynamo/sglang/args.py `parse_args`) parses in three stages, and
this check runs the same three on the same parser objects:
1. Dynamo's parser (DynamoRuntimeArgGroup + DynamoSGLangArgGroup) with `parse_known_args`;
2. the worker-router flags out of the rest (`parse_worker_router_config`);
3. SGLang's parser (`ServerArgs.add_cli_args` plus Dynamo's `add_sglang_cli_compat` aliases and
   the extra `gms` load format) with `parse_args` on what is left: a flag neither knows is
   "unrecognized arguments" here, exactly as at worker start.
`parse_args` itself is not called: it is async, downloads the model and reserves ports.
Dynamo 1.4.x (the newest whose SGLang, 0.5.16, pins torch 2.11) has neither stage 2 nor the
compat aliases of stage 3: its parse_args runs stage 1 and SGLang's plain parser, and so does
this check where those imports are missing.
Its imports need Dynamo and SGLang in one interpreter: this one when both import, else the SGLang
interpreter of sglang_check (`.venvs/sglang`, where `scripts/install.sh --with-sglang` adds
ai-dynamo and ai-dynamo-runtime with --no-deps); neither: skipped with a note.

dynamo.mocker: `dynamo.mocker.args.parse_args(argv)` (argparse plus its own checks) in this
interpreter when the mocker imports here (it is installed with the orchestrator's Dynamo).

Every parser takes all argvs of a plan in one subprocess (`parse_*(argvs)`: name -> errors, on
stdin), so a sweep can check every point with one interpreter start.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestrator.config.schema import RootConfig
from orchestrator.core.effects import CommandRunner, SubprocessRunner
from orchestrator.core.errors import InvalidConfig, Issue
from orchestrator.engines.sglang_check import (
    PYTHON_ENV,
    SUBPROCESS_TIMEOUT_S,
    distinct_argvs,
    issues_from,
    sglang_argvs,
    sglang_python,
)
from orchestrator.plan.model import Plan

DYNAMO_SGLANG = ("-m", "dynamo.sglang")
MOCKER = ("-m", "dynamo.mocker")
_skipped: set[str] = set()  # say once per parser per process (a sweep prepares many configs)


def parse_with_dynamo_sglang(argvs: dict[str, list[str]]) -> dict[str, list[str]]:
    """Dynamo's dynamo.sglang parsing stages on each argv; name -> errors ([] = accepted).
    Self-contained (its source runs in a subprocess): imports inside, builtins in annotations."""
    parsers = _dynamo_sglang_parsers()
    return {name: _dynamo_sglang_errors(argv, parsers) for name, argv in argvs.items()}


def _dynamo_sglang_parsers() -> tuple:  # type: ignore[type-arg]
    """(Dynamo's parser, SGLang's parser with Dynamo's additions, every full flag name)."""
    import argparse

    from dynamo.common.configuration.groups.runtime_args import DynamoRuntimeArgGroup
    from dynamo.sglang.backend_args import DynamoSGLangArgGroup
    from sglang.srt.server_args import ServerArgs

    try:  # Dynamo >= 1.5; 1.4.x parses without worker-router flags and compat aliases
        from dynamo.common.configuration.groups.router_args import add_worker_router_arguments
        from dynamo.sglang._compat import add_sglang_cli_compat

        newer = True
    except ImportError:
        newer = False

    dynamo = argparse.ArgumentParser()
    DynamoRuntimeArgGroup().add_arguments(dynamo)
    DynamoSGLangArgGroup().add_arguments(dynamo)
    sglang = argparse.ArgumentParser(add_help=False)
    ServerArgs.add_cli_args(sglang)
    if newer:
        add_sglang_cli_compat(sglang)
    for action in sglang._actions:  # as dynamo.sglang.args.parse_args does
        if getattr(action, "dest", None) == "load_format" and action.choices:
            action.choices = list(action.choices) + ["gms"]
    router = argparse.ArgumentParser(add_help=False)
    if newer:
        add_worker_router_arguments(router)
    names = {s for p in (dynamo, sglang, router) for a in p._actions for s in a.option_strings}
    return dynamo, sglang, names


def _dynamo_sglang_errors(argv: list[str], parsers: tuple) -> list[str]:  # type: ignore[type-arg]
    """The stages' complaints about one argv ([] when accepted), their output swallowed."""
    import contextlib
    import io

    try:  # Dynamo >= 1.5 (see _dynamo_sglang_parsers)
        from dynamo.common.configuration.groups.router_args import parse_worker_router_config

        router_stage = True
    except ImportError:
        router_stage = False

    dynamo, sglang, names = parsers
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(io.StringIO()):
            _, rest = dynamo.parse_known_args(list(argv))
            if router_stage:
                _, rest = parse_worker_router_config(rest)
            sglang.parse_args(rest)
    except SystemExit as exc:
        lines = [ln for ln in captured.getvalue().splitlines() if ln.strip()]
        return [lines[-1].split("error: ", 1)[-1] if lines else f"SystemExit({exc.code})"]
    except Exception as exc:
        return [f"{type(exc).__name__}: {exc}"]
    # argparse accepts unique prefixes, which break once a flag with the same prefix appears.
    # `--tp` is exempt: Dynamo's own guides spell --tp-size so and the engine keeps it.
    short = [a.split("=")[0] for a in argv if a.startswith("--") and a.split("=")[0] not in names]
    return [
        f"argument {f}: abbreviated flag name (full names: "
        f"{', '.join(sorted(n for n in names if n.startswith(f)))})"
        for f in short
        if f != "--tp"
    ]


def parse_with_mocker(argvs: dict[str, list[str]]) -> dict[str, list[str]]:
    """`dynamo.mocker.args.parse_args` on each argv; name -> errors ([] = accepted)."""
    import contextlib
    import io

    from dynamo.mocker.args import parse_args

    out: dict[str, list[str]] = {}
    for name, argv in argvs.items():
        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(io.StringIO()):
                parse_args(list(argv))
            out[name] = []
        except SystemExit as exc:
            lines = [ln for ln in captured.getvalue().splitlines() if ln.strip()]
            out[name] = [lines[-1].split("error: ", 1)[-1] if lines else f"SystemExit({exc.code})"]
        except Exception as exc:
            out[name] = [f"{type(exc).__name__}: {exc}"]
    return out


DYNAMO_SGLANG_FUNCTIONS = (parse_with_dynamo_sglang, _dynamo_sglang_parsers, _dynamo_sglang_errors)
MOCKER_FUNCTIONS = (parse_with_mocker,)


def subprocess_source(functions: Sequence[Callable[..., Any]]) -> str:
    """A script running functions[0] on the JSON argvs on stdin; prints {"errors": ...}, or
    {"missing": module} when an import fails (that interpreter lacks Dynamo or SGLang)."""
    body = "\n\n".join(textwrap.dedent(inspect.getsource(f)) for f in functions)
    main = (
        "import json, sys\n"
        "try:\n"
        f"    result = {{'errors': {functions[0].__name__}(json.load(sys.stdin))}}\n"
        "except ImportError as exc:\n"
        "    result = {'missing': str(exc)}\n"
        "json.dump(result, sys.stdout)\n"
    )
    return f"{body}\n{main}"


def run_parser(
    python: str,
    functions: Sequence[Callable[..., Any]],
    argvs: Mapping[str, list[str]],
    runner: CommandRunner,
) -> dict[str, list[str]] | str:
    """Errors per process name, or the import error when `python` cannot load the parser."""
    res = runner.run(
        [python, "-c", subprocess_source(functions)],
        stdin=json.dumps(dict(argvs)),
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    try:
        data = json.loads(res.stdout) if res.returncode == 0 else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("missing"), str):
        return str(data["missing"])
    if not isinstance(data, dict) or not isinstance(data.get("errors"), dict):
        tail = " / ".join(res.stderr.strip().splitlines()[-3:]) or f"exit code {res.returncode}"
        raise InvalidConfig(
            [
                Issue(
                    "engine argv",
                    python,
                    f"the parser did not run: {tail}",
                    "reinstall with scripts/install.sh --with-sglang",
                )
            ]
        )
    return {str(k): [str(e) for e in v] for k, v in data["errors"].items()}


def _note_skip(what: str, count: int, why: str) -> None:
    if what in _skipped:
        return
    _skipped.add(what)
    sys.stderr.write(
        f"note: skipped checking {count} {what} command line(s) with its parser: "
        f"{why} (scripts/install.sh --with-sglang, or set ${PYTHON_ENV})\n"
    )


def dynamo_sglang_python(env: Mapping[str, str]) -> str | None:
    """This interpreter when Dynamo and SGLang both import here, else the SGLang interpreter."""
    here = all(importlib.util.find_spec(m) is not None for m in ("dynamo", "sglang"))
    return sys.executable if here else sglang_python(env)


def _batched(
    items: Sequence[tuple[RootConfig, Plan]],
    module: tuple[str, str],
    python: str | None,
    functions: Sequence[Callable[..., Any]],
    *,
    parser: str,
    fix: str,
    runner: CommandRunner,
) -> list[list[Issue]]:
    """Per (cfg, plan): issues for every `module` argv `functions` reject. One subprocess for all
    items, each distinct argv parsed once (sweep points mostly repeat the same command lines)."""
    per_item = [sglang_argvs(plan, module) for _, plan in items]
    unique = distinct_argvs(per_item)
    if not unique:
        return [[] for _ in items]
    found = (
        run_parser(python, functions, {k: list(a) for a, k in unique.items()}, runner)
        if python
        else "no interpreter with Dynamo and SGLang"
    )
    if isinstance(found, str):
        _note_skip(module[1], len(unique), found)
        return [[] for _ in items]
    return [
        issues_from(
            cfg,
            plan,
            {n: found.get(unique[tuple(a)], []) for n, a in argvs.items()},
            parser=parser,
            fix=fix,
        )
        for (cfg, plan), argvs in zip(items, per_item, strict=True)
    ]


def dynamo_sglang_argv_issues_many(
    items: Sequence[tuple[RootConfig, Plan]],
    *,
    env: Mapping[str, str] | None = None,
    runner: CommandRunner | None = None,
) -> list[list[Issue]]:
    """Issues for every `dynamo.sglang` argv Dynamo's parsing rejects (skipped with a note when
    no interpreter has both Dynamo and SGLang)."""
    python = dynamo_sglang_python(os.environ if env is None else env)
    return _batched(
        items,
        DYNAMO_SGLANG,
        python,
        DYNAMO_SGLANG_FUNCTIONS,
        parser="Dynamo's dynamo.sglang parser",
        fix="fix or remove the flag; `python -m dynamo.sglang --help` lists "
        "Dynamo's and SGLang's flags",
        runner=runner or SubprocessRunner(),
    )


def mocker_argv_issues_many(
    items: Sequence[tuple[RootConfig, Plan]], *, runner: CommandRunner | None = None
) -> list[list[Issue]]:
    """Issues for every `dynamo.mocker` argv the mocker's parser rejects (in this interpreter,
    which has the orchestrator's Dynamo)."""
    python = sys.executable if importlib.util.find_spec("dynamo") is not None else None
    return _batched(
        items,
        MOCKER,
        python,
        MOCKER_FUNCTIONS,
        parser="Dynamo's mocker parser",
        fix="fix or remove the flag; `python -m dynamo.mocker --help` lists the valid ones",
        runner=runner or SubprocessRunner(),
    )
