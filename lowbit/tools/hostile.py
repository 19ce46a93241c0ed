"""Crafted files at and past the readers' limits, for the fuzz tests and benchmarks/bench_readers.py.

Each builder returns the bytes of a file that is valid except for the one property it floods or
breaks (metadata floods, zero-size tensors, overlapping tensors, shapes past int64, deep nesting),
so a reader's handling of exactly that property is what gets measured or tested.
"""

from __future__ import annotations

import json
import struct

__all__ = ["gguf_bytes", "gguf_string_flood", "gguf_array_flood", "gguf_zero_tensors", "gguf_overlap",
           "safetensors_bytes", "safetensors_zero_tensors", "safetensors_big_shape", "safetensors_deep_lowbit",
           "safetensors_list_flood"]


def _s(text: str | bytes) -> bytes:
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def gguf_bytes(kv: list[bytes], tensors: list[tuple[str, list[int], int, int]], data: bytes = b"",
               align: int = 32) -> bytes:
    """A GGUF v3 file from encoded metadata entries (``key + type + value`` bytes) and tensor
    infos (name, ne, ggml type id, offset), followed by ``data`` at the aligned data offset."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv)
    for name, ne, t, off in tensors:
        head += _s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        head += struct.pack("<IQ", t, off)
    head += b"\0" * (-len(head) % align)
    return head + data


def gguf_string_flood(n: int, length: int = 0) -> bytes:
    """One metadata key holding an array of ``n`` strings of ``length`` ASCII bytes."""
    item = _s(b"a" * length)
    return gguf_bytes([_s("flood") + struct.pack("<IIQ", 9, 8, n) + item * n], [])


def gguf_array_flood(n: int) -> bytes:
    """One metadata key holding an array of ``n`` empty uint8 arrays."""
    item = struct.pack("<IQ", 0, 0)
    return gguf_bytes([_s("flood") + struct.pack("<IIQ", 9, 9, n) + item * n], [])


def gguf_zero_tensors(n: int) -> bytes:
    """``n`` f32 tensors of shape [0] at offset 0."""
    return gguf_bytes([], [(f"t{i}", [0], 0, 0) for i in range(n)])


def gguf_overlap(first: int = 0, second: int = 0, nbytes: int = 64) -> bytes:
    """Two f32 tensors of ``nbytes`` each at offsets ``first`` and ``second`` (overlapping unless
    they are ``nbytes`` or more apart)."""
    n = nbytes // 4
    end = max(first, second) + nbytes
    return gguf_bytes([], [("a", [n], 0, first), ("b", [n], 0, second)], b"\0" * end)


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    """A safetensors file: the JSON header (spaces to 8-byte alignment), then ``data``."""
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-(8 + len(blob)) % 8)
    return struct.pack("<Q", len(blob)) + blob + data


def safetensors_zero_tensors(n: int) -> bytes:
    """``n`` F32 tensors of shape [0] (the JSON joined as text: no dict of n entries in memory)."""
    blob = ("{" + ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(n)) + "}").encode()
    blob += b" " * (-(8 + len(blob)) % 8)
    return struct.pack("<Q", len(blob)) + blob


def safetensors_big_shape(shape: list[int], dtype: str = "U8") -> bytes:
    """One tensor of ``shape`` holding no bytes (a zero among the sizes, others past int64)."""
    return safetensors_bytes({"x": {"dtype": dtype, "shape": shape, "data_offsets": [0, 0]}})


def safetensors_deep_lowbit(depth: int) -> bytes:
    """A lowbit index whose one tensor's config nests ``depth`` lists deep."""
    index = '{"format":1,"tensors":{"x":{"config":{"id":"int8","scale":' + "[" * depth + "]" * depth + '},"shape":[1],"aux":[]}}}'
    return safetensors_bytes({"__metadata__": {"lowbit": index}, "x": {"dtype": "I8", "shape": [1], "data_offsets": [0, 1]}}, b"\0")


def safetensors_list_flood(n: int) -> bytes:
    """A header whose metadata value is JSON of ``n`` empty lists (legal: metadata values are strings)
    plus a tensor entry whose shape is a list of ``n`` zeros."""
    return safetensors_bytes({"__metadata__": {"lowbit": "[" + ",".join(["[]"] * n) + "]"},
                              "x": {"dtype": "U8", "shape": [0] * n, "data_offsets": [0, 0]}})
