"""Triton kernels for OCP MX block formats (family ``mx``): the GPU twins of
:mod:`lowbit.kernels.cpu.mx`, with the same entry points, arguments and bytes.

One program handles ``BPP`` blocks as a ``[BPP, 32]`` tile: the block amax is an integer
``tl.max`` over the bit patterns, the scale exponent is integer arithmetic on them (RCEIL divides
with ``tl.math.div_rn``), elements are scaled by two exact products and rounded by the minifloat
family's integer-only ``_quantize``. Packing uses ``reshape`` + ``tl.split`` (FP4: two codes per
byte; FP6: four codes in three bytes), decoding ``tl.join``. Launched with
``enable_fp_fusion=False``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import triton
import triton.language as tl

from ..formats import MX_BLOCK as BLOCK, MX_CEIL as CEIL, MX_EVEN as EVEN, MX_RCEIL as RCEIL, NAN_BITS, MXKernelFormat
from ..registry import interpreting, kernel
from .minifloat import _constexprs, _quantize

_RCEIL: tl.constexpr = tl.constexpr(RCEIL)
_EVEN: tl.constexpr = tl.constexpr(EVEN)
_CEIL: tl.constexpr = tl.constexpr(CEIL)
_NAN_BITS: tl.constexpr = tl.constexpr(NAN_BITS)


@triton.jit
def _pow2(e):
    """2**e as float32 for normal exponents e in [-126, 127] (int32 tensors)."""
    return ((e + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _scale_exponent(amax, VMAX, RULE: tl.constexpr, EMAX: tl.constexpr, RADD: tl.constexpr):
    """The CPU ``scale_exponent``, lane-wise on int32 amax bit patterns (see its docstring)."""
    if RULE == _RCEIL:
        d = tl.math.div_rn(amax.to(tl.float32, bitcast=True), tl.zeros_like(amax).to(tl.float32) + VMAX)
        b = d.to(tl.int32, bitcast=True)
        e = b >> 23
        m = b & 0x7FFFFF
        up = (m != 0) & (e != 0xFE) & ~((e == 0) & (m <= 0x400000))
        s = e + up.to(tl.int32) - 127
    else:
        a = amax
        if RULE == _EVEN:
            a = (a + RADD) & 0x7F800000
        field = a >> 23
        s = field - 127 - EMAX
        if RULE == _CEIL:
            # ceil(log2 a): +1 unless a is a power of two; for an fp32 subnormal a (field 0)
            # log2 a > -127 exactly when the mantissa exceeds 2**22 (a > 2**-127)
            m = a & 0x7FFFFF
            s = s + (((field != 0) & (m != 0)) | ((field == 0) & (m > 0x400000))).to(tl.int32)
    return tl.minimum(tl.maximum(s, -127), 127)


@triton.jit
def _encode_kernel(x_ptr, out_ptr, flag_ptr, n_blocks, VMAX,
                   W: tl.constexpr, TS: tl.constexpr, BPP: tl.constexpr, RULE: tl.constexpr,
                   EMAX: tl.constexpr, RADD: tl.constexpr, SHIFT: tl.constexpr,
                   IS_INT: tl.constexpr, M: tl.constexpr, TMIN: tl.constexpr, Z: tl.constexpr,
                   SUB: tl.constexpr, SIGNED: tl.constexpr, SS: tl.constexpr, MAXMAG: tl.constexpr,
                   NEGMAX: tl.constexpr, NAN: tl.constexpr, NEGNAN: tl.constexpr, INFMAG: tl.constexpr,
                   NEGZERO: tl.constexpr, OVF: tl.constexpr, ONNAN: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    blk = pid * BPP + tl.arange(0, BPP)
    bm = blk < n_blocks
    j = tl.arange(0, 32)
    x = tl.load(x_ptr + blk[:, None] * 32 + j[None, :], mask=bm[:, None], other=0.0)
    # the block amax, as an integer max over |x|'s bit patterns; >= 0x7F800000: NaN or Inf
    amax = tl.max(x.to(tl.int32, bitcast=True) & 0x7FFFFFFF, axis=1)
    nonfinite = amax >= 0x7F800000
    s = _scale_exponent(amax, VMAX, RULE, EMAX, RADD)
    # x * 2**(SHIFT - s) as two exact products by normal powers of two
    t = SHIFT - s
    t1 = tl.minimum(tl.maximum(t, -126), 127)
    v = (x * _pow2(t1)[:, None]) * _pow2(t - t1)[:, None]
    v = tl.where(nonfinite[:, None], 0.0, v)
    code, _nb, _rb = _quantize(v.to(tl.int32, bitcast=True), IS_INT, M, TMIN, Z, SUB, SIGNED, SS, MAXMAG,
                               NEGMAX, NAN, NEGNAN, INFMAG, NEGZERO, OVF, ONNAN)
    sbyte = tl.where(nonfinite, 255, s + 127)
    base = out_ptr + blk * TS
    tl.store(base, sbyte.to(tl.uint8), mask=bm)
    if W == 8:
        tl.store(base[:, None] + 1 + j[None, :], code.to(tl.uint8), mask=bm[:, None])
    elif W == 4:
        # element 2i in the low nibble of byte i, element 2i+1 in the high nibble
        lo, hi = tl.split(tl.reshape(code, [BPP, 16, 2]))
        i = tl.arange(0, 16)
        tl.store(base[:, None] + 1 + i[None, :], (lo | (hi << 4)).to(tl.uint8), mask=bm[:, None])
    else:
        # four 6-bit codes c0..c3 (elements 4g..4g+3) in three bytes, LSB first
        ev, od = tl.split(tl.reshape(code, [BPP, 8, 2, 2]))  # elements 4g+2i and 4g+2i+1
        c0, c2 = tl.split(ev)
        c1, c3 = tl.split(od)
        g3 = 3 * tl.arange(0, 8)
        p = base[:, None] + 1 + g3[None, :]
        tl.store(p, ((c0 | (c1 << 6)) & 0xFF).to(tl.uint8), mask=bm[:, None])
        tl.store(p + 1, (((c1 >> 2) | (c2 << 4)) & 0xFF).to(tl.uint8), mask=bm[:, None])
        tl.store(p + 2, (((c2 >> 4) | (c3 << 2)) & 0xFF).to(tl.uint8), mask=bm[:, None])
    zero = tl.zeros([BPP], dtype=tl.int32)
    tl.store(flag_ptr + zero, zero + 1, mask=bm & nonfinite)


@triton.jit
def _decode_kernel(data_ptr, lut_ptr, out_ptr, n_blocks,
                   W: tl.constexpr, TS: tl.constexpr, BPP: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    blk = pid * BPP + tl.arange(0, BPP)
    bm = blk < n_blocks
    base = data_ptr + blk * TS
    sb = tl.load(base, mask=bm, other=0).to(tl.int32)
    if W == 8:
        j = tl.arange(0, 32)
        code = tl.load(base[:, None] + 1 + j[None, :], mask=bm[:, None], other=0).to(tl.int32)
    elif W == 4:
        i = tl.arange(0, 16)
        b = tl.load(base[:, None] + 1 + i[None, :], mask=bm[:, None], other=0).to(tl.int32)
        code = tl.reshape(tl.join(b & 15, b >> 4), [BPP, 32])
    else:
        g3 = 3 * tl.arange(0, 8)
        p = base[:, None] + 1 + g3[None, :]
        b0 = tl.load(p, mask=bm[:, None], other=0).to(tl.int32)
        b1 = tl.load(p + 1, mask=bm[:, None], other=0).to(tl.int32)
        b2 = tl.load(p + 2, mask=bm[:, None], other=0).to(tl.int32)
        c0 = b0 & 63
        c1 = (b0 >> 6) | ((b1 & 15) << 2)
        c2 = (b1 >> 4) | ((b2 & 3) << 4)
        c3 = b2 >> 2
        # join(join(c0, c2), join(c1, c3)) lays them out as c0, c1, c2, c3
        code = tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), [BPP, 32])
    y = tl.load(lut_ptr + code)
    s = sb - 127
    # 2**s: one normal power of two, or 0.5 * 2**-126 for s = -127 (no subnormal factor)
    pre = tl.where(s >= -126, 1.0, 0.5)
    m = _pow2(tl.maximum(s, -126))
    y = tl.where(y == y, (y * pre[:, None]) * m[:, None], y)  # NaN codes keep their bits
    nan = tl.zeros_like(y.to(tl.int32, bitcast=True)) + _NAN_BITS
    y = tl.where((sb == 255)[:, None], nan.to(tl.float32, bitcast=True), y)
    j = tl.arange(0, 32)
    tl.store(out_ptr + blk[:, None] * 32 + j[None, :], y, mask=bm[:, None])


def _bpp(n_blocks: int) -> int:
    """Blocks per program: 128 (4096 elements) on a GPU; 2048 in the interpreter, where each
    program costs milliseconds of Python."""
    target = 2048 if interpreting() else 128
    return max(2, min(target, triton.next_power_of_2(max(1, n_blocks))))


@functools.lru_cache(maxsize=64)
def _lut(lut_bytes: bytes, device: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(lut_bytes, dtype=np.float32).copy()).to(device)


@kernel("mx", "gpu", "encode")
def encode_blocks(x: torch.Tensor, fmt: MXKernelFormat, out: torch.Tensor, flags: torch.Tensor) -> None:
    """Encode float32 ``x[n, K]`` (K % 32 == 0) into ``out[n, K/32 * type_size]``."""
    n, K = x.shape
    nb = n * K // BLOCK
    bpp = _bpp(nb)
    _encode_kernel[(triton.cdiv(nb, bpp),)](
        x, out, flags, nb, float(fmt.vmax), W=fmt.enc.storage_bits, TS=fmt.type_size, BPP=bpp, RULE=fmt.rule,
        EMAX=fmt.emax, RADD=fmt.round_add, SHIFT=fmt.shift, enable_fp_fusion=False, **_constexprs(fmt.enc))


@kernel("mx", "gpu", "decode")
def decode_blocks(data: torch.Tensor, fmt: MXKernelFormat, out: torch.Tensor) -> None:
    """Decode ``data[n, K/32 * type_size]`` into float32 ``out[n, K]``."""
    n, K = out.shape
    nb = n * K // BLOCK
    bpp = _bpp(nb)
    _decode_kernel[(triton.cdiv(nb, bpp),)](
        data, _lut(fmt.lut.tobytes(), str(data.device)), out, nb,
        W=fmt.enc.storage_bits, TS=fmt.type_size, BPP=bpp, enable_fp_fusion=False)
