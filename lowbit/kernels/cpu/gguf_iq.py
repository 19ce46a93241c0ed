"""Numba decoders of ggml's grid-based i-quants (family ``gguf_iq``): IQ1_S, IQ1_M, IQ2_XXS,
IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S: ``decode(type, data, out)`` here; ``encode(type, x, qw, out)``
dispatches to the encoder module of the type's grid family (:data:`ENCODERS`).

The code books (8- or 4-element grid rows, 2048 at most) and the 128 sign patterns come from
the ``gguf`` package (a core dependency), which carries ggml's tables; :func:`tables` unpacks
them once. Every formula is ggml's ``dequantize_row_iq*`` with its float order.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from ..registry import kernel
from ._ggml import F, fp16_to_fp32, rd_f16
from ._simd import vcanon, vgt, vilanes, visplat, vload, vlut, vsel, vsplat, vstore, vtof

_IDS = {"iq2_xxs": 0, "iq2_xs": 1, "iq2_s": 2, "iq3_xxs": 3, "iq3_s": 4, "iq1_s": 5, "iq1_m": 6}
TYPE_SIZE = {"iq2_xxs": 66, "iq2_xs": 74, "iq2_s": 82, "iq3_xxs": 98, "iq3_s": 110, "iq1_s": 50, "iq1_m": 56}
_TS = np.array([66, 74, 82, 98, 110, 50, 56])
IQ1S_DELTA = 0.125


@functools.lru_cache(maxsize=1)
def tables() -> tuple[np.ndarray, ...]:
    """(iq2xxs[256,8], iq2xs[512,8], iq2s[1024,8], iq3xxs[256,4], iq3s[512,4], iq1s[2048,8], ksigns[128])
    as int64 arrays: grid entries are ggml's bytes (int8 values for IQ1S)."""
    from gguf import quants as gq

    out = []
    for cls in (gq.IQ2_XXS, gq.IQ2_XS, gq.IQ2_S, gq.IQ3_XXS, gq.IQ3_S, gq.IQ1_S):
        cls.init_grid()
        g = np.asarray(cls.grid).reshape(cls.grid_shape)
        out.append(np.ascontiguousarray(np.rint(g).astype(np.int64)))
    out.append(np.frombuffer(gq.IQ2_XXS.ksigns, dtype=np.uint8).astype(np.int64))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def ftables() -> tuple[np.ndarray, ...]:
    """The grids of :func:`tables` as flat float32 arrays (row g at [8g:8g+8], or [4g:4g+4] for the
    4-wide IQ3 grids; the entries are small integers, so float32 holds them exactly), and ksigns."""
    t = tables()
    return tuple(np.ascontiguousarray(g.reshape(-1).astype(np.float32)) for g in t[:6]) + (t[6],)


# ---- eight elements per step (see _simd): lane j of grid row g is a contiguous load of the float32
# grid; the sign of lane j is bit j of the sign byte. Each lane computes C's expression for its
# element with C's operands and order, so the floats are ggml's bit for bit.

@njit(inline="always", error_model="numpy", cache=True)
def _vsgn(signs):
    """Lanes -1.0 where bit j of ``signs`` is set, else 1.0 (C: signs & kmask_iq2xs[j] ? -1.f : 1.f)."""
    bit = (visplat(signs) >> vilanes()) & visplat(1)
    return vsel(vgt(vtof(bit), vsplat(F(0.5))), vsplat(F(-1.0)), vsplat(F(1.0)))


@njit(inline="always", error_model="numpy", cache=True)
def _grid4x2(g, g1, g2):
    """Lanes 0-3 = 4-wide grid row g1, lanes 4-7 = row g2."""
    k = vilanes()
    return vlut(g, (k & visplat(3)) + visplat(4 * g1) + (k >> 2) * visplat(4 * (g2 - g1)))


@njit(inline="always", error_model="numpy", cache=True)
def _put8(y, yo, v):
    vstore(y, yo, vcanon(v))


@njit(inline="always", error_model="numpy", cache=True)
def _dec_block(t, b, o, y, yo, g2xxs, g2xs, g2s, g3xxs, g3s, g1s, ks):
    if t == 0:  # IQ2_XXS: per 32: 4 grid bytes + u32 (4 x 7 sign bits, 4-bit scale at the top)
        d = rd_f16(b, o)
        for ib in range(8):
            q = o + 2 + 8 * ib
            a1 = np.int64(b[q + 4]) | (np.int64(b[q + 5]) << 8) | (np.int64(b[q + 6]) << 16) | (np.int64(b[q + 7]) << 24)
            db = vsplat((d * (F(0.5) + F(a1 >> 28))) * F(0.25))
            for l in range(4):
                gi = np.int64(b[q + l])
                # C: db * grid[j] * (signs & kmask[j] ? -1 : 1)
                _put8(y, yo + 32 * ib + 8 * l, (db * vload(g2xxs, 8 * gi)) * _vsgn(ks[(a1 >> (7 * l)) & 127]))
    elif t == 1:  # IQ2_XS: u16 = 9-bit grid index | 7-bit sign index; two 4-bit scales per 32
        d = rd_f16(b, o)
        for ib in range(8):
            sc = np.int64(b[o + 66 + ib])
            db0 = vsplat((d * (F(0.5) + F(sc & 0xF))) * F(0.25))
            db1 = vsplat((d * (F(0.5) + F(sc >> 4))) * F(0.25))
            for l in range(4):
                q = np.int64(b[o + 2 + 2 * (4 * ib + l)]) | (np.int64(b[o + 3 + 2 * (4 * ib + l)]) << 8)
                db = db0 if l < 2 else db1
                _put8(y, yo + 32 * ib + 8 * l, (db * vload(g2xs, 8 * (q & 511))) * _vsgn(ks[q >> 9]))
    elif t == 2:  # IQ2_S: 10-bit grid index (qs + 2 bits of qh), explicit sign bytes
        d = rd_f16(b, o)
        for ib in range(8):
            sc = np.int64(b[o + 74 + ib])
            db0 = vsplat((d * (F(0.5) + F(sc & 0xF))) * F(0.25))
            db1 = vsplat((d * (F(0.5) + F(sc >> 4))) * F(0.25))
            qh = np.int64(b[o + 66 + ib])
            for l in range(4):
                gi = np.int64(b[o + 2 + 4 * ib + l]) | ((qh << (8 - 2 * l)) & 0x300)
                signs = np.int64(b[o + 2 + 32 + 4 * ib + l])
                db = db0 if l < 2 else db1
                _put8(y, yo + 32 * ib + 8 * l, (db * vload(g2s, 8 * gi)) * _vsgn(signs))
    elif t == 3:  # IQ3_XXS: 8 grid bytes (4 values each) per 32, then u32 scales-and-signs
        d = rd_f16(b, o)
        for ib in range(8):
            q = o + 2 + 64 + 4 * ib
            a = np.int64(b[q]) | (np.int64(b[q + 1]) << 8) | (np.int64(b[q + 2]) << 16) | (np.int64(b[q + 3]) << 24)
            db = vsplat((d * (F(0.5) + F(a >> 28))) * F(0.5))
            for l in range(4):
                g1 = np.int64(b[o + 2 + 8 * ib + 2 * l])
                g2 = np.int64(b[o + 2 + 8 * ib + 2 * l + 1])
                _put8(y, yo + 32 * ib + 8 * l, (db * _grid4x2(g3xxs, g1, g2)) * _vsgn(ks[(a >> (7 * l)) & 127]))
    elif t == 4:  # IQ3_S: 9-bit grid index (qs + 1 bit of qh), sign bytes, 4-bit scales per 64
        d = rd_f16(b, o)
        for ib in range(8):
            sc = np.int64(b[o + 106 + ib // 2])
            db = vsplat(d * F(1 + 2 * ((sc >> (4 * (ib % 2))) & 0xF)))
            qh = np.int64(b[o + 66 + ib])
            for l in range(4):
                q1 = np.int64(b[o + 2 + 8 * ib + 2 * l]) | ((qh << (8 - 2 * l)) & 256)
                q2 = np.int64(b[o + 2 + 8 * ib + 2 * l + 1]) | ((qh << (7 - 2 * l)) & 256)
                signs = np.int64(b[o + 74 + 4 * ib + l])
                _put8(y, yo + 32 * ib + 8 * l, (db * _grid4x2(g3s, q1, q2)) * _vsgn(signs))
    elif t == 5:  # IQ1_S: 11-bit index into the ±1/0 grid, 3-bit scale and the delta sign in qh
        d = rd_f16(b, o)
        for ib in range(8):
            qh = np.int64(b[o + 34 + 2 * ib]) | (np.int64(b[o + 35 + 2 * ib]) << 8)
            dl = vsplat(d * F(2 * ((qh >> 12) & 7) + 1))
            delta = vsplat(F(-IQ1S_DELTA) if qh & 0x8000 else F(IQ1S_DELTA))
            for l in range(4):
                gi = np.int64(b[o + 2 + 4 * ib + l]) | (((qh >> (3 * l)) & 7) << 8)
                _put8(y, yo + 32 * ib + 8 * l, dl * (vload(g1s, 8 * gi) + delta))  # C: dl * (grid[j] + delta)
    else:  # IQ1_M: no d field; the fp16 scale is spread over the top nibbles of 4 u16 scales
        sc0 = np.int64(b[o + 48]) | (np.int64(b[o + 49]) << 8)
        sc1 = np.int64(b[o + 50]) | (np.int64(b[o + 51]) << 8)
        sc2 = np.int64(b[o + 52]) | (np.int64(b[o + 53]) << 8)
        sc3 = np.int64(b[o + 54]) | (np.int64(b[o + 55]) << 8)
        d = fp16_to_fp32((sc0 >> 12) | ((sc1 >> 8) & 0x00F0) | ((sc2 >> 4) & 0x0F00) | (sc3 & 0xF000))
        for ib in range(8):
            s = np.int64(b[o + 48 + 2 * (ib // 2)]) | (np.int64(b[o + 49 + 2 * (ib // 2)]) << 8)
            dl1 = vsplat(d * F(2 * ((s >> (6 * (ib % 2))) & 7) + 1))
            dl2 = vsplat(d * F(2 * ((s >> (6 * (ib % 2) + 3)) & 7) + 1))
            qh0 = np.int64(b[o + 32 + 2 * ib])
            qh1 = np.int64(b[o + 33 + 2 * ib])
            for l in range(4):
                qs = np.int64(b[o + 4 * ib + l])
                qh = qh0 if l < 2 else qh1
                # l even: grid bits 8-10 from qh bits 0-2, delta sign bit 3; l odd: bits 4-6 and bit 7
                gi = qs | (((qh << 8) if l % 2 == 0 else (qh << 4)) & 0x700)
                neg = qh & (0x08 if l % 2 == 0 else 0x80)
                delta = vsplat(F(-IQ1S_DELTA) if neg else F(IQ1S_DELTA))
                dl = dl1 if l < 2 else dl2
                _put8(y, yo + 32 * ib + 8 * l, dl * (vload(g1s, 8 * gi) + delta))


@njit(error_model="numpy", cache=True)
def _dec_row(t, b, y, nb, ts, g2xxs, g2xs, g2s, g3xxs, g3s, g1s, ks):
    # one loop per type with a constant type number, so the inlined _dec_block's dispatch folds away
    if t == 0:
        for i in range(nb):
            _dec_block(0, b, i * ts, y, 256 * i, g2xxs, g2xs, g2s, g3xxs, g3s, g1s, ks)
    elif t == 1:
        for i in range(nb):
            _dec_block(1, b, i * ts, y, 256 * i, g2xxs, g2xs, g2s, g3xxs, g3s, g1s, ks)
    elif t == 2:
        for i in range(nb):
            _dec_block(2, b, i * ts, y, 256 * i, g2xxs, g2xs, g2s, g3xxs, g3s, g1s, ks)
    elif t == 3:
        for i in range(nb):
            _dec_block(3, b, i * ts, y, 256 * i, g2xxs, g2xs, g2s, g3xxs, g3s, g1s, ks)
    elif t == 4:
        for i in range(nb):
            _dec_block(4, b, i * ts, y, 256 * i, g2xxs, g2xs, g2s, g3xxs, g3s, g1s, ks)
    elif t == 5:
        for i in range(nb):
            _dec_block(5, b, i * ts, y, 256 * i, g2xxs, g2xs, g2s, g3xxs, g3s, g1s, ks)
    else:
        for i in range(nb):
            _dec_block(6, b, i * ts, y, 256 * i, g2xxs, g2xs, g2s, g3xxs, g3s, g1s, ks)


@njit(error_model="numpy", cache=True, parallel=True)
def _decode_rows(t, data, out, g2xxs, g2xs, g2s, g3xxs, g3s, g1s, ks):
    rows, K = out.shape
    ts = _TS[t]
    for r in prange(rows):
        _dec_row(t, data[r], out[r], K // 256, ts, g2xxs, g2xs, g2s, g3xxs, g3s, g1s, ks)


@kernel("gguf_iq", "cpu", "decode")
def decode(codec_id: str, data: np.ndarray, out: np.ndarray) -> None:
    _decode_rows(_IDS[codec_id], np.ascontiguousarray(data), out, *ftables())


#: the module holding each type's encoder (``encode(codec_id, x, qw, out)``, ggml's ``quantize_iq*``),
#: imported on first use so that decoding a GGUF file compiles no search kernel
ENCODERS = {"iq2_xxs": "_iq2_enc", "iq2_xs": "_iq2_enc", "iq2_s": "_iq2_enc", "iq3_xxs": "_iq3_enc",
            "iq3_s": "_iq3_enc", "iq1_s": "_iq1_enc", "iq1_m": "_iq1_enc"}


@kernel("gguf_iq", "cpu", "encode")
def encode(codec_id: str, x: np.ndarray, qw: np.ndarray | None, out: np.ndarray) -> None:
    import importlib

    importlib.import_module(f"{__package__}.{ENCODERS[codec_id]}").encode(codec_id, x, qw, out)
