"""Oracles for the block-scaled families: MX, NVFP4/NVINT4 and bitsandbytes 4-bit.

Two kinds, used by the oracle tests and by :mod:`lowbit.tools.regen_vectors`:

* **the peers themselves**, run on the CPU and their outputs laid out as lowbit's blocks:
  torchao's ``to_mx`` / ``MXTensor`` (MX, every scale mode it has) and ``nvfp4_quantize`` /
  ``NVFP4Tensor``, compressed-tensors' NVFP4 ``calculate_qparams`` + ``quantize`` + FP4 packer,
  bitsandbytes' ``quantize_4bit`` / ``dequantize_4bit``;
* **independent numpy references** written from the definitions, for what no peer covers and as
  a second opinion: :func:`mx_reference` (OCP MX v1.0 §6.3 FLOOR with its CEIL / EVEN / RCEIL
  variants; scale exponents from ``np.frexp`` in float64, elements by ml_dtypes' RNE cast after
  clipping to ±max, MXINT8 by ``np.rint``) and :func:`nv_reference` (the NVFP4 two-level recipe
  as torchao writes it, in float32 torch ops, for any element/scale format, used for NVINT4 and
  the UE5M3 scale).

Nothing here calls lowbit's kernels or value tables. The peers are imported lazily: the module
imports without torch, torchao, compressed-tensors or bitsandbytes.

Known deviations of the peers (torchao 0.18), pinned by the tests rather than hidden:

* a block whose E8M0 scale byte is 0 (amax below about 2**-118): torchao stores 2**-127 but
  divides by 2**-126 when it quantizes (FLOOR, CEIL, EVEN; fixed on torchao's main branch), or
  does not scale at all (RCEIL), so its element codes there are those of another scale;
  :func:`mx_reference` with ``torchao018=True`` reproduces both exactly;
* RCEIL when ``amax / max_elem`` is a few ulps above a power of two: torchao 0.18 takes
  ``ceil(log2(q))`` with a float32 ``log2`` that rounds to the integer, one binade below NVIDIA's
  bit rule (``cvt.rp.satfinite.ue8m0``, TransformerEngine, torchao's main branch) that lowbit
  follows;
* blocks with ±Inf: torchao 0.18 writes a finite scale (FLOOR) or 0xFE (RCEIL); lowbit and
  torchao's main branch write the NaN scale 0xFF;
* NVFP4 in tensors with amax below 2688 * 2**-126: torchao's multiplier ``(1/g)/s`` overflows
  to Inf (NaN or ±6 codes); lowbit caps it at FLT_MAX as TransformerEngine does, and so does
  :func:`nv_reference`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MX_ELEMENTS", "mx_reference", "mx_assemble", "torchao_mx", "nv_reference", "torchao_nvfp4",
           "compressed_tensors_nvfp4", "bnb_4bit", "bnb_assemble", "mx_block_amax"]

F32 = np.float32

#: codec id → (ml_dtypes type name or "int8", emax = floor(log2 max_elem), element mantissa bits,
#: max element value, bits per code, torchao element dtype name)
MX_ELEMENTS: dict[str, tuple[str, int, int, float, int, str | None]] = {
    "mxfp8_e4m3": ("float8_e4m3fn", 8, 3, 448.0, 8, "float8_e4m3fn"),
    "mxfp8_e5m2": ("float8_e5m2", 15, 2, 57344.0, 8, "float8_e5m2"),
    "mxfp6_e3m2": ("float6_e3m2fn", 4, 2, 28.0, 6, "fp6_e3m2"),
    "mxfp6_e2m3": ("float6_e2m3fn", 2, 3, 7.5, 6, "fp6_e2m3"),
    "mxfp4": ("float4_e2m1fn", 2, 1, 6.0, 4, "float4_e2m1fn_x2"),
    "mxint8": ("int8", 0, 6, 127 / 64, 8, None),
}


def _pack_lsb(codes: np.ndarray, w: int) -> np.ndarray:
    """Codes (..., K) → bytes (..., K*w/8), LSB-first (for w = 4: the even code in the low nibble)."""
    codes = np.asarray(codes, dtype=np.uint64)
    bits = ((codes[..., None] >> np.arange(w, dtype=np.uint64)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(*codes.shape[:-1], codes.shape[-1] * w), axis=-1, bitorder="little")


def mx_assemble(scale_bytes: np.ndarray, codes: np.ndarray, w: int) -> np.ndarray:
    """lowbit's MX block bytes from a peer's separate arrays: per block of 32 the E8M0 byte, then
    the 32 codes packed LSB-first. ``scale_bytes`` (rows, nb) uint8, ``codes`` (rows, K) ints."""
    rows, nb = scale_bytes.shape
    packed = _pack_lsb(codes, w).reshape(rows, nb, 32 * w // 8)
    return np.concatenate([scale_bytes.astype(np.uint8)[..., None], packed], axis=-1).reshape(rows, -1)


def mx_block_amax(x2d: np.ndarray) -> np.ndarray:
    """max |x| of every block of 32, float32 (rows, nb); NaN where the block is not finite."""
    xb = np.asarray(x2d, dtype=F32).reshape(x2d.shape[0], -1, 32)
    with np.errstate(invalid="ignore"):
        a = np.abs(xb).max(-1)
    return np.where(np.isfinite(xb).all(-1), a, np.nan).astype(F32)


def _exponent(amax: np.ndarray, rule: str, emax: int, mbits: int, vmax: float) -> np.ndarray:
    """Unbiased scale exponent per block (float32 amax > 0 or 0), before the clamp."""
    a64 = amax.astype(np.float64)
    m, e = np.frexp(a64)                      # a = m * 2**e, m in [0.5, 1)
    floor_log2 = e.astype(np.int64) - 1
    ceil_log2 = np.where(m == 0.5, floor_log2, floor_log2 + 1)
    if rule == "floor":
        s = floor_log2 - emax
    elif rule == "ceil":
        s = ceil_log2 - emax
    elif rule == "even":
        # torchao / compressed-tensors define it on the float32 bit pattern: add half an ulp at
        # the element's mantissa width, keep the exponent field
        b = amax.astype(F32).view(np.uint32).astype(np.int64)
        field = ((b + (1 << (22 - mbits))) >> 23) & 0xFF
        s = field - 127 - emax
        return np.where(amax > 0, s, -127)
    elif rule == "rceil":
        q = (amax.astype(F32) / F32(vmax)).astype(F32)  # one correctly rounded float32 division
        mq, eq = np.frexp(q.astype(np.float64))
        s = np.where(mq == 0.5, eq - 1, eq).astype(np.int64)  # ceil(log2 q), exactly
        return np.where(q > 0, s, -127)
    else:
        raise ValueError(rule)
    return np.where(amax > 0, s, -127)


def mx_reference(x2d: np.ndarray, codec_id: str, rule: str = "floor", *,
                 torchao018: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Independent OCP MX encoder and decoder: (block bytes (rows, K/32*ts), decoded float32).

    FLOOR ``s = floor(log2 amax) - emax`` (§6.3), CEIL, EVEN and RCEIL as in the module notes,
    clamped to [-127, 127]; elements ``clip(x / 2**s, ±max)`` cast with ml_dtypes (RNE) or, for
    MXINT8, ``clip(rint(64 x / 2**s), ±127)``; all-zero blocks get byte 0; a block holding NaN or
    ±Inf gets byte 0xFF, zero codes, and decodes to NaN.

    ``torchao018=True`` reproduces torchao 0.18's two deviations for finite blocks (module
    notes): byte-0 blocks are quantized with 2**-126 (FLOOR, CEIL, EVEN) or with 1.0 (RCEIL,
    its ``exponent == 0`` branch), and RCEIL takes ``ceil(torch.log2(amax / max))`` in float32."""
    import ml_dtypes

    tname, emax, mbits, vmax, w, _ = MX_ELEMENTS[codec_id]
    x2d = np.asarray(x2d, dtype=F32)
    rows, K = x2d.shape
    xb = x2d.reshape(rows, K // 32, 32)
    amax = mx_block_amax(x2d)
    bad = np.isnan(amax)
    a = np.where(bad, F32(0), amax).astype(F32)
    if torchao018 and rule == "rceil":
        import torch

        q = torch.from_numpy(a) / F32(vmax)
        s = torch.clamp(torch.ceil(torch.log2(q)), -127, 127).numpy().astype(np.int64)
        sdiv = np.where(s == -127, 0, s)
    else:
        s = np.clip(_exponent(a, rule, emax, mbits, vmax), -127, 127)
        sdiv = np.maximum(s, -126) if torchao018 else s
    with np.errstate(all="ignore"):
        v = np.where(bad[..., None], 0.0, xb.astype(np.float64) / np.exp2(sdiv.astype(np.float64))[..., None])
    v = np.clip(v, -vmax, vmax)
    if tname == "int8":
        codes = np.clip(np.rint(v * 64), -127, 127).astype(np.int8).view(np.uint8)
        vals = codes.view(np.int8).astype(np.float64) / 64
    else:
        t = getattr(ml_dtypes, tname)
        c = v.astype(F32).astype(t)             # ml_dtypes' cast: round to nearest, ties to even
        mask = (1 << w) - 1
        codes = c.view(np.uint8) & mask
        vals = c.astype(np.float64)
    codes = np.where(bad[..., None], 0, codes)
    sbyte = np.where(bad, 255, s + 127).astype(np.uint8)
    y = np.where(bad[..., None], np.nan, vals * np.exp2(s.astype(np.float64))[..., None])
    with np.errstate(over="ignore"):
        y = y.astype(F32)
    return mx_assemble(sbyte, codes.reshape(rows, K), w), y.reshape(rows, K)


def torchao_mx(x2d: np.ndarray, codec_id: str, rule: str = "floor") -> tuple[np.ndarray, np.ndarray]:
    """torchao's ``to_mx`` (bytes, laid out as lowbit's blocks) and ``MXTensor.dequantize``
    (float32) on the CPU. Not for ``mxint8`` (torchao has no MX int8)."""
    import torch
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.mx_tensor import MXTensor, to_mx

    _, _, _, _, w, tdt = MX_ELEMENTS[codec_id]
    if tdt is None:
        raise ValueError(f"torchao has no {codec_id}")
    dt = getattr(torch, tdt) if tdt.startswith("float") else tdt
    mode = getattr(ScaleCalculationMode, rule.upper())
    t = torch.from_numpy(np.ascontiguousarray(x2d, dtype=F32))
    scale, data = to_mx(t, dt, 32, scaling_mode=mode)
    sb = scale.view(torch.uint8).numpy()
    d = data.view(torch.uint8).numpy()
    if w == 4:   # torchao packs two codes per byte already, the even one low: unpack to codes
        codes = np.stack([d & 0xF, d >> 4], axis=-1).reshape(d.shape[0], -1)
    else:        # one code per byte (fp6: the 6-bit code in the low bits)
        codes = d
    y = MXTensor.to_mx(t, dt, 32, scaling_mode=mode).dequantize(torch.float32).numpy()
    return mx_assemble(sb, codes, w), y


# ---- NVFP4 / NVINT4 ------------------------------------------------------------------------------

def _nv_assemble(scale_bytes: np.ndarray, packed: np.ndarray) -> np.ndarray:
    rows = scale_bytes.shape[0]
    nb = scale_bytes.shape[1]
    return np.concatenate([scale_bytes.reshape(rows, nb, 1), packed.reshape(rows, nb, 8)], -1).reshape(rows, -1)


def torchao_nvfp4(x2d: np.ndarray, global_scale: float | None = None) -> tuple[np.ndarray, np.float32, np.ndarray]:
    """torchao's two-level ``nvfp4_quantize`` with ``per_tensor_amax_to_scale(amax)`` (or the
    given multiplier): (block bytes, global scale, ``NVFP4Tensor.dequantize`` float32)."""
    import torch
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, nvfp4_quantize, per_tensor_amax_to_scale

    t = torch.from_numpy(np.ascontiguousarray(x2d, dtype=F32))
    if global_scale is None:
        pts = per_tensor_amax_to_scale(t.abs().max())
    else:
        pts = torch.tensor(global_scale, dtype=torch.float32)
    scale, packed = nvfp4_quantize(t, 16, pts)
    y = NVFP4Tensor.to_nvfp4(t, per_tensor_scale=pts).dequantize(torch.float32).numpy()
    return _nv_assemble(scale.view(torch.uint8).numpy(), packed.numpy()), F32(pts.item()), y


def compressed_tensors_nvfp4(x2d: np.ndarray) -> tuple[np.ndarray, np.float32, np.ndarray]:
    """compressed-tensors' NVFP4 weight path on the CPU: ``generate_gparam`` (the divisor
    ``weight_global_scale``), ``calculate_qparams`` per group of 16, ``quantize``,
    ``pack_fp4_to_uint8``, ``dequantize``: (block bytes, global scale, decoded float32)."""
    import torch
    from compressed_tensors.compressors.nvfp4.helpers import pack_fp4_to_uint8
    from compressed_tensors.quantization import preset_name_to_scheme
    from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize
    from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam

    args = preset_name_to_scheme("NVFP4", ["Linear"]).weights
    t = torch.from_numpy(np.ascontiguousarray(x2d, dtype=F32))
    rows = t.shape[0]
    g = generate_gparam(t.min(), t.max())
    tg = t.reshape(rows, -1, 16)
    sc, zp = calculate_qparams(tg.amin(-1), tg.amax(-1), args, global_scale=g)
    qv = quantize(t, sc, zp, args, global_scale=g)
    packed = pack_fp4_to_uint8(qv)
    y = dequantize(qv, sc, zp, args, dtype=torch.float32, global_scale=g).numpy()
    sb = sc.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    return _nv_assemble(sb, packed.numpy()), F32(g.item()), y


def _nearest_code(v: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest of ``values`` (finite, distinct magnitudes per sign) for float64 v;
    ties to the code whose value has an even last significant digit is not needed here: the
    callers pass grids where RNE = 'the neighbour with the even code' (E2M1, int4, UE5M3)."""
    order = np.argsort(values, kind="stable")
    g = values[order]
    i = np.clip(np.searchsorted(g, v), 1, g.size - 1)
    lo, hi = g[i - 1], g[i]
    dlo, dhi = v - lo, hi - v
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (order[i] % 2 == 0) & (order[i - 1] % 2 == 1))
    return order[np.where(pick_hi, i, i - 1)]


def nv_reference(x2d: np.ndarray, element: str = "e2m1", scale_format: str = "ue4m3",
                 global_scale: float | None = None) -> tuple[np.ndarray, np.float32, np.ndarray]:
    """The torchao NVFP4 recipe written out in float32 torch ops for any element (``"e2m1"``,
    ``"int4"``: symmetric -7…7) and scale format (``"ue4m3"`` = torch's float8_e4m3fn cast,
    ``"ue5m3"``: E5M3 without sign, max 114688, by nearest-value search with ties to the even
    code). Returns (block bytes, global scale, decoded float32). With e2m1/ue4m3 it must equal
    :func:`torchao_nvfp4`; the tests check that, which vouches for the other combinations."""
    import torch

    emaxv = {"e2m1": 6.0, "int4": 7.0}[element]
    smax, smin = {"ue4m3": (448.0, 2.0**-6), "ue5m3": (114688.0, 2.0**-14)}[scale_format]
    t = torch.from_numpy(np.ascontiguousarray(x2d, dtype=F32))
    rows = t.shape[0]
    tb = t.reshape(rows, -1, 16)
    if global_scale is None:
        amax = t.abs().max()
        g = amax / (emaxv * smax) if float(amax) > 0 else torch.tensor(1.0)
        g = torch.clamp(g, min=2.0**-126)
    else:
        g = torch.tensor(global_scale, dtype=torch.float32)
    bs = torch.amax(tb.abs(), -1) / emaxv / g
    bs = torch.clamp(bs, smin, smax)
    if scale_format == "ue4m3":
        sb = bs.to(torch.float8_e4m3fn)
        sbytes = sb.view(torch.uint8).numpy()
        sv = sb.to(torch.float32)
    else:   # UE5M3 values: code c = e << 3 | m, bias 15, subnormals at e = 0, 0xFF = NaN
        c = np.arange(255)
        e, m = c >> 3, c & 7
        vals = np.where(e == 0, m / 8 * 2.0**-14, (1 + m / 8) * np.exp2(e - 15.0))
        sbytes = _nearest_code(bs.numpy().astype(np.float64), vals).astype(np.uint8)
        sv = torch.from_numpy(vals[sbytes].astype(F32))
    r = torch.clamp((1.0 / g) / sv, max=3.4028234663852886e38)  # TransformerEngine's satfinite (torchao: none;
    # they differ only where torchao's multiplier is Inf, i.e. tiny blocks of a tiny tensor)
    v = torch.clamp(tb * r.unsqueeze(-1), -emaxv, emaxv).numpy().astype(np.float64)
    if element == "e2m1":
        mags = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6])
        vals = np.concatenate([mags, -mags])
        # RNE on E2M1 = nearest, ties to the even code (the code's mantissa bit 0); keep the sign of -0
        codes = _nearest_code(np.abs(v), mags) | np.where(np.signbit(v), 8, 0)
    else:
        codes = (np.rint(v).astype(np.int64) & 0xF)
        vals = np.where(np.arange(16) >= 8, np.arange(16) - 16, np.arange(16)).astype(np.float64)
    packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    dec = (g * sv).numpy().astype(F32)
    y = (vals[codes].astype(F32) * dec[..., None]).astype(F32)
    return _nv_assemble(sbytes, packed), F32(g.item()), y.reshape(x2d.shape)


# ---- bitsandbytes --------------------------------------------------------------------------------

def bnb_assemble(packed: np.ndarray, absmax: np.ndarray, blocksize: int, shape: tuple[int, ...]) -> np.ndarray:
    """lowbit's bnb block bytes from bitsandbytes' flat arrays: per block the absmax (float32 LE
    or the uint8 nested code), then ``blocksize/2`` code bytes as bitsandbytes packed them."""
    nb = absmax.size
    a = np.ascontiguousarray(absmax).view(np.uint8).reshape(nb, -1)
    d = np.asarray(packed, dtype=np.uint8).reshape(nb, blocksize // 2)
    rows = int(np.prod(shape[:-1]))
    return np.concatenate([a, d], axis=1).reshape(rows, -1)


def bnb_4bit(x: np.ndarray, quant_type: str, blocksize: int = 64,
             double_quant: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """bitsandbytes' CPU ``quantize_4bit`` / ``dequantize_4bit``: (block bytes laid out as
    lowbit's, aux arrays in lowbit's names, decoded float32)."""
    import bitsandbytes.functional as F
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=F32))
    packed, qs = F.quantize_4bit(t, blocksize=blocksize, compress_statistics=double_quant, quant_type=quant_type)
    y = F.dequantize_4bit(packed, qs).numpy()
    data = bnb_assemble(packed.numpy(), qs.absmax.numpy(), blocksize, x.shape)
    aux: dict[str, np.ndarray] = {}
    if double_quant:
        aux = {"nested_absmax": qs.state2.absmax.numpy().astype(F32),
               "nested_offset": np.array(float(qs.offset), dtype=F32)}
    return data, aux, y.reshape(x.shape).astype(F32)


def bnb_like_lowbit_zero_sign(ours: Any, theirs: Any, codec_id: str) -> np.ndarray:
    """bitsandbytes' decode ``theirs`` with lowbit's sign of zero wherever both are zero, for
    ``fp4_bnb`` on a machine whose bitsandbytes decodes FP4 code 8 to +0.0
    (:data:`lowbit.tools.oracle_versions.BNB_FP4_CODE8_SIGN`); ``theirs`` unchanged otherwise.

    bitsandbytes decodes ``table[code] * absmax`` as lowbit does, and the tests check that code 8
    is the only table entry that differs (and only in the sign of zero), so a sign-of-zero
    difference in a decode can only come from code 8 (times a positive absmax, or a negative
    one: a double-quantized absmax can be below zero)."""
    from lowbit import _arrays

    from .oracle_versions import BNB_FP4_CODE8_SIGN

    ours, theirs = _arrays.to_numpy(ours), _arrays.to_numpy(theirs)
    if codec_id != "fp4_bnb" or not BNB_FP4_CODE8_SIGN.present():
        return theirs
    merge = (theirs == 0) & (ours == 0) & (np.signbit(theirs) != np.signbit(ours))
    return np.where(merge, ours, theirs).astype(theirs.dtype)


def describe_versions() -> dict[str, Any]:
    """Versions of the peers present (for golden-vector provenance)."""
    out: dict[str, Any] = {}
    for mod in ("torch", "torchao", "bitsandbytes", "compressed_tensors", "ml_dtypes"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent peers are simply not listed
            pass
    return out


# ---- golden vectors (python -m lowbit.tools.regen_vectors) ----------------------------------------

def _mx_golden_inputs(codec: Any, rng: np.random.Generator) -> np.ndarray:
    """8 rows x 4 blocks: rows of different magnitudes, then one adversarial block per kind
    (all-zero, one huge outlier, fp32 subnormals only, ±max and just past it, exact ties under a
    pinned block max, amax a hair above max * 2**k, near float32's max), plus NaN / ±Inf
    blocks where the policy writes them."""
    tname, emax, mbits, vmax, w, _ = MX_ELEMENTS[codec.codec_id]
    grid = codec._grid()
    mids = (grid[1:] + grid[:-1]) / 2
    x = rng.standard_normal((8, 128)) * np.exp2(rng.integers(-30, 30, (8, 1)))
    blocks = x.reshape(32, 32)
    e = int(rng.integers(-20, 20))
    blocks[0] = 0.0
    blocks[1] = rng.standard_normal(32) * 2.0**e
    blocks[1, 7] = 2.0 ** (e + 24)
    blocks[2] = rng.standard_normal(32) * 2.0**-135
    blocks[3] = rng.choice([-1.0, 1.0], 32) * vmax * 2.0**e * rng.choice([1.0, 1.0, 1.0625, 0.96875], 32)
    blocks[4] = rng.choice(mids, 32) * 2.0**e
    blocks[4, 0] = vmax * 2.0**e
    blocks[5] = rng.choice(np.concatenate([mids, grid]), 32) * 2.0**e
    blocks[6] = rng.standard_normal(32) * 2.0**e * 0.01
    blocks[6, 3] = float(np.nextafter(F32(vmax * 2.0**e), F32(np.inf)))
    blocks[7] = rng.standard_normal(32) * 2.0**125
    blocks[8] = rng.standard_normal(32) * 2.0**-120
    if codec.nonfinite == "nan":
        blocks[9, 3] = np.nan
        blocks[10, 5] = np.inf
        blocks[11, 0] = -np.inf
    with np.errstate(over="ignore"):
        return blocks.reshape(8, 128).astype(F32)


def _nv_golden_inputs(codec: Any, rng: np.random.Generator) -> np.ndarray:
    """8 rows x 4 blocks of 16 with g = 1 exactly (the tensor amax is emax * smax): rows of
    different magnitudes, an all-zero block, exact element ties under a UE4M3 block scale of 2,
    signed zeros and values that underflow, and a block at the tensor max."""
    emaxv = codec.emax_val
    smax = float(codec.scale_fmt.max)
    grid = codec._grid()
    mids = (grid[1:] + grid[:-1]) / 2
    x = rng.standard_normal((8, 64)) * np.exp2(rng.integers(-6, 12, (8, 1)))
    b = x.reshape(32, 16)
    b[0] = 0.0
    b[1] = rng.choice(mids, 16) * 2.0
    b[1, 0] = emaxv * 2.0
    b[2] = [0.0, -0.0, 1e-30, -1e-30, 1e-3, -1e-3] + list(rng.standard_normal(10))
    b[3] = rng.standard_normal(16)
    b[3, 5] = emaxv * smax     # the tensor max: g = amax / (emax * smax) = 1
    b[4] = rng.choice(np.concatenate([grid, mids]), 16) * 0.5
    b[4, 0] = emaxv * 0.5
    return b.reshape(8, 64).astype(F32)


def _bnb_golden_inputs(codec: Any, rng: np.random.Generator) -> np.ndarray:
    """Rows of different magnitudes whose block maxima are multiples of 1/8 below 2**17 (so any
    summation order gives bitsandbytes' float32 mean exactly, and the nested offset is the
    same however it is computed), exact table midpoints, an all-zero block. (Several nested
    blocks of 256 are exercised by tests/test_bnb_oracles.py, not here: files stay small.)"""
    bs = codec.blocksize
    nb = max(8, 1024 // bs)
    rows = 4 if nb % 4 == 0 else 3 if nb % 3 == 0 else 2
    blocks = rng.standard_normal((nb, bs)) * rng.uniform(0.1, 1, (nb, 1))
    blocks /= np.abs(blocks).max(axis=1, keepdims=True)
    amax = rng.integers(1, 2**20, (nb, 1)) / 8.0
    T = np.sort(codec.table.astype(np.float64))
    mids = ((T[1:] + T[:-1]).astype(F32) / F32(2)).astype(np.float64)
    blocks[1] = rng.choice(mids, bs)
    amax[1] = 1.0
    blocks[1, 0] = 1.0
    blocks[2] = 0.0
    blocks[3, 5] = -1.0
    x = (blocks * amax).astype(F32)
    return x.reshape(rows, -1)


def golden_inputs(codec: Any, rng: np.random.Generator) -> np.ndarray:
    fam = codec.family
    return {"mx": _mx_golden_inputs, "nvfp4": _nv_golden_inputs, "bnb": _bnb_golden_inputs}[fam](codec, rng)


def golden_oracle(codec: Any, x: np.ndarray) -> dict[str, Any]:
    """The golden bytes, side arrays and decoded values for ``x`` from a peer run (or the
    independent reference where no peer has the format), with the peer/reference cross-checks
    asserted on the way."""
    fam, cid = codec.family, codec.codec_id
    v = describe_versions()
    notes: list[str] = []
    aux: dict[str, np.ndarray] = {}
    if fam == "mx":
        rule = codec.scale_rounding
        data, y = mx_reference(x, cid, rule)
        oracle = "lowbit.tools.blockscaled_oracles.mx_reference (numpy OCP MX, ml_dtypes element casts)"
        if MX_ELEMENTS[cid][5] is not None:
            dt, yt = torchao_mx(x, cid, rule)
            dq, _ = mx_reference(x, cid, rule, torchao018=True)
            rows = x.shape[0]
            fin = np.isfinite(x).reshape(rows, -1, 32).all(-1)
            blocks = lambda a: a.reshape(rows, fin.shape[1], -1)  # noqa: E731
            assert (blocks(dt) == blocks(dq)).all(-1)[fin].all(), f"{cid}/{rule}: torchao != its emulated deviations"
            same = (blocks(dt) == blocks(data)).all(-1) & fin
            data = np.where(np.repeat(same, data.shape[1] // fin.shape[1], axis=1), dt, data)
            oracle = f"torchao {v.get('torchao')} to_mx(scaling_mode={rule.upper()}) on the CPU (torch {v.get('torch')})"
            notes.append(f"{int(same.sum())} of {same.size} blocks are torchao's bytes; the other {int((~same).sum())} "
                         "(NaN/Inf blocks, byte-0 scales, RCEIL float32-log2 edges: torchao 0.18's documented "
                         "deviations, see lowbit/tools/blockscaled_oracles.py) come from mx_reference")
        else:
            notes.append("no peer implements MXINT8 (torchao: 'TODO: add support for MX int8'); independent reference")
    elif fam == "nvfp4":
        if cid == "nvfp4" and codec.scale_format == "ue4m3":
            if codec.recipe == "torchao":
                data, g, y = torchao_nvfp4(x)
                oracle = f"torchao {v.get('torchao')} nvfp4_quantize + NVFP4Tensor.dequantize on the CPU"
            else:
                data, g, y = compressed_tensors_nvfp4(x)
                oracle = (f"compressed-tensors {v.get('compressed_tensors')} generate_gparam + calculate_qparams + "
                          "quantize + pack_fp4_to_uint8 + dequantize on the CPU")
        else:
            el = "int4" if cid == "nvint4" else "e2m1"
            data, g, y = nv_reference(x, el, codec.scale_format)
            oracle = "lowbit.tools.blockscaled_oracles.nv_reference (torchao's NVFP4 recipe in torch ops)"
            notes.append("no peer has this element/scale combination; the reference equals torchao for E2M1/UE4M3")
        aux["global_scale"] = np.array(g, dtype=F32)
    elif fam == "bnb":
        data, aux, y = bnb_4bit(x, codec.quant_type, codec.blocksize, codec.double_quant)
        oracle = f"bitsandbytes {v.get('bitsandbytes')} quantize_4bit / dequantize_4bit on the CPU"
        if codec.double_quant:
            a = np.abs(x.reshape(-1, codec.blocksize)).max(axis=1).astype(np.float64)
            exact = F32(sum(a.tolist()) / a.size)
            assert aux["nested_offset"] == exact, f"{cid}: bitsandbytes' mean {aux['nested_offset']} != exact {exact}"
    else:
        raise ValueError(fam)
    return {"data": data, "aux": aux, "decoded": y.astype(F32), "oracle": oracle, "notes": notes}
