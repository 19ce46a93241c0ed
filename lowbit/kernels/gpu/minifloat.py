"""Triton kernels for element-wise codes (family ``minifloat``): the GPU twins of
:mod:`lowbit.kernels.cpu.minifloat`, with the same entry points and arguments.

One program handles ``BLOCK`` packing groups of the flattened tensor. Every rounding step is an
integer operation on the float32 bit pattern (exact on the GPU and in ``TRITON_INTERPRET=1``);
the only float operations are the scale division (``div_rn``, correctly rounded), the clamp and
the decode multiply, launched with ``enable_fp_fusion=False``. The format's parameters are
compile-time constants, so each format gets its own specialised kernel.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import triton
import triton.language as tl

from ...numerics import NAN_RAISE, OVF_INF, OVF_NAN, OVF_RAISE, OVF_SATURATE, ElementEncoding
from ..registry import interpreting, kernel
from ._ggml import floor_log2 as _floor_log2  # floor(log2 a), 1 <= a < 2**31, by binary search

_OVF_SATURATE: tl.constexpr = tl.constexpr(OVF_SATURATE)
_OVF_NAN: tl.constexpr = tl.constexpr(OVF_NAN)
_OVF_INF: tl.constexpr = tl.constexpr(OVF_INF)
_OVF_RAISE: tl.constexpr = tl.constexpr(OVF_RAISE)
_NAN_RAISE: tl.constexpr = tl.constexpr(NAN_RAISE)




@triton.jit
def _quantize(u, IS_INT: tl.constexpr, M: tl.constexpr, TMIN: tl.constexpr, Z: tl.constexpr,
              SUB: tl.constexpr, SIGNED: tl.constexpr, SS: tl.constexpr, MAXMAG: tl.constexpr,
              NEGMAX: tl.constexpr, NAN: tl.constexpr, NEGNAN: tl.constexpr, INFMAG: tl.constexpr,
              NEGZERO: tl.constexpr, OVF: tl.constexpr, ONNAN: tl.constexpr):
    """Codes of float32 bit patterns ``u`` (int32), plus masks of NaN / range refusals.

    The same steps as the CPU routine ``_quantize``, computed for every lane and selected.
    """
    sign = (u >> 31) & 1
    a = u & 0x7FFFFFFF
    e32 = a >> 23
    is_nan = a > 0x7F800000
    is_inf = a == 0x7F800000
    is_zero = a == 0
    sub32 = e32 == 0
    # |x| = sig * 2**e, te = floor(log2 |x|)  (float32 subnormals have no implicit bit)
    sig = tl.where(sub32, a, (a & 0x7FFFFF) | 0x800000)
    e = tl.where(sub32, -149, e32 - 150)
    te = tl.where(sub32, _floor_log2(tl.maximum(a, 1)) - 149, e32 - 127)
    if IS_INT:
        qe = tl.zeros_like(te)
    elif SUB:
        qe = tl.where(te >= TMIN, te - M, TMIN - M)
    else:
        qe = tl.where(te >= TMIN, te - M, TMIN)
    sh = qe - e
    shc = tl.minimum(tl.maximum(sh, 1), 25)
    # round half to even: add half a step minus one, plus the kept LSB, then shift
    k = (sig + ((1 << (shc - 1)) - 1) + ((sig >> shc) & 1)) >> shc
    k = tl.where(sh <= 0, sig, k)  # a step of 2**-149 keeps the value exactly

    twos = 1 << (SS + 1)
    if IS_INT:
        lim = tl.where(sign == 1, NEGMAX, MAXMAG)
        over = (te > SS + 1) | (k > lim)
        fin = tl.where(sign == 1, (twos - k) & (twos - 1), k)
        zero_code = tl.zeros_like(u)
    else:
        if SUB:
            low = k
        elif Z:
            low = k << M
        else:
            low = tl.zeros_like(k)
        mag = tl.where(te >= TMIN, ((te - TMIN + Z) << M) + k - (1 << M), low)
        over = mag > MAXMAG
        if SIGNED:
            fin = ((sign & (NEGZERO | (mag != 0).to(tl.int32))) << SS) | mag
            zero_code = (sign & NEGZERO) << SS
        else:
            fin = mag
            zero_code = tl.zeros_like(u)

    # the out-of-range codes
    if OVF == _OVF_SATURATE:
        if IS_INT:
            big_code = tl.where(sign == 1, (twos - NEGMAX) & (twos - 1), MAXMAG)
        elif SIGNED:
            big_code = (sign << SS) | MAXMAG
        else:
            big_code = tl.zeros_like(u) + MAXMAG
        below_code = tl.zeros_like(u)
    elif OVF == _OVF_NAN:
        big_code = tl.where(sign == 1, NEGNAN, NAN)
        below_code = tl.zeros_like(u) + NAN
    elif OVF == _OVF_INF:
        if SIGNED:
            big_code = (sign << SS) | INFMAG
        else:
            big_code = tl.zeros_like(u) + INFMAG
        below_code = tl.zeros_like(u) + NAN
    else:
        big_code = tl.zeros_like(u)
        below_code = tl.zeros_like(u)
    if SIGNED:
        below = is_zero & (Z == 0)
    else:
        below = ((sign == 1) & (a != 0)) | (is_zero & (Z == 0))
    big = (is_inf | over) & ~below
    code = tl.where(big, big_code, fin)
    if Z:
        code = tl.where(is_zero, zero_code, code)
    code = tl.where(below, below_code, code)
    code = tl.where(is_nan, tl.where(sign == 1, NEGNAN, NAN), code)
    if ONNAN == _NAN_RAISE:
        nan_bad = is_nan
    else:
        nan_bad = is_nan & False
    if OVF == _OVF_RAISE:
        range_bad = ~is_nan & (big | below)
    elif NAN < 0:  # saturate never refuses; nan/inf without a NaN code refuse the below-range
        range_bad = ~is_nan & below & (OVF != _OVF_SATURATE)
    else:
        range_bad = is_nan & False
    code = tl.where(nan_bad | range_bad, 0, code)
    return code, nan_bad, range_bad


@triton.jit
def _encode_kernel(x_ptr, s_ptr, out_ptr, flag_ptr, n_groups, K, G, CB, VLO, VHI,
                   HAS_SCALE: tl.constexpr, W: tl.constexpr, GC: tl.constexpr, GB: tl.constexpr,
                   BLOCK: tl.constexpr, IS_INT: tl.constexpr, M: tl.constexpr, TMIN: tl.constexpr,
                   Z: tl.constexpr, SUB: tl.constexpr, SIGNED: tl.constexpr, SS: tl.constexpr,
                   MAXMAG: tl.constexpr, NEGMAX: tl.constexpr, NAN: tl.constexpr, NEGNAN: tl.constexpr,
                   INFMAG: tl.constexpr, NEGZERO: tl.constexpr, OVF: tl.constexpr, ONNAN: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    grp = pid * BLOCK + tl.arange(0, BLOCK)
    m = grp < n_groups
    nan_any = tl.zeros([BLOCK], dtype=tl.int32)
    range_any = tl.zeros([BLOCK], dtype=tl.int32)
    # output byte j of a group gathers the bits of every code that overlaps it (all constexpr)
    for j in tl.static_range(GB):
        byte = tl.zeros([BLOCK], dtype=tl.int32)
        for i in tl.static_range(GC):
            if (i * W < 8 * j + 8) and (i * W + W > 8 * j):
                elem = grp * GC + i
                x = tl.load(x_ptr + elem, mask=m, other=0.0)
                if HAS_SCALE:
                    row = elem // K
                    s = tl.load(s_ptr + row * G + (elem - row * K) // CB, mask=m, other=1.0)
                    v = tl.math.div_rn(x, s)  # correctly rounded, as on the CPU
                    v = tl.minimum(tl.maximum(v, VLO), VHI)
                    finite = (x.to(tl.int32, bitcast=True) & 0x7F800000) != 0x7F800000
                    x = tl.where(finite, v, x)  # finite values only
                u = x.to(tl.int32, bitcast=True)
                code, nb, rb = _quantize(u, IS_INT, M, TMIN, Z, SUB, SIGNED, SS, MAXMAG, NEGMAX, NAN,
                                         NEGNAN, INFMAG, NEGZERO, OVF, ONNAN)
                nan_any = nan_any | nb.to(tl.int32)
                range_any = range_any | rb.to(tl.int32)
                if 8 * j >= i * W:
                    byte = byte | ((code >> (8 * j - i * W)) & 0xFF)
                else:
                    byte = byte | ((code << (i * W - 8 * j)) & 0xFF)
        tl.store(out_ptr + grp * GB + j, byte.to(tl.uint8), mask=m)
    zero = tl.zeros([BLOCK], dtype=tl.int32)
    tl.store(flag_ptr + zero, zero + 1, mask=m & (nan_any != 0))
    tl.store(flag_ptr + 1 + zero, zero + 1, mask=m & (range_any != 0))


@triton.jit
def _decode_kernel(data_ptr, s_ptr, lut_ptr, out_ptr, n_groups, K, G, CB,
                   HAS_SCALE: tl.constexpr, W: tl.constexpr, GC: tl.constexpr, GB: tl.constexpr,
                   BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    grp = pid * BLOCK + tl.arange(0, BLOCK)
    m = grp < n_groups
    for i in tl.static_range(GC):
        # code i of a group: the bits [i*W, i*W + W) of the group's little-endian bytes
        code = tl.zeros([BLOCK], dtype=tl.int32)
        for j in tl.static_range(GB):
            if (i * W < 8 * j + 8) and (i * W + W > 8 * j):
                b = tl.load(data_ptr + grp * GB + j, mask=m, other=0).to(tl.int32)
                if 8 * j >= i * W:
                    code = code | (b << (8 * j - i * W))
                else:
                    code = code | (b >> (i * W - 8 * j))
        code = code & ((1 << W) - 1)
        v = tl.load(lut_ptr + code, mask=m, other=0.0)
        elem = grp * GC + i
        if HAS_SCALE:
            row = elem // K
            s = tl.load(s_ptr + row * G + (elem - row * K) // CB, mask=m, other=1.0)
            v = tl.where(v == v, v * s, v)  # NaN codes keep their exact bits
        tl.store(out_ptr + elem, v, mask=m)


def _block(n_groups: int, group_codes: int) -> int:
    """Groups per program: ~4K elements on a GPU; far more in the interpreter, where each
    program costs milliseconds of Python."""
    target = 1 << 16 if interpreting() else 4096
    b = max(16, triton.next_power_of_2(max(1, target // group_codes)))
    return min(b, max(16, triton.next_power_of_2(n_groups)))


def _constexprs(enc: ElementEncoding) -> dict[str, int]:
    p = enc.params
    return dict(IS_INT=p.is_int, M=p.mbits, TMIN=p.min_binade, Z=p.zero, SUB=p.subnormals, SIGNED=p.signed,
                SS=p.sign_shift, MAXMAG=p.max_mag, NEGMAX=p.neg_max_mag, NAN=p.nan_code,
                NEGNAN=p.neg_nan_code, INFMAG=p.inf_mag, NEGZERO=p.negzero_ok, OVF=p.overflow, ONNAN=p.on_nan)


@functools.lru_cache(maxsize=256)
def _lut(enc: ElementEncoding, device: str) -> torch.Tensor:
    return torch.from_numpy(np.array(enc.lut)).to(device)


@kernel("minifloat", "gpu", "absmax")
def absmax(x: torch.Tensor, col_block: int, positive_only: bool) -> torch.Tensor:
    """float32 ``[n, ceil(K/col_block)]``: the largest finite |x| (or x > 0) of each row block.
    (A reduction torch does at bandwidth; no kernel of our own needed.)"""
    n, K = x.shape
    G = -(-K // max(col_block, 1)) if K else 0
    a = torch.where(x > 0, x, torch.zeros_like(x)) if positive_only else x.abs()
    a = torch.where(torch.isfinite(a), a, torch.zeros_like(a))
    if G * col_block != K:
        a = torch.nn.functional.pad(a, (0, G * col_block - K))
    if not a.numel():
        return torch.zeros((n, G), dtype=torch.float32, device=x.device)
    return a.reshape(n, G, col_block).amax(dim=2)


@kernel("minifloat", "gpu", "encode")
def encode_codes(x: torch.Tensor, scale: Any, col_block: int, enc: ElementEncoding, out: torch.Tensor,
                 flags: torch.Tensor) -> None:
    """Encode float32 ``x[n, K]`` into ``out[n, K*w/8]``; see lowbit.kernels.cpu.minifloat."""
    n, K = x.shape
    gc = enc.group_codes
    n_groups = n * K // gc
    block = _block(n_groups, gc)
    s = x if scale is None else scale  # any valid pointer when unused
    G = 1 if scale is None else scale.shape[1]
    vlo, vhi = enc.clamp_range
    _encode_kernel[(triton.cdiv(n_groups, block),)](
        x, s, out, flags, n_groups, max(K, 1), G, max(col_block, 1), vlo, vhi,
        HAS_SCALE=scale is not None, W=enc.storage_bits, GC=gc, GB=enc.group_bytes, BLOCK=block,
        enable_fp_fusion=False, **_constexprs(enc))


@kernel("minifloat", "gpu", "decode")
def decode_codes(data: torch.Tensor, scale: Any, col_block: int, enc: ElementEncoding, out: torch.Tensor) -> None:
    """Decode ``data[n, K*w/8]`` into float32 ``out[n, K]``; see lowbit.kernels.cpu.minifloat."""
    n, K = out.shape
    gc = enc.group_codes
    n_groups = n * K // gc
    block = _block(n_groups, gc)
    s = out if scale is None else scale
    G = 1 if scale is None else scale.shape[1]
    _decode_kernel[(triton.cdiv(n_groups, block),)](
        data, s, _lut(enc, str(data.device)), out, n_groups, max(K, 1), G, max(col_block, 1),
        HAS_SCALE=scale is not None, W=enc.storage_bits, GC=gc, GB=enc.group_bytes, BLOCK=block,
        enable_fp_fusion=False)
