"""Generate a tiny tokenizer + model-config directory offline, for the Dynamo mocker.

The Dynamo mocker (``python -m dynamo.mocker --model-path DIR``) and the frontend need a
HuggingFace-style model directory: ``config.json`` plus a tokenizer with a chat template. No hub
is reachable here, so :func:`ensure_tiny_model_dir` builds one from scratch: a byte-level BPE
tokenizer with a 2048-token vocabulary trained on Python standard-library sources, and the config
of a tiny ``LlamaForCausalLM`` (no weights). The mocker emits random token ids of roughly
1000-2000; every id in that range decodes here to visible ASCII text, so clients that require
non-empty content (AIPerf) count the responses as successful.

Usage::

    python -m orchestrator.tiny.tokenizer DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB_SIZE = 2048
MODEL_MAX_LENGTH = 4096

UNK, BOS, EOS_TEXT, IM_START, IM_END, PAD = (
    "<unk>",
    "<s>",
    "</s>",
    "<|im_start|>",
    "<|im_end|>",
    "<pad>",
)
# Order fixes the ids: special tokens come first, so they get ids 0-5.
SPECIAL_TOKENS: tuple[str, ...] = (UNK, BOS, EOS_TEXT, IM_START, IM_END, PAD)
# Chat turns end with <|im_end|>, so that is the generation stop token (ChatML convention).
EOS = IM_END

# Fixed, sorted list of standard-library modules to train on: always present offline, stable
# across 3.10-3.13 (no module that became a package, e.g. pathlib in 3.13), ~0.6 MB in total,
# which trains in well under a second yet yields far more than 2048 distinct merges.
TRAINING_FILES: tuple[str, ...] = (
    "argparse.py",
    "calendar.py",
    "configparser.py",
    "csv.py",
    "dataclasses.py",
    "difflib.py",
    "fractions.py",
    "functools.py",
    "inspect.py",
    "json/decoder.py",
    "json/encoder.py",
    "shutil.py",
    "string.py",
    "textwrap.py",
    "typing.py",
)

# ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n" per message, then an assistant header when
# a generation prompt is requested. Content may be a string, a list of OpenAI content parts
# (only "text" parts are kept) or null (assistant tool-call turns); the frontend renders this
# with minijinja and transformers with jinja2, so only features common to both are used.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- elif message['content'] is not none -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Files that make a directory complete; used to recognise a finished directory.
REQUIRED_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "generation_config.json",
)


def stdlib_dir() -> Path:
    """Return the directory holding the running interpreter's pure-Python standard library."""
    # In a venv sysconfig still points at the base interpreter's stdlib, which is what we want.
    return Path(sysconfig.get_paths()["stdlib"])


def normalise_line(line: str) -> str:
    """Collapse whitespace and drop non-ASCII characters from one line of training text.

    Indentation runs would otherwise become whitespace-only tokens (invisible when the mocker
    emits them), and non-ASCII bytes could produce tokens that are partial UTF-8 sequences
    (decoded as U+FFFD). With single spaces and ASCII only, every merged token is visible text.
    """
    return " ".join(line.encode("ascii", "ignore").decode("ascii").split())


def training_lines(root: Path | None = None) -> Iterator[str]:
    """Yield the normalised, non-empty lines of :data:`TRAINING_FILES`, in a fixed order."""
    base = root if root is not None else stdlib_dir()
    for name in TRAINING_FILES:
        path = base / name
        if not path.is_file():
            # A future Python may drop a module; the remaining files still give enough merges.
            continue
        for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
            text = normalise_line(line)
            if text:
                yield text


def train_tokenizer(lines: Iterator[str]) -> Tokenizer:
    """Train a byte-level BPE tokenizer with exactly :data:`VOCAB_SIZE` tokens."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    # No prefix space: "Hello" and " Hello" stay distinct, as in GPT-2 style tokenizers.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 byte symbols, so any input text can be encoded without <unk>.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Lines joined by "\n" keep newline statistics while each line is one training sequence.
    tokenizer.train_from_iterator((line + "\n" for line in lines), trainer=trainer)
    size = tokenizer.get_vocab_size()
    if size != VOCAB_SIZE:
        raise RuntimeError(f"trained vocabulary has {size} tokens, expected {VOCAB_SIZE}")
    return tokenizer


def token_id(tokenizer: Tokenizer, token: str) -> int:
    """Return the id of a special token, failing loudly if training lost it."""
    found = tokenizer.token_to_id(token)
    if found is None:
        raise RuntimeError(f"special token {token!r} missing from the vocabulary")
    return found


def tokenizer_config() -> dict[str, Any]:
    """Contents of ``tokenizer_config.json`` (loaded by transformers and Dynamo's frontend)."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": PAD,
        "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }


def special_tokens_map() -> dict[str, str]:
    """Contents of ``special_tokens_map.json``."""
    return {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "pad_token": PAD}


def special_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """The ``bos/eos/pad_token_id`` entries shared by every config that names the tokenizer."""
    return {
        "bos_token_id": token_id(tokenizer, BOS),
        "eos_token_id": token_id(tokenizer, EOS),
        "pad_token_id": token_id(tokenizer, PAD),
    }


def model_config(tokenizer: Tokenizer) -> dict[str, Any]:
    """Contents of ``config.json``: a tiny Llama whose shape the mocker uses for KV sizing."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": MODEL_MAX_LENGTH,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        **special_token_ids(tokenizer),
    }


def generation_config(tokenizer: Tokenizer) -> dict[str, Any]:
    """Contents of ``generation_config.json`` (same special ids as the model config)."""
    return {**special_token_ids(tokenizer), "max_new_tokens": 64}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as stable, human-readable JSON (sorted keys keep output deterministic)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_tokenizer_files(target: Path) -> Tokenizer:
    """Train the tokenizer, write its three files into ``target`` and return it.

    Shared with :mod:`orchestrator.tiny.model`, which adds real weights next to the same files.
    """
    tokenizer = train_tokenizer(training_lines())
    tokenizer.save(str(target / "tokenizer.json"), pretty=True)
    write_json(target / "tokenizer_config.json", tokenizer_config())
    write_json(target / "special_tokens_map.json", special_tokens_map())
    return tokenizer


def write_model_dir(target: Path) -> None:
    """Train the tokenizer and write every file of the model directory into ``target``."""
    tokenizer = write_tokenizer_files(target)
    write_json(target / "config.json", model_config(tokenizer))
    write_json(target / "generation_config.json", generation_config(tokenizer))


def is_complete(path: Path) -> bool:
    """True if ``path`` already holds every file of a generated model directory."""
    return all((path / name).is_file() for name in REQUIRED_FILES)


def build_dir_atomically(
    path: Path, write: Callable[[Path], None], complete: Callable[[Path], bool]
) -> Path:
    """Create the directory ``path`` with ``write`` unless ``complete(path)``; return ``path``.

    Files are written to a temporary sibling directory that is then renamed into place, so
    readers never see a half-written directory and concurrent callers are safe: the first
    rename wins, the others discard their copy. An existing empty directory (e.g. made by
    ``mkdir -p``) is replaced; a non-empty incomplete one is left alone and rejected.
    """
    path = Path(path)
    if complete(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same parent directory => same filesystem, so os.rename is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; other users (Slurm jobs) must read it.
        try:
            os.rename(tmp, path)
        except OSError:
            # Lost the race to another caller (target now non-empty): theirs is as good as ours.
            if not complete(path):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def ensure_tiny_model_dir(path: Path) -> Path:
    """Create the tokenizer + config directory at ``path`` unless it already exists.

    See :func:`build_dir_atomically` for how concurrent callers and existing directories are
    handled.
    """
    return build_dir_atomically(path, write_model_dir, is_complete)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m orchestrator.tiny.tokenizer DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.tiny.tokenizer",
        description="Generate (if missing) a tiny tokenizer/model directory for the Dynamo mocker.",
    )
    parser.add_argument("directory", type=Path, help="directory to create")
    args = parser.parse_args(argv)
    try:
        print(ensure_tiny_model_dir(args.directory))
    except (OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
