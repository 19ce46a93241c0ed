"""Triton kernels for NVFP4 / NVINT4 (family ``nvfp4``): the GPU twins of
:mod:`lowbit.kernels.cpu.nvfp4`, same entry points, same bytes.

One program handles ``BPP`` blocks as a ``[BPP, 16]`` tile. The producer's float steps are
single correctly rounded fp32 operations (divisions with ``tl.math.div_rn``, launched with
``enable_fp_fusion=False`` so no product is fused into an FMA); rounding to the scale and element
grids is the minifloat family's integer-only ``_quantize``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import triton
import triton.language as tl

from ..formats import NV_BLOCK as BLOCK, NV_TORCHAO as TORCHAO, NAN_BITS, NVKernelFormat
from ..registry import interpreting, kernel
from .minifloat import _constexprs, _quantize

_TORCHAO: tl.constexpr = tl.constexpr(TORCHAO)
_NAN_BITS: tl.constexpr = tl.constexpr(NAN_BITS)


@triton.jit
def _encode_kernel(x_ptr, slut_ptr, out_ptr, flag_ptr, n_blocks, g, rg, EM, SMIN, SMAX,
                   BPP: tl.constexpr, RECIPE: tl.constexpr, ZERO_CODE: tl.constexpr, SCALE_NAN: tl.constexpr,
                   IS_INT: tl.constexpr, M: tl.constexpr, TMIN: tl.constexpr, Z: tl.constexpr,
                   SUB: tl.constexpr, SIGNED: tl.constexpr, SS: tl.constexpr, MAXMAG: tl.constexpr,
                   NEGMAX: tl.constexpr, NAN: tl.constexpr, NEGNAN: tl.constexpr, INFMAG: tl.constexpr,
                   NEGZERO: tl.constexpr, OVF: tl.constexpr, ONNAN: tl.constexpr,
                   S_IS_INT: tl.constexpr, S_M: tl.constexpr, S_TMIN: tl.constexpr, S_Z: tl.constexpr,
                   S_SUB: tl.constexpr, S_SIGNED: tl.constexpr, S_SS: tl.constexpr, S_MAXMAG: tl.constexpr,
                   S_NEGMAX: tl.constexpr, S_NAN: tl.constexpr, S_NEGNAN: tl.constexpr, S_INFMAG: tl.constexpr,
                   S_NEGZERO: tl.constexpr, S_OVF: tl.constexpr, S_ONNAN: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    blk = pid * BPP + tl.arange(0, BPP)
    bm = blk < n_blocks
    j = tl.arange(0, 16)
    x = tl.load(x_ptr + blk[:, None] * 16 + j[None, :], mask=bm[:, None], other=0.0)
    amax = tl.max(x.to(tl.int32, bitcast=True) & 0x7FFFFFFF, axis=1)   # integer max of |x|'s bits
    nonfinite = amax >= 0x7F800000
    zero_f = tl.zeros([BPP], dtype=tl.float32)
    bs = tl.math.div_rn(tl.where(nonfinite, 0, amax).to(tl.float32, bitcast=True), zero_f + EM)
    if RECIPE == _TORCHAO:
        t = tl.math.div_rn(bs, zero_f + g)
        t = tl.minimum(tl.maximum(t, SMIN), SMAX)
    else:
        t = bs * g
        t = tl.minimum(tl.maximum(t, -SMAX), SMAX)
    sc, _nb, _rb = _quantize(t.to(tl.int32, bitcast=True), S_IS_INT, S_M, S_TMIN, S_Z, S_SUB, S_SIGNED, S_SS,
                             S_MAXMAG, S_NEGMAX, S_NAN, S_NEGNAN, S_INFMAG, S_NEGZERO, S_OVF, S_ONNAN)
    sv = tl.load(slut_ptr + sc)
    if ZERO_CODE >= 0:  # compressed-tensors: a scale that rounds to 0 becomes 0.125
        sc = tl.where(sv == 0.0, ZERO_CODE, sc)
        sv = tl.load(slut_ptr + sc)
    if RECIPE == _TORCHAO:
        r = tl.math.div_rn(zero_f + rg, sv)
        # TransformerEngine's min(1 / (s * S_dec), FLT_MAX): a tiny tensor's tiny block would
        # otherwise scale by Inf (torchao then writes +-6 and NaN codes)
        r = tl.minimum(r, 3.4028234663852886e38)
        v = x * r[:, None]
    else:
        d = tl.math.div_rn(sv, zero_f + g)
        v = tl.math.div_rn(x, tl.broadcast_to(d[:, None], [BPP, 16]))
        v = tl.where(v == 0.0, 0.0, v)  # compressed-tensors' "+ zero point": -0.0 becomes +0.0
    v = tl.minimum(tl.maximum(v, -EM), EM)
    v = tl.where(nonfinite[:, None], 0.0, v)
    code, _nb2, _rb2 = _quantize(v.to(tl.int32, bitcast=True), IS_INT, M, TMIN, Z, SUB, SIGNED, SS, MAXMAG,
                                 NEGMAX, NAN, NEGNAN, INFMAG, NEGZERO, OVF, ONNAN)
    base = out_ptr + blk * 9  # TYPE_SIZE: 1 scale byte + 8 code bytes
    tl.store(base, tl.where(nonfinite, SCALE_NAN, sc).to(tl.uint8), mask=bm)
    lo, hi = tl.split(tl.reshape(code & 15, [BPP, 8, 2]))  # element 2i low nibble, 2i+1 high
    i = tl.arange(0, 8)
    tl.store(base[:, None] + 1 + i[None, :], (lo | (hi << 4)).to(tl.uint8), mask=bm[:, None])
    zero = tl.zeros([BPP], dtype=tl.int32)
    tl.store(flag_ptr + zero, zero + 1, mask=bm & nonfinite)


@triton.jit
def _decode_kernel(data_ptr, elut_ptr, slut_ptr, out_ptr, n_blocks, g, BPP: tl.constexpr, RECIPE: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    blk = pid * BPP + tl.arange(0, BPP)
    bm = blk < n_blocks
    base = data_ptr + blk * 9
    sv = tl.load(slut_ptr + tl.load(base, mask=bm, other=0).to(tl.int32))
    zero_f = tl.zeros([BPP], dtype=tl.float32)
    if RECIPE == _TORCHAO:
        m = sv * g
    else:
        m = tl.math.div_rn(sv, zero_f + g)
    i = tl.arange(0, 8)
    b = tl.load(base[:, None] + 1 + i[None, :], mask=bm[:, None], other=0).to(tl.int32)
    code = tl.reshape(tl.join(b & 15, b >> 4), [BPP, 16])
    y = tl.load(elut_ptr + code) * m[:, None]
    nan = (tl.zeros_like(code) + _NAN_BITS).to(tl.float32, bitcast=True)
    y = tl.where((y != y) | (sv != sv)[:, None], nan, y)   # one NaN pattern on every backend
    j = tl.arange(0, 16)
    tl.store(out_ptr + blk[:, None] * 16 + j[None, :], y, mask=bm[:, None])


def _bpp(n_blocks: int) -> int:
    target = 4096 if interpreting() else 256
    return max(2, min(target, triton.next_power_of_2(max(1, n_blocks))))


@functools.lru_cache(maxsize=64)
def _table(lut_bytes: bytes, device: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(lut_bytes, dtype=np.float32).copy()).to(device)


@kernel("nvfp4", "gpu", "tensor_amax")
def tensor_amax(x: torch.Tensor) -> np.float32:
    """The largest finite |x| (0.0 if none): a reduction torch does at bandwidth."""
    if not x.numel():
        return np.float32(0.0)
    a = x.abs()
    a = torch.where(torch.isfinite(a), a, torch.zeros_like(a))
    return np.float32(a.max().item())


@kernel("nvfp4", "gpu", "encode")
def encode_blocks(x: torch.Tensor, fmt: NVKernelFormat, g: float, rg: float, out: torch.Tensor,
                  flags: torch.Tensor) -> None:
    """Encode float32 ``x[n, K]`` (K % 16 == 0) into ``out[n, K/16 * 9]``."""
    n, K = x.shape
    nb = n * K // BLOCK
    bpp = _bpp(nb)
    scale_cx = {f"S_{k}": v for k, v in _constexprs(fmt.senc).items()}
    _encode_kernel[(triton.cdiv(nb, bpp),)](
        x, _table(fmt.slut.tobytes(), str(x.device)), out, flags, nb, float(g), float(rg), float(fmt.emax_val),
        float(fmt.smin), float(fmt.smax), BPP=bpp, RECIPE=fmt.recipe, ZERO_CODE=fmt.zero_code,
        SCALE_NAN=fmt.scale_nan, enable_fp_fusion=False, **_constexprs(fmt.enc), **scale_cx)


@kernel("nvfp4", "gpu", "decode")
def decode_blocks(data: torch.Tensor, fmt: NVKernelFormat, g: float, out: torch.Tensor) -> None:
    """Decode ``data[n, K/16 * 9]`` into float32 ``out[n, K]``."""
    n, K = out.shape
    nb = n * K // BLOCK
    bpp = _bpp(nb)
    dev = str(data.device)
    _decode_kernel[(triton.cdiv(nb, bpp),)](
        data, _table(fmt.elut.tobytes(), dev), _table(fmt.slut.tobytes(), dev), out, nb, float(g),
        BPP=bpp, RECIPE=fmt.recipe, enable_fp_fusion=False)

