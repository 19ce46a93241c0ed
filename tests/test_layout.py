"""Spec files: every codec's TOML parses, sizes are computed and checked, presets agree with the
generic spec and with the codec's own defaults."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

import lowbit
from lowbit.errors import FormatError
from lowbit.layout import BlockLayout, eval_size, spec_document

SPEC = resources.files("lowbit") / "spec"


@pytest.mark.parametrize("codec_id", lowbit.list_codecs())
def test_every_codec_has_a_spec(codec_id: str) -> None:
    doc = spec_document(codec_id)
    assert doc["codec_id"] == codec_id and doc.get("title")
    c = lowbit.get_codec(codec_id)
    lay = c.layout
    assert lay.block_size == c.block_size and lay.type_size == c.type_size
    if c.preset and hasattr(c, "encoding"):  # element-codec presets (int8, fp8_e4m3, ...)
        assert doc["element"] == c.format.name
        assert doc["policy"] == {"overflow": c.encoding.overflow, "on_nan": c.encoding.on_nan}
        generic = BlockLayout.from_spec(c.generic_spec, w=c.encoding.storage_bits)
        assert (generic.block_size, generic.type_size) == (lay.block_size, lay.type_size)
        assert [(f.bits, f.count, f.offset) for f in generic.fields] == [(f.bits, f.count, f.offset) for f in lay.fields]


def test_no_orphan_spec_files() -> None:
    ids = set(lowbit.list_codecs())
    for p in SPEC.iterdir():
        if p.name.endswith(".toml"):
            assert p.name[:-5] in ids, f"spec/{p.name} names no registered codec"
    for p in (SPEC / "vectors").iterdir():
        assert p.name[:-5] in ids, f"spec/vectors/{p.name} names no registered codec"


@pytest.mark.parametrize("w", range(1, 25))
def test_generic_sizes(w: int) -> None:
    lay = BlockLayout.from_spec("minifloat", w=w)
    assert lay.type_size * 8 == lay.block_size * w and lay.bits_per_element == w


def test_type_size_is_checked() -> None:
    text = 'codec_id = "x"\nblock_size = 32\ntype_size = "2 + 16"\n[[field]]\nname = "d"\nbits = 16\ncount = 1\noffset = 0\n[[field]]\nname = "qs"\nbits = 4\ncount = 32\noffset = 2\n'
    assert BlockLayout.from_toml(text).type_size == 18
    with pytest.raises(FormatError, match="type_size"):
        BlockLayout.from_toml(text.replace('"2 + 16"', '"2 + 17"'))
    with pytest.raises(FormatError, match="overlap"):
        BlockLayout.from_toml(text.replace("offset = 2", "offset = 1"))
    with pytest.raises(FormatError, match="TOML"):
        BlockLayout.from_toml("codec_id = ")


@pytest.mark.parametrize("expr", ["__import__('os')", "w ** 2", "open('x')", "[1][0]", "w.bit_length()", "1 if w else 2"])
def test_size_expressions_are_sandboxed(expr: str) -> None:
    with pytest.raises(FormatError):
        eval_size(expr, {"w": 4})


def test_size_expressions() -> None:
    assert eval_size("lcm(w, 8) // w", {"w": 6}) == 4
    assert eval_size("2 + 16", {}) == 18
    with pytest.raises(FormatError, match="unknown parameter"):
        eval_size("v + 1", {"w": 1})


def test_spec_files_are_valid_toml() -> None:
    for p in SPEC.iterdir():
        if p.name.endswith(".toml"):
            tomllib.loads(p.read_text())
