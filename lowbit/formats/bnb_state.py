"""bitsandbytes 4-bit state dicts (``Linear4bit`` / ``Params4bit`` saved with safetensors;
transformers ``load_in_4bit`` checkpoints).

Per quantized weight ``<w>`` (e.g. ``fc.weight``), as ``QuantState.as_dict(packed=True)`` writes:

* ``<w>`` U8 ``[n/2, 1]``: the flattened tensor's 4-bit codes, **first element in the high
  nibble**, blocks of ``blocksize`` running across rows;
* ``<w>.absmax``: F32 ``[n/blocksize]``, or U8 codes when double-quantized;
* ``<w>.quant_map`` F32 ``[16]``: the NF4 or bitsandbytes-FP4 table;
* with double quantization: ``<w>.nested_absmax`` F32 ``[ceil(nb/256)]`` and
  ``<w>.nested_quant_map`` F32 ``[256]`` (the signed 8-bit dynamic map);
* ``<w>.quant_state.bitsandbytes__nf4`` (or ``__fp4``) U8: UTF-8 JSON ``{"quant_type",
  "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset"}``.

lowbit's ``nf4`` / ``fp4_bnb`` codecs store each block as its absmax field (4 bytes float32 LE,
or the 1-byte nested code) followed by the block's ``blocksize/2`` code bytes in bitsandbytes'
own nibble order, with ``aux["nested_absmax"]`` and ``aux["nested_offset"]``; conversion splits
and joins those bytes. Refused with a LowbitError: tables other than the standard NF4/FP4 and
dynamic maps, a nested block size other than 256, and shapes whose last axis is not a multiple
of ``blocksize`` (lowbit's codecs block along the last axis; bitsandbytes along the flattened
tensor, which is the same only then). The original dtype (``"dtype"`` in the JSON, what
bitsandbytes dequantizes to) is kept in ``info``; decode with ``dtype=`` to match it.

>>> import numpy as np, lowbit
>>> from lowbit.formats.bnb_state import from_bnb, to_bnb
>>> q = lowbit.encode(np.linspace(-1, 1, 128, dtype=np.float32).reshape(2, 64), "nf4", double_quant=True)
>>> st, cfg = to_bnb({"fc.weight": q})
>>> sorted(st)[-1], st["fc.weight"].shape, st["fc.weight.absmax"].dtype.name
('fc.weight.quant_state.bitsandbytes__nf4', (64, 1), 'uint8')
>>> from_bnb(st, cfg)["fc.weight"].data.tobytes() == q.data.tobytes()
True
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import numpy as np

from ..codec import QTensor, get_codec
from ..codecs.bnb import FP4_BNB_TABLE, NF4_TABLE, dynamic_map
from ..errors import FormatError, LowbitError
from .layouts import _ml_dtypes, as_numpy, join_blocks, split_blocks

__all__ = ["from_bnb", "to_bnb", "quant_map"]

FROM, TO = "from_bnb", "to_bnb"
_KEY = ".quant_state.bitsandbytes__"
_CODECS = {"nf4": "nf4", "fp4": "fp4_bnb"}
NESTED_BLOCKSIZE = 256


def quant_map(quant_type: str) -> np.ndarray:
    """The ``quant_map`` tensor bitsandbytes writes (``get_4bit_type``): the NF4 table, or the
    FP4 table with +0 at code 8 (its decoders give -0 there; lowbit's codec table does too)."""
    if quant_type == "nf4":
        return NF4_TABLE.copy()
    t = FP4_BNB_TABLE.copy()
    t[8] = 0.0  # bitsandbytes' Python table holds +0 where the decoders produce -0
    return t


def _raw_bytes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def from_bnb(tensors: Mapping[str, Any], config: Mapping[str, Any] | None = None, *,
             info: dict[str, Any] | None = None) -> dict[str, Any]:
    """A bitsandbytes 4-bit state dict → ``{name: QTensor | array}``: each weight with a
    ``quant_state`` becomes one nf4 / fp4_bnb QTensor; other entries pass through."""
    qc = (config or {}).get("quantization_config", config or {})
    if qc and qc.get("quant_method", "bitsandbytes") != "bitsandbytes":
        raise LowbitError(f"bitsandbytes: quant_method {qc.get('quant_method')!r}: expected 'bitsandbytes'")
    out: dict[str, Any] = {}
    used: set[str] = set()
    for key in tensors:
        if _KEY not in key:
            continue
        base, qt = key.split(_KEY)
        try:
            js_text = _raw_bytes(as_numpy(tensors[key])).tobytes().decode("utf-8")
            js = json.loads(js_text)
            bs, shape, dtype = int(js["blocksize"]), tuple(int(d) for d in js["shape"]), str(js["dtype"])
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as e:
            raise FormatError(f"bitsandbytes: {key!r}: malformed quant_state JSON ({e})") from None
        if js.get("quant_type", qt) != qt or qt not in _CODECS:
            raise FormatError(f"bitsandbytes: {key!r}: quant_type {js.get('quant_type')!r} (key says {qt!r}); "
                              f"expected nf4 or fp4")
        for part in ("", ".absmax", ".quant_map"):
            if base + part not in tensors:
                raise FormatError(f"bitsandbytes: {base!r}: missing {base + part!r}")
        w = as_numpy(tensors[base])
        qm = as_numpy(tensors[base + ".quant_map"]).astype(np.float32).reshape(-1)
        if qm.shape != (16,) or not np.array_equal(qm, quant_map(qt)):
            raise LowbitError(f"bitsandbytes: {base + '.quant_map'!r}: not the standard {qt} table; a custom "
                              f"code table has no lowbit codec")
        nested = "nested_offset" in js
        if nested and not all(base + p in tensors for p in (".nested_absmax", ".nested_quant_map")):
            raise FormatError(f"bitsandbytes: {base!r}: the quant_state is double-quantized but "
                              f"{base + '.nested_absmax'!r} or {base + '.nested_quant_map'!r} is missing")
        n = math.prod(shape)
        if not shape or n % bs or shape[-1] % bs:
            raise LowbitError(f"bitsandbytes: {base!r}: shape {list(shape)} with blocksize {bs}: lowbit's {_CODECS[qt]} "
                              f"blocks along the last axis, which must be a multiple of the block size (bitsandbytes "
                              f"blocks the flattened tensor and pads the last block)")
        codes = _raw_bytes(w)
        if codes.size != n // 2:
            raise FormatError(f"bitsandbytes: {base!r}: {codes.size} code bytes for {n} elements (expected {n // 2})")
        nb = n // bs
        absmax = as_numpy(tensors[base + ".absmax"]).reshape(-1)
        aux: dict[str, Any] = {}
        if nested:
            if int(js.get("nested_blocksize", -1)) != NESTED_BLOCKSIZE or js.get("nested_dtype") != "float32":
                raise LowbitError(f"bitsandbytes: {base!r}: nested blocksize {js.get('nested_blocksize')} / dtype "
                                  f"{js.get('nested_dtype')}: lowbit's double_quant uses 256 and float32")
            nqm = as_numpy(tensors[base + ".nested_quant_map"]).astype(np.float32).reshape(-1)
            if not np.array_equal(nqm, dynamic_map()):
                raise LowbitError(f"bitsandbytes: {base + '.nested_quant_map'!r}: not the signed 8-bit dynamic map")
            if absmax.dtype != np.uint8 or absmax.size != nb:
                raise FormatError(f"bitsandbytes: {base + '.absmax'!r}: expected {nb} uint8 codes, got {absmax.dtype} {absmax.shape}")
            na = as_numpy(tensors[base + ".nested_absmax"]).astype(np.float32).reshape(-1)
            aux = {"nested_absmax": na, "nested_offset": np.array(np.float32(js["nested_offset"]), np.float32)}
            field = absmax.reshape(nb, 1)
        else:
            if absmax.dtype != np.float32 or absmax.size != nb:
                raise FormatError(f"bitsandbytes: {base + '.absmax'!r}: expected {nb} float32, got {absmax.dtype} {absmax.shape}")
            field = absmax.astype("<f4").view(np.uint8).reshape(nb, 4)  # float32, little-endian bytes
        data = join_blocks(field, codes, bs // 2).reshape(shape[:-1] + (-1,))
        codec = get_codec(_CODECS[qt], blocksize=bs, double_quant=nested)
        out[base] = QTensor(data, aux, shape, codec)
        if info is not None:
            info[base] = {"dtype": dtype, "storage_dtype": w.dtype.name, "storage_shape": list(w.shape)}
        used |= {base, key} | {base + p for p in (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map")}
    for name, t in tensors.items():
        if name not in used:
            out[name] = as_numpy(t)
    return out


def to_bnb(tensors: Mapping[str, Any], *, info: Mapping[str, Any] | None = None, dtype: str = "float32",
           compute_dtype: str = "float32") -> tuple[dict[str, Any], dict[str, Any]]:
    """``{name: QTensor | array}`` → (bitsandbytes state dict, transformers ``quantization_config``).
    nf4 / fp4_bnb QTensors become the entries above, in ``QuantState.as_dict`` order, with
    ``"dtype"`` from ``info`` or ``dtype=``; other codecs are refused; arrays pass through."""
    ml_dtypes = _ml_dtypes()

    info = info or {}
    out: dict[str, Any] = {}
    kinds: set[tuple[str, bool]] = set()
    for name, t in tensors.items():
        if not isinstance(t, QTensor):
            out[name] = as_numpy(t)
            continue
        if t.codec_id not in ("nf4", "fp4_bnb"):
            raise LowbitError(f"bitsandbytes: tensor {name!r}: codec {t.codec_id} has no bitsandbytes 4-bit layout "
                              f"(expected nf4 or fp4_bnb)")
        q = t.numpy()
        qt = "nf4" if q.codec_id == "nf4" else "fp4"
        bs, dq = q.codec.blocksize, q.codec.double_quant
        kinds.add((qt, dq))
        field, codes = split_blocks(q.data, 1 if dq else 4, bs // 2)
        extra = info.get(name, {})
        n = math.prod(q.shape)
        w = codes.reshape(n // 2, 1)
        sdt = extra.get("storage_dtype", "uint8")
        if sdt != "uint8":  # quant_storage other than uint8 reinterprets the same bytes
            st = np.dtype(getattr(ml_dtypes, sdt) if sdt == "bfloat16" else sdt)
            w = np.ascontiguousarray(codes).reshape(-1).view(st).reshape(tuple(extra.get("storage_shape", (-1, 1))))
        out[name] = w
        if dq:
            out[name + ".absmax"] = field.reshape(-1).copy()
        else:
            out[name + ".absmax"] = np.ascontiguousarray(field).reshape(-1).view("<f4").astype(np.float32)
        out[name + ".quant_map"] = quant_map(qt)
        js: dict[str, Any] = {"quant_type": qt, "blocksize": bs, "dtype": extra.get("dtype", dtype),
                              "shape": list(q.shape)}
        if dq:
            out[name + ".nested_absmax"] = np.asarray(q.aux["nested_absmax"], np.float32)
            out[name + ".nested_quant_map"] = dynamic_map().copy()
            js.update(nested_blocksize=NESTED_BLOCKSIZE, nested_dtype="float32",
                      nested_offset=float(np.float32(q.aux["nested_offset"])))
        # bitsandbytes' pack_dict_to_tensor: json.dumps with default separators, UTF-8 bytes
        out[name + _KEY + qt] = np.frombuffer(json.dumps(js).encode("utf-8"), dtype=np.uint8).copy()
    qt, dq = sorted(kinds)[0] if kinds else ("nf4", False)
    if len({k[0] for k in kinds}) > 1 or len({k[1] for k in kinds}) > 1:
        pass  # the per-weight quant_state JSON is what bitsandbytes reads; the config names the first kind
    config = {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
              "bnb_4bit_quant_type": qt, "bnb_4bit_use_double_quant": dq,
              "bnb_4bit_compute_dtype": compute_dtype, "bnb_4bit_quant_storage": "uint8"}
    return out, config
