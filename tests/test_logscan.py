"""Readiness progress and failure markers parsed from real engine log lines
(tests/fixtures/logs/README.md says where each file comes from)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.runtime import logscan

LOGS = Path(__file__).parent / "fixtures" / "logs"


def lines_of(name: str) -> list[str]:
    return (LOGS / name).read_text().splitlines(keepends=True)


def progress_after(text: str) -> str:
    found = logscan.progress(text)
    return found.text() if found else ""


def test_sglang_cold_start_stages_in_order() -> None:
    lines = lines_of("sglang_launch_server.log")
    seen = []
    for n in range(1, len(lines) + 1):
        text = progress_after("".join(lines[:n]))
        if text and (not seen or seen[-1] != text):
            seen.append(text)
    assert seen == [
        "torch.distributed init",
        "loading weights",
        "loading weights 0% 0/1",
        "loading weights 100% 1/1",
        "weights loaded",
        "KV cache allocated",
        "CUDA graph capture",
        "CUDA graph capture 0% 0/4",
        "CUDA graph capture 100% 4/4",
        "CUDA graphs captured",
        "warming up",
        "ready (fired up)",
    ]


def test_tqdm_carriage_return_updates_count_as_lines() -> None:
    # Three bar updates on one physical line (\r-separated in the real log): the last one wins.
    text = (LOGS / "sglang_tp_capture.log").read_text()
    found = logscan.progress(text)
    assert found is not None and (found.done, found.total) == (2, 23)
    assert found.text() == "CUDA graph capture 8% 2/23"
    assert found.coarse() == "CUDA graph capture 0%"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("dynamo_mocker_decode.log", "endpoint registered"), ("dynamo_frontend.log", "ready (chat)")],
)
def test_dynamo_worker_and_frontend_with_ansi_colours(name: str, expected: str) -> None:
    text = (LOGS / name).read_text()
    assert "\x1b[" in text  # captured as Dynamo's tracing writes it
    assert progress_after(text) == expected


def test_dynamo_frontend_waiting_for_workers() -> None:
    first = lines_of("dynamo_frontend.log")[0]
    assert progress_after(first) == "waiting for workers"


def test_nothing_known_yet() -> None:
    assert logscan.progress("Traceback (most recent call last):\n") is None


def test_every_known_failure_marker_is_named_with_its_line() -> None:
    found = logscan.hints((LOGS / "failures.log").read_text())
    assert [h.split(":")[0] for h in found] == [
        "KV transfer failure",
        "CUDA out of memory",
        "NCCL error",
        "address already in use",
        "page size mismatch",
    ]
    assert (
        "KVTransferError(bootstrap_room=887504041590801090): Decode instance could be dead"
        in found[0]
    )
    assert found[3] == "address already in use: OSError: [Errno 98] Address already in use"


def test_hint_text_names_the_process_and_is_empty_without_markers() -> None:
    assert logscan.hint_text("decode-0", "all fine\n") == ""
    text = logscan.hint_text("decode-0", "x\ntorch.OutOfMemoryError: CUDA out of memory. Tried\n")
    assert text == (
        "\nknown failure markers in decode-0:\n"
        "  - CUDA out of memory: torch.OutOfMemoryError: CUDA out of memory. Tried"
    )


def test_read_tail_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("a" * 1000 + "END")
    assert logscan.read_tail(log, 3) == "END"
    assert logscan.read_tail(tmp_path / "missing.log") == ""
