"""Triton kernels of the TurboQuant codecs (family ``turboquant``): the GPU twins of
:mod:`lowbit.kernels.cpu.turboquant`, same entry points, arguments and float32 order.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from ..registry import kernel
from ._kvcommon import block_vectors, f16_to_f32, f32_to_f16, fwht, load_field, load_u16, tree_sum
from ._kvcommon import pack as _pack

NC_ROUNDS = 16  # norm-correction fixed-point rounds, = lowbit.kernels.cpu.turboquant.NC_ROUNDS


def _log2(n: int) -> int:
    return max(0, (n - 1).bit_length())


@triton.jit
def _rotate_tile(x_ptr, rows, rmask, cols, cmask, P_ptr, s_ptr, rscale, D, BV: tl.constexpr,
                 DP: tl.constexpr, LOG: tl.constexpr, RHT: tl.constexpr):
    """y = Π x for the rows of x [n, D] (dense: one input column per step) or fwht(s⊙x)·r."""
    if RHT:
        x = tl.load(x_ptr + rows[:, None] * D + cols[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0)
        s = tl.load(s_ptr + cols, mask=cmask, other=0.0)
        y = fwht(x * s[None, :], BV, DP, LOG) * rscale
    else:
        y = tl.zeros([BV, DP], dtype=tl.float32)
        for i in range(D):  # y_j += P[j, i] * x_i, left to right over i
            xi = tl.load(x_ptr + rows * D + i, mask=rmask, other=0.0)
            pc = tl.load(P_ptr + cols * D + i, mask=cmask, other=0.0)
            y = y + pc[None, :] * xi[:, None]
    return y


@triton.jit
def _encode_kernel(x_ptr, P_ptr, s_ptr, rscale, C_ptr, T_ptr, NT, zero_code, codes_ptr, gam_ptr,
                   r_ptr, rn_ptr, flag_ptr, n, D, BV: tl.constexpr, DP: tl.constexpr, LOG: tl.constexpr,
                   RHT: tl.constexpr, HAS_MSE: tl.constexpr, NC: tl.constexpr, WANT_R: tl.constexpr,
                   NCR: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BV + tl.arange(0, BV)
    rmask = rows < n
    cols = tl.arange(0, DP)
    cmask = cols < D
    m2 = rmask[:, None] & cmask[None, :]
    x = tl.load(x_ptr + rows[:, None] * D + cols[None, :], mask=m2, other=0.0)
    nrm = tl.sqrt_rn(tree_sum(x * x, BV, DP, LOG))
    y = _rotate_tile(x_ptr, rows, rmask, cols, cmask, P_ptr, s_ptr, rscale, D, BV, DP, LOG, RHT)
    pos = nrm > 0
    y = tl.where(pos[:, None], tl.math.div_rn(y, tl.where(pos, nrm, 1.0)[:, None]), 0.0)
    ovf = tl.zeros([BV], dtype=tl.int32)
    a = tl.zeros([BV], dtype=tl.float32)
    c = tl.zeros([BV, DP], dtype=tl.float32)
    if HAS_MSE:
        codes = tl.zeros([BV, DP], dtype=tl.int32)
        for k in range(NT):  # code = how many boundaries lie strictly below y_j
            t = tl.load(T_ptr + k)
            codes += (y > t).to(tl.int32)
        c = tl.load(C_ptr + codes, mask=m2, other=0.0)
        cn = tl.sqrt_rn(tree_sum(c * c, BV, DP, LOG))
        if NC:
            # fixed-point rounds code = Q(C[code] / ‖C[code]‖) (see the CPU kernel), until no code
            # of the block moves or NCR rounds: a row whose codes stopped moving stays put, so
            # this equals the CPU's per-row early stop
            moved = 1
            it = 0
            while (moved != 0) & (it < NCR):
                u = tl.math.div_rn(c, tl.where(cn > 0, cn, 1.0)[:, None])
                nw = tl.zeros([BV, DP], dtype=tl.int32)
                for k in range(NT):
                    nw += (u > tl.load(T_ptr + k)).to(tl.int32)
                moved = tl.max(tl.max(tl.where(m2 & (nw != codes), 1, 0), axis=1), axis=0)
                codes = nw
                c = tl.load(C_ptr + codes, mask=m2, other=0.0)
                cn = tl.sqrt_rn(tree_sum(c * c, BV, DP, LOG))
                it += 1
            g16 = f32_to_f16(tl.math.div_rn(nrm, cn))
        else:
            g16 = f32_to_f16(nrm)
        ovf = (g16 == 0x7C00).to(tl.int32)
        g16 = tl.where(g16 == 0x7C00, 0, g16)
        zero = g16 == 0  # the norm underflows: store what a zero vector stores
        codes = tl.where(zero[:, None], zero_code, codes)
        c = tl.load(C_ptr + codes, mask=m2, other=0.0)
        tl.store(codes_ptr + rows[:, None] * D + cols[None, :], codes.to(tl.uint8), mask=m2)
        tl.store(gam_ptr + rows, g16, mask=rmask)
        a = tl.where(pos, tl.math.div_rn(f16_to_f32(g16), tl.where(pos, nrm, 1.0)), 0.0)
    if WANT_R:
        if HAS_MSE:
            r = y - c * a[:, None]
        else:
            r = y
        r = tl.where(m2, r, 0.0)
        tl.store(r_ptr + rows[:, None] * D + cols[None, :], r, mask=m2)
        r16 = f32_to_f16(nrm * tl.sqrt_rn(tree_sum(r * r, BV, DP, LOG)))
        ovf = ovf | (r16 == 0x7C00).to(tl.int32)
        tl.store(rn_ptr + rows, tl.where(r16 == 0x7C00, 0, r16), mask=rmask)
    zero_i = tl.zeros([BV], dtype=tl.int32)
    tl.store(flag_ptr + zero_i, zero_i + 1, mask=rmask & (ovf != 0))


@kernel("turboquant", "gpu", "encode_instance")
def encode_instance(x, P, signs, rht, rscale, C, T, zero_code, has_mse, nc, codes, gam, resid, rnorm, flags) -> None:
    n, D = x.shape
    if n == 0:
        return
    bv = block_vectors(n)
    dp = triton.next_power_of_2(D)
    want_r = resid.shape[0] > 0
    _encode_kernel[(triton.cdiv(n, bv),)](
        x, P, signs, float(rscale), C, T, T.shape[0], zero_code, codes, gam, resid if want_r else x, rnorm, flags,
        n, D, BV=bv, DP=dp, LOG=_log2(dp), RHT=bool(rht), HAS_MSE=bool(has_mse), NC=bool(nc), WANT_R=want_r,
        NCR=NC_ROUNDS, enable_fp_fusion=False)


@triton.jit
def _matvec_sign_kernel(r_ptr, S_ptr, bits_ptr, n, D, M, BV: tl.constexpr, MP: tl.constexpr):
    """bits[v, i] = (Σ_j S[i, j]·r[v, j] < 0), left to right over j."""
    rows = tl.program_id(0).to(tl.int64) * BV + tl.arange(0, BV)
    rmask = rows < n
    oi = tl.arange(0, MP)
    omask = oi < M
    acc = tl.zeros([BV, MP], dtype=tl.float32)
    for j in range(D):
        rj = tl.load(r_ptr + rows * D + j, mask=rmask, other=0.0)
        sc = tl.load(S_ptr + oi * D + j, mask=omask, other=0.0)
        acc = acc + sc[None, :] * rj[:, None]
    tl.store(bits_ptr + rows[:, None] * M + oi[None, :], (acc < 0).to(tl.uint8),
             mask=rmask[:, None] & omask[None, :])


@kernel("turboquant", "gpu", "sketch_signs")
def sketch_signs(r, S, bits) -> None:
    n, D = r.shape
    if n == 0:
        return
    M = S.shape[0]
    bv = block_vectors(n)
    _matvec_sign_kernel[(triton.cdiv(n, bv),)](r, S, bits, n, D, M, BV=bv, MP=triton.next_power_of_2(M),
                                               enable_fp_fusion=False)


@kernel("turboquant", "gpu", "pack")
def pack(codes, width, out, col) -> None:
    _pack(codes, width, out, col)


@triton.jit
def _unrotate_tile(w_ptr, data_ptr, rows, rmask, cols, cmask, rowbase, ccol, C_ptr, P_ptr, s_ptr, rscale, D,
                   W: tl.constexpr, FROM_CODES: tl.constexpr, BV: tl.constexpr, DP: tl.constexpr,
                   LOG: tl.constexpr, RHT: tl.constexpr):
    """Πᵀ w per row, w = C[codes] read from the packed bytes (FROM_CODES) or w[n, D] float32."""
    if RHT:
        m2 = rmask[:, None] & cmask[None, :]
        if FROM_CODES:
            code = load_field(data_ptr, rowbase[:, None], ccol, cols[None, :], W, m2)
            w = tl.load(C_ptr + code, mask=m2, other=0.0)
        else:
            w = tl.load(w_ptr + rows[:, None] * D + cols[None, :], mask=m2, other=0.0)
        s = tl.load(s_ptr + cols, mask=cmask, other=0.0)
        z = (fwht(w, BV, DP, LOG) * rscale) * s[None, :]
    else:
        z = tl.zeros([BV, DP], dtype=tl.float32)
        for j in range(D):  # x_i += P[j, i] * w_j, left to right over j
            if FROM_CODES:
                code = load_field(data_ptr, rowbase, ccol, j, W, rmask)
                wj = tl.load(C_ptr + code, mask=rmask, other=0.0)
            else:
                wj = tl.load(w_ptr + rows * D + j, mask=rmask, other=0.0)
            pr = tl.load(P_ptr + j * D + cols, mask=cmask, other=0.0)
            z = z + pr[None, :] * wj[:, None]
    return z


@triton.jit
def _decode_kernel(data_ptr, row_bytes, gcol, ccol, C_ptr, P_ptr, s_ptr, rscale, out_ptr, n, D,
                   W: tl.constexpr, BV: tl.constexpr, DP: tl.constexpr, LOG: tl.constexpr, RHT: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BV + tl.arange(0, BV)
    rmask = rows < n
    cols = tl.arange(0, DP)
    cmask = cols < D
    rowbase = rows * row_bytes
    h = load_u16(data_ptr, rowbase, gcol, rmask)
    g = f16_to_f32(h)
    z = _unrotate_tile(out_ptr, data_ptr, rows, rmask, cols, cmask, rowbase, ccol, C_ptr, P_ptr, s_ptr, rscale, D,
                       W, True, BV, DP, LOG, RHT)
    bad = (h & 0x7C00) == 0x7C00  # an Inf/NaN norm: the vector is NaN
    v = tl.where(bad[:, None], float("nan"), z * g[:, None])
    tl.store(out_ptr + rows[:, None] * D + cols[None, :], v, mask=rmask[:, None] & cmask[None, :])


@kernel("turboquant", "gpu", "decode_instance")
def decode_instance(data, gcol, ccol, bits, C, P, signs, rht, rscale, out) -> None:
    n, D = out.shape
    if n == 0:
        return
    bv = block_vectors(n)
    dp = triton.next_power_of_2(D)
    _decode_kernel[(triton.cdiv(n, bv),)](data, data.stride(0), gcol, ccol, C, P, signs, float(rscale), out, n, D,
                                          W=bits, BV=bv, DP=dp, LOG=_log2(dp), RHT=bool(rht),
                                          enable_fp_fusion=False)


@triton.jit
def _prod_w_kernel(data_ptr, row_bytes, gcol, rcol, ccol, zcol, C_ptr, S_ptr, alpha, w_ptr, bad_ptr, n, D, M,
                   W: tl.constexpr, HAS_MSE: tl.constexpr, BV: tl.constexpr, DP: tl.constexpr):
    """w = γ·C[codes] + fl(α·γ_r)·Sᵀz (Sᵀz left to right over i), written to w[n, D]."""
    rows = tl.program_id(0).to(tl.int64) * BV + tl.arange(0, BV)
    rmask = rows < n
    cols = tl.arange(0, DP)
    cmask = cols < D
    m2 = rmask[:, None] & cmask[None, :]
    rowbase = rows * row_bytes
    hr = load_u16(data_ptr, rowbase, rcol, rmask)
    bad = (hr & 0x7C00) == 0x7C00
    beta = alpha * f16_to_f32(hr)
    u = tl.zeros([BV, DP], dtype=tl.float32)
    for i in range(M):
        zb = load_field(data_ptr, rowbase, zcol, i, 1, rmask)
        zi = tl.where(zb == 1, -1.0, 1.0)
        sr = tl.load(S_ptr + i * D + cols, mask=cmask, other=0.0)
        u = u + sr[None, :] * zi[:, None]
    if HAS_MSE:
        h = load_u16(data_ptr, rowbase, gcol, rmask)
        bad = bad | ((h & 0x7C00) == 0x7C00)
        g = f16_to_f32(h)
        code = load_field(data_ptr, rowbase[:, None], ccol, cols[None, :], W, m2)
        c = tl.load(C_ptr + code, mask=m2, other=0.0)
        w = g[:, None] * c + beta[:, None] * u
    else:
        w = beta[:, None] * u
    tl.store(w_ptr + rows[:, None] * D + cols[None, :], w, mask=m2)
    tl.store(bad_ptr + rows, bad.to(tl.int32), mask=rmask)


@triton.jit
def _unrotate_kernel(w_ptr, bad_ptr, P_ptr, s_ptr, rscale, out_ptr, n, D, BV: tl.constexpr, DP: tl.constexpr,
                     LOG: tl.constexpr, RHT: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BV + tl.arange(0, BV)
    rmask = rows < n
    cols = tl.arange(0, DP)
    cmask = cols < D
    z = _unrotate_tile(w_ptr, w_ptr, rows, rmask, cols, cmask, rows, 0, w_ptr, P_ptr, s_ptr, rscale, D,
                       1, False, BV, DP, LOG, RHT)
    bad = tl.load(bad_ptr + rows, mask=rmask, other=0) != 0
    v = tl.where(bad[:, None], float("nan"), z)
    tl.store(out_ptr + rows[:, None] * D + cols[None, :], v, mask=rmask[:, None] & cmask[None, :])


def unrotate_rows(w: Any, bad: Any, P: Any, signs: Any, rht: bool, rscale: Any, out: Any) -> None:
    """out = Πᵀ w row by row (NaN where bad != 0); the shared second stage of decoders."""
    n, D = w.shape
    bv = block_vectors(n)
    dp = triton.next_power_of_2(D)
    _unrotate_kernel[(triton.cdiv(n, bv),)](w, bad, P, signs, float(rscale), out, n, D, BV=bv, DP=dp, LOG=_log2(dp),
                                            RHT=bool(rht), enable_fp_fusion=False)


@kernel("turboquant", "gpu", "decode_prod")
def decode_prod(data, gcol, rcol, ccol, zcol, bits, C, S, alpha, P, signs, rht, rscale, out) -> None:
    n, D = out.shape
    if n == 0:
        return
    M = S.shape[0]
    bv = block_vectors(n)
    dp = triton.next_power_of_2(D)
    w = torch.empty((n, D), dtype=torch.float32, device=out.device)
    bad = torch.empty((n,), dtype=torch.int32, device=out.device)
    _prod_w_kernel[(triton.cdiv(n, bv),)](data, data.stride(0), gcol, rcol, ccol, zcol, C, S, float(alpha), w, bad,
                                          n, D, M, W=max(bits, 1), HAS_MSE=bits > 0, BV=bv, DP=dp,
                                          enable_fp_fusion=False)
    unrotate_rows(w, bad, P, signs, rht, rscale, out)


@triton.jit
def _rotate_rows_kernel(x_ptr, P_ptr, s_ptr, rscale, y_ptr, nrm_ptr, n, D, BV: tl.constexpr, DP: tl.constexpr,
                        LOG: tl.constexpr, RHT: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BV + tl.arange(0, BV)
    rmask = rows < n
    cols = tl.arange(0, DP)
    cmask = cols < D
    m2 = rmask[:, None] & cmask[None, :]
    x = tl.load(x_ptr + rows[:, None] * D + cols[None, :], mask=m2, other=0.0)
    tl.store(nrm_ptr + rows, tl.sqrt_rn(tree_sum(x * x, BV, DP, LOG)), mask=rmask)
    y = _rotate_tile(x_ptr, rows, rmask, cols, cmask, P_ptr, s_ptr, rscale, D, BV, DP, LOG, RHT)
    tl.store(y_ptr + rows[:, None] * D + cols[None, :], y, mask=m2)


def rotate_rows(x: Any, P: Any, signs: Any, rht: bool, rscale: Any, y: Any, nrm: Any) -> None:
    """nrm = sqrt(tree_sumsq(x)), y = rotate(x) (not divided by nrm), row by row."""
    n, D = x.shape
    bv = block_vectors(n)
    dp = triton.next_power_of_2(D)
    _rotate_rows_kernel[(triton.cdiv(n, bv),)](x, P, signs, float(rscale), y, nrm, n, D, BV=bv, DP=dp, LOG=_log2(dp),
                                               RHT=bool(rht), enable_fp_fusion=False)


@triton.jit
def _unrotate_scaled_kernel(w_ptr, g_ptr, P_ptr, s_ptr, rscale, out_ptr, n, D, BV: tl.constexpr, DP: tl.constexpr,
                            LOG: tl.constexpr, RHT: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BV + tl.arange(0, BV)
    rmask = rows < n
    cols = tl.arange(0, DP)
    cmask = cols < D
    z = _unrotate_tile(w_ptr, w_ptr, rows, rmask, cols, cmask, rows, 0, w_ptr, P_ptr, s_ptr, rscale, D,
                       1, False, BV, DP, LOG, RHT)
    g = tl.load(g_ptr + rows, mask=rmask, other=0.0)
    v = tl.where((g == g)[:, None], z * g[:, None], float("nan"))  # NaN γ: the vector is NaN
    tl.store(out_ptr + rows[:, None] * D + cols[None, :], v, mask=rmask[:, None] & cmask[None, :])


def unrotate_scaled(w: Any, g: Any, P: Any, signs: Any, rht: bool, rscale: Any, out: Any) -> None:
    """out = unrotate(w) · g row by row (g float32 per row; NaN g gives a NaN row)."""
    n, D = w.shape
    bv = block_vectors(n)
    dp = triton.next_power_of_2(D)
    _unrotate_scaled_kernel[(triton.cdiv(n, bv),)](w, g, P, signs, float(rscale), out, n, D, BV=bv, DP=dp,
                                                   LOG=_log2(dp), RHT=bool(rht), enable_fp_fusion=False)
