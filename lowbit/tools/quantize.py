"""``lowbit quantize``: a float checkpoint (safetensors or GGUF) to a quantized one, tensor by tensor.

Which codec each tensor gets is decided by rules, first match wins::

    --rule 'norm|bias=keep' --rule 'embed=fp8_e4m3:scale=channel' --codec fp4_e2m1 --param scale=channel

A rule is ``REGEX=SPEC`` (the regex is searched in the tensor name, as llama-quantize's
``--tensor-type``); ``SPEC`` is ``keep`` or ``codec_id[:param=value,...]`` (values are JSON when
they parse, strings otherwise). ``--mix q4_k_m`` chooses GGUF types the way llama-quantize does
(:mod:`lowbit.tools.mixes`); rules override it. Tensors no rule (or mix) names get the default
codec, except 1-D tensors and tensors whose last dimension does not fit the codec's block, which
are kept as they are and listed in the summary. ``--imatrix`` passes llama.cpp importance weights
(``importance=``) to the codecs that take them.

The output (``.gguf`` → GGUF, otherwise lowbit's safetensors) header is computed from shapes
alone, so tensors are then read (memory-mapped), encoded and written one at a time — peak memory
stays near the largest tensor — into a file that only gets its name when complete.
``jobs > 1`` encodes in a process pool, writing in order.
"""

from __future__ import annotations

import json
import math
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

import lowbit
from lowbit.codec import QTensor
from lowbit.errors import ConfigError, FormatError, LowbitError
from lowbit.formats import gguf as G
from lowbit.formats import safetensors as st
from lowbit.tools.progress import Progress

__all__ = ["Rule", "parse_rule", "parse_params", "Decision", "plan", "quantize_file", "GGUF_METADATA_KEY"]

GGUF_METADATA_KEY = "gguf.metadata"  # safetensors metadata: a GGUF source's typed key/value pairs


def parse_params(items: list[str] | str | None) -> dict[str, Any]:
    """``["scale=channel", "bits=4"]`` or ``"scale=channel,bits=4"`` → ``{"scale": "channel", "bits": 4}``."""
    if not items:
        return {}
    if isinstance(items, str):
        items = [p for p in items.split(",") if p]
    out: dict[str, Any] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ConfigError(f"parameter: expected NAME=VALUE, got {item!r}")
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    codec: lowbit.Codec | None  # None: keep the tensor as it is
    text: str


def parse_rule(text: str) -> Rule:
    """``REGEX=keep`` or ``REGEX=codec_id[:param=value,...]`` (the regex may contain ``=``)."""
    pat, sep, spec = _split_rule(text)
    if not sep:
        raise ConfigError(f"rule: expected REGEX=SPEC with SPEC 'keep' or a codec id, got {text!r}")
    try:
        rx = re.compile(pat)
    except re.error as e:
        raise ConfigError(f"rule {text!r}: bad regex ({e})") from None
    if spec.strip() == "keep":
        return Rule(rx, None, text)
    cid, _, params = spec.partition(":")
    return Rule(rx, lowbit.get_codec(cid.strip(), **parse_params(params)), text)


def _split_rule(text: str) -> tuple[str, str, str]:
    """Split at the first ``=`` whose right side starts with ``keep`` or a registered codec id."""
    ids = set(lowbit.list_codecs()) | {"keep"}
    for m in re.finditer("=", text):
        right = text[m.end():]
        if right.split(":", 1)[0].strip() in ids:
            return text[: m.start()], "=", right
    return "", "", ""


READABLE = ("F16", "BF16", "F32", "F64")  # float dtypes read as values (F64 is rounded to float32)


@dataclass
class Decision:
    name: str
    shape: tuple[int, ...]
    source: str  # "F32" ..., or "lowbit:<codec id>" for a quantized source tensor
    codec: lowbit.Codec | None
    reason: str
    entries: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)
    out_bytes: int = 0
    cast: str | None = None  # "float16": not quantized but stored as F16 (a mix's fallback)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "from": self.source,
                "to": self.codec.get_config() if self.codec else (self.cast or "kept"), "reason": self.reason,
                "bytes": self.out_bytes}

    @staticmethod
    def target(d: dict[str, Any]) -> str:
        """The short word for a decision's ``to``: a codec id, ``float16`` or ``kept``."""
        return d["to"] if isinstance(d["to"], str) else d["to"]["id"]


# ---- sources: what a tensor is, without reading it -----------------------------------------------

def _describe(src: Any, name: str) -> tuple[tuple[int, ...], str]:
    if isinstance(src, G.GGUFFile):
        t = src.tensor(name)
        tn = t.type_name
        if tn in G._CODEC_TYPES:
            return t.shape, "lowbit:" + tn
        return t.shape, {"f32": "F32", "f16": "F16", "bf16": "BF16", "f64": "F64"}.get(tn, tn.upper())
    ent = src.quantized.get(name)
    if ent is not None:
        return tuple(int(d) for d in ent["shape"]), "lowbit:" + ent["config"]["id"]
    inf = src.info(name)
    return inf["shape"], inf["dtype"]


def _kept_entries(src: Any, name: str, out_gguf: bool) -> list[tuple[str, str, tuple[int, ...]]]:
    """The output entries of a tensor copied as it is."""
    if isinstance(src, G.GGUFFile):
        t = src.tensor(name)
        if out_gguf:
            return [(name, t.type_name, t.shape)]
        return [(n, d, s) for n, d, s, _ in st.layout_entries(name, src.get(name, copy=False))]
    inf = src.info(name)
    if out_gguf:
        return [(n, tn, s) for n, tn, s, _ in [G.entry(name, src.get(name, copy=False))]]
    return [(name, inf["dtype"], inf["shape"])] + [(n, src.info(n)["dtype"], src.info(n)["shape"])
                                                   for n in src.keys() if n.startswith(name + st.AUX_SEP)]


def output_entries(name: str, shape: tuple[int, ...], codec: lowbit.Codec, out_gguf: bool) -> list[tuple[str, str, tuple[int, ...]]]:
    """The entries (name, dtype or ggml type, shape) a QTensor of ``shape`` occupies in the output."""
    if out_gguf:
        return [(name, codec.codec_id, shape)]
    nat = st.native_dtype_for(codec)
    data_shape = shape if nat else shape[:-1] + (codec.row_bytes(shape[-1]),)
    out = [(name, nat or "U8", data_shape)]
    for k, (ashape, adt) in sorted(codec._aux_spec(shape).items()):
        out.append((name + st.AUX_SEP + k, st._dtype_of(np.zeros(0, np.dtype(adt))), tuple(ashape)))
    return out


def _entry_bytes(e: tuple[str, str, tuple[int, ...]], out_gguf: bool) -> int:
    name, d, shape = e
    if out_gguf:
        tid = G._TYPE_ID[d]
        _, bs, ts = G.BLOCK[tid]
        return math.prod(shape) // bs * ts
    return st._nbytes(d, shape, name)


def plan(src: Any, rules: list[Rule], default: lowbit.Codec | None, *, mix: str | None = None,
         out_gguf: bool = False) -> list[Decision]:
    """Which codec each tensor gets, and why."""
    names = src.names()
    shapes = {n: _describe(src, n) for n in names}
    mixed: dict[str, str | None] = {}
    if mix:
        from lowbit.tools.mixes import gguf_mix_plan

        mixed = gguf_mix_plan([(n, shapes[n][0]) for n in names], mix)
    out = []
    for name in names:
        shape, kind = shapes[name]
        rule = next((r for r in rules if r.pattern.search(name)), None)
        to_f16 = False
        if rule is not None:
            codec, reason = rule.codec, f"rule {rule.text!r}"
        elif mix:
            t = mixed.get(name)
            if t == "f16":  # llama-quantize's last fallback: no block type fits the rows
                codec, reason, to_f16 = None, f"mix {mix}: f16 (rows of {shape[-1]} fit no block type)", True
            else:
                codec, reason = (lowbit.get_codec(t), f"mix {mix}") if t else (None, f"kept: mix {mix}")
        else:
            codec, reason = default, "default"
        if codec is not None and kind not in READABLE and not kind.startswith("lowbit:"):
            codec, reason = None, f"kept: {kind} is not a float dtype lowbit reads as values"
        elif codec is not None and rule is None and not mix and len(shape) < 2:
            codec, reason = None, "kept: 1-D (norms and biases stay in full precision unless a rule names them)"
        if codec is not None:
            try:
                codec._check_shape(shape)
            except LowbitError as e:
                codec, reason = None, f"kept: {e}"
        if codec is not None and out_gguf and codec.codec_id not in G._CODEC_TYPES:
            raise ConfigError(f"quantize: {name}: codec {codec.codec_id!r} cannot be stored in GGUF (choose a GGUF type or a .safetensors output)")
        d = Decision(name, shape, kind, codec, reason)
        if codec is None and to_f16 and (kind in READABLE or kind.startswith("lowbit:")):
            d.cast = "float16"
            d.entries = [(name, "f16" if out_gguf else "F16", shape)]
        else:
            d.entries = output_entries(name, shape, codec, out_gguf) if codec is not None else _kept_entries(src, name, out_gguf)
        d.out_bytes = sum(_entry_bytes(e, out_gguf) for e in d.entries)
        out.append(d)
    return out


# ---- the work, possibly in worker processes ---------------------------------------------------------

_OPEN: dict[str, Any] = {}
_IMATRIX: dict[str, dict[str, np.ndarray]] = {}


def _source(path: str) -> Any:
    if path not in _OPEN:
        _OPEN[path] = lowbit.open_file(path)
    return _OPEN[path]


def _produce(path: str, name: str, config: dict[str, Any] | None, imatrix: str | None,
             out_gguf: bool, cast: str | None = None) -> list[tuple[str, np.ndarray]]:
    """The bytes of one tensor's output entries."""
    src = _source(path)
    if cast is not None:
        t = src.get(name, copy=False)
        with np.errstate(over="ignore"):
            return [(name, np.asarray(lowbit.decode(t) if isinstance(t, QTensor) else t, dtype=np.float32).astype(cast))]
    if config is None:  # kept: the stored bytes, untouched (side arrays too)
        if isinstance(src, G.GGUFFile):
            if out_gguf:
                return [(name, np.array(src.raw(name)))]
            return [(n, np.asarray(a)) for n, _, _, a in st.layout_entries(name, src.get(name))]
        if out_gguf:
            return [(name, G.entry(name, src.get(name))[3])]
        names = [name] + sorted(n for n in src.keys() if n.startswith(name + st.AUX_SEP))
        return [(n, np.array(src.raw(n))) for n in names]
    t = src.get(name, copy=False)
    x = lowbit.decode(t) if isinstance(t, QTensor) else np.asarray(t, dtype=np.float32)
    codec = lowbit.get_codec(config)
    kw: dict[str, Any] = {}
    if imatrix and "importance" in codec.encode_kwargs:
        if imatrix not in _IMATRIX:
            from lowbit.tools.mixes import read_imatrix

            _IMATRIX[imatrix] = read_imatrix(imatrix)
        w = _IMATRIX[imatrix].get(name)
        if w is not None:
            if w.shape != (x.shape[-1],):
                raise FormatError(f"imatrix {imatrix}: entry {name!r}: expected {x.shape[-1]} weights, got {w.shape}")
            kw["importance"] = w
    q = codec.encode(x, backend="cpu", **kw)
    if out_gguf:
        return [(name, np.asarray(q.data))]
    return [(n, np.asarray(a)) for n, _, _, a in st.layout_entries(name, q)]


def _typed_gguf_metadata(src: Any) -> tuple[dict[str, Any], dict[str, tuple[int, int | None]]]:
    """A GGUF source's metadata and value types, or those a safetensors file carried from one."""
    if isinstance(src, G.GGUFFile):
        return dict(src.metadata), dict(src.metadata_types)
    blob = getattr(src, "metadata", {}).get(GGUF_METADATA_KEY)
    if not blob:
        return {}, {}
    try:
        items = json.loads(blob)
        meta = {k: (np.asarray(v, dtype=np.dtype(G._SCALAR[e])) if t == G.ARRAY and e in G._SCALAR else v)
                for k, (t, e, v) in items.items()}
        return meta, {k: (t, e) for k, (t, e, _) in items.items()}
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"{GGUF_METADATA_KEY!r} metadata is malformed ({e})") from None


def gguf_metadata_json(meta: dict[str, Any], types: dict[str, tuple[int, int | None]]) -> str:
    """Typed GGUF metadata as JSON ``{key: [type, element type, value]}`` for safetensors."""
    def plain(v: Any) -> Any:
        return v.tolist() if isinstance(v, np.ndarray) else v

    return json.dumps({k: [types[k][0], types[k][1], plain(v)] for k, v in meta.items()})


def quantize_file(inp: str | Path, out: str | Path, *, codec: lowbit.Codec | None = None, rules: list[Rule] | None = None,
                  mix: str | None = None, imatrix: str | Path | None = None, jobs: int = 1, progress: bool = True,
                  metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Quantize a checkpoint's float tensors into ``out`` (``.gguf``: GGUF, else safetensors)."""
    t0 = time.perf_counter()
    out_gguf = Path(out).suffix.lower() == ".gguf"
    src = lowbit.open_file(inp)
    try:
        decisions = plan(src, rules or [], codec, mix=mix, out_gguf=out_gguf)
        gmeta, gtypes = _typed_gguf_metadata(src)
        specs = [e for d in decisions for e in d.entries]
        total = sum(d.out_bytes for d in decisions)
        work = [(str(inp), d.name, d.codec.get_config() if d.codec else None, str(imatrix) if imatrix else None, out_gguf,
                 d.cast) for d in decisions]
        if out_gguf:
            if mix:
                from lowbit.tools.mixes import FTYPE

                gmeta["general.file_type"] = FTYPE[mix.lower()]
                gtypes["general.file_type"] = (G.UINT32, None)
            gmeta.update(metadata or {})
            writer: Any = G.Writer(out, specs, gmeta, gtypes)
        else:
            meta = st.user_metadata(getattr(src, "metadata", {})) if not isinstance(src, G.GGUFFile) else {}
            if gmeta:
                meta[GGUF_METADATA_KEY] = gguf_metadata_json(gmeta, gtypes)
            meta.update(metadata or {})
            index: dict[str, Any] = {}
            old = src.quantized if isinstance(src, st.SafetensorsFile) else {}
            for d in decisions:
                if d.codec is not None:
                    index[d.name] = {"config": d.codec.get_config(), "shape": list(d.shape), "aux": sorted(d.codec._aux_spec(d.shape))}
                elif d.name in old:
                    index[d.name] = old[d.name]
                elif d.source.startswith("lowbit:"):  # a GGUF block tensor carried over
                    index[d.name] = {"config": {"id": d.source[7:]}, "shape": list(d.shape), "aux": []}
            meta[st.METADATA_KEY] = json.dumps({"format": 1, "tensors": index}, sort_keys=True)
            writer = st.Writer(out, specs, meta, checksums=True)
        with writer as w, Progress(total, "quantize", enabled=progress) as bar:
            for d, produced in zip(decisions, _run(work, jobs)):
                for n, a in produced:
                    w.write(n, a)
                bar.update(d.out_bytes, d.name)
    finally:
        src.close()
    n_in = sum(math.prod(d.shape) for d in decisions)
    out_bytes = Path(out).stat().st_size
    return {
        "input": str(inp), "output": str(out), "container": "gguf" if out_gguf else "safetensors",
        "tensors": len(decisions), "quantized": sum(d.codec is not None for d in decisions),
        "elements": n_in, "output_bytes": out_bytes, "bits_per_element": out_bytes * 8 / max(n_in, 1),
        "seconds": time.perf_counter() - t0,
        "decisions": [d.as_dict() for d in decisions],
    }


def _run(work: list[tuple[Any, ...]], jobs: int) -> Iterator[list[tuple[str, np.ndarray]]]:
    if jobs <= 1:
        for w in work:
            yield _produce(*w)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        # a bounded window keeps at most ~2*jobs encoded tensors in memory at once
        pending = []
        for w in work:
            pending.append(pool.submit(_produce, *w))
            if len(pending) >= 2 * jobs:
                yield pending.pop(0).result()
        for f in pending:
            yield f.result()
