"""Build a tiny real model offline: random weights in HF format, the project's own tokenizer.

For tests of real engines (SGLang, Dynamo + SGLang) on a GPU machine with no network: a
directory that ``transformers`` and SGLang load like any hub checkpoint, small enough (a few MB)
to travel with one command. Two architectures:

* ``llama``: ``LlamaForCausalLM`` with HF's exact tensor names and shapes;
* ``gpt_oss``: ``GptOssForCausalLM``, the seed's model family (attention sinks, alternating
  sliding-window / full attention, a mixture of experts with biases, YaRN RoPE), as an
  unquantized bf16 checkpoint (the names SGLang's ``_load_normal_weights`` maps, not MXFP4).

Weights are seeded per tensor name (``numpy`` PCG64 from ``[seed, crc32(name)]``): the same
spec gives the same bytes, and growing the model leaves existing tensors alone. Embeddings are
N(0, 1), linear weights N(0, 1/fan_in) (variance-preserving), biases N(0, 0.02^2), sinks
N(0, 1), norms 1: every sublayer moves the residual stream by O(1), so the greedy output
depends on the whole context (a KV cache that arrives wrong changes it) while staying finite in
bf16 and fp16. (With N(0, 0.02^2) everywhere, every prompt decoded to one repeated token.) Random
logits have small top-1/top-2 gaps, so bf16 and fp32 runs part after ~10-30 tokens: compare
engines token for token in float32 (``--dtype float32``), or on short completions in bf16. The
tokenizer files come from :mod:`orchestrator.tiny.tokenizer` (byte-level BPE, 2048 tokens,
ChatML template).

Usage::

    python -m orchestrator.tiny.model DIR --arch llama|gpt_oss [--layers N --hidden H ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from orchestrator.tiny import tokenizer as tt
from orchestrator.tiny.safetensors_lite import write_safetensors

Arch = Literal["llama", "gpt_oss"]
ARCHS: tuple[Arch, ...] = ("llama", "gpt_oss")
DTYPES: dict[str, str] = {"bfloat16": "BF16", "float32": "F32"}
# Head sizes SGLang's attention kernels (triton, flashinfer, fa3) are built for.
HEAD_DIMS: tuple[int, ...] = (64, 128, 256)
WEIGHTS_FILE = "model.safetensors"
# The recipe a directory was built from; a directory counts as complete only for that recipe.
RECIPE_FILE = "tiny_model.json"
FILES: tuple[str, ...] = (*tt.REQUIRED_FILES, WEIGHTS_FILE, RECIPE_FILE)

EMBED_STD = 1.0
BIAS_STD = 0.02
SINK_STD = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TinyModelSpec:
    """Shape and seed of a tiny model. Defaults: 4 layers, 8 query / 4 KV heads of 64 (TP 1, 2
    or 4: SGLang splits KV heads when there are at least as many as ranks, else replicates)."""

    arch: Arch = "llama"
    layers: int = 4
    hidden: int = 256
    heads: int = 8
    kv_heads: int = 4
    head_dim: int = 64
    intermediate: int = 512  # llama: the MLP width
    experts: int = 8  # gpt_oss from here on
    experts_per_token: int = 2
    expert_intermediate: int = 128
    sliding_window: int = 128
    seed: int = 0
    dtype: str = "bfloat16"


def problems(spec: TinyModelSpec) -> list[str]:
    """Everything wrong with ``spec``, each with the fix (empty when it can be built)."""
    found = []
    if spec.arch not in ARCHS:
        found.append(f"arch={spec.arch!r} is unknown (choose one of {', '.join(ARCHS)})")
    if spec.dtype not in DTYPES:
        found.append(f"dtype={spec.dtype!r} is unknown (choose one of {', '.join(DTYPES)})")
    if spec.head_dim not in HEAD_DIMS:
        found.append(f"head_dim={spec.head_dim} has no SGLang kernel (use one of {HEAD_DIMS})")
    sizes = dataclasses.asdict(spec)
    for key in ("layers", "hidden", "heads", "kv_heads", "intermediate", "experts"):
        if sizes[key] < 1:
            found.append(f"{key}={sizes[key]} must be at least 1")
    if spec.kv_heads >= 1 and spec.heads % spec.kv_heads:
        found.append(f"heads={spec.heads} must be a multiple of kv_heads={spec.kv_heads}")
    if spec.arch == "gpt_oss" and not 1 <= spec.experts_per_token <= spec.experts:
        found.append(f"experts_per_token={spec.experts_per_token} must be 1..experts")
    if spec.arch == "gpt_oss" and spec.layers < 2:
        # Layers alternate sliding/full; SGLang's hybrid SWA pool expects both kinds.
        found.append(f"layers={spec.layers}: gpt_oss needs at least 2 (one sliding, one full)")
    return found


# name -> (shape, standard deviation of its normal init; None: all ones, as for RMSNorm weights)
Shapes = dict[str, tuple[tuple[int, ...], float | None]]


def linear(out_features: int, in_features: int) -> tuple[tuple[int, ...], float]:
    """An HF linear weight, ``[out, in]``, with variance 1/fan_in."""
    return (out_features, in_features), in_features**-0.5


def common_tensors(spec: TinyModelSpec) -> Shapes:
    """Embedding, final norm and (untied) output head: the same names in both architectures."""
    return {
        "model.embed_tokens.weight": ((tt.VOCAB_SIZE, spec.hidden), EMBED_STD),
        "model.norm.weight": ((spec.hidden,), None),
        "lm_head.weight": linear(tt.VOCAB_SIZE, spec.hidden),
    }


def attention_tensors(spec: TinyModelSpec, prefix: str, *, bias: bool) -> Shapes:
    """q/k/v/o projections (HF layout: ``[out_features, in_features]``), optional biases."""
    q, kv = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    outs = {"q_proj": q, "k_proj": kv, "v_proj": kv}
    shapes: Shapes = {f"{prefix}.{n}.weight": linear(o, spec.hidden) for n, o in outs.items()}
    shapes[f"{prefix}.o_proj.weight"] = linear(spec.hidden, q)
    if bias:
        shapes.update({f"{prefix}.{n}.bias": ((o,), BIAS_STD) for n, o in outs.items()})
        shapes[f"{prefix}.o_proj.bias"] = ((spec.hidden,), BIAS_STD)
    return shapes


def llama_layer(spec: TinyModelSpec, prefix: str) -> Shapes:
    """One ``LlamaDecoderLayer``: attention without biases, a SwiGLU MLP, two RMSNorms."""
    h, i = spec.hidden, spec.intermediate
    return {
        **attention_tensors(spec, f"{prefix}.self_attn", bias=False),
        f"{prefix}.mlp.gate_proj.weight": linear(i, h),
        f"{prefix}.mlp.up_proj.weight": linear(i, h),
        f"{prefix}.mlp.down_proj.weight": linear(h, i),
        f"{prefix}.input_layernorm.weight": ((h,), None),
        f"{prefix}.post_attention_layernorm.weight": ((h,), None),
    }


def gpt_oss_layer(spec: TinyModelSpec, prefix: str) -> Shapes:
    """One ``GptOssDecoderLayer`` as HF stores it unquantized.

    Experts are fused 3-D tensors, ``gate_up_proj`` as ``[experts, hidden, 2 * intermediate]``
    with gate and up interleaved along the last axis (HF's ``gate_up[..., ::2]``); SGLang
    transposes them into its ``w13``/``w2`` on load. ``sinks`` holds one logit per query head.
    """
    h, e, i = spec.hidden, spec.experts, spec.expert_intermediate
    experts = f"{prefix}.mlp.experts"
    return {
        **attention_tensors(spec, f"{prefix}.self_attn", bias=True),
        f"{prefix}.self_attn.sinks": ((spec.heads,), SINK_STD),
        f"{prefix}.mlp.router.weight": linear(e, h),
        f"{prefix}.mlp.router.bias": ((e,), BIAS_STD),
        # Stored [in, out] per expert (x @ W), unlike nn.Linear: fan-in is axis 1.
        f"{experts}.gate_up_proj": ((e, h, 2 * i), h**-0.5),
        f"{experts}.gate_up_proj_bias": ((e, 2 * i), BIAS_STD),
        f"{experts}.down_proj": ((e, i, h), i**-0.5),
        f"{experts}.down_proj_bias": ((e, h), BIAS_STD),
        f"{prefix}.input_layernorm.weight": ((h,), None),
        f"{prefix}.post_attention_layernorm.weight": ((h,), None),
    }


def tensor_shapes(spec: TinyModelSpec) -> Shapes:
    """Every tensor of the checkpoint: name -> (shape, init standard deviation)."""
    layer = llama_layer if spec.arch == "llama" else gpt_oss_layer
    shapes = common_tensors(spec)
    for index in range(spec.layers):
        shapes.update(layer(spec, f"model.layers.{index}"))
    return shapes


def make_tensor(
    name: str, shape: tuple[int, ...], std: float | None, seed: int
) -> npt.NDArray[np.float32]:
    """The float32 values of one tensor, from its own seeded stream (see module docstring)."""
    if std is None:
        return np.ones(shape, dtype=np.float32)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    values = rng.standard_normal(shape, dtype=np.float32)
    values *= np.float32(std)
    return values


def make_tensors(spec: TinyModelSpec) -> dict[str, npt.NDArray[np.float32]]:
    """All tensors of ``spec`` as float32 arrays (rounded to the spec's dtype when written)."""
    return {
        name: make_tensor(name, shape, std, spec.seed)
        for name, (shape, std) in tensor_shapes(spec).items()
    }


def parameter_count(spec: TinyModelSpec) -> int:
    """Number of parameters (all tensors are stored, none tied)."""
    return sum(int(np.prod(shape)) for shape, _ in tensor_shapes(spec).values())


def shared_config(spec: TinyModelSpec, token_ids: dict[str, int]) -> dict[str, Any]:
    """``config.json`` keys common to both architectures."""
    return {
        "vocab_size": tt.VOCAB_SIZE,
        "hidden_size": spec.hidden,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "head_dim": spec.head_dim,
        "max_position_embeddings": tt.MODEL_MAX_LENGTH,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "use_cache": True,
        # "torch_dtype" is read by transformers 4.x and 5.x (5.x maps it onto "dtype") and by
        # SGLang. SGLang's --dtype auto serves a float32 checkpoint in float16: pass --dtype.
        "torch_dtype": spec.dtype,
        **token_ids,
    }


def llama_config(spec: TinyModelSpec) -> dict[str, Any]:
    """``LlamaForCausalLM`` keys (plain RoPE, no biases)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "intermediate_size": spec.intermediate,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
    }


def gpt_oss_config(spec: TinyModelSpec) -> dict[str, Any]:
    """``GptOssForCausalLM`` keys, shaped like openai/gpt-oss-20b's ``config.json``.

    Layers alternate sliding (even) and full (odd) attention as there. ``swiglu_limit`` is not
    a transformers field but SGLang reads it from the config. YaRN keeps gpt-oss's factor 32,
    its original length scaled down so that factor * original = max_position_embeddings.
    """
    layer_types = [
        "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(spec.layers)
    ]
    factor = 32.0
    return {
        "architectures": ["GptOssForCausalLM"],
        "model_type": "gpt_oss",
        "intermediate_size": spec.expert_intermediate,
        "num_local_experts": spec.experts,
        "num_experts_per_tok": spec.experts_per_token,
        "experts_per_token": spec.experts_per_token,  # the name openai's own loader reads
        "router_aux_loss_coef": 0.9,
        "output_router_logits": False,
        "swiglu_limit": 7.0,
        "attention_bias": True,
        "sliding_window": spec.sliding_window,
        "layer_types": layer_types,
        "rope_theta": 150000.0,
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": factor,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": False,
            "original_max_position_embeddings": int(tt.MODEL_MAX_LENGTH / factor),
        },
        "initial_context_length": int(tt.MODEL_MAX_LENGTH / factor),
    }


def model_config(spec: TinyModelSpec, token_ids: dict[str, int]) -> dict[str, Any]:
    """The full ``config.json`` for ``spec``."""
    specific = llama_config(spec) if spec.arch == "llama" else gpt_oss_config(spec)
    return {**shared_config(spec, token_ids), **specific}


def recipe(spec: TinyModelSpec) -> dict[str, Any]:
    """What ``tiny_model.json`` records: the spec and the command that rebuilds the directory."""
    return {"spec": dataclasses.asdict(spec), "built_by": "python -m orchestrator.tiny.model"}


def write_tiny_model(target: Path, spec: TinyModelSpec) -> None:
    """Write the tokenizer files, configs, weights and recipe of ``spec`` into ``target``."""
    tokenizer = tt.write_tokenizer_files(target)
    token_ids = tt.special_token_ids(tokenizer)
    tt.write_json(target / "config.json", model_config(spec, token_ids))
    tt.write_json(target / "generation_config.json", tt.generation_config(tokenizer))
    write_safetensors(target / WEIGHTS_FILE, make_tensors(spec), DTYPES[spec.dtype])
    # Written last: its presence (with this content) marks the directory complete.
    tt.write_json(target / RECIPE_FILE, recipe(spec))


def is_complete(path: Path, spec: TinyModelSpec) -> bool:
    """True if ``path`` holds every file of a tiny model built from exactly ``spec``."""
    if not all((path / name).is_file() for name in FILES):
        return False
    built: dict[str, Any] = json.loads((path / RECIPE_FILE).read_text(encoding="utf-8"))
    return built == recipe(spec)


def ensure_tiny_model(path: Path, spec: TinyModelSpec) -> Path:
    """Build the tiny model of ``spec`` at ``path`` unless it is already there; return ``path``.

    Atomic and safe for concurrent callers (:func:`tiny_tokenizer.build_dir_atomically`). A
    non-empty directory holding anything else (another spec included) is refused, never
    overwritten.
    """
    path = Path(path)
    found = problems(spec)
    if found:
        raise ValueError("; ".join(found))
    if is_complete(path, spec):
        return path
    if path.is_dir() and any(path.iterdir()):
        raise FileExistsError(
            f"{path} is not empty and is not a tiny model of this spec "
            f"(see {RECIPE_FILE} there): choose another directory or remove it"
        )
    write = partial(write_tiny_model, spec=spec)
    return tt.build_dir_atomically(path, write, partial(is_complete, spec=spec))


def parse_args(argv: Sequence[str] | None) -> tuple[Path, TinyModelSpec]:
    """Parse the command line into the target directory and a spec."""
    default = TinyModelSpec()
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.tiny.model",
        description="Build (if missing) a tiny random-weight HF model with the tiny tokenizer.",
    )
    parser.add_argument("directory", type=Path, help="directory to create")
    parser.add_argument("--arch", choices=ARCHS, default=default.arch)
    for field in dataclasses.fields(TinyModelSpec):
        if field.name not in ("arch", "dtype"):
            flag = "--" + field.name.replace("_", "-")
            parser.add_argument(flag, type=int, default=field.default, dest=field.name)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=default.dtype)
    args = vars(parser.parse_args(argv))
    directory = args.pop("directory")
    return directory, TinyModelSpec(**args)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the directory and its size on success."""
    directory, spec = parse_args(argv)
    try:
        path = ensure_tiny_model(directory, spec)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = (path / WEIGHTS_FILE).stat().st_size
    print(path)
    print(
        f"{spec.arch}: {parameter_count(spec):,} parameters, "
        f"{WEIGHTS_FILE} {size / 1e6:.1f} MB ({spec.dtype})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
