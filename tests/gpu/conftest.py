"""GPU tests: the real engine through the orchestrator. Skipped, with the reason, where there is
no CUDA device or no engine (CI, the CPU testbed); README "Proven on a GPU" says how to run them."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gpu.deploy import gpu_count


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark and skip every test under tests/gpu/ on machines that cannot run it."""
    here = Path(__file__).parent
    gpus = gpu_count()
    reason = ""
    if gpus == 0:
        reason = "no CUDA device (nvidia-smi lists none)"
    elif importlib.util.find_spec("sglang") is None:
        reason = "SGLang is not importable (install the wheelhouse: README, Proven on a GPU)"
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gpu)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny random-weight Llama (orchestrator.tiny.model), built once per session."""
    from orchestrator.tiny.model import TinyModelSpec, ensure_tiny_model

    yield ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", TinyModelSpec())
