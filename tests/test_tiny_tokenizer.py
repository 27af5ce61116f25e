"""Tests for orchestrator.tiny.tokenizer (offline tiny model directory for the Dynamo mocker)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from orchestrator.tiny import tokenizer as tt


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated directory shared by the read-only tests (generation takes ~0.3 s)."""
    return tt.ensure_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_directory_has_all_files(model_dir: Path) -> None:
    for name in tt.REQUIRED_FILES:
        assert (model_dir / name).is_file(), name
    # No temporary directories are left next to the result.
    assert [p.name for p in model_dir.parent.iterdir()] == ["model"]


def test_vocab_size_is_2048(model_dir: Path, tokenizer: Tokenizer) -> None:
    assert tokenizer.get_vocab_size() == 2048
    assert read_json(model_dir / "config.json")["vocab_size"] == 2048


def test_special_tokens_and_ids_agree(model_dir: Path, tokenizer: Tokenizer) -> None:
    assert [tokenizer.id_to_token(i) for i in range(6)] == list(tt.SPECIAL_TOKENS)
    config = read_json(model_dir / "config.json")
    generation = read_json(model_dir / "generation_config.json")
    expected = {"bos_token_id": "<s>", "eos_token_id": "<|im_end|>", "pad_token_id": "<pad>"}
    for key, token in expected.items():
        assert config[key] == generation[key] == tokenizer.token_to_id(token)
    assert read_json(model_dir / "special_tokens_map.json") == {
        "bos_token": "<s>",
        "eos_token": "<|im_end|>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
    }
    tok_config = read_json(model_dir / "tokenizer_config.json")
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok_config["model_max_length"] == 4096


def test_tiny_llama_config(model_dir: Path) -> None:
    config = read_json(model_dir / "config.json")
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"
    assert config["num_attention_heads"] * config["head_dim"] == config["hidden_size"]
    assert config["max_position_embeddings"] == 4096


def test_mocker_output_ids_decode_to_visible_text(tokenizer: Tokenizer) -> None:
    # The mocker emits random ids of about 1000-2000; each must decode to visible text.
    for token_id in range(1000, 2001):
        text = tokenizer.decode([token_id])
        assert text.strip(), token_id
        assert text.isprintable() and "\ufffd" not in text, (token_id, text)


def test_chatml_special_tokens_encode_as_single_ids(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("<|im_start|>user\nhello<|im_end|>").ids
    assert ids[0] == tokenizer.token_to_id("<|im_start|>")
    assert ids[-1] == tokenizer.token_to_id("<|im_end|>")
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nhello"


def test_chat_template_renders(model_dir: Path) -> None:
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Environment().from_string(
        read_json(model_dir / "tokenizer_config.json")["chat_template"]
    )
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
    ]
    assert template.render(messages=messages, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert template.render(messages=messages[:1], add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
    )


def test_existing_directory_is_kept(model_dir: Path) -> None:
    before = (model_dir / "tokenizer.json").stat().st_mtime_ns
    assert tt.ensure_tiny_model_dir(model_dir) == model_dir
    assert (model_dir / "tokenizer.json").stat().st_mtime_ns == before


def test_generation_is_deterministic(model_dir: Path, tmp_path: Path) -> None:
    other = tt.ensure_tiny_model_dir(tmp_path / "again")
    for name in tt.REQUIRED_FILES:
        assert (other / name).read_bytes() == (model_dir / name).read_bytes(), name


def test_concurrent_callers_get_one_complete_directory(tmp_path: Path) -> None:
    target = tmp_path / "shared"
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: tt.ensure_tiny_model_dir(target), range(3)))
    assert results == [target] * 3
    assert tt.is_complete(target)
    assert [p.name for p in tmp_path.iterdir()] == ["shared"]


def test_empty_directory_is_filled(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    assert tt.is_complete(tt.ensure_tiny_model_dir(target))


def test_non_empty_incomplete_directory_is_rejected(tmp_path: Path) -> None:
    target = tmp_path / "partial"
    target.mkdir()
    (target / "notes.txt").write_text("user data", encoding="utf-8")
    with pytest.raises(OSError):
        tt.ensure_tiny_model_dir(target)
    assert (target / "notes.txt").read_text(encoding="utf-8") == "user data"
    assert [p.name for p in tmp_path.iterdir()] == ["partial"]


def test_main_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "cli"
    assert tt.main([str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert tt.is_complete(target)
