"""`ctl diff RUN_A RUN_B`: what differs between two runs: their overrides, resolved configs
(config.json) and fingerprints (fingerprint.json), as dotted keys, one line each."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.core.errors import OrchestratorError
from orchestrator.rundir import RunDir

# Keys that differ between any two runs and say nothing about what ran.
NOISE = ("run_dir", "written_at", "job_id")
MISSING = "<absent>"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.0": value} for nested dicts and lists (lists of processes keyed by index)."""
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out or {prefix.rstrip("."): {}}
    if isinstance(data, list) and data and all(isinstance(v, (Mapping, list)) for v in data):
        out = {}
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): data}


def _fingerprint_nodes(fp: dict[str, Any]) -> dict[str, Any]:
    """Per-node facts keyed by node index, host left out (it differs run to run)."""
    nodes = fp.pop("nodes", []) if isinstance(fp.get("nodes"), list) else []
    return {
        f"node{n.get('node', i)}": {k: v for k, v in n.items() if k not in ("host", "node")}
        for i, n in enumerate(nodes)
    }


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """`key: A -> B` for every dotted key whose value differs (noise keys skipped)."""
    fa, fb = flatten(a), flatten(b)
    out = []
    for key in sorted(set(fa) | set(fb)):
        if any(key == n or key.startswith(n) or key.endswith("." + n) for n in NOISE):
            continue
        va, vb = fa.get(key, MISSING), fb.get(key, MISSING)
        if va != vb:
            out.append(f"{key}: {json.dumps(va)} -> {json.dumps(vb)}")
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise OrchestratorError(f"{path} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def diff(run_a: Path, run_b: Path) -> str:
    """The differences of two run directories, by section."""
    a, b = RunDir(run_a), RunDir(run_b)
    for run in (a, b):
        if not run.is_run():
            raise OrchestratorError(f"{run.path} is not a run directory (no launch.json)")
    out = [f"--- {run_a}", f"+++ {run_b}"]
    overrides = [_read(r.launch_file).get("overrides", []) for r in (a, b)]
    if overrides[0] != overrides[1]:
        out += ["overrides:", f"  A: {' '.join(overrides[0])}", f"  B: {' '.join(overrides[1])}"]
    config = differences(_read(a.config_file), _read(b.config_file))
    out += ["config:", *(f"  {line}" for line in config or ["(same)"])]
    fps = [_read(r.fingerprint_file) for r in (a, b)]
    if not all(fps):
        missing = [str(r) for r, fp in zip((run_a, run_b), fps, strict=True) if not fp]
        out.append(f"fingerprint: none in {', '.join(missing)}")
    else:
        fps = [{**fp, "nodes": _fingerprint_nodes(fp)} for fp in fps]
        prints = [line for line in differences(*fps) if not line.startswith("overrides")]
        out += ["fingerprint:", *(f"  {line}" for line in prints or ["(same)"])]
    return "\n".join(out)
