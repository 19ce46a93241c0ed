"""The readers at and past their limits (issue 18): shapes past int64, deep nesting in lowbit's
metadata, overlapping GGUF tensors, floods of metadata values and of tensors. Each crafted file is
refused with a FormatError naming the field, or read, never a foreign exception."""

from __future__ import annotations

from pathlib import Path

import pytest

import lowbit
from lowbit.formats import gguf as G
from lowbit.formats import safetensors as st
from lowbit.tools import hostile as H


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("shape,dtype", [([0, 2**70], "U8"), ([0, 2**40, 2**40], "U8"), ([0, 2**62, 2], "F32"),
                                         ([2**63, 0], "F64")])
def test_safetensors_shape_past_int64(tmp_path: Path, shape: list[int], dtype: str) -> None:
    p = _write(tmp_path, "s.safetensors", H.safetensors_big_shape(shape, dtype))
    with pytest.raises(lowbit.FormatError, match="tensor 'x': shape"):
        lowbit.load(p)


def test_safetensors_lowbit_index_shape_past_int64(tmp_path: Path) -> None:
    index = '{"format":1,"tensors":{"x":{"config":{"id":"int8"},"shape":[0,' + str(2**70) + '],"aux":[]}}}'
    p = _write(tmp_path, "i.safetensors", H.safetensors_bytes(
        {"__metadata__": {"lowbit": index}, "x": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}))
    with pytest.raises(lowbit.FormatError, match="'x': lowbit metadata"):
        lowbit.load(p)


@pytest.mark.parametrize("depth", [33, 5_000, 200_000])  # 33: one past MAX_JSON_DEPTH
def test_safetensors_deep_lowbit_metadata(tmp_path: Path, depth: int) -> None:
    p = _write(tmp_path, "d.safetensors", H.safetensors_deep_lowbit(depth))
    with pytest.raises(lowbit.FormatError, match="metadata 'lowbit'.*nested"):
        lowbit.load(p)
    assert st.MAX_JSON_DEPTH == 32


def test_safetensors_value_flood(tmp_path: Path) -> None:
    p = _write(tmp_path, "f.safetensors", H.safetensors_list_flood((1 << 22) // 2 + 1))
    with pytest.raises(lowbit.FormatError, match="exceed the limit of"):
        lowbit.load(p)


def test_safetensors_tensor_count_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "MAX_TENSORS", 100)  # the mechanism, at a size a test can afford
    assert len(lowbit.load(_write(tmp_path, "a.safetensors", H.safetensors_zero_tensors(100)))) == 100
    with pytest.raises(lowbit.FormatError, match="more than 100 tensor entries"):
        lowbit.load(_write(tmp_path, "b.safetensors", H.safetensors_zero_tensors(101)))


def test_safetensors_unknown_entry_keys(tmp_path: Path) -> None:
    p = _write(tmp_path, "k.safetensors", H.safetensors_bytes(
        {"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "extra": [[[[]]]]}}, b"\0"))
    with pytest.raises(lowbit.FormatError, match="tensor 'x': expected an object with the keys"):
        lowbit.load(p)


@pytest.mark.parametrize("first,second", [(0, 0), (0, 32), (32, 0), (64, 32)])
def test_gguf_overlapping_tensors(tmp_path: Path, first: int, second: int) -> None:
    p = _write(tmp_path, "o.gguf", H.gguf_overlap(first, second, nbytes=64))
    with pytest.raises(lowbit.FormatError, match="overlap"):
        G.read(p)


def test_gguf_adjacent_and_empty_tensors_do_not_overlap(tmp_path: Path) -> None:
    assert len(G.read(_write(tmp_path, "a.gguf", H.gguf_overlap(0, 64, nbytes=64))).tensors) == 2
    assert len(G.load(_write(tmp_path, "z.gguf", H.gguf_zero_tensors(50)))) == 50


def test_gguf_metadata_value_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(G, "MAX_METADATA_VALUES", 1000)
    # one key (1 value) plus 999 strings / arrays: at the limit; one more: refused before parsing it
    for flood in (H.gguf_string_flood, H.gguf_array_flood):
        assert len(G.read(_write(tmp_path, "s.gguf", flood(999))).metadata["flood"]) == 999
        with pytest.raises(lowbit.FormatError, match="more than 1000 metadata values"):
            G.read(_write(tmp_path, "t.gguf", flood(1000)))


def test_gguf_tensor_count_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(G, "MAX_TENSORS", 100)
    assert len(G.read(_write(tmp_path, "a.gguf", H.gguf_zero_tensors(100))).tensors) == 100
    with pytest.raises(lowbit.FormatError, match="tensor count: 101 exceeds the limit of 100"):
        G.read(_write(tmp_path, "b.gguf", H.gguf_zero_tensors(101)))


def test_gguf_string_arrays_decode_and_name_bad_utf8(tmp_path: Path) -> None:
    from lowbit.tools.hostile import _s, gguf_bytes
    import struct

    items = ["a", "", "é\0x", "tok"]
    data = gguf_bytes([_s("v") + struct.pack("<IIQ", 9, 8, len(items)) + b"".join(_s(t) for t in items)], [])
    assert G.read(_write(tmp_path, "u.gguf", data)).metadata["v"] == items
    bad = gguf_bytes([_s("v") + struct.pack("<IIQ", 9, 8, 3) + _s("ok") + _s(b"\xc3") + _s("z")], [])
    with pytest.raises(lowbit.FormatError, match=r"metadata 'v'\[1\]: not valid UTF-8"):
        G.read(_write(tmp_path, "b.gguf", bad))


@pytest.mark.parametrize("case", ["equal", "equal-utf8", "one-longer", "nul", "bad-utf8", "empty", "nested-equal",
                                  "nested-one-differs", "nested-empty"])
def test_gguf_uniform_array_fast_path_equals_the_general_path(tmp_path: Path, case: str) -> None:
    """Equal-length string arrays and equal nested arrays are read in one numpy pass (the floods a
    hostile file repeats): the values are those gguf-py's reader gives, and every deviation (a
    longer string, a NUL, bad UTF-8, one nested array of another length) falls back to the general
    path with the same result or error."""
    import struct

    import numpy as np
    from gguf import GGUFReader

    from lowbit.tools.hostile import _s, gguf_bytes

    n = 300
    if case.startswith("nested"):
        rows = [np.arange(i, i + 3, dtype=np.int32) for i in range(n)] if case != "nested-empty" else [np.zeros(0, np.int32)] * n
        if case == "nested-one-differs":
            rows[150] = np.arange(4, dtype=np.int32)
        body = b"".join(struct.pack("<IQ", 5, r.size) + r.tobytes() for r in rows)
        data = gguf_bytes([_s("v") + struct.pack("<IIQ", 9, 9, n) + body], [])
        got = G.read(_write(tmp_path, "a.gguf", data)).metadata["v"]
        assert len(got) == n and all(np.array_equal(g, r) and g.dtype == np.int32 for g, r in zip(got, rows))
        return
    items = {"equal": [f"t{i:03d}" for i in range(n)], "equal-utf8": ["é" + f"{i:03d}" for i in range(n)],
             "one-longer": [f"t{i:03d}" for i in range(n)], "nul": [f"t{i:03d}" for i in range(n)],
             "bad-utf8": [f"t{i:03d}" for i in range(n)], "empty": [""] * n}[case]
    raw = [t.encode() for t in items]
    if case == "one-longer":
        raw[200] += b"x"
    if case == "nul":
        raw[7] = b"t\0" + raw[7][2:]
    if case == "bad-utf8":
        raw[250] = b"t\xc3" + raw[250][2:]
    data = gguf_bytes([_s("v") + struct.pack("<IIQ", 9, 8, n) + b"".join(_s(b) for b in raw)], [])
    path = _write(tmp_path, "s.gguf", data)
    if case == "bad-utf8":
        with pytest.raises(lowbit.FormatError, match=r"metadata 'v'\[250\]: not valid UTF-8"):
            G.read(path)
        return
    got = G.read(path).metadata["v"]
    field = GGUFReader(path).fields["v"]
    want = [bytes(field.parts[i]).decode() for i in field.data]
    assert got == want == [b.decode() for b in raw]
