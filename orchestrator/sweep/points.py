"""The points of a sweep (pure): expansion of the command line with Hydra's override grammar,
the aggregated baseline of a point, and names that tell points apart.

A point's name is its deployment's name (`gpt-oss-120b-p1d2`: model, prefill and decode
workers) followed by one short token per other swept key: `gpt-oss-120b-p1d2-ptp4-dtp8` for
`prefill.tp=4 decode.tp=8`. Known keys have short forms (SHORT); any other key uses its last
part (`seed3` for benchmark.seed=3, `engine-sglang` for engine=sglang), or the initials of its
parents too when two swept keys end alike (`pextra_args-...`, `dextra_args-...`). A value that
is not a plain word (a list, a long string) becomes a 4-character digest. Names left equal
after that get a digest of their point's overrides, so names are unique within a sweep.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import InvalidConfig, Issue
from orchestrator.plan import build

SWEEP_KEYS = ("sweep_dir", "sweep.baseline", "sweep.max_in_flight")
# Keys a baseline point drops from the disaggregated point it mirrors.
TOPOLOGY_PREFIXES = ("prefill.", "decode.", "aggregated.", "deployment")
# Already in the deployment name (p<P>d<D>, a<N>); the inactive groups' count must be 0.
IN_DEPLOYMENT_NAME = ("prefill.workers", "decode.workers", "aggregated.workers", "deployment")
SHORT = {
    f"{group}.{key}": f"{group[0]}{key}"
    for group in ("prefill", "decode", "aggregated")
    for key in ("tp", "dp", "ep")
} | {
    "model.tp": "tp",
    "prefill.gpus_per_worker": "pgpus",
    "decode.gpus_per_worker": "dgpus",
    "aggregated.gpus_per_worker": "agpus",
    "deployment.separate_nodes": "sep",
    "cluster.gpus_per_node": "gpn",
}
WORD = re.compile(r"^[A-Za-z0-9._]{1,16}$")
NUMBER = re.compile(r"^[0-9][0-9.]*$")


@dataclass(frozen=True)
class SweepPoint:
    """One deployment of the sweep: the overrides that compose it and what varies."""

    overrides: tuple[str, ...]
    label: str  # the swept values, e.g. "prefill.workers=2 decode.workers=1"
    baseline: bool = False
    swept: tuple[tuple[str, str], ...] = ()  # (key, value) of every swept override

    @property
    def key(self) -> str:
        """Identity in the manifest: the sorted overrides (their order does not matter)."""
        return " ".join(sorted(self.overrides))


def expand(overrides: Sequence[str]) -> tuple[list[SweepPoint], dict[str, str]]:
    """Points (cartesian product of every sweep override, in command-line order) and the
    sweep-only options. Uses hydra-core 1.3's override grammar: `a=1,2`, `a=range(1,4)`, quoting."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as exc:  # hydra raises OverrideParseException (a plain Exception subclass)
        raise InvalidConfig(
            [
                Issue(
                    "overrides",
                    " ".join(overrides),
                    str(exc).splitlines()[0],
                    "check the override syntax (KEY=VALUE, KEY=a,b for a sweep)",
                )
            ]
        ) from exc
    options: dict[str, str] = {}
    axes: list[list[tuple[str, tuple[str, str] | None]]] = []  # per override: [(override, swept)]
    for o in parsed:
        key = o.get_key_element()
        if key.lstrip("+~") in SWEEP_KEYS:
            options[key.lstrip("+~")] = str(o.value())
        elif o.is_sweep_override():
            axes.append([(f"{key}={v}", (key.lstrip("+~"), v)) for v in o.sweep_string_iterator()])
        else:
            axes.append([(o.input_line or f"{key}={o.value()}", None)])
    points = []
    for combo in itertools.product(*axes):
        swept = tuple(kv for _, kv in combo if kv is not None)
        label = " ".join(f"{k}={v}" for k, v in swept)
        overrides_ = tuple(ov for ov, _ in combo)
        points.append(SweepPoint(overrides=overrides_, label=label, swept=swept))
    return _unique(points), options


def _unique(points: list[SweepPoint]) -> list[SweepPoint]:
    seen: set[str] = set()
    return [p for p in points if not (p.key in seen or seen.add(p.key))]  # type: ignore[func-returns-value]


def worker_gpus(cfg: RootConfig) -> int:
    """GPUs held by the workers of a deployment (the per-GPU normalization of the results)."""
    return sum(
        build.group_config(cfg, g).workers * build.gpus_per_worker(cfg, g)
        for g in build.active_groups(cfg)
    )


def baseline_point(point: SweepPoint, cfg: RootConfig) -> SweepPoint | None:
    """The aggregated deployment with the worker GPUs of disaggregated `point` (None when the
    GPUs do not split into whole aggregated workers of the prefill TP)."""
    if cfg.deployment.mode != "disaggregated":
        return None
    tp = build.tp_of(cfg, "prefill")
    gpus = worker_gpus(cfg)
    per_worker = tp * cfg.aggregated.dp
    if gpus % per_worker:
        return None
    keep = [o for o in point.overrides if not o.lstrip("+~").startswith(TOPOLOGY_PREFIXES)]
    extra = [
        "deployment=aggregated",
        f"aggregated.workers={gpus // per_worker}",
        f"aggregated.tp={tp}",
    ]
    swept = tuple((k, v) for k, v in point.swept if not k.startswith(TOPOLOGY_PREFIXES))
    return SweepPoint(
        overrides=tuple(keep + extra),
        label=" ".join(
            [f"aggregated x{gpus // per_worker} ({gpus} GPUs)"] + [f"{k}={v}" for k, v in swept]
        ),
        baseline=True,
        swept=swept,
    )


# --- names -------------------------------------------------------------------------------------
def _digest(text: str, size: int = 4) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def _value_token(value: str) -> str:
    """The value as written, or a short digest when it is not a plain word."""
    return value if WORD.match(value) else _digest(value)


def key_tokens(keys: Sequence[str]) -> dict[str, str]:
    """The short form of each swept key: SHORT, else its last part, with the initials of its
    parents when another key ends the same way."""
    last = {k: k.split(".")[-1] for k in keys}
    clash = {v for v in last.values() if list(last.values()).count(v) > 1}
    out = {}
    for key in keys:
        parents = key.split(".")[:-1]
        long = "".join(p[0] for p in parents) + last[key]
        out[key] = SHORT.get(key) or (long if last[key] in clash else last[key])
    return out


def point_names(deployments: Sequence[str], points: Sequence[SweepPoint]) -> list[str]:
    """A unique name per point: its deployment name plus a token per swept key not already in
    it (see the module docstring)."""
    keys = list(dict.fromkeys(k for p in points for k, _ in p.swept))
    short = key_tokens([k for k in keys if k not in IN_DEPLOYMENT_NAME])
    names = []
    for deployment, point in zip(deployments, points, strict=True):
        parts = [deployment]
        for key, value in point.swept:
            if key in short:
                token = _value_token(value)
                number = token == value and NUMBER.match(value) and not short[key][-1].isdigit()
                parts.append(f"{short[key]}{'' if number else '-'}{token}")
        names.append("-".join(parts))
    counts = {n: names.count(n) for n in names}
    return [
        n if counts[n] == 1 else f"{n}-{_digest(p.key)}" for n, p in zip(names, points, strict=True)
    ]
