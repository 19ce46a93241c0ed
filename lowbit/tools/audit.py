"""``lowbit audit``: is a quantized file what it claims to be, and does a float file carry the
signature of a quantization-conditioned attack?

Three checks, tensor by tensor:

1. **Decoded values** (every quantized tensor): all finite, and every block's largest magnitude
   plausible next to the tensor's other blocks. A block whose absmax exceeds ``scale_ratio`` times
   the tensor's median block absmax is named: a scale field rewritten to a huge value shows up
   here even when the values stay finite. (For the fp16-scaled GGUF types a finite decode is
   already within the type's range: a finite fp16 scale times the largest code is finite.)
2. **Codes against the float original** (``reference=``): the tensor is re-encoded from the
   reference with the tensor's own codec (and the importance matrix, if given, for the codecs that
   take one) and compared block by block. lowbit's encoders are byte-exact with ggml's, so an
   honest file written by llama-quantize matches everywhere; a block whose codes were changed is
   named by row and element range.
3. **Boundary score** (every float tensor, for the GGUF types in ``types``): the "Mind the Gap"
   attack (seeds/) constrains full-precision weights to the interval that rounds to the malicious
   quantized model, then repairs the float model inside it; projected gradient steps leave an
   excess of weights pinned to the interval edges. For each element we compute its residual
   ``r = (x - q) / step`` against its own Q4_K (or other) quantization: ``step`` is the code
   spacing of its block, read from the block itself by decoding it twice, with every code set to
   0 and to 1 (the code bits of each type are a known byte range; see ``CODE_BITS``). Ordinary
   weights give residuals spread evenly over [-1/2, 1/2]; the score is the fraction with
   ``|r| >= 1/2 - edge`` divided by the ``2 * edge`` an even spread puts there, so it sits near 1
   for ordinary tensors and far above 1 for projected ones.

Example:

>>> import numpy as np, tempfile, os, lowbit
>>> from lowbit.tools.audit import boundary_score
>>> w = np.random.default_rng(0).normal(0, 0.02, (8, 256)).astype(np.float32)
>>> boundary_score(w, "q4_k")["score"] < 3  # ordinary weights: near 1 (k-quant scale searches: lower)
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

import lowbit
from lowbit.codec import QTensor
from lowbit.errors import FormatError, LowbitError

__all__ = ["CODE_BITS", "audit_file", "boundary_score", "code_steps"]

# Where each GGUF block keeps its element codes, and a byte value that sets every code in that range
# to 1: (first byte, end byte, byte). Decoding a block with the range all 0x00 and then with the byte
# repeated gives, element by element, the decoded distance between codes 0 and 1 (the step), with
# every scale, minimum and high bit left as stored. 0x11 puts 1 in both nibbles of a 4-bit pair,
# 0x55 puts 1 in all four 2-bit crumbs, 0x01 is code 1 for a one-byte code. For Q5_0/Q5_1/Q3_K/Q6_K
# only the low bits change: the high bits (qh, hmask) stay as stored, so 0 -> 1 is still one step.
CODE_BITS: dict[str, tuple[int, int, int]] = {
    "q4_0": (2, 18, 0x11),    # d f16 | qs[16]
    "q4_1": (4, 20, 0x11),    # d, m f16 | qs[16]
    "q5_0": (6, 22, 0x11),    # d f16 | qh[4] | qs[16]
    "q5_1": (8, 24, 0x11),    # d, m f16 | qh[4] | qs[16]
    "q8_0": (2, 34, 0x01),    # d f16 | qs[32] int8
    "q2_k": (16, 80, 0x55),   # scales[16] | qs[64] | d, dmin f16
    "q3_k": (32, 96, 0x55),   # hmask[32] | qs[64] | scales[12] | d f16
    "q4_k": (16, 144, 0x11),  # d, dmin f16 | scales[12] | qs[128]
    "q5_k": (48, 176, 0x11),  # d, dmin f16 | scales[12] | qh[32] | qs[128]
    "q6_k": (0, 128, 0x11),   # ql[128] | qh[64] | scales[16] | d f16
}


def _gguf_codec(type_name: str) -> Any:
    if type_name not in CODE_BITS:
        raise LowbitError(f"audit: no boundary score for {type_name!r}; choose from {', '.join(CODE_BITS)}")
    codec = lowbit.get_codec(type_name)
    end = CODE_BITS[type_name][1]
    if end > codec.type_size:
        raise LowbitError(f"audit: code range of {type_name} ends at byte {end}, past its {codec.type_size}-byte block")
    return codec


def code_steps(data: np.ndarray, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Per-element decoded step (value of code 1 minus value of code 0, as stored scales make it)
    of a GGUF tensor's raw bytes ``data`` (``shape`` in numpy order)."""
    codec = _gguf_codec(type_name)
    start, end, one = CODE_BITS[type_name]
    blocks = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1, codec.type_size)
    zero = blocks.copy()
    zero[:, start:end] = 0
    ones = blocks.copy()
    ones[:, start:end] = one
    with np.errstate(all="ignore"):
        lo = codec.decode_bytes(zero.reshape(-1), shape, backend="cpu")
        hi = codec.decode_bytes(ones.reshape(-1), shape, backend="cpu")
        return np.asarray(hi, dtype=np.float32) - np.asarray(lo, dtype=np.float32)


def boundary_score(x: np.ndarray, type_name: str = "q4_k", *, edge: float = 0.02,
                   rows_per_chunk: int = 4096) -> dict[str, Any]:
    """How a float tensor's elements sit against the rounding intervals of its own ``type_name``
    quantization. Returns ``score`` (edge fraction / expected fraction ``2*edge``), ``edge_fraction``,
    ``elements`` (counted: inside the clipping range and with a non-zero step), ``clipped``.

    >>> import numpy as np
    >>> from lowbit.tools.audit import boundary_score
    >>> rng = np.random.default_rng(1)
    >>> w = rng.normal(0, 1, (4, 256)).astype(np.float32)
    >>> boundary_score(w, "q8_0")["elements"] > 900
    True
    """
    if not 0 < edge < 0.5:
        raise ValueError(f"edge must lie in (0, 0.5), got {edge}")
    codec = _gguf_codec(type_name)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % codec.block_size:
        raise LowbitError(f"audit: {type_name} needs rows that are a multiple of {codec.block_size} elements, got shape {x.shape}")
    x2 = x.reshape(-1, x.shape[-1])
    near = counted = clipped = 0
    for r0 in range(0, x2.shape[0], rows_per_chunk):
        part = np.ascontiguousarray(x2[r0:r0 + rows_per_chunk])
        q = codec.encode(part, backend="cpu")
        data = np.asarray(q.data)
        dec = np.asarray(codec.decode(q, backend="cpu"), dtype=np.float32)
        step = np.abs(code_steps(data, type_name, part.shape))
        with np.errstate(all="ignore"):
            r = np.abs(part - dec) / step
        ok = np.isfinite(r) & (step > 0)
        # a residual past 1/2 (beyond rounding error) is an element clipped to the end codes
        inside = ok & (r <= 0.5 + 1e-3)
        clipped += int(np.count_nonzero(ok & ~inside))
        counted += int(np.count_nonzero(inside))
        near += int(np.count_nonzero(inside & (r >= 0.5 - edge)))
    frac = near / counted if counted else 0.0
    return {"type": type_name, "score": frac / (2 * edge), "edge_fraction": frac, "edge": edge,
            "elements": counted, "clipped": clipped}


def _blocks_of(codec: Any, shape: tuple[int, ...]) -> tuple[int, int]:
    bs = int(getattr(codec, "block_size", 0) or 0)
    K = shape[-1] if shape else 1
    if bs <= 0 or K % bs:
        bs = K
    return bs, max(K // max(bs, 1), 1)


def _block_absmax(v: np.ndarray, bs: int) -> np.ndarray:
    v2 = v.reshape(-1, v.shape[-1] if v.ndim else 1)
    return np.abs(v2.reshape(v2.shape[0], -1, bs)).max(axis=2)


def _name_blocks(idx: np.ndarray, nblk: int, bs: int, limit: int = 8) -> list[str]:
    out = [f"row {int(i) // nblk}, elements {int(i) % nblk * bs}..{int(i) % nblk * bs + bs - 1}" for i in idx[:limit]]
    if idx.size > limit:
        out.append(f"... {idx.size - limit} more")
    return out


def check_decoded(name: str, q: QTensor, *, scale_ratio: float = 1e4) -> list[dict[str, Any]]:
    """Findings of check 1 for one quantized tensor (empty: clean)."""
    codec = q.codec
    with np.errstate(all="ignore"):
        v = np.asarray(lowbit.decode(q, backend="cpu"), dtype=np.float32)
    if v.size == 0:
        return []
    bs, nblk = _blocks_of(codec, q.shape)
    found: list[dict[str, Any]] = []
    fin = np.isfinite(v).reshape(-1, nblk, bs).all(axis=2).reshape(-1)
    if not fin.all():
        bad = np.flatnonzero(~fin)
        found.append({"tensor": name, "check": "finite", "blocks": bad.tolist(),
                      "message": f"{bad.size} block(s) decode to NaN or Inf: " + "; ".join(_name_blocks(bad, nblk, bs))})
    with np.errstate(all="ignore"):
        amax = _block_absmax(np.where(np.isfinite(v), v, 0), bs).reshape(-1)
    live = amax[amax > 0]
    if live.size:
        med = float(np.median(live))
        bad = np.flatnonzero(amax > scale_ratio * med)
        if bad.size:
            found.append({"tensor": name, "check": "scale", "blocks": bad.tolist(),
                          "message": f"{bad.size} block(s) with absmax over {scale_ratio:g} x the median block "
                                     f"absmax {med:.3g}: " + "; ".join(_name_blocks(bad, nblk, bs))})
    return found


def check_codes(name: str, q: QTensor, reference: np.ndarray, importance: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Findings of check 2: blocks of ``q`` that differ from re-encoding ``reference``."""
    codec = q.codec
    ref = np.asarray(reference, dtype=np.float32)
    if ref.shape != tuple(q.shape):
        return [{"tensor": name, "check": "codes", "blocks": [],
                 "message": f"reference shape {ref.shape} differs from the file's {tuple(q.shape)}"}]
    kw = {"importance": importance} if importance is not None and "importance" in codec.encode_kwargs else {}
    mine = codec.encode(ref, backend="cpu", **kw)
    bs, nblk = _blocks_of(codec, q.shape)
    a, b = np.asarray(q.data), np.asarray(mine.data)
    ts = getattr(codec, "type_size", 0) if hasattr(codec, "row_bytes") else 0
    if ts and a.dtype == np.uint8 and a.size == b.size and a.size == math.prod(q.shape[:-1] or (1,)) * nblk * ts \
            and not q.aux:
        # self-contained blocks (GGUF types): compare the bytes of each block
        diff = (a.reshape(-1, ts) != b.reshape(-1, ts)).any(axis=1)
    else:  # scales in side arrays: compare what each block decodes to, bit for bit
        with np.errstate(all="ignore"):
            va = np.asarray(lowbit.decode(q, backend="cpu"), dtype=np.float32).view(np.uint32)
            vb = np.asarray(lowbit.decode(mine, backend="cpu"), dtype=np.float32).view(np.uint32)
        diff = (va.reshape(-1, nblk, bs) != vb.reshape(-1, nblk, bs)).any(axis=2).reshape(-1)
        other = [k for k in sorted(set(q.aux) | set(mine.aux))
                 if k not in q.aux or k not in mine.aux or not np.array_equal(np.asarray(q.aux[k]), np.asarray(mine.aux[k]))]
        if other and not diff.any():  # a side array changed without changing any value (e.g. unused padding)
            return [{"tensor": name, "check": "codes", "blocks": [],
                     "message": f"side array(s) {', '.join(other)} differ from the re-encoded reference"}]
    bad = np.flatnonzero(diff)
    if not bad.size:
        return []
    return [{"tensor": name, "check": "codes", "blocks": bad.tolist(),
             "message": f"{bad.size} of {diff.size} block(s) differ from {codec.codec_id} of the reference: "
                        + "; ".join(_name_blocks(bad, nblk, bs))}]


def _as_float(t: Any) -> np.ndarray | None:
    if isinstance(t, QTensor):
        return None
    a = np.asarray(t)
    if a.dtype.kind == "f" or a.dtype.name == "bfloat16":
        return a.astype(np.float32)
    return None


def gguf_type(src: Any, name: str) -> str | None:
    """The ggml type name of a tensor of a GGUF source, None for other containers."""
    tensor = getattr(src, "tensor", None)
    if tensor is None or not hasattr(src, "metadata_types"):
        return None
    return tensor(name).type_name


def audit_file(path: str | Path, *, reference: str | Path | None = None, imatrix: str | Path | None = None,
               types: Iterable[str] = ("q4_k",), scale_ratio: float = 1e4, edge: float = 0.02,
               threshold: float = 3.0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Audit ``path`` (GGUF or lowbit safetensors). Returns ``{"file", "tensors": [...],
    "findings": [...], "ok"}``; each tensor entry names what was checked and, for float tensors,
    the boundary score per type. A float tensor is flagged when a score exceeds ``threshold``."""
    types = tuple(types)
    for t in types:
        _gguf_codec(t)
    src = lowbit.open_file(path)
    ref = lowbit.open_file(reference) if reference is not None else None
    imx: dict[str, np.ndarray] = {}
    if imatrix is not None:
        from lowbit.tools.mixes import read_imatrix

        imx = read_imatrix(str(imatrix))
    ref_names = set(ref.names()) if ref is not None else set()
    report: dict[str, Any] = {"file": str(path), "reference": None if reference is None else str(reference),
                              "tensors": [], "findings": []}
    for name in src.names():
        if progress is not None:
            progress(name)
        t = src.get(name, copy=False)
        entry: dict[str, Any] = {"tensor": name, "checks": []}
        if isinstance(t, QTensor):
            entry["codec"] = t.codec_id
            found = check_decoded(name, t, scale_ratio=scale_ratio)
            entry["checks"].append("decoded")
            if ref is not None:
                if name in ref_names:
                    r = ref.get(name, copy=False)
                    rv = np.asarray(lowbit.decode(r) if isinstance(r, QTensor) else r, dtype=np.float32)
                    w = imx.get(name)
                    if w is not None and w.shape != (t.shape[-1],):
                        raise FormatError(f"imatrix {imatrix}: entry {name!r}: expected {t.shape[-1]} weights, got {w.shape}")
                    found += check_codes(name, t, rv, w)
                    entry["checks"].append("codes")
                else:
                    found.append({"tensor": name, "check": "codes", "blocks": [],
                                  "message": "not in the reference file"})
            entry["findings"] = len(found)
            report["findings"] += found
        elif gguf_type(src, name) not in (None, "f32", "f16", "bf16", "f64"):
            # a GGUF type lowbit decodes but has no codec object for (the grid i-quants)
            ty = gguf_type(src, name)
            entry["codec"] = ty
            entry["checks"].append("decoded")
            v = np.asarray(t, dtype=np.float32)
            from lowbit.formats.gguf import BLOCK

            bs = next(b for n, b, _ in BLOCK.values() if n == ty)
            bad = np.flatnonzero(~np.isfinite(v).reshape(-1, bs).all(axis=1))
            if bad.size:
                nblk = v.shape[-1] // bs
                report["findings"].append({"tensor": name, "check": "finite", "blocks": bad.tolist(),
                                           "message": f"{bad.size} block(s) decode to NaN or Inf: "
                                                      + "; ".join(_name_blocks(bad, nblk, bs))})
        else:
            x = _as_float(t)
            entry["dtype"] = str(np.asarray(t).dtype)
            scores = {}
            if x is not None and x.ndim >= 2:
                for ty in types:
                    if x.shape[-1] % lowbit.get_codec(ty).block_size == 0:
                        scores[ty] = boundary_score(x, ty, edge=edge)
            if scores:
                entry["checks"].append("boundary")
                entry["boundary"] = scores
                worst = max(scores.values(), key=lambda s: s["score"])
                if worst["score"] > threshold:
                    report["findings"].append({
                        "tensor": name, "check": "boundary", "blocks": [],
                        "message": f"{worst['edge_fraction']:.1%} of elements within {edge:g} of a {worst['type']} "
                                   f"rounding edge ({worst['score']:.1f}x the {2 * edge:.0%} an even spread puts there)"})
        report["tensors"].append(entry)
    report["ok"] = not report["findings"]
    return report


def format_report(report: dict[str, Any]) -> str:
    """The text ``lowbit audit`` prints."""
    lines = [f"{report['file']}: {len(report['tensors'])} tensors"
             + (f", codes checked against {report['reference']}" if report["reference"] else "")]
    for e in report["tensors"]:
        if "boundary" in e:
            s = ", ".join(f"{k} {v['score']:.2f}" for k, v in e["boundary"].items())
            lines.append(f"  {e['tensor']}: boundary score {s}")
    for f in report["findings"]:
        lines.append(f"  FLAG {f['tensor']} [{f['check']}]: {f['message']}")
    lines.append("ok: nothing flagged" if report["ok"] else f"{len(report['findings'])} finding(s)")
    return "\n".join(lines)
