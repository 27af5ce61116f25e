"""The orchestrator as an installed package: user config search path, helper tool discovery, and
a built wheel in a fresh venv running a dry-run from an empty directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from orchestrator.config.load import PATH_ENV, compose_config, user_config_dirs
from orchestrator.core import tools
from orchestrator.core.errors import InvalidConfig

REPO = Path(__file__).resolve().parent.parent
# What the wheel build needs from the checkout; nothing else is copied (no conf/local overrides).
SOURCES = ("pyproject.toml", "README.md", "orchestrator")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- the config search path --------------------------------------------------------------------
def test_user_file_wins_over_the_packaged_one_of_the_same_name(tmp_path: Path) -> None:
    write(tmp_path / "cluster" / "testbed.yaml", "partition: mine\n")
    cfg = compose_config(["+model=gpt_oss_120b", "cluster=testbed"], user_dirs=[tmp_path])
    assert cfg.cluster.partition == "mine"
    assert cfg.cluster.time_limit_min != 30  # the packaged testbed.yaml was not merged in


def test_minimal_user_files_compose_with_the_typed_schema(tmp_path: Path) -> None:
    write(tmp_path / "cluster" / "mysite.yaml", "partition: gpu\naccount: abc\n")
    write(tmp_path / "model" / "mine.yaml", "name: mine\npath: /models/mine\ntp: 2\n")
    write(tmp_path / "experiment" / "big.yaml", "# @package _global_\nprefill:\n  workers: 3\n")
    cfg = compose_config(["+model=mine", "cluster=mysite", "+experiment=big"], user_dirs=[tmp_path])
    assert (cfg.cluster.partition, cfg.cluster.account, cfg.cluster.gpus_per_node) == (
        "gpu",
        "abc",
        8,
    )
    assert (cfg.model.path, cfg.model.tp, cfg.prefill.workers) == ("/models/mine", 2, 3)


def test_site_defaults_in_local_default_apply_to_every_run(tmp_path: Path) -> None:
    write(
        tmp_path / "local" / "default.yaml", "cluster:\n  partition: site\nprefill:\n  workers: 2\n"
    )
    cfg = compose_config(["+model=gpt_oss_120b", "prefill.workers=3"], user_dirs=[tmp_path])
    assert (cfg.cluster.partition, cfg.prefill.workers) == ("site", 3)  # the command line wins


def test_a_user_file_may_extend_a_packaged_option(tmp_path: Path) -> None:
    write(tmp_path / "cluster" / "mysite.yaml", "defaults:\n  - testbed\n  - _self_\naccount: x\n")
    cfg = compose_config(["+model=gpt_oss_120b", "cluster=mysite"], user_dirs=[tmp_path])
    assert (cfg.cluster.partition, cfg.cluster.account) == ("debug", "x")


def test_a_typo_in_a_user_file_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path / "model" / "mine.yaml", "name: mine\npath: /m\ntpp: 4\n")
    with pytest.raises(InvalidConfig) as err:
        compose_config(["+model=mine"], user_dirs=[tmp_path])
    (issue,) = err.value.issues
    assert (issue.key, issue.found) == ("model", "mine")
    assert "Key 'tpp' not in 'ModelConfig'" in issue.problem


def test_an_unknown_option_names_every_searched_directory(tmp_path: Path) -> None:
    write(tmp_path / "cluster" / "mysite.yaml", "partition: gpu\n")
    with pytest.raises(InvalidConfig) as err:
        compose_config(["+model=gpt_oss_120b", "cluster=mysit"], user_dirs=[tmp_path])
    (issue,) = err.value.issues
    assert (issue.key, issue.found) == ("cluster", "mysit")
    assert "mysite" in issue.problem  # Hydra lists the user's options with the packaged ones
    assert str(tmp_path) in issue.fix and "orchestrator/conf" in issue.fix


def test_search_order_is_the_env_path_then_xdg(tmp_path: Path) -> None:
    first, second, xdg = tmp_path / "a", tmp_path / "b", tmp_path / "xdg"
    for d in (first, second, xdg / "orchestrator"):
        write(d / "cluster" / "site.yaml", f"partition: {d.name}\n")
    env = {PATH_ENV: f"{first}{os.pathsep}{second}", "XDG_CONFIG_HOME": str(xdg)}
    dirs = user_config_dirs(env)
    assert dirs == [first, second, xdg / "orchestrator"]
    assert (
        compose_config(["+model=gpt_oss_120b", "cluster=site"], user_dirs=dirs).cluster.partition
        == "a"
    )
    home = {"HOME": str(tmp_path)}  # no XDG_CONFIG_HOME: ~/.config/orchestrator, only if it exists
    assert user_config_dirs({"XDG_CONFIG_HOME": "", **home}) == []


def test_a_missing_directory_on_the_env_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig) as err:
        user_config_dirs({PATH_ENV: str(tmp_path / "nope"), "XDG_CONFIG_HOME": str(tmp_path)})
    (issue,) = err.value.issues
    assert (issue.key, issue.found, issue.problem) == (
        PATH_ENV,
        str(tmp_path / "nope"),
        "is not a directory",
    )


def test_a_root_config_in_a_user_dir_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "config.yaml", "defaults:\n  - cluster: gres\n")
    with pytest.raises(InvalidConfig) as err:
        user_config_dirs({PATH_ENV: str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "none")})
    (issue,) = err.value.issues
    assert issue.found == str(tmp_path / "config.yaml") and "local/default.yaml" in issue.fix


# --- helper tools ------------------------------------------------------------------------------
def test_tool_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout, prefix = tmp_path / "checkout", tmp_path / "site" / ".venv"
    monkeypatch.setattr(tools, "CHECKOUT", checkout)
    monkeypatch.setattr(sys, "prefix", str(prefix))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert tools.find_tool(tools.AIPERF) is None
    # A wheel install: no checkout, install.sh's .venvs next to the venv the package lives in.
    assert tools.tool_or_default(tools.AIPERF) == str(checkout / ".venvs/aiperf/bin/aiperf")
    beside_venv = write(tmp_path / "site" / ".venvs" / "aiperf" / "bin" / "aiperf", "")
    assert tools.find_tool(tools.AIPERF) == str(beside_venv)
    in_checkout = write(checkout / ".venvs" / "aiperf" / "bin" / "aiperf", "")
    assert tools.find_tool(tools.AIPERF) == str(in_checkout)
    on_path = write(tmp_path / "bin" / "aiperf", "")
    on_path.chmod(0o755)
    assert tools.find_tool(tools.AIPERF) == str(on_path)
    assert tools.find_tool(tools.AIPERF, explicit="/opt/aiperf") == "/opt/aiperf"
    env = {"ORCHESTRATOR_SGLANG_PYTHON": "/opt/sgl/python"}
    sglang = tools.find_tool(tools.SGLANG_PYTHON, env=env, env_var="ORCHESTRATOR_SGLANG_PYTHON")
    assert sglang == "/opt/sgl/python"


# --- a built wheel in a fresh venv -------------------------------------------------------------
def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _not_shipped(directory: str, names: list[str]) -> set[str]:
    """Caches, and a checkout's site overrides (orchestrator/conf/local/, gitignored)."""
    local = {"local"} if Path(directory).name == "conf" else set()
    return {n for n in names if n == "__pycache__"} | local


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh venv holding the wheel built from this checkout; the env to run it with."""
    root = tmp_path_factory.mktemp("package")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=_not_shipped)
        else:
            shutil.copy2(REPO / name, src / name)
    # No PYTHONPATH: the checkout must not shadow the installed package.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(src)], root, env)
    (wheel,) = (root / "dist").glob("orchestrator-*.whl")
    venv.EnvBuilder(with_pip=False).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    run([*pip, "--python", str(python), "install", "-q", str(wheel)], root, env, timeout=300)
    return root / "venv" / "bin", env


def test_wheel_ships_every_packaged_yaml(installed: tuple[Path, dict[str, str]]) -> None:
    bindir, env = installed
    where = run(
        [str(bindir / "python"), "-c", "import orchestrator; print(orchestrator.__file__)"],
        bindir,
        env,
    )
    package = Path(where.strip()).parent
    assert str(package).startswith(str(bindir.parent))  # the installed copy, not the checkout
    shipped = sorted(p.relative_to(package / "conf") for p in (package / "conf").rglob("*.yaml"))
    conf = REPO / "orchestrator" / "conf"
    packaged = sorted(
        p.relative_to(conf)
        for p in conf.rglob("*.yaml")
        if "local" not in p.relative_to(conf).parts
    )
    assert shipped == packaged


def test_installed_console_script_dry_runs_from_an_empty_directory(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bindir, env = installed
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run([str(bindir / "orchestrator"), "+model=gpt_oss_120b", "dry_run=true"], empty, env)
    assert "python3 -m dynamo.frontend --http-port 8000" in out and "prefill-0" in out
    assert list(empty.iterdir()) == []  # a dry-run writes nothing
    assert "status" in run([str(bindir / "orchestrator-ctl"), "--help"], empty, env)


def test_installed_package_picks_up_site_and_model_files(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bindir, env = installed
    conf = tmp_path / "conf"
    write(conf / "cluster" / "mysite.yaml", "partition: mysite-gpu\naccount: proj42\n")
    write(conf / "model" / "mymodel.yaml", "name: mymodel\npath: /models/mymodel\ntp: 4\n")
    env = {**env, PATH_ENV: str(conf)}
    argv = ["+model=mymodel", "cluster=mysite", "launcher=sbatch", "dry_run=true"]
    out = run([str(bindir / "orchestrator"), *argv], tmp_path, env)
    sbatch_lines = [line for line in out.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --partition=mysite-gpu" in sbatch_lines
    assert "#SBATCH --account=proj42" in sbatch_lines
    assert "--model-path /models/mymodel" in out


# Captured tool output kept as captured (a real traceback names the venv it ran from).
MACHINE_PATH_EXEMPT = ("tests/fixtures/bench/bench_serving_all_failed/",)


def test_no_tracked_text_names_a_path_of_one_machine() -> None:
    # scripts/versions.env and tests/fixtures/bench/README.md once named a directory of the machine they were written on (issue 23):
    # a checkout elsewhere must not depend on, or leak, where it was written.
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    found = subprocess.run(
        ["git", "grep", "-nE", r"(^|[^A-Za-z0-9_.<{-])/(work|root)/", "--", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    assert [line for line in found if not line.startswith(MACHINE_PATH_EXEMPT)] == []
