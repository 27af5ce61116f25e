"""Architecture rules the code base keeps: no import cycles, kinds compared only in their registry
(engines, frontends, launchers; placements only in the schema), and nothing in the allocation
imports Hydra or OmegaConf."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from orchestrator.config.schema import PLACEMENTS
from orchestrator.engines import ENGINES
from orchestrator.frontends import FRONTENDS
from orchestrator.launchers import LAUNCHERS
from orchestrator.rundir import Phase, layout

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, known: set[str]) -> Iterator[str]:
    """Every orchestrator module `tree` imports, at any depth (lazy and TYPE_CHECKING imports too:
    a cycle through them is still a cycle in the design)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        yield from (n for n in names if n in known)


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {
        name: set(imported(ast.parse(path.read_text()), known)) - {name}
        for name, path in files.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 40  # the whole package was read
    assert cycles(graph) == []


# The import order, lowest first: a module imports only from its own layer or the ones before it.
# A layer names packages or single modules (plan and config hold both the plan's data types, which
# everything reads, and the steps that build or validate it with the registries' help).
LAYERS: list[tuple[str, ...]] = [
    ("core", "tiny"),
    ("config", "config.schema", "config.load", "config.domains"),
    (
        "plan",
        "plan.model",
        "plan.placeholders",
        "plan.ports",
        "plan.placement",
        "plan.groups",
        "plan.restart",
        "plan.preflight",
        "plan.consistency",
    ),
    ("slurm", "rundir"),
    ("runtime",),
    ("observe",),
    ("render", "render.shell"),
    ("launchers",),
    ("engines", "frontends"),
    ("render.dryrun",),
    ("bench",),
    ("plan.build", "plan.sharing"),
    ("config.validate", "config.validate_groups", "config.serve"),
    ("api",),
    ("elastic",),
    ("run",),
    ("launch",),
    ("sweep",),
    ("ctl", "cli", "__main__"),
]


def layer_of(module: str) -> int:
    """The layer of `orchestrator.<module>`: its longest listed prefix."""
    rel = module.removeprefix("orchestrator.")
    found = [
        (len(name), i)
        for i, names in enumerate(LAYERS)
        for name in names
        if rel == name or rel.startswith(name + ".")
    ]
    assert found, f"{module} is in no layer of LAYERS: add it where it belongs"
    return max(found)[1]


def test_imports_follow_the_layer_order() -> None:
    """No upward import: the folders show the design, read from core up to ctl."""
    graph = {m: deps for m, deps in import_graph().items() if m != "orchestrator"}
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if d != "orchestrator" and layer_of(d) > layer_of(m)
    ]
    assert upward == []


def test_every_package_says_what_it_owns_and_may_import() -> None:
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 80 and "import" in doc.lower(), (
            f"{init.relative_to(PACKAGE)}: one paragraph"
        )


def test_engine_and_frontend_kinds_are_compared_only_in_their_registry() -> None:
    kinds = set(ENGINES) | set(FRONTENDS)
    allowed = (PACKAGE / "engines", PACKAGE / "frontends", PACKAGE / "config" / "schema.py")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if any(path.is_relative_to(a) for a in allowed):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in kinds:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert offenders == []


# What the allocation may load: the driver entry and everything it imports lazily.
DRIVER_MODULES = [
    "orchestrator.run.entry",
    "orchestrator.frontends.worker_api",
    "orchestrator.bench.step",
    "orchestrator.tiny.tokenizer",
    *(f"orchestrator.frontends.{kind}" for kind in FRONTENDS),
]


def test_the_driver_side_never_imports_hydra_or_omegaconf() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {DRIVER_MODULES!r}: importlib.import_module(m)\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf'))))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


def constants(path: Path) -> Iterator[tuple[int, object]]:
    """Every literal in the module at `path`, with its line."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant):
            yield node.lineno, node.value


def compared(path: Path) -> Iterator[tuple[int, object]]:
    """Every literal compared (`==`, `!=`, `in`) in the module at `path`, with its line."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                items = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                yield from ((i.lineno, i.value) for i in items if isinstance(i, ast.Constant))


def offenders(found: Iterator[tuple[int, object]], path: Path, banned: set[str]) -> list[str]:
    return [
        f"{path.relative_to(PACKAGE)}:{line}: {value!r}" for line, value in found if value in banned
    ]


def outside(*homes: Path) -> Iterator[Path]:
    """The package's modules outside `homes` (folders or files)."""
    for path in PACKAGE.rglob("*.py"):
        if not any(path.is_relative_to(home) for home in homes):
            yield path


# `auto` is a launcher.kind value too, but also the word of other keys (frontend.discovery,
# memory settings): it is left out; launcher.kind=auto is resolved in launchers/select.py.
LAUNCHER_KINDS = set(LAUNCHERS)
PLACEMENT_VALUES = set(PLACEMENTS)


def test_launcher_kinds_are_named_only_in_the_launcher_registry() -> None:
    """No module outside orchestrator/launchers names a launcher kind: callers ask the launcher
    (`facts_of`, `get_launcher`). slurm/ names the sbatch command, which launcher=sbatch runs;
    the schema names the placement `here`, after which the here launcher is named; the run
    directory's layout names the `submitit` folder that launcher writes into; launch.py names the
    allocation (SLURM_JOB_ID) an error is about."""
    found = []
    homes = (
        PACKAGE / "config" / "schema.py",
        PACKAGE / "rundir" / "layout.py",
        PACKAGE / "launch.py",
    )
    for path in outside(PACKAGE / "launchers", PACKAGE / "slurm", *homes):
        found += offenders(constants(path), path, LAUNCHER_KINDS)
    assert found == []


def test_placements_are_compared_only_in_the_schema() -> None:
    """frontend.placement is asked (`placed_here`, `placed_in_job`), never compared; the values
    are spelled once, in config/schema.py (here is also a launcher kind: launchers/here.py)."""
    found = []
    for path in outside(PACKAGE / "config" / "schema.py"):
        found += offenders(compared(path), path, PLACEMENT_VALUES)
        found += [
            f"{path.relative_to(PACKAGE)}:{line}: .placement" for line in placement_compared(path)
        ]
    assert found == []


def placement_compared(path: Path) -> Iterator[int]:
    """Lines comparing a config's `.placement` (`placed_here`, `placed_in_job` say it)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            sides = (node.left, *node.comparators)
            if any(isinstance(n, ast.Attribute) and n.attr == "placement" for n in sides):
                yield node.lineno


def test_launch_requests_are_told_apart_only_by_their_own_methods() -> None:
    """No isinstance chain over the request classes outside their modules: each request class
    binds, saves, describes and executes itself."""
    requests = {"SbatchRequest", "SubmititRequest", "LocalRequest", "HereRequest", "DriverRequest"}
    found = []
    for path in outside(PACKAGE / "launchers"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                found += [f"{path.relative_to(PACKAGE)}:{node.lineno}" for _ in names & requests]
    assert found == []


def test_every_launcher_kind_round_trips_its_request() -> None:
    """The registry is complete: each kind materializes a request that names it and reads back."""
    from orchestrator.config.schema import RootConfig
    from orchestrator.launchers import Materials, request_from_dict
    from orchestrator.plan.build import build_plan

    plan = build_plan(RootConfig())
    materials = Materials(python="python3", overrides=(), git_sha="", cwd="/")
    for kind, launcher in LAUNCHERS.items():
        request = launcher.materialize(plan, materials)
        assert request.kind == kind
        assert request_from_dict(request.to_dict()) == request


# The run directory's file names are spelled once, in RunDir's module (orchestrator/rundir).
RUN_FILES = {
    value
    for name, value in vars(layout).items()
    if name.endswith(("_FILE", "_DIR", "_LOG", "_OUT")) and isinstance(value, str)
} - {layout.SUBMITIT_DIR}  # also a launcher kind: the launcher registry owns that word
# The same words meaning something else: a model directory's config.json (Hugging Face), the
# `ctl logs` subcommand, state.json's "attached" key, the "results" key of lm-eval's results JSON.
OTHER_MEANINGS = {
    ("bench/evals.py", "results"),
    ("tiny/tokenizer.py", "config.json"),
    ("tiny/model.py", "config.json"),
    ("runtime/preflight.py", "config.json"),
    ("ctl/cli.py", "logs"),
    ("elastic/jobwatch.py", "attached"),
}


def string_constants(path: Path) -> Iterator[ast.Constant]:
    """Every string literal of a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                yield node


def test_run_file_names_are_spelled_only_in_rundir() -> None:
    assert {"state.json", "plan.json", "launch.json", "heartbeat"} <= RUN_FILES
    home = PACKAGE / "rundir" / "layout.py"
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if path == home:
            continue
        for node in string_constants(path):
            if node.value in RUN_FILES and (rel, node.value) not in OTHER_MEANINGS:
                offenders.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert offenders == []


def phase_tuples(tree: ast.AST) -> Iterator[ast.expr]:
    """Tuples, lists and sets of string literals naming two phases or more (the empty string
    is too common to count)."""
    phases = {p.value for p in Phase} - {Phase.NEW.value}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Tuple | ast.List | ast.Set) or not node.elts:
            continue
        values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
        if len(values) == len(node.elts) and sum(v in phases for v in values) >= 2:
            yield node


def test_phase_groups_are_spelled_only_next_to_phase() -> None:
    assert len(list(phase_tuples(ast.parse('x = ("done", "failed")')))) == 1
    home = PACKAGE / "rundir" / "phase.py"
    offenders = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in PACKAGE.rglob("*.py")
        if path != home
        for node in phase_tuples(ast.parse(path.read_text()))
    ]
    assert offenders == []
