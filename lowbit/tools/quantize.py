"""``lowbit quantize``: a float checkpoint to a quantized one, one tensor at a time.

Which codec each tensor gets is decided by rules, first match wins::

    --rule 'norm|bias=keep' --rule 'embed=fp8_e4m3:scale=channel' --codec fp4_e2m1 --param scale=channel

A rule is ``REGEX=SPEC`` (the regex is searched in the tensor name, as llama-quantize's
``--tensor-type``); ``SPEC`` is ``keep`` or ``codec_id[:param=value,...]`` (values are JSON when
they parse, strings otherwise). Tensors no rule names get the default codec, except 1-D tensors
(norms, biases) and tensors whose last dimension does not fit the codec's block, which are kept
in their original dtype and listed in the summary.

The output header is computed from shapes alone, so tensors are then read (memory-mapped),
encoded and written one at a time — peak memory stays near the largest tensor — into a file that
only gets its name when complete. ``jobs > 1`` encodes in a process pool, writing in order.
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
from lowbit.errors import ConfigError, LowbitError
from lowbit.formats import safetensors as st
from lowbit.tools.progress import Progress

__all__ = ["Rule", "parse_rule", "parse_params", "Decision", "plan", "quantize_file"]


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
        raise ConfigError(f"rule: expected REGEX=SPEC, got {text!r}")
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
    dtype: str
    codec: lowbit.Codec | None
    reason: str
    entries: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)

    @property
    def out_bytes(self) -> int:
        return sum(st._nbytes(d, s, self.name) for _, d, s in self.entries)


def _aux_dtype(name: str) -> str:
    return st._dtype_of(np.zeros(0, np.dtype(name)))


def output_entries(name: str, shape: tuple[int, ...], codec: lowbit.Codec) -> list[tuple[str, str, tuple[int, ...]]]:
    """The safetensors entries (name, dtype, shape) a QTensor of ``shape`` occupies in lowbit's layout."""
    nat = st.native_dtype_for(codec)
    data_shape = shape if nat else shape[:-1] + (codec.row_bytes(shape[-1]),)
    out = [(name, nat or "U8", data_shape)]
    for k, (ashape, adt) in sorted(codec._aux_spec(shape).items()):
        out.append((name + st.AUX_SEP + k, _aux_dtype(adt), tuple(ashape)))
    return out


def _source_shape(src: st.SafetensorsFile, name: str) -> tuple[tuple[int, ...], str]:
    ent = src.quantized.get(name)
    if ent is not None:
        return tuple(int(d) for d in ent["shape"]), "lowbit:" + ent["config"]["id"]
    inf = src.info(name)
    return inf["shape"], inf["dtype"]


def plan(src: st.SafetensorsFile, rules: list[Rule], default: lowbit.Codec | None) -> list[Decision]:
    """Which codec each tensor gets, and why."""
    out = []
    for name in src.names():
        shape, dtype = _source_shape(src, name)
        rule = next((r for r in rules if r.pattern.search(name)), None)
        codec, reason = (rule.codec, f"rule {rule.text!r}") if rule else (default, "default")
        if dtype not in READABLE and not dtype.startswith("lowbit:"):
            codec, reason = None, f"kept: {dtype} is not a float dtype lowbit reads as values"
        elif rule is None and len(shape) < 2:
            codec, reason = None, "kept: 1-D (norms and biases stay in full precision unless a rule names them)"
        if codec is not None:
            try:
                codec._check_shape(shape)
            except LowbitError as e:
                codec, reason = None, f"kept: {e}"
        d = Decision(name, shape, dtype, codec, reason)
        if codec is None:
            if dtype.startswith("lowbit:"):  # an already-quantized tensor is copied as it is
                q_entries = [(name, src.info(name)["dtype"], src.info(name)["shape"])]
                q_entries += [(n, src.info(n)["dtype"], src.info(n)["shape"]) for n in src.keys()
                              if n.startswith(name + st.AUX_SEP)]
                d.entries = q_entries
            else:
                d.entries = [(name, dtype, shape)]
        else:
            d.entries = output_entries(name, shape, codec)
        out.append(d)
    return out


# ---- the work, possibly in worker processes ---------------------------------------------------------

_OPEN: dict[str, st.SafetensorsFile] = {}


def _source(path: str) -> st.SafetensorsFile:
    if path not in _OPEN:
        _OPEN[path] = st.open_file(path)
    return _OPEN[path]


def _produce(path: str, name: str, config: dict[str, Any] | None) -> list[tuple[str, np.ndarray]]:
    """The bytes of one tensor's output entries."""
    src = _source(path)
    if config is None:  # kept: the stored bytes, untouched (side arrays too)
        names = [name] + sorted(n for n in src.keys() if n.startswith(name + st.AUX_SEP))
        return [(n, np.array(src.raw(n))) for n in names]
    t = src.get(name, copy=False)
    x = lowbit.decode(t) if isinstance(t, QTensor) else np.asarray(t, dtype=np.float32)
    q = lowbit.get_codec(config).encode(x, backend="cpu")
    return [(n, np.asarray(a)) for n, _, _, a in st.layout_entries(name, q)]


def quantize_file(inp: str | Path, out: str | Path, *, codec: lowbit.Codec | None, rules: list[Rule] | None = None,
                  jobs: int = 1, progress: bool = True, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Quantize every float tensor of a safetensors file into ``out`` (lowbit's layout)."""
    t0 = time.perf_counter()
    src = st.open_file(inp)
    try:
        decisions = plan(src, rules or [], codec)
        meta = st.user_metadata(src.metadata)
        meta.update(metadata or {})
        index: dict[str, Any] = {}
        old = src.quantized
        for d in decisions:
            if d.codec is not None:
                index[d.name] = {"config": d.codec.get_config(), "shape": list(d.shape), "aux": sorted(d.codec._aux_spec(d.shape))}
            elif d.name in old:
                index[d.name] = old[d.name]
        meta[st.METADATA_KEY] = json.dumps({"format": 1, "tensors": index}, sort_keys=True)
        specs = [e for d in decisions for e in d.entries]
        in_bytes = sum(st._nbytes(*_source_entry(src, d.name)) for d in decisions)
        work = [(str(inp), d.name, d.codec.get_config() if d.codec else None) for d in decisions]
        with st.Writer(out, specs, meta, checksums=True) as w, Progress(in_bytes, "quantize", enabled=progress) as bar:
            for d, produced in zip(decisions, _run(work, jobs)):
                for n, a in produced:
                    w.write(n, a)
                bar.update(st._nbytes(*_source_entry(src, d.name)), d.name)
    finally:
        src.close()
    n_in = sum(math.prod(d.shape) for d in decisions)
    out_bytes = Path(out).stat().st_size
    return {
        "input": str(inp), "output": str(out), "tensors": len(decisions),
        "quantized": sum(d.codec is not None for d in decisions),
        "elements": n_in, "output_bytes": out_bytes, "bits_per_element": out_bytes * 8 / max(n_in, 1),
        "seconds": time.perf_counter() - t0,
        "decisions": [{"name": d.name, "shape": list(d.shape), "from": d.dtype,
                       "to": d.codec.get_config() if d.codec else "kept", "reason": d.reason} for d in decisions],
    }


def _source_entry(src: st.SafetensorsFile, name: str) -> tuple[str, tuple[int, ...], str]:
    inf = src.info(name)
    return inf["dtype"], inf["shape"], name


def _run(work: list[tuple[str, str, Any]], jobs: int) -> Iterator[list[tuple[str, np.ndarray]]]:
    if jobs <= 1:
        for w in work:
            yield _produce(*w)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        # a bounded window keeps at most ~2*jobs encoded tensors in memory at once
        pending = []
        it = iter(work)
        for w in it:
            pending.append(pool.submit(_produce, *w))
            if len(pending) >= 2 * jobs:
                yield pending.pop(0).result()
        for f in pending:
            yield f.result()
