#!/usr/bin/env python3
"""Wheels for a GPU node without network: download, trim, split into batches, install step.

    python3 scripts/wheelhouse.py scripts/wheelhouse/sglang-0.5.15.toml --out DIR \
        [--have node-freeze.txt] [--arch sm90] [--batch-mib 50] [--no-trim NAME ...]

Run it on a machine with PyPI. A target file (TOML, `scripts/wheelhouse/*.toml`) names the node's
Python, its GPU architecture and every wheel the node lacks, pinned; `--have` (the node's
`python3 -m pip list --format=freeze`) skips those it already has at that version. Wheels are
fetched for the node's platform (`pip download --only-binary`; a pure-Python sdist is built into
a wheel), trimmed (TRIMS: kernels for other GPU architectures and unused backends removed, RECORD
rewritten), packed into batches of at most `--batch-mib` (first-fit decreasing) and written as
DIR/batch-N/*.whl with DIR/install.sh and DIR/manifest.json (what was trimmed and which server
flags that implies). On the node: `bash DIR/install.sh SITE DIR/batch-*` then PYTHONPATH=SITE.
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import base64
import csv
import fnmatch
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tomllib  # Python >= 3.11: this script runs on the build machine, not the node

MIB = 1 << 20
# manylinux tags a x86-64 node with glibc >= 2.35 runs; pip matches each tag exactly.
PLATFORMS = (
    "manylinux_2_35_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux_2_31_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_26_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
    "any",
)


@dataclass(frozen=True)
class Trim:
    """What to remove from one distribution's wheel, and why (the server flag it implies)."""

    drop: tuple[str, ...] = ()  # fnmatch patterns of archive paths
    so_roots: tuple[str, ...] = ()  # if set: keep only these shared libraries and their ELF
    # NEEDED closure inside the wheel; every other shared library is dropped
    arch_dir: str = ""  # a folder with one sub-folder per GPU architecture: keep --arch's only
    strip: bool = False  # `strip --strip-unneeded` on shared libraries (debug symbols)
    why: str = ""


TRIMS: dict[str, Trim] = {
    "sglang-kernel": Trim(
        drop=("sgl_kernel/flash_ops.*.so", "sgl_kernel/flashmla_ops.*.so"),
        arch_dir="sgl_kernel",
        why="FlashAttention 3 (1.68 GiB; only the fa3 attention backend imports it): "
        "--attention-backend triton; FlashMLA (MLA/DeepSeek backends only); other GPU "
        "architectures' common_ops",
    ),
    "nixl-cu13": Trim(
        drop=("nixl_ep_cu13/*", "*.la", "nixl_cu13.scripts/*"),
        so_roots=(
            "nixl_cu13/*.so",
            "*/libplugin_UCX.so",
            "*/ucx/libuct_cma.so*",
            "*/ucx/libuct_cuda.so*",
            "*/ucx/libucm_cuda.so*",
        ),
        why="NIXL's UCX plugin with UCX's cma/cuda transports (tcp, sm and self are built "
        "in): KV transfer between GPUs of one node or over TCP. nixl_ep (expert parallel, "
        "built for torch 2.12-2.14; SGLang's import of it is in a try), the storage plugins and "
        "UCX's InfiniBand modules are left out: use --no-trim nixl-cu13 for RDMA between nodes",
    ),
    "sglang": Trim(
        drop=("sglang/multimodal_gen/*", "sglang/srt/grpc/_core*.so"),
        why="diffusion models (multimodal_gen) and the gRPC server's core",
    ),
    "sglang-router": Trim(strip=True, why="debug symbols of the Rust library"),
    "ai-dynamo-runtime": Trim(strip=True, why="debug symbols of the Rust library"),
}


@dataclass(frozen=True)
class Target:
    """A target file: the node's Python and GPU architecture, and the wheels it lacks."""

    path: Path
    python: str
    arch: str
    requirements: tuple[str, ...]
    left_out: dict[str, str] = field(default_factory=dict)
    server_flags: dict[str, str] = field(default_factory=dict)


def norm(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_req(req: str) -> tuple[str, str]:
    """`name==version` -> (normalized name, version); only exact pins are allowed."""
    name, sep, version = req.partition("==")
    if not sep or not version.strip():
        raise SystemExit(f"wheelhouse: {req!r}: pin every requirement as name==version")
    return norm(name.strip()), version.strip()


def load_target(path: Path) -> Target:
    """Read and check a target file."""
    data = tomllib.loads(path.read_text())
    reqs = tuple(data.get("requirements", ()))
    for req in reqs:
        split_req(req)
    return Target(
        path=path,
        python=str(data.get("python", "3.12")),
        arch=str(data.get("arch", "sm90")),
        requirements=reqs,
        left_out=dict(data.get("left_out", {})),
        server_flags=dict(data.get("server_flags", {})),
    )


def parse_freeze(text: str) -> dict[str, str]:
    """`pip list --format=freeze` -> {name: version without a local label (+cu130)}."""
    have = {}
    for line in text.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = split_req(line.strip())
            have[name] = version.split("+")[0]
    return have


def lacking(reqs: Iterable[str], have: dict[str, str]) -> list[str]:
    """The requirements the node does not already satisfy (same version)."""
    return [r for r in reqs if have.get(split_req(r)[0]) != split_req(r)[1].split("+")[0]]


def download(reqs: Sequence[str], dest: Path, python: str) -> None:
    """Fetch wheels for the node's platform; build pure-Python wheels from sdists where PyPI
    has no wheel (e.g. antlr4-python3-runtime 4.9.3)."""
    dest.mkdir(parents=True, exist_ok=True)
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    base = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(dest)]
    binary = [*base, "--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for req in reqs:
        if wheel_for(dest, req):
            continue
        if subprocess.run([*binary, *plat, req], check=False).returncode != 0:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--quiet",
                    "--no-deps",
                    "-w",
                    str(dest),
                    req,
                ],
                check=True,
            )
        if not wheel_for(dest, req):
            raise SystemExit(f"wheelhouse: no wheel for {req} in {dest}")


def wheel_for(folder: Path, req: str) -> Path | None:
    """The wheel of `name==version` in `folder`, if present."""
    name, version = split_req(req)
    for whl in folder.glob("*.whl"):
        dist, ver = whl.name.split("-")[:2]
        if norm(dist) == name and ver == version:
            return whl
    return None


def arch_drops(names: Iterable[str], arch_dir: str, arch: str) -> list[str]:
    """Files of `arch_dir/smNN/` for architectures other than `arch` (all kept when the wheel
    has no folder for `arch`: then the library picks one itself)."""
    archs = {n.split("/")[1] for n in names if re.match(rf"{re.escape(arch_dir)}/sm\d+/", n)}
    if arch not in archs:
        return []
    return [n for n in names if n.split("/")[:2][-1] in archs - {arch} and n.startswith(arch_dir)]


def is_shared_lib(name: str) -> bool:
    """A shared library by its file name (lib.so, lib.so.1.2.3, mod.abi3.so)."""
    return bool(re.search(r"\.so(\.\d+)*$", name))


def needed(lib: Path) -> list[str]:
    """The ELF DT_NEEDED entries of a shared library (readelf, from binutils)."""
    out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=False)
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out.stdout)


def so_closure(root_dir: Path, names: Sequence[str], roots: Sequence[str]) -> set[str]:
    """The shared libraries of a wheel reachable from `roots` through DT_NEEDED, by file name
    (auditwheel's vendored copies are named as the NEEDED entries that refer to them)."""
    libs = [n for n in names if is_shared_lib(n)]
    by_base: dict[str, list[str]] = {}
    for n in libs:
        by_base.setdefault(Path(n).name, []).append(n)
    todo = [n for n in libs if any(fnmatch.fnmatch(n, p) for p in roots)]
    keep: set[str] = set()
    while todo:
        lib = todo.pop()
        if lib in keep:
            continue
        keep.add(lib)
        for dep in needed(root_dir / lib):
            todo.extend(by_base.get(dep, []))
    return keep


def record_row(name: str, data: bytes) -> list[str]:
    """A RECORD row: path, urlsafe-base64 sha256 without padding, size."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def record_text(rows: Sequence[Sequence[str]]) -> str:
    """RECORD is CSV: paths with commas (SGLang's tuning configs, `N=7168,K=2048,...json`) are
    quoted, or pip warns and mis-reads them."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def dropped_files(src: Path, unpacked: Path, trim: Trim, arch: str) -> set[str]:
    """Archive paths that `trim` removes from the unpacked wheel."""
    names = [n for n in zipfile.ZipFile(src).namelist() if not n.endswith("/")]
    drop = {n for n in names if any(fnmatch.fnmatch(n, p) for p in trim.drop)}
    drop |= set(arch_drops(names, trim.arch_dir, arch)) if trim.arch_dir else set()
    if trim.so_roots:
        keep = so_closure(unpacked, [n for n in names if n not in drop], trim.so_roots)
        drop |= {n for n in names if is_shared_lib(n) and n not in keep}
    return drop


def trim_wheel(src: Path, dst: Path, trim: Trim, arch: str) -> dict[str, object]:
    """Write `src` without the files `trim` removes (libraries stripped if asked), with a
    rewritten RECORD; returns what was done, for the manifest."""
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = Path(tmp)
        with zipfile.ZipFile(src) as zf:
            zf.extractall(unpacked)
            modes = {i.filename: i.external_attr for i in zf.infolist() if not i.is_dir()}
        drop = dropped_files(src, unpacked, trim, arch)
        record = next(n for n in modes if n.endswith(".dist-info/RECORD"))
        rows: list[list[str]] = []
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
            for name, mode in modes.items():
                if name in drop or name == record:
                    continue
                path = unpacked / name
                if trim.strip and is_shared_lib(name):
                    subprocess.run(["strip", "--strip-unneeded", str(path)], check=True)
                data = path.read_bytes()
                info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, mode
                out.writestr(info, data)
                rows.append(record_row(name, data))
            out.writestr(record, record_text([*rows, [record, "", ""]]))
    return {
        "dropped": sorted(drop),
        "why": trim.why,
        "before_mib": round(src.stat().st_size / MIB, 1),
        "after_mib": round(dst.stat().st_size / MIB, 1),
    }


def plan_batches(sizes: dict[str, int], limit: int) -> list[list[str]]:
    """First-fit decreasing: the fewest batches of at most `limit` bytes each, as far as a
    greedy packing finds them. A wheel larger than `limit` is an error."""
    batches: list[tuple[int, list[str]]] = []
    for name, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        if size > limit:
            raise SystemExit(
                f"wheelhouse: {name} is {size / MIB:.1f} MiB, over the batch "
                f"limit of {limit / MIB:.0f} MiB: raise --batch-mib or trim it"
            )
        for i, (used, names) in enumerate(batches):
            if used + size <= limit:
                batches[i] = (used + size, [*names, name])
                break
        else:
            batches.append((size, [name]))
    return [sorted(names) for _, names in batches]


INSTALL_SH = """#!/usr/bin/env bash
# Install batches of this wheelhouse into SITE on the node (no network, no index), one batch per
# call or all at once, then put SITE first on PYTHONPATH so it shadows the node's own
# transformers/tokenizers.
#   bash install.sh SITE BATCH_DIR [BATCH_DIR ...] && export PYTHONPATH=SITE
set -euo pipefail
site="${1:?usage: install.sh SITE BATCH_DIR...}"
shift
wheels=()
for batch in "$@"; do wheels+=("$batch"/*.whl); done
python3 -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$site" \\
  "${wheels[@]}"
"""


def build(
    target: Target,
    out: Path,
    have: dict[str, str],
    batch_mib: float,
    no_trim: set[str],
    cache: Path,
) -> dict[str, object]:
    """Download, trim and batch the target's lacking wheels into `out`; the manifest."""
    reqs = lacking(target.requirements, have)
    download(reqs, cache, target.python)
    staged = out / "staged"
    staged.mkdir(parents=True, exist_ok=True)
    trims: dict[str, object] = {}
    for req in reqs:
        whl = wheel_for(cache, req)
        assert whl is not None
        name = split_req(req)[0]
        if name in TRIMS and name not in no_trim:
            trims[whl.name] = trim_wheel(whl, staged / whl.name, TRIMS[name], target.arch)
        else:
            shutil.copy2(whl, staged / whl.name)
    sizes = {p.name: p.stat().st_size for p in staged.glob("*.whl")}
    batches = plan_batches(sizes, int(batch_mib * MIB))
    for i, names in enumerate(batches, 1):
        (out / f"batch-{i}").mkdir(exist_ok=True)
        for name in names:
            (staged / name).rename(out / f"batch-{i}" / name)
    staged.rmdir()
    (out / "install.sh").write_text(INSTALL_SH)
    return {
        "target": str(target.path),
        "python": target.python,
        "arch": target.arch,
        "skipped_have": sorted(set(target.requirements) - set(reqs)),
        "batches": {
            f"batch-{i}": {"wheels": n, "mib": round(sum(sizes[w] for w in n) / MIB, 1)}
            for i, n in enumerate(batches, 1)
        },
        "trimmed": trims,
        "left_out": target.left_out,
        "server_flags": target.server_flags,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", type=Path, help="a target file, e.g. scripts/wheelhouse/*.toml")
    ap.add_argument("--out", type=Path, required=True, help="output folder (must not exist)")
    ap.add_argument("--have", type=Path, help="the node's `pip list --format=freeze`")
    ap.add_argument("--arch", help="GPU architecture, e.g. sm90 (Hopper), sm100 (Blackwell)")
    ap.add_argument("--batch-mib", type=float, default=50.0, help="largest batch (default 50)")
    ap.add_argument("--no-trim", nargs="*", default=[], help="distributions to ship whole")
    ap.add_argument("--cache", type=Path, help="download folder kept between runs")
    args = ap.parse_args(argv)
    target = load_target(args.target)
    if args.arch:
        target = Target(**{**target.__dict__, "arch": args.arch})
    if args.out.exists():
        raise SystemExit(f"wheelhouse: {args.out} exists; choose a new --out folder")
    have = parse_freeze(args.have.read_text()) if args.have else {}
    cache = args.cache or args.out.with_name(args.out.name + ".cache")
    manifest = build(target, args.out, have, args.batch_mib, {norm(n) for n in args.no_trim}, cache)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for name, batch in manifest["batches"].items():  # type: ignore[union-attr]
        print(f"{name}: {batch['mib']} MiB, {len(batch['wheels'])} wheels")
    print(
        f"install on the node: bash {args.out}/install.sh SITE {args.out}/batch-*"
        " && export PYTHONPATH=SITE"
    )
    print("server flags this implies: " + " ".join(target.server_flags))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
