"""A minimal safetensors writer and reader on numpy alone (no torch, no ``safetensors`` package).

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N,
N bytes of JSON mapping each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets relative to the end of the header) plus an optional ``"__metadata__"`` string map,
then the raw little-endian tensor bytes. numpy has no bfloat16, so bf16 tensors are carried as
their uint16 bit patterns.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# safetensors dtype name -> numpy dtype of the stored bits (little-endian).
STORED_DTYPES: dict[str, np.dtype[Any]] = {
    "BF16": np.dtype("<u2"),
    "F32": np.dtype("<f4"),
}
# transformers refuses a checkpoint whose metadata lacks a known "format" ("pt" for PyTorch).
DEFAULT_METADATA: dict[str, str] = {"format": "pt"}


def to_bf16_bits(values: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    """Round float32 values to bfloat16 (round to nearest, ties to even); return the bit patterns.

    bfloat16 is the top 16 bits of a float32. Adding 0x7FFF plus the lowest kept bit before
    truncating rounds to nearest-even, as torch's ``.to(torch.bfloat16)`` does. Inputs must be
    finite (the random weights here always are): a NaN payload could round into infinity.
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def from_bf16_bits(bits: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """Widen bfloat16 bit patterns back to float32 (exact)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def encode(array: npt.NDArray[np.float32], dtype: str) -> npt.NDArray[Any]:
    """Convert a float32 array to the stored representation of safetensors ``dtype``."""
    if dtype == "BF16":
        return to_bf16_bits(array)
    if dtype == "F32":
        return np.ascontiguousarray(array, dtype=STORED_DTYPES["F32"])
    raise ValueError(
        f"unsupported safetensors dtype {dtype!r} (supported: {sorted(STORED_DTYPES)})"
    )


def build_header(
    arrays: Mapping[str, npt.NDArray[Any]], dtype: str, metadata: Mapping[str, str]
) -> bytes:
    """The JSON header for ``arrays`` (already encoded), laid out in the mapping's order.

    Padded with spaces to a multiple of 8 bytes, as the reference writer does, so that every
    tensor starts 8-byte aligned in a memory-mapped file.
    """
    entries: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, array in arrays.items():
        entries[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    header = json.dumps(entries, separators=(",", ":")).encode("utf-8")
    return header + b" " * (-len(header) % 8)


def write_safetensors(
    path: Path,
    tensors: Mapping[str, npt.NDArray[np.float32]],
    dtype: str,
    metadata: Mapping[str, str] = DEFAULT_METADATA,
) -> int:
    """Write float32 ``tensors`` as one safetensors file of ``dtype`` (BF16 or F32); return bytes.

    Tensors are written in sorted name order, so the file depends only on their contents.
    """
    arrays = {name: encode(tensors[name], dtype) for name in sorted(tensors)}
    header = build_header(arrays, dtype, metadata)
    with Path(path).open("wb") as fh:
        fh.write(struct.pack("<Q", len(header)))
        fh.write(header)
        for array in arrays.values():
            fh.write(array.tobytes(order="C"))
    return 8 + len(header) + sum(a.nbytes for a in arrays.values())


def read_header(path: Path) -> dict[str, Any]:
    """Parse a safetensors file's JSON header (tensor entries and ``__metadata__``)."""
    with Path(path).open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header: dict[str, Any] = json.loads(fh.read(length))
    return header


def read_tensor(path: Path, name: str) -> npt.NDArray[np.float32]:
    """Read one tensor back as float32 (for checks; loaders use their own readers)."""
    header = read_header(path)
    entry = header[name]
    begin, end = entry["data_offsets"]
    with Path(path).open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        fh.seek(8 + length + begin)
        raw = fh.read(end - begin)
    stored = np.frombuffer(raw, dtype=STORED_DTYPES[entry["dtype"]]).reshape(entry["shape"])
    if entry["dtype"] == "BF16":
        return from_bf16_bits(stored)
    return stored.astype(np.float32)
