"""Readiness: pure parsers of frontend answers, and the canary generation.

Dynamo's `/health` says healthy with zero workers, and `/v1/models` lists a model before a
generation has ever crossed prefill -> decode; so readiness is per-worker health, then the
frontend's own gate, then one real generation through the frontend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.core.effects import HttpClient, HttpError, HttpResponse
from orchestrator.plan.model import Readiness

CANARY_PROMPT = "Reply with one short sentence: is the service up?"


@dataclass(frozen=True)
class Verdict:
    """Outcome of one check: ok, or why not."""

    ok: bool
    detail: str = ""


def probe(http: HttpClient, url: str, *, expect: int = 200, timeout: float = 2.0) -> Verdict:
    """GET `url`; ok when the status is `expect`."""
    try:
        resp = http.get(url, timeout=timeout)
    except HttpError as exc:
        return Verdict(False, str(exc))
    if resp.status == expect:
        return Verdict(True)
    return Verdict(False, f"HTTP {resp.status} from {url}: {resp.body[:200]}")


def frontend_gate(
    http: HttpClient, readiness: Readiness, parse: Callable[[HttpResponse], Verdict]
) -> Verdict:
    """GET the frontend's readiness gate and judge the answer with the frontend's parser."""
    try:
        resp = http.get(readiness.frontend_url + readiness.ready_path, timeout=5.0)
    except HttpError as exc:
        return Verdict(False, str(exc))
    return parse(resp)


def canary_payload(model: str, max_tokens: int) -> dict[str, Any]:
    """A small non-streaming chat completion."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": CANARY_PROMPT}],
        "max_tokens": max_tokens,
        "stream": False,
    }


def parse_canary(resp: HttpResponse) -> Verdict:
    """The canary passes only with HTTP 200 and generated text (content or reasoning): a
    response with zero output is what a broken KV transfer looks like (srt-slurm #429)."""
    body = resp.json()
    if resp.status != 200 or not isinstance(body, dict):
        return Verdict(False, f"canary got HTTP {resp.status}: {resp.body[:300]}")
    choices = body.get("choices") or [{}]
    message: Mapping[str, Any] = choices[0].get("message") or {}
    text = (message.get("content") or "") + (message.get("reasoning_content") or "")
    tokens = (body.get("usage") or {}).get("completion_tokens", 0)
    if not text.strip() or not tokens:
        return Verdict(
            False, f"canary returned no output (completion_tokens={tokens}): {resp.body[:300]}"
        )
    return Verdict(True, f"{tokens} tokens")


def canary(http: HttpClient, base_url: str, model: str, max_tokens: int) -> Verdict:
    """One real generation through the frontend (prefill -> KV transfer -> decode)."""
    try:
        resp = http.post(
            f"{base_url}/v1/chat/completions", canary_payload(model, max_tokens), timeout=120.0
        )
    except HttpError as exc:
        return Verdict(False, f"canary request failed: {exc}")
    return parse_canary(resp)
