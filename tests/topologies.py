"""Topologies (override tuples on top of +model=gpt_oss_120b) shared by the placement, port and
plan tests; sharing the tuples lets the session cache compose each one only once."""

from __future__ import annotations

TOPOLOGIES: list[tuple[str, ...]] = [
    (),
    ("+experiment=gpt_oss_2p2d",),
    ("prefill.tp=8", "decode.tp=8"),
    ("prefill.tp=16", "decode.tp=16"),
    ("cluster.gpus_per_node=4", "prefill.tp=8", "decode.tp=8", "prefill.workers=2"),
    ("prefill.tp=1", "decode.tp=1", "prefill.workers=8", "decode.workers=8"),
    ("prefill.tp=1", "decode.tp=1", "prefill.workers=5", "decode.workers=11"),
    ("model.requires_equal_pd_tp=false", "decode.tp=2", "decode.workers=5", "prefill.workers=3"),
    ("deployment.separate_nodes=true", "prefill.workers=3"),
    ("deployment=aggregated", "aggregated.workers=3"),
    ("deployment=aggregated", "aggregated.tp=1", "aggregated.workers=9"),
    ("engine=sglang", "frontend=sglang_router", "prefill.workers=2", "decode.workers=2"),
    ("engine=sglang", "frontend=sglang_router", "prefill.tp=16", "decode.tp=16"),
    ("engine=mocker", "prefill.tp=1", "decode.tp=1", "prefill.workers=7", "decode.workers=9"),
    ("frontend.discovery=etcd",),
    ("cluster.gpus_per_node=2", "cluster.port_base=30000", "prefill.tp=1", "decode.tp=1"),
]
IDS = [" ".join(t) or "reference" for t in TOPOLOGIES]
