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
``jobs > 1`` encodes in a process pool, writing in order. The input may be a sharded safetensors
checkpoint (its folder or index). An output folder (``OUT_DIR/``) or ``dask=`` writes the same
plan (:func:`prepare`) shard by shard, one task per shard, resumably (:mod:`lowbit.tools.sharding`).
"""

from __future__ import annotations

import json
import math
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

import lowbit
from lowbit.codec import QTensor
from lowbit.errors import ConfigError, FormatError, LowbitError
from lowbit.formats import gguf as G
from lowbit.formats import safetensors as st
from lowbit.tools.progress import Progress

__all__ = ["Rule", "parse_rule", "parse_params", "Decision", "LlamaJob", "plan", "prepare", "Prepared", "quantize_file",
           "write_direct", "GGUF_METADATA_KEY", "input_source", "open_input"]

MAX_BUFFER_SIZE = 8 << 30  # llama-quantize's default --max-buffer-size (LLAMA_QUANT_MAX_BUF_SIZE: 8 GiB)
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
                "bytes": self.out_bytes, "type": self.entries[0][1] if self.entries else None}

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


@dataclass
class LlamaJob:
    """A llama-quantize run: the file type (``ftype``, its ``name``), the type options
    (:class:`lowbit.tools.mixes.Options`), and llama-quantize's refusals: requantizing a
    quantized tensor needs ``allow_requantize``; the very low-bit types need an imatrix."""

    ftype: int
    name: str
    options: Any = None
    allow_requantize: bool = False

    @classmethod
    def from_mix(cls, mix: str, options: Any = None, allow_requantize: bool = False) -> "LlamaJob":
        from lowbit.tools.mixes import Options, parse_ftype

        name, ftype = parse_ftype(mix, "--mix")
        opts = replace(options, only_copy=name == "COPY") if options is not None else Options(only_copy=name == "COPY")
        return cls(ftype, name, opts, allow_requantize)


_FLOAT_TYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
_ST_FLOAT = {"F32": "f32", "F16": "f16", "BF16": "bf16", "F64": "f64"}


def _current_type(src: Any, name: str, kind: str) -> str:
    """A tensor's ggml type name (``"lowbit:<id>"`` kinds are their codec id)."""
    if kind.startswith("lowbit:"):
        return kind[7:]
    if isinstance(src, G.GGUFFile):
        return src.tensor(name).type_name
    return _ST_FLOAT.get(kind, "?" + kind)


def _llama_types(src: Any, names: list[str], shapes: dict[str, tuple[tuple[int, ...], str]], job: LlamaJob) -> dict[str, str]:
    from lowbit.tools.mixes import ModelInfo, plan_types

    meta = getattr(src, "metadata", {}) if isinstance(src, G.GGUFFile) else _typed_gguf_metadata(src)[0]
    model = ModelInfo.from_metadata(meta, names)
    return plan_types([(n, shapes[n][0], _current_type(src, n, shapes[n][1])) for n in names], job.ftype, model,
                      job.options)


def plan(src: Any, rules: list[Rule], default: lowbit.Codec | None, *, mix: str | None = None,
         out_gguf: bool = False, llama: LlamaJob | None = None, has_imatrix: bool = False,
         dry_run: bool = False, options: Any = None) -> list[Decision]:
    """Which codec each tensor gets, and why.

    With a llama-quantize file type (``mix`` or ``llama``) the types come from
    :func:`lowbit.tools.mixes.plan_types`; a tensor whose type does not change is copied byte for
    byte, float types are casts, and lowbit ``rules`` still win over the mix. A GGUF output with
    a ggml-type ``default`` codec and no mix is llama-quantize's ``--pure`` with that type.
    """
    from lowbit.tools.mixes import ENCODABLE, Options, requires_imatrix

    names = src.names()
    shapes = {n: _describe(src, n) for n in names}
    if llama is None and mix:
        llama = LlamaJob.from_mix(mix)
    pure_ftype = _pure_ftype(default) if llama is None and out_gguf else None
    pure_codec = pure_ftype is not None
    if pure_codec:
        assert default is not None and pure_ftype is not None
        opts = replace(options, pure=True) if options is not None else Options(pure=True)
        llama = LlamaJob(pure_ftype, default.codec_id, opts, allow_requantize=True)
    if llama is not None:
        llama = replace(llama, options=replace(llama.options or Options(), has_imatrix=has_imatrix))
        mixed = _llama_types(src, names, shapes, llama)
    label = f"--codec {default.codec_id}" if pure_codec and default is not None else f"mix {llama.name}" if llama else ""
    out = []
    for name in names:
        shape, kind = shapes[name]
        rule = next((r for r in rules if r.pattern.search(name)), None)
        cast = None
        if rule is not None:
            codec, reason = rule.codec, f"rule {rule.text!r}"
        elif llama is not None:
            t, cur = mixed[name], _current_type(src, name, kind)
            codec = None
            if t == cur:
                reason = f"kept: {label} keeps {t}"
            elif t in _FLOAT_TYPES and (kind in READABLE or kind.startswith("lowbit:")):
                cast, reason = _FLOAT_TYPES[t], f"{label}: {t}"
            elif t not in ENCODABLE:
                raise ConfigError(f"quantize: {label}: tensor {name!r} needs type {t}, which lowbit cannot encode "
                                  f"(decode only); choose another type, or name it with --tensor-type")
            else:
                if kind.startswith("lowbit:") and kind[7:] in G._CODEC_TYPES and not llama.allow_requantize:
                    raise ConfigError(f"quantize: tensor {name!r}: requantizing from type {kind[7:]} is disabled "
                                      "(pass --allow-requantize)")
                if requires_imatrix(name, t, llama.ftype) and not has_imatrix and not dry_run:
                    raise ConfigError(f"quantize: {label}: tensor {name!r} as {t} requires an importance matrix "
                                      "(pass --imatrix)")
                codec, reason = lowbit.get_codec(t), f"{label}: {t}"
        else:
            codec, reason = default, "default"
        if codec is not None and kind not in READABLE and not kind.startswith("lowbit:"):
            codec, reason = None, f"kept: {kind} is not a float dtype lowbit reads as values"
        elif codec is not None and rule is None and llama is None and len(shape) < 2:
            codec, reason = None, "kept: 1-D (norms and biases stay in full precision unless a rule names them)"
        if codec is not None:
            try:
                codec._check_shape(shape)
            except LowbitError as e:
                if llama is not None and rule is None:
                    raise ConfigError(f"quantize: tensor {name!r}: {e}") from None
                codec, reason = None, f"kept: {e}"
        if codec is not None and out_gguf and codec.codec_id not in G._CODEC_TYPES:
            raise ConfigError(f"quantize: {name}: codec {codec.codec_id!r} cannot be stored in GGUF (choose a GGUF type or a .safetensors output)")
        d = Decision(name, shape, kind, codec, reason)
        if codec is None and cast is not None:
            d.cast = cast
            d.entries = [(name, {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}[cast] if out_gguf
                          else {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[cast], shape)]
        else:
            d.entries = output_entries(name, shape, codec, out_gguf) if codec is not None else _kept_entries(src, name, out_gguf)
        d.out_bytes = sum(_entry_bytes(e, out_gguf) for e in d.entries)
        out.append(d)
    return out


# ---- the work, possibly in worker processes ---------------------------------------------------------

_OPEN: dict[str, Any] = {}
_IMATRIX: dict[tuple[str, tuple[str, ...], tuple[str, ...]], dict[str, np.ndarray]] = {}


def _source(path: Any) -> Any:
    """The open input (``(path, layers)``: with those layers pruned), once per process, for reading
    tensors (a Hugging Face folder without its tokenizer: the metadata is prepare's)."""
    if path not in _OPEN:
        if isinstance(path, tuple):
            from lowbit.tools.prune import pruned

            _OPEN[path] = pruned(_open(path[0], metadata=False), list(path[1]))
        else:
            _OPEN[path] = _open(path, metadata=False)
    return _OPEN[path]


def _open(path: Any, *, metadata: bool = True) -> Any:
    from lowbit.formats.hf_gguf import HFSource

    return path.open(tokenizer=metadata) if isinstance(path, HFSource) else lowbit.open_file(path)


def input_source(inp: str | Path, out_gguf: bool) -> Any:
    """What the input is read as: a Hugging Face model folder (``config.json`` + safetensors +
    tokenizer) with a GGUF output is read as the GGUF llama.cpp's converter writes from it
    (:mod:`lowbit.formats.hf_gguf`, float32 weights: quantizing it equals llama-quantize of
    ``convert_hf_to_gguf.py --outtype f32``); anything else is the path itself.

    A folder without ``config.json`` goes into a GGUF only when it carries GGUF metadata (a
    GGUF converted to lowbit's safetensors and back); otherwise it is refused."""
    from lowbit.formats import hf_gguf

    if not out_gguf or not Path(inp).is_dir():
        return str(inp)
    if hf_gguf.is_model_folder(inp):
        return hf_gguf.HFSource(str(inp))
    with lowbit.open_file(inp) as src:
        carried = isinstance(src, G.GGUFFile) or GGUF_METADATA_KEY in getattr(src, "metadata", {})
    if not carried:
        raise FormatError(f"{inp}: not a Hugging Face model folder (no config.json), and its safetensors carry no "
                          "GGUF metadata: llama.cpp could not load a GGUF made from it")
    return str(inp)


def open_input(inp: str | Path, out_gguf: bool) -> Any:
    """The open input as :func:`prepare` reads it (see :func:`input_source`)."""
    return _open(input_source(inp, out_gguf))


def _produce(path: str | tuple[str, tuple[int, ...]], name: str, config: dict[str, Any] | None, imatrix: ImatrixKey | None,
             out_gguf: bool, cast: str | None = None, max_buffer: int | None = None) -> list[tuple[str, np.ndarray]]:
    """The bytes of one tensor's output entries. ``max_buffer`` (bytes; llama-quantize's
    ``--max-buffer-size``): a GGUF type's rows are read, converted and encoded in slabs whose input
    rows, float rows and codes take at most that much (at least one row), as llama-quantize does."""
    src = _source(path)
    if cast is not None:
        t = src.get(name, copy=False)
        with np.errstate(over="ignore"):
            x = np.asarray(lowbit.decode(t) if isinstance(t, QTensor) else t, dtype=np.float32)
            return [(name, x.astype(_np_float(cast), copy=False))]
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
    codec = lowbit.get_codec(config)
    iname = getattr(src, "old", {}).get(name, name)  # imatrix entries keep the names from before pruning
    # (a QTensor's shape is its decoded shape: the importance fits either way)
    w = _importance(imatrix, iname, tuple(t.shape)) if imatrix and "importance" in codec.encode_kwargs else None
    slab = _slab_rows(t, codec, max_buffer) if out_gguf and max_buffer else None
    if slab is not None:
        return [(name, _encode_slabs(t, codec, w, slab))]
    x = lowbit.decode(t) if isinstance(t, QTensor) else np.asarray(t, dtype=np.float32)
    if w is not None and w.ndim == 2:  # one row of weights per expert: encode the experts apart
        parts = [codec.encode(x[e], backend="cpu", importance=w[e]) for e in range(x.shape[0])]
        data = np.stack([np.asarray(p.data) for p in parts])
        q = QTensor(data, {}, x.shape, codec)
    else:
        q = codec.encode(x, backend="cpu", **({"importance": w} if w is not None else {}))
    if out_gguf:
        return [(name, np.asarray(q.data))]
    return [(n, np.asarray(a)) for n, _, _, a in st.layout_entries(name, q)]


def _slab_rows(t: Any, codec: lowbit.Codec, max_buffer: int) -> int | None:
    """Rows per slab under ``max_buffer`` bytes (llama-quantize's count: source row + code row +
    a float32 row unless the source is float32), or None when the tensor fits in one slab or is
    not a plain float tensor into a GGUF type (those are encoded whole)."""
    if isinstance(t, QTensor) or codec.codec_id not in G._CODEC_TYPES or len(t.shape) < 2:
        return None
    n = int(t.shape[-1])
    rows = math.prod(t.shape[:-1])
    _, block, size = G.BLOCK[G._TYPE_ID[codec.codec_id]]
    dst = n // block * size
    src_row = n * np.dtype(t.dtype).itemsize
    per_row = src_row + dst + (0 if np.dtype(t.dtype) == np.float32 else n * 4)
    slab = max(1, min(rows, max_buffer // per_row))
    return None if slab >= rows else slab


def _encode_slabs(t: Any, codec: lowbit.Codec, w: np.ndarray | None, slab: int) -> np.ndarray:
    """``t``'s codes, ``slab`` rows at a time (rows of a GGUF type are independent, so the bytes
    are those of one whole-tensor encode); per-expert importance rows apply to their expert's rows."""
    shape = tuple(t.shape)
    n = shape[-1]
    rows = math.prod(shape[:-1])
    x = np.asarray(t).reshape(rows, n)  # a view of the mapped file: nothing is read yet
    per = rows // shape[0] if w is not None and w.ndim == 2 else rows  # rows of one expert
    out: np.ndarray | None = None
    r0 = 0
    while r0 < rows:
        r1 = min(rows, r0 + slab, (r0 // per + 1) * per)  # a slab never spans two experts
        kw = {} if w is None else {"importance": w[r0 // per] if w.ndim == 2 else w}
        part = np.asarray(codec.encode(np.asarray(x[r0:r1], dtype=np.float32), backend="cpu", **kw).data)
        if out is None:
            out = np.empty((rows, part.shape[-1]), np.uint8)
        out[r0:r1] = part
        r0 = r1
    assert out is not None
    return out.reshape(shape[:-1] + (out.shape[-1],))


def _np_float(name: str) -> Any:
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


ImatrixKey = tuple[str, tuple[str, ...], tuple[str, ...]]  # path, --include-weights, --exclude-weights


def imatrix_entries(key: ImatrixKey) -> dict[str, np.ndarray]:
    """The imatrix entries llama-quantize uses: read once per process, entries whose name contains
    an ``--exclude-weights`` string dropped, or only those containing an ``--include-weights``
    string kept; a non-finite value anywhere is an error (as llama-quantize checks on load)."""
    if key not in _IMATRIX:
        from lowbit.tools.imatrix import read_imatrix

        path, include, exclude = key
        if include and exclude:
            raise ConfigError("--include-weights and --exclude-weights cannot be used together")
        data = read_imatrix(path)
        if exclude:
            data = {n: v for n, v in data.items() if not any(x in n for x in exclude)}
        if include:
            data = {n: v for n, v in data.items() if any(x in n for x in include)}
        for n, v in data.items():
            if not np.all(np.isfinite(v)):
                raise FormatError(f"imatrix {path}: entry {n!r} contains non-finite values")
        _IMATRIX[key] = data
    return _IMATRIX[key]


def _importance(key: ImatrixKey, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The imatrix weights for one tensor, as llama-quantize takes them: none when the imatrix has
    no entry; ``ncols x n_expert`` values or an error naming the tensor (the embeddings excepted)."""
    w = imatrix_entries(key).get(name)
    if w is None:
        return None
    K, E = shape[-1], (shape[-3] if len(shape) >= 3 else 1)
    if w.size != K * E:
        if name in ("token_embd.weight", "per_layer_token_embd.weight"):
            return None
        raise FormatError(f"imatrix {key[0]}: entry {name!r}: expected {K * E} weights ({E} x {K}), got {w.size}")
    return w.reshape(E, K) if len(shape) >= 3 else w.reshape(K)


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


@dataclass
class Prepared:
    """A planned quantization, before anything is written: the decisions, one ``_produce`` work
    item per decision, the output entries and the output's metadata. :func:`quantize_file`
    writes it in one process (or a pool of encoders); :mod:`lowbit.tools.sharding` writes it
    shard by shard, on any number of workers."""

    inp: str
    out: Path
    source: Any  # what _source() opens in a worker: the input path, or (path, pruned layers)
    decisions: list[Decision]
    work: list[tuple[Any, ...]]
    specs: list[tuple[str, str, tuple[int, ...]]]
    out_gguf: bool
    gmeta: dict[str, Any]
    gtypes: dict[str, tuple[int, int | None]]
    st_meta: dict[str, str] = field(default_factory=dict)  # safetensors: metadata without lowbit's index
    index: dict[str, Any] = field(default_factory=dict)  # safetensors: lowbit's index entries
    shards: list[int] | None = None  # GGUF: the shard of each entry (None: one file)
    order: str = "gguf-split"  # GGUF: the split.* key order

    def st_metadata(self, names: Any = None) -> dict[str, str]:
        """The safetensors metadata: lowbit's index for ``names`` (default every tensor)."""
        meta = dict(self.st_meta)
        index = self.index if names is None else {n: self.index[n] for n in names if n in self.index}
        meta[st.METADATA_KEY] = json.dumps({"format": 1, "tensors": index}, sort_keys=True)
        return meta


def prepare(inp: str | Path, out: str | Path, *, codec: lowbit.Codec | None = None, rules: list[Rule] | None = None,
            mix: str | None = None, imatrix: str | Path | None = None, metadata: dict[str, str] | None = None,
            options: Any = None, allow_requantize: bool = False, override_kv: list[str] | None = None,
            tensor_order: str = "input", keep_split: bool = False, split_max_tensors: int | None = None,
            split_max_size: int | None = None, include_weights: list[str] | None = None,
            exclude_weights: list[str] | None = None, prune_layers: list[int] | None = None,
            out_gguf: bool | None = None, max_buffer_size: int | None = MAX_BUFFER_SIZE) -> Prepared:
    """Plan :func:`quantize_file`'s output (arguments as there) without writing anything: every
    refusal (rules, types, imatrix, splits) happens here. ``out_gguf`` overrides the container
    the output suffix picks (a sharded output folder has none)."""
    from lowbit.formats import gguf_split
    from lowbit.tools.gguf_kv import imatrix_kv, llama_quantize_kv, parse_override_kv, SPLIT_KEYS
    from lowbit.tools.mixes import ggml_shape, llama_order

    if tensor_order not in ("input", "llama"):
        raise ConfigError(f"quantize: tensor order: expected 'input' or 'llama', got {tensor_order!r}")
    if out_gguf is None:
        out_gguf = Path(out).suffix.lower() == ".gguf" or keep_split
    if not out_gguf and (keep_split or split_max_tensors or split_max_size):
        raise ConfigError("quantize: --keep-split / --split-max-*: splitting needs a .gguf output")
    overrides = parse_override_kv(override_kv)
    if Path(inp).resolve() == Path(out).resolve():
        raise ConfigError(f"quantize: input and output files are the same: {out}")
    source: Any = input_source(inp, out_gguf)
    src = _open(source)
    out = Path(out)
    try:
        if prune_layers:
            from lowbit.tools.prune import blocks_left, pruned

            n_blocks = blocks_left(src.names(), list(prune_layers))
            src = pruned(src, list(prune_layers))
            source = (source, tuple(prune_layers))
        llama = LlamaJob.from_mix(mix, options, allow_requantize) if mix else None
        ikey = (str(imatrix), tuple(include_weights or ()), tuple(exclude_weights or ())) if imatrix else None
        n_imatrix = len(imatrix_entries(ikey)) if ikey else 0
        if n_imatrix and out_gguf:
            from lowbit.tools.imatrix import imatrix_info

            imatrix_meta = dict(imatrix_info(str(imatrix)), entries=n_imatrix)  # checked before anything is written
        decisions = plan(src, rules or [], codec, out_gguf=out_gguf, llama=llama, has_imatrix=n_imatrix > 0,
                         options=options)
        if tensor_order == "llama" and not keep_split:
            by = {d.name: d for d in decisions}
            decisions = [by[n] for n in llama_order(by)]
        gmeta, gtypes = _typed_gguf_metadata(src)
        specs = [e for d in decisions for e in d.entries]
        # (the last item, the memory bound, never changes the bytes: sharding.Unit.free_args)
        work = [(source, d.name, d.codec.get_config() if d.codec else None, ikey if n_imatrix else None, out_gguf,
                 d.cast, max_buffer_size) for d in decisions]
        prep = Prepared(str(inp), out, source, decisions, work, specs, out_gguf, gmeta, gtypes)
        if out_gguf:
            ftype = llama.ftype if llama else _pure_ftype(codec)
            if ftype is not None:
                if n_imatrix:
                    overrides = overrides + imatrix_kv(str(imatrix), imatrix_meta)
                gmeta, gtypes = llama_quantize_kv(gmeta, gtypes, ftype=ftype, overrides=overrides)
                specs = [(n, t, ggml_shape(s)) for n, t, s in specs]  # as gguf_add_tensor records them
            else:
                for k in SPLIT_KEYS:
                    gmeta.pop(k, None)
                    gtypes.pop(k, None)
                for key, vtype, value in overrides:
                    gmeta[key], gtypes[key] = value, (vtype, None)
            if prune_layers:
                from lowbit.tools.gguf_kv import set_kv

                set_kv(gmeta, gtypes, f"{gmeta.get('general.architecture', '')}.block_count", G.UINT32, n_blocks)
            gmeta.update(metadata or {})
            keep = None
            if keep_split:
                idx = gguf_split.shard_index(getattr(src, "_base", src))
                keep = {n: idx[getattr(src, "old", {}).get(n, n)] for n in src.names()}
            shards = gguf_split.plan_shards(specs, max_tensors=split_max_tensors, max_size=split_max_size, keep=keep)
            if keep_split and shards is None:  # llama-quantize --keep-split on one file: PREFIX-00001-of-00001.gguf
                prep.out = gguf_split.split_path(str(out)[:-5] if str(out).lower().endswith(".gguf") else out, 0, 1)
            prep.specs, prep.gmeta, prep.gtypes, prep.shards = specs, gmeta, gtypes, shards
            prep.order = "quantize" if keep_split else "gguf-split"
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
                elif d.source.startswith("lowbit:") and d.cast is None:  # a GGUF block tensor carried over
                    index[d.name] = {"config": {"id": d.source[7:]}, "shape": list(d.shape), "aux": []}
            prep.st_meta, prep.index = meta, index
        return prep
    finally:
        src.close()


def quantize_file(inp: str | Path, out: str | Path, *, codec: lowbit.Codec | None = None, rules: list[Rule] | None = None,
                  mix: str | None = None, imatrix: str | Path | None = None, jobs: int | None = 1, progress: bool = True,
                  metadata: dict[str, str] | None = None, options: Any = None, allow_requantize: bool = False,
                  override_kv: list[str] | None = None, tensor_order: str = "input", keep_split: bool = False,
                  split_max_tensors: int | None = None, split_max_size: int | None = None,
                  include_weights: list[str] | None = None, exclude_weights: list[str] | None = None,
                  prune_layers: list[int] | None = None, dask: Any = None,
                  max_shard_size: int | None = None, max_buffer_size: int | None = MAX_BUFFER_SIZE) -> dict[str, Any]:
    """Quantize a checkpoint's float tensors into ``out`` (``.gguf``: GGUF, else safetensors).

    ``inp`` is a file, a split GGUF (any shard) or a sharded safetensors checkpoint (its folder
    or ``*.safetensors.index.json``). ``mix`` is a llama-quantize type (``"Q4_K_M"``,
    ``"iq4_xs"``, ``"F16"``, ``"COPY"``, or its
    number) and ``options`` its type flags (:class:`lowbit.tools.mixes.Options`); the GGUF output
    then gets llama-quantize's metadata (``general.file_type``, ``general.quantization_version``,
    ``--override-kv`` values, ``quantize.imatrix.*``). ``tensor_order``: ``"input"`` (default)
    or ``"llama"`` (llama-quantize's order: by layer, then name). ``split_max_tensors`` /
    ``split_max_size`` (bytes) write llama-gguf-split shards ``out-00001-of-0000N.gguf``;
    ``keep_split`` writes one shard per input shard. ``include_weights`` / ``exclude_weights``
    (name substrings) choose the imatrix entries used, as llama-quantize's flags of those names;
    ``prune_layers`` drops those layers and renumbers the rest (:mod:`lowbit.tools.prune`).
    ``max_buffer_size`` (bytes; default 8 GiB as llama-quantize's ``--max-buffer-size``) bounds
    the rows of one tensor read, converted and encoded at once (the bytes do not depend on it).

    Sharded, resumable output (:mod:`lowbit.tools.sharding`): an output folder (``out`` ending
    in ``/``, an existing folder, or a name without a suffix) gets safetensors shards of at most
    ``max_shard_size`` bytes (default 5 GB) and ``model.safetensors.index.json``; a split GGUF
    output is written the same way, and with ``dask`` (``"local:N"``, a scheduler address or a
    ``distributed.Client``) any output is, by Dask workers. There each shard is one task, written
    atomically and recorded in a manifest (``OUT.lowbit-manifest.json`` beside GGUF shards), so a
    rerun of an interrupted job writes only what is missing; ``jobs`` is then the number of local
    worker processes (default: one per CPU, at most one per shard).

    >>> import os, tempfile, numpy as np
    >>> from lowbit.formats import gguf as G
    >>> d = tempfile.mkdtemp(); src = os.path.join(d, "f32.gguf")
    >>> G.save(src, {"blk.0.ffn_up.weight": np.ones((4, 256), np.float32)}, {"general.architecture": "llama"})
    >>> r = quantize_file(src, os.path.join(d, "q.gguf"), mix="Q8_0", progress=False)
    >>> [x["to"]["id"] for x in r["decisions"]], G.read(os.path.join(d, "q.gguf")).metadata["general.file_type"]
    (['q8_0'], 7)
    """
    from lowbit.tools import sharding

    t0 = time.perf_counter()
    folder = sharding.is_folder_output(out)
    if max_shard_size is not None and not folder:
        raise ConfigError("quantize: --max-shard-size: sharded safetensors need an output folder (OUT_DIR/); "
                          "GGUF splits take --split-max-size / --split-max-tensors")
    prep = prepare(inp, out, codec=codec, rules=rules, mix=mix, imatrix=imatrix, metadata=metadata, options=options,
                   allow_requantize=allow_requantize, override_kv=override_kv, tensor_order=tensor_order,
                   keep_split=keep_split, split_max_tensors=split_max_tensors, split_max_size=split_max_size,
                   include_weights=include_weights, exclude_weights=exclude_weights, prune_layers=prune_layers,
                   out_gguf=False if folder else None, max_buffer_size=max_buffer_size)
    if folder or dask is not None or (prep.out_gguf and prep.shards is not None):
        # shards (a folder, a split GGUF) or a cluster: one task per output shard, each written
        # atomically and recorded in a manifest, so a killed run resumes where it stopped
        job = sharding.quantize_job(prep, max_shard_size=max_shard_size, folder=folder)
        run = sharding.run(job, jobs=jobs, dask=dask, progress=progress)
        return _report(prep, [job.folder / s.file for s in job.shards], t0, run)
    return _report(prep, write_direct(prep, jobs=jobs or 1, progress=progress), t0)


def write_direct(prep: Prepared, *, jobs: int = 1, progress: bool = False) -> list[Path]:
    """Write a planned quantization in this process (encoding in ``jobs`` processes), as one file
    or as GGUF shards that appear together at the end (an error leaves none); returns the paths.
    :func:`quantize_file` takes this route for one output file."""
    from lowbit.formats import gguf_split

    stale = _OPEN.pop(prep.source, None)  # opened by an earlier call: the file may have been replaced since
    if stale is not None:
        stale.close()
    if prep.out_gguf:
        writer: Any = gguf_split.Writer(prep.out, prep.specs, prep.gmeta, prep.gtypes, prep.shards, order=prep.order)
    else:
        writer = st.Writer(prep.out, prep.specs, prep.st_metadata(), checksums=True)
    total = sum(d.out_bytes for d in prep.decisions)
    with writer as w, Progress(total, "quantize", enabled=progress) as bar:
        for d, produced in zip(prep.decisions, _run(prep.work, jobs)):
            for n, a in produced:
                w.write(n, a)
            bar.update(d.out_bytes, d.name)
    return list(getattr(writer, "paths", [prep.out]))


def _report(prep: Prepared, paths: list[Path], t0: float, run: dict[str, Any] | None = None) -> dict[str, Any]:
    decisions = prep.decisions
    n_in = sum(math.prod(d.shape) for d in decisions)
    out_bytes = sum(Path(p).stat().st_size for p in paths)
    rep = {
        "input": prep.inp, "output": run["output"] if run is not None else str(paths[0]) if len(paths) == 1
        else [str(p) for p in paths],
        "container": "gguf" if prep.out_gguf else "safetensors",
        "tensors": len(decisions), "quantized": sum(d.codec is not None for d in decisions),
        "elements": n_in, "output_bytes": out_bytes, "bits_per_element": out_bytes * 8 / max(n_in, 1),
        "seconds": time.perf_counter() - t0, "file_type": prep.gmeta.get("general.file_type") if prep.out_gguf else None,
        "decisions": [d.as_dict() for d in decisions],
    }
    if run is not None:
        rep["sharded"] = run
    return rep


def _pure_ftype(codec: lowbit.Codec | None) -> int | None:
    from lowbit.tools.mixes import ftype_of_type

    if codec is not None and codec.codec_id in G._CODEC_TYPES and codec == type(codec)():
        try:
            return ftype_of_type(codec.codec_id)
        except ConfigError:  # q8_1, q8_k: no llama file type
            return None
    return None


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
