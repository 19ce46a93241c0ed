"""Block layouts, loaded from the language-neutral spec files ``lowbit/spec/<codec_id>.toml``.

A codec's bytes are a row-major sequence of *blocks* along the last axis. Each block holds
``block_size`` elements in ``type_size`` bytes, split into named *fields* (element codes,
scales, minimums, …), each an array of ``count`` items of ``bits`` bits starting at byte
``offset`` of the block. Inside a field, items are packed LSB-first: item ``i`` occupies bits
``[i*bits, (i+1)*bits)`` of the field's little-endian bit stream (for 4-bit items: even item in
the low nibble). Codecs that deviate (bitsandbytes' high-nibble-first, GGUF's split halves) say
so in ``bit_order``.

The spec file states ``type_size`` as arithmetic (``"2 + 16"``, as gguf does); the loader
computes the size from the fields and refuses a file where the two disagree. Parametric codecs
(the generic ``minifloat``) write sizes as integer expressions over named parameters, e.g.
``"lcm(w, 8) // w"``, evaluated for a concrete configuration.

>>> lay = BlockLayout.from_spec("fp4_e2m1")
>>> lay.block_size, lay.type_size, lay.bits_per_element
(2, 1, 4.0)
>>> BlockLayout.from_spec("minifloat", w=6).type_size   # four 6-bit codes in three bytes
3
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Mapping

from .errors import ConfigError, FormatError

__all__ = ["Field", "BlockLayout", "spec_path", "eval_size"]

BIT_ORDERS = ("lsb_first", "hi_nibble_first", "split_halves")
BYTE_ORDERS = ("little",)


@dataclass(frozen=True)
class Field:
    """One named array inside a block: ``count`` items of ``bits`` bits at byte ``offset``."""

    name: str
    bits: int
    count: int
    offset: int
    format: str | None = None

    @property
    def nbytes(self) -> int:
        return -(-self.bits * self.count // 8)

    @property
    def end(self) -> int:
        return self.offset + self.nbytes


@dataclass(frozen=True)
class BlockLayout:
    """The frozen, checked byte layout of one block of a codec."""

    codec_id: str
    block_size: int
    type_size: int
    fields: tuple[Field, ...]
    byte_order: str = "little"
    bit_order: str = "lsb_first"
    element: str | None = None
    title: str = ""

    def __post_init__(self) -> None:
        where = f"spec {self.codec_id}"
        if self.block_size < 1 or self.type_size < 1:
            raise FormatError(f"{where}: block_size and type_size must be positive")
        if self.bit_order not in BIT_ORDERS:
            raise FormatError(f"{where}: bit_order: expected one of {BIT_ORDERS}, got {self.bit_order!r}")
        if self.byte_order not in BYTE_ORDERS:
            raise FormatError(f"{where}: byte_order: expected one of {BYTE_ORDERS}, got {self.byte_order!r}")
        spans = sorted((f.offset, f.end, f.name) for f in self.fields)
        for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
            if b0 < a1:
                raise FormatError(f"{where}: fields {an!r} and {bn!r} overlap")
        end = max((f.end for f in self.fields), default=0)
        if end != self.type_size:
            raise FormatError(
                f"{where}: type_size: expected the fields' extent {end} bytes, got {self.type_size}"
            )

    @property
    def bits_per_element(self) -> float:
        """Storage bits per element of the block alone (side arrays in ``aux`` not included)."""
        return self.type_size * 8 / self.block_size

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"spec {self.codec_id}: no field {name!r}")

    @classmethod
    def from_spec(cls, codec_id: str, **params: int) -> "BlockLayout":
        """Load ``spec/<codec_id>.toml``; ``params`` fill a parametric spec's expressions."""
        return _load(codec_id, tuple(sorted(params.items())))

    @classmethod
    def from_toml(cls, text: str, **params: int) -> "BlockLayout":
        """Build a layout from TOML text (the spec file format)."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise FormatError(f"spec: not valid TOML: {e}") from None
        return _from_doc(doc, params)


def spec_path(codec_id: str) -> Any:
    """The packaged spec file of a codec (a ``Traversable``; ``.read_text()`` works)."""
    return resources.files("lowbit") / "spec" / f"{codec_id}.toml"


def spec_document(codec_id: str) -> dict[str, Any]:
    """The parsed TOML document of a codec's spec file."""
    path = spec_path(codec_id)
    if not path.is_file():
        raise ConfigError(f"{codec_id}: no spec file lowbit/spec/{codec_id}.toml")
    return tomllib.loads(path.read_text(encoding="utf-8"))


@functools.cache
def _load(codec_id: str, params: tuple[tuple[str, int], ...]) -> BlockLayout:
    doc = spec_document(codec_id)
    if doc.get("codec_id") != codec_id:
        raise FormatError(f"spec {codec_id}: codec_id: expected {codec_id!r}, got {doc.get('codec_id')!r}")
    return _from_doc(doc, dict(params))


def _from_doc(doc: Mapping[str, Any], params: Mapping[str, int]) -> BlockLayout:
    cid = str(doc.get("codec_id", "?"))

    def size(key: str, v: Any) -> int:
        return eval_size(v, params, where=f"spec {cid}: {key}")

    fields = tuple(
        Field(
            name=str(f["name"]),
            bits=size("field.bits", f["bits"]),
            count=size("field.count", f["count"]),
            offset=size("field.offset", f.get("offset", 0)),
            format=f.get("format"),
        )
        for f in doc.get("field", [])
    )
    return BlockLayout(
        codec_id=cid,
        block_size=size("block_size", doc["block_size"]),
        type_size=size("type_size", doc["type_size"]),
        fields=fields,
        byte_order=doc.get("byte_order", "little"),
        bit_order=doc.get("bit_order", "lsb_first"),
        element=doc.get("element"),
        title=doc.get("title", ""),
    )


# ---- a tiny, safe integer-expression evaluator for spec sizes --------------------------------

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}
_FUNCS = {"lcm": math.lcm, "gcd": math.gcd, "max": max, "min": min}


def eval_size(expr: int | str, params: Mapping[str, int], *, where: str = "spec") -> int:
    """Evaluate an int or an integer expression string (``+ - * //``, ``lcm gcd max min``,
    parameter names) — nothing else is allowed."""
    if isinstance(expr, int) and not isinstance(expr, bool):
        return expr
    if not isinstance(expr, str):
        raise FormatError(f"{where}: expected an integer or an expression string, got {expr!r}")

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in params:
                raise FormatError(f"{where}: unknown parameter {node.id!r} in {expr!r} (given: {sorted(params)})")
            return int(params[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
            return _FUNCS[node.func.id](*(ev(a) for a in node.args))
        raise FormatError(f"{where}: unsupported syntax in size expression {expr!r}")

    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise FormatError(f"{where}: not an expression: {expr!r}") from None
    return ev(tree)
