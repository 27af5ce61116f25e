"""scripts/wheelhouse.py: the wheels an air-gapped GPU node gets are trimmed correctly (pip
installs them, RECORD matches), packed within the batch limit, and skip what the node has."""

from __future__ import annotations

import csv
import importlib.util
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wheelhouse", REPO / "scripts" / "wheelhouse.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["wheelhouse"] = mod
    spec.loader.exec_module(mod)
    return mod


wh = _load()


def make_wheel(
    folder: Path, files: dict[str, bytes], name: str = "demo", version: str = "1.0"
) -> Path:
    """A minimal valid wheel holding `files`."""
    info = f"{name}-{version}.dist-info"
    meta = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: py3-none-any\n",
    }
    rows = [wh.record_row(n, d) for n, d in {**files, **meta}.items()]
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in {**files, **meta}.items():
            zf.writestr(n, d)
        zf.writestr(f"{info}/RECORD", wh.record_text([*rows, [f"{info}/RECORD", "", ""]]))
    return path


def test_trim_drops_patterns_and_other_architectures_and_pip_installs_the_result(
    tmp_path: Path,
) -> None:
    files = {
        "demo/__init__.py": b"",
        "demo/flash_ops.abi3.so": b"x" * 1000,
        "demo/sm90/common_ops.abi3.so": b"hopper",
        "demo/sm100/common_ops.abi3.so": b"blackwell",
        "demo/configs/N=7168,K=2048,device_name=H100.json": b"{}",  # a comma in the path
    }
    src = make_wheel(tmp_path, files)
    trim = wh.Trim(drop=("demo/flash_ops.*.so",), arch_dir="demo", why="test")
    (tmp_path / "out").mkdir()
    done = wh.trim_wheel(src, tmp_path / "out" / src.name, trim, "sm90")
    assert done["dropped"] == ["demo/flash_ops.abi3.so", "demo/sm100/common_ops.abi3.so"]
    with zipfile.ZipFile(tmp_path / "out" / src.name) as zf:
        names = set(zf.namelist())
        record = list(csv.reader(io.StringIO(zf.read("demo-1.0.dist-info/RECORD").decode())))
    assert "demo/sm90/common_ops.abi3.so" in names and "demo/flash_ops.abi3.so" not in names
    assert {r[0] for r in record} == names
    site = tmp_path / "site"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "--target",
            str(site),
            str(tmp_path / "out" / src.name),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0 and "RECORD" not in res.stderr, res.stderr
    assert (site / "demo/configs/N=7168,K=2048,device_name=H100.json").exists()


def test_arch_folders_are_all_kept_when_the_target_architecture_has_none() -> None:
    names = ["k/sm90/a.so", "k/sm100/a.so", "k/b.py"]
    assert wh.arch_drops(names, "k", "sm89") == []
    assert wh.arch_drops(names, "k", "sm100") == ["k/sm90/a.so"]


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("readelf") is None, reason="no gcc")
def test_shared_libraries_outside_the_needed_closure_are_dropped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "b.c").write_text("int b(void) { return 1; }\n")
    (src / "a.c").write_text("int b(void);\nint a(void) { return b(); }\n")
    (src / "c.c").write_text("int c(void) { return 3; }\n")
    gcc = ["gcc", "-shared", "-fPIC"]
    subprocess.run(
        [*gcc, "-o", src / "libb.so.1", src / "b.c", "-Wl,-soname,libb.so.1"], check=True
    )
    subprocess.run([*gcc, "-o", src / "liba.so", src / "a.c", src / "libb.so.1"], check=True)
    subprocess.run([*gcc, "-o", src / "libc_unused.so", src / "c.c"], check=True)
    files = {
        f"demo/{n}": (src / n).read_bytes() for n in ("liba.so", "libb.so.1", "libc_unused.so")
    }
    whl = make_wheel(tmp_path, {"demo/__init__.py": b"", **files})
    done = wh.trim_wheel(whl, tmp_path / "trimmed.whl", wh.Trim(so_roots=("demo/liba.so",)), "sm90")
    assert done["dropped"] == ["demo/libc_unused.so"]


def test_batches_stay_under_the_limit_and_an_oversized_wheel_is_refused() -> None:
    sizes = {"a": 50, "b": 30, "c": 25, "d": 20, "e": 5}
    batches = wh.plan_batches(sizes, 60)
    assert sorted(n for b in batches for n in b) == sorted(sizes)
    assert all(sum(sizes[n] for n in b) <= 60 for b in batches)
    assert len(batches) == 3  # 130 bytes need at least 3 of 60
    with pytest.raises(SystemExit, match="a is 0.0 MiB, over the batch limit"):
        wh.plan_batches({"a": 61}, 60)


def test_what_the_node_already_has_is_skipped() -> None:
    have = wh.parse_freeze("torch==2.11.0+cu130\nTransformers==5.17.0\n# comment\n")
    reqs = ["torch==2.11.0", "transformers==5.12.1", "nixl==1.5.1"]
    assert wh.lacking(reqs, have) == ["transformers==5.12.1", "nixl==1.5.1"]


def test_the_shipped_targets_pin_every_wheel_and_say_which_flags_they_imply() -> None:
    for path in sorted((REPO / "scripts" / "wheelhouse").glob("*.toml")):
        target = wh.load_target(path)
        assert target.requirements and target.python
        names = [wh.split_req(r)[0] for r in target.requirements]
        assert len(names) == len(set(names)), path
        assert not set(names) & {wh.norm(n) for n in target.left_out}, path
        if "sglang" in names:
            assert "--attention-backend triton" in target.server_flags  # FA3 is trimmed
    with pytest.raises(SystemExit, match="pin every requirement"):
        wh.split_req("sglang>=0.5")
