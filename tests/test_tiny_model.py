"""Tests for orchestrator.tiny.model (random-weight HF checkpoints) and safetensors_lite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from orchestrator.tiny import model as tm
from orchestrator.tiny import safetensors_lite as st
from orchestrator.tiny import tokenizer as tt

LLAMA = tm.TinyModelSpec(arch="llama")
GPT_OSS = tm.TinyModelSpec(arch="gpt_oss")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One directory per architecture, shared by the read-only tests (~0.5 s each)."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {spec.arch: tm.ensure_tiny_model(root / spec.arch, spec) for spec in (LLAMA, GPT_OSS)}


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_directories_hold_every_file(built: dict[str, Path]) -> None:
    for path in built.values():
        assert sorted(p.name for p in path.iterdir()) == sorted(tm.FILES)
    # No temporary directories are left next to the results.
    assert sorted(p.name for p in built["llama"].parent.iterdir()) == ["gpt_oss", "llama"]


def test_llama_tensor_names_and_shapes_are_hf_llamas() -> None:
    shapes = {name: shape for name, (shape, _) in tm.tensor_shapes(LLAMA).items()}
    assert len(shapes) == 3 + 9 * LLAMA.layers
    layer = "model.layers.3"
    assert shapes["model.embed_tokens.weight"] == shapes["lm_head.weight"] == (2048, 256)
    assert shapes["model.norm.weight"] == (256,)
    assert shapes[f"{layer}.self_attn.q_proj.weight"] == (8 * 64, 256)
    assert shapes[f"{layer}.self_attn.k_proj.weight"] == (4 * 64, 256)
    assert shapes[f"{layer}.self_attn.v_proj.weight"] == (4 * 64, 256)
    assert shapes[f"{layer}.self_attn.o_proj.weight"] == (256, 8 * 64)
    assert shapes[f"{layer}.mlp.gate_proj.weight"] == (512, 256)
    assert shapes[f"{layer}.mlp.up_proj.weight"] == (512, 256)
    assert shapes[f"{layer}.mlp.down_proj.weight"] == (256, 512)
    assert shapes[f"{layer}.input_layernorm.weight"] == (256,)
    assert shapes[f"{layer}.post_attention_layernorm.weight"] == (256,)


def test_gpt_oss_tensor_names_and_shapes_are_hf_gpt_oss() -> None:
    shapes = {name: shape for name, (shape, _) in tm.tensor_shapes(GPT_OSS).items()}
    layer = "model.layers.1"
    expected = {
        "self_attn.q_proj.bias": (512,),
        "self_attn.k_proj.bias": (256,),
        "self_attn.v_proj.bias": (256,),
        "self_attn.o_proj.bias": (256,),
        "self_attn.sinks": (8,),
        "mlp.router.weight": (8, 256),
        "mlp.router.bias": (8,),
        "mlp.experts.gate_up_proj": (8, 256, 2 * 128),
        "mlp.experts.gate_up_proj_bias": (8, 2 * 128),
        "mlp.experts.down_proj": (8, 128, 256),
        "mlp.experts.down_proj_bias": (8, 256),
    }
    for name, shape in expected.items():
        assert shapes[f"{layer}.{name}"] == shape, name
    assert len(shapes) == 3 + 17 * GPT_OSS.layers
    assert not any("gate_proj" in name or "mlp.up_proj" in name for name in shapes)


@pytest.mark.parametrize("arch", ["llama", "gpt_oss"])
def test_header_parses_and_matches_the_spec(built: dict[str, Path], arch: str) -> None:
    spec = LLAMA if arch == "llama" else GPT_OSS
    path = built[arch] / tm.WEIGHTS_FILE
    header = st.read_header(path)
    assert header.pop("__metadata__") == {"format": "pt"}
    expected = tm.tensor_shapes(spec)
    assert {name: tuple(e["shape"]) for name, e in header.items()} == {
        name: shape for name, (shape, _) in expected.items()
    }
    assert {e["dtype"] for e in header.values()} == {"BF16"}
    # Offsets tile the data section exactly, 2 bytes per element, in sorted name order.
    spans = sorted(e["data_offsets"] for e in header.values())
    assert spans[0][0] == 0 and all(
        a[1] == b[0] for a, b in zip(spans[:-1], spans[1:], strict=True)
    )
    length = int.from_bytes(path.read_bytes()[:8], "little")
    assert length % 8 == 0
    assert (
        path.stat().st_size
        == 8 + length + spans[-1][1]
        == 8 + length + 2 * tm.parameter_count(spec)
    )


def test_the_safetensors_package_reads_our_file(built: dict[str, Path]) -> None:
    safe_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors is not installed")
    path = built["gpt_oss"] / tm.WEIGHTS_FILE
    # The package's numpy loader has no bf16; F32 is what it can return.
    f32 = built["gpt_oss"].parent / "f32.safetensors"
    st.write_safetensors(f32, {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, "F32")
    assert safe_numpy.load_file(str(f32))["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
    f32.unlink()
    safe = pytest.importorskip("safetensors")
    with safe.safe_open(str(path), framework="np") as handle:
        assert sorted(handle.keys()) == sorted(tm.tensor_shapes(GPT_OSS))
        assert handle.metadata() == {"format": "pt"}


def test_weights_round_trip_through_bf16(built: dict[str, Path]) -> None:
    path = built["llama"] / tm.WEIGHTS_FILE
    name = "model.layers.0.mlp.down_proj.weight"
    exact = tm.make_tensors(LLAMA)[name]
    stored = st.read_tensor(path, name)
    assert stored.shape == exact.shape
    np.testing.assert_allclose(stored, exact, rtol=2**-8, atol=0)
    assert np.all(st.read_tensor(path, "model.norm.weight") == 1.0)
    # Variance-preserving init: std 1/sqrt(fan_in), embeddings std 1.
    assert abs(float(stored.std()) * 512**0.5 - 1.0) < 0.02
    embed = st.read_tensor(path, "model.embed_tokens.weight")
    assert abs(float(embed.std()) - 1.0) < 0.02


def test_bf16_rounds_to_nearest_even() -> None:
    one = 1.0
    ulp = 2.0**-7  # bf16 keeps 7 mantissa bits
    values = np.array([one, one + ulp / 2, one + 3 * ulp / 2, one + ulp * 0.51, -2.0, 0.0])
    bits = st.to_bf16_bits(values)
    assert [hex(b) for b in bits] == ["0x3f80", "0x3f80", "0x3f82", "0x3f81", "0xc000", "0x0"]
    assert st.from_bf16_bits(bits)[3] == np.float32(one + ulp)


def test_float32_checkpoint(tmp_path: Path) -> None:
    spec = tm.TinyModelSpec(arch="llama", layers=1, dtype="float32")
    path = tm.ensure_tiny_model(tmp_path / "f32", spec)
    header = st.read_header(path / tm.WEIGHTS_FILE)
    assert {e["dtype"] for n, e in header.items() if n != "__metadata__"} == {"F32"}
    name = "model.layers.0.self_attn.q_proj.weight"
    stored = st.read_tensor(path / tm.WEIGHTS_FILE, name)
    assert np.array_equal(stored, tm.make_tensors(spec)[name])
    assert read_json(path / "config.json")["torch_dtype"] == "float32"


def test_generation_is_deterministic(built: dict[str, Path], tmp_path: Path) -> None:
    again = tm.ensure_tiny_model(tmp_path / "again", GPT_OSS)
    for name in tm.FILES:
        assert (again / name).read_bytes() == (built["gpt_oss"] / name).read_bytes(), name


def test_seed_changes_weights_and_growth_keeps_existing_tensors() -> None:
    base = tm.make_tensors(tm.TinyModelSpec(layers=1))
    reseeded = tm.make_tensors(tm.TinyModelSpec(layers=1, seed=1))
    grown = tm.make_tensors(tm.TinyModelSpec(layers=2))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not np.array_equal(base[name], reseeded[name])
    assert all(np.array_equal(base[n], grown[n]) for n in base)


@pytest.mark.parametrize("arch", ["llama", "gpt_oss"])
def test_config_matches_tokenizer_and_spec(built: dict[str, Path], arch: str) -> None:
    config = read_json(built[arch] / "config.json")
    tokenizer = Tokenizer.from_file(str(built[arch] / "tokenizer.json"))
    assert config["architectures"] == [
        "LlamaForCausalLM" if arch == "llama" else "GptOssForCausalLM"
    ]
    assert config["torch_dtype"] == "bfloat16"
    assert config["vocab_size"] == tokenizer.get_vocab_size() == 2048
    assert config["bos_token_id"] == tokenizer.token_to_id("<s>")
    assert config["eos_token_id"] == tokenizer.token_to_id("<|im_end|>")
    assert config["pad_token_id"] == tokenizer.token_to_id("<pad>")
    assert config["max_position_embeddings"] == 4096
    assert config["head_dim"] == 64 and config["num_attention_heads"] % 4 == 0
    generation = read_json(built[arch] / "generation_config.json")
    assert generation["eos_token_id"] == config["eos_token_id"]


def test_gpt_oss_config_has_what_sglang_reads(built: dict[str, Path]) -> None:
    config = read_json(built["gpt_oss"] / "config.json")
    assert config["model_type"] == "gpt_oss"
    assert config["layer_types"] == ["sliding_attention", "full_attention"] * 2
    assert config["sliding_window"] == 128
    assert (config["num_local_experts"], config["num_experts_per_tok"]) == (8, 2)
    assert config["swiglu_limit"] == 7.0 and config["attention_bias"] is True
    rope = config["rope_scaling"]
    assert rope["rope_type"] == "yarn"
    assert rope["factor"] * rope["original_max_position_embeddings"] == 4096
    assert "quantization_config" not in config  # bf16, not MXFP4


def test_tokenizer_round_trip_and_chat_template(built: dict[str, Path]) -> None:
    tokenizer = Tokenizer.from_file(str(built["llama"] / "tokenizer.json"))
    text = "def main(argv):\n    return 0\n"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    jinja2 = pytest.importorskip("jinja2")
    template = read_json(built["llama"] / "tokenizer_config.json")["chat_template"]
    prompt = (
        jinja2.Environment()
        .from_string(template)
        .render(messages=[{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    )
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.encode(prompt).ids
    assert ids[0] == tokenizer.token_to_id("<|im_start|>") and ids.count(4) == 1
    # The same tokenizer files as the mocker's directory.
    mocker = tt.ensure_tiny_model_dir(built["llama"].parent / "mocker")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (mocker / name).read_bytes() == (built["llama"] / name).read_bytes(), name


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"head_dim": 48}, "head_dim=48 has no SGLang kernel"),
        ({"heads": 6, "kv_heads": 4}, "heads=6 must be a multiple of kv_heads=4"),
        ({"arch": "gpt_oss", "layers": 1}, "gpt_oss needs at least 2"),
        ({"arch": "gpt_oss", "experts_per_token": 9}, "experts_per_token=9 must be 1..experts"),
        ({"dtype": "float16"}, "dtype='float16' is unknown"),
    ],
)
def test_invalid_specs_are_refused(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tm.ensure_tiny_model(tmp_path / "bad", tm.TinyModelSpec(**changes))
    assert not (tmp_path / "bad").exists()


def test_existing_directory_is_kept_and_another_spec_refused(built: dict[str, Path]) -> None:
    path = built["llama"]
    before = (path / tm.WEIGHTS_FILE).stat().st_mtime_ns
    assert tm.ensure_tiny_model(path, LLAMA) == path
    assert (path / tm.WEIGHTS_FILE).stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="not a tiny model of this spec"):
        tm.ensure_tiny_model(path, tm.TinyModelSpec(seed=7))


def test_main_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "cli"
    argv = [str(target), "--arch", "gpt_oss", "--layers", "2", "--kv-heads", "2", "--seed", "3"]
    assert tm.main(argv) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(target)
    assert "gpt_oss:" in out.err and "MB (bfloat16)" in out.err
    spec = tm.TinyModelSpec(arch="gpt_oss", layers=2, kv_heads=2, seed=3)
    assert tm.is_complete(target, spec)
    assert tm.main([str(target), "--head-dim", "32"]) == 1
    assert "head_dim=32" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["llama", "gpt_oss"])
def test_transformers_loads_and_generates(built: dict[str, Path], arch: str) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed (CI has none)")
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    path = str(built[arch])
    model, info = transformers.AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
    assert {key: value for key, value in info.items() if value} == {}  # no missing/unexpected
    assert type(model).__name__ == read_json(built[arch] / "config.json")["architectures"][0]
    assert model.dtype == torch.bfloat16
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    messages = [{"role": "user", "content": "Hello, who are you?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    outputs = [
        model.generate(**inputs, max_new_tokens=8, do_sample=False)[0].tolist() for _ in range(2)
    ]
    prompt_length = inputs["input_ids"].shape[1]
    new = outputs[0][prompt_length:]
    assert outputs[0] == outputs[1] and len(new) == 8
    # Context-dependent, not one token repeated (the failure of a too-small init).
    assert len(set(new)) > 2
