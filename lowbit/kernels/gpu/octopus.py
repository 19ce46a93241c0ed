"""Triton kernels of OCTOPUS (family ``octopus``): the GPU twins of
:mod:`lowbit.kernels.cpu.octopus` (same entry points, same float32 order). Encode runs the
shared rotation kernel, then one program quantizes BV vectors × all their slots (triplet
components are read from the rotated rows with stride 3); decode writes ŷ, then the shared
inverse rotation scales by γ.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..registry import kernel
from ._kvcommon import block_vectors, f16_to_f32, f32_to_f16, load_field, load_u16, tree_sum
from .turboquant import NC_ROUNDS, _log2, rotate_rows, unrotate_scaled


@triton.jit
def _count(v, T_ptr, NT):
    k = tl.zeros(v.shape, dtype=tl.int32)
    for t in range(NT):  # how many boundaries lie strictly below v
        k += (v > tl.load(T_ptr + t)).to(tl.int32)
    return k


@triton.jit
def _sgn(a):
    return tl.where(a >= 0, 1.0, -1.0)


@triton.jit
def _slots(y0, y1, y2, q0, q1, full, g, G3, Tx, NTX, Te, NTE, Cr, Tr, NTR, DIR3, Tc, NTC, Cr2, Tr2, NTR2, DIR2,
           C1, T1, NT1, BX: tl.constexpr, BE: tl.constexpr, REM: tl.constexpr, JOINT: tl.constexpr):
    """Quantize the slots of rotated unit vectors: triplets (y0, y1, y2) [BV, GP] and the last
    slot (q0, q1) [BV] (pair, or q0 alone). Returns the slot codes, the slot energies and ŷ
    (triplets a0, a1, a2; last slot b0, b1 — a single coordinate in b0)."""
    NE: tl.constexpr = 1 << BE
    NX: tl.constexpr = 1 << BX
    l = (tl.abs(y0) + tl.abs(y1)) + tl.abs(y2)
    lp = l > 0
    ld = tl.where(lp, l, 1.0)
    px = tl.where(lp, tl.math.div_rn(y0, ld), 0.0)
    py = tl.where(lp, tl.math.div_rn(y1, ld), 0.0)
    pz = tl.where(lp, tl.math.div_rn(y2, ld), 0.0)
    up = pz >= 0
    u = tl.where(up, px, _sgn(px) * (1.0 - tl.abs(py)))  # fold the lower hemisphere; sgn(0) = +1
    v = tl.where(up, py, _sgn(py) * (1.0 - tl.abs(px)))
    ja = _count(u, Tx, NTX)
    jb = _count(v, Te, NTE)
    if JOINT:
        best = tl.full(u.shape, float("-inf"), tl.float32)
        ba = ja
        bb = jb
        for da in tl.static_range(3):
            for db in tl.static_range(3):
                a = ja + (da - 1)
                b = jb + (db - 1)
                ok = (a >= 0) & (a < NX) & (b >= 0) & (b < NE)
                k = 3 * tl.where(ok, a * NE + b, 0)
                s = (y0 * tl.load(DIR3 + k) + y1 * tl.load(DIR3 + k + 1)) + y2 * tl.load(DIR3 + k + 2)
                upd = ok & (s > best)
                best = tl.where(upd, s, best)
                ba = tl.where(upd, a, ba)
                bb = tl.where(upd, b, bb)
        ja = ba
        jb = bb
        rho = best
    else:
        rho = tl.sqrt_rn((y0 * y0 + y1 * y1) + y2 * y2)
    jr = _count(rho, Tr, NTR)
    code = ja | (jb << BX) | (jr << (BX + BE))
    k = 3 * (ja * NE + jb)
    r = tl.load(Cr + jr)
    a0 = r * tl.load(DIR3 + k)
    a1 = r * tl.load(DIR3 + k + 1)
    a2 = r * tl.load(DIR3 + k + 2)
    s2 = tl.where(full, (a0 * a0 + a1 * a1) + a2 * a2, 0.0)
    b0 = tl.zeros(q0.shape, dtype=tl.float32)
    b1 = tl.zeros(q0.shape, dtype=tl.float32)
    if REM == 2:  # the last slot is a pair
        l2 = tl.abs(q0) + tl.abs(q1)
        u2 = tl.where(l2 > 0, tl.math.div_rn(q0, tl.where(l2 > 0, l2, 1.0)), 0.0)
        ja2 = _count(u2, Tc, NTC)
        jb2 = (q1 < 0).to(tl.int32)
        jr2 = _count(tl.sqrt_rn(q0 * q0 + q1 * q1), Tr2, NTR2)
        k2 = 2 * (2 * ja2 + jb2)
        r2 = tl.load(Cr2 + jr2)
        b0 = r2 * tl.load(DIR2 + k2)
        b1 = r2 * tl.load(DIR2 + k2 + 1)
        last = (g == G3)[None, :]
        code = tl.where(last, (ja2 | (jb2 << BX) | (jr2 << (BX + BE)))[:, None], code)
        s2 = tl.where(last, ((b0 * b0 + b1 * b1) + 0.0)[:, None], s2)
    if REM == 1:  # the last slot is one coordinate
        j1 = _count(q0, T1, NT1)
        b0 = tl.load(C1 + j1)
        last = (g == G3)[None, :]
        code = tl.where(last, j1[:, None], code)
        s2 = tl.where(last, ((b0 * b0 + 0.0) + 0.0)[:, None], s2)
    return code, s2, a0, a1, a2, b0, b1


@triton.jit
def _quant_kernel(y_ptr, nrm_ptr, Tx, NTX, Te, NTE, Cr, Tr, NTR, DIR3, Tc, NTC, Cr2, Tr2, NTR2, DIR2, C1, T1, NT1,
                  canon_ptr, codes_ptr, gam_ptr, flag_ptr, n, D, G3, G,
                  BX: tl.constexpr, BE: tl.constexpr, REM: tl.constexpr, JOINT: tl.constexpr, NC: tl.constexpr,
                  BV: tl.constexpr, GP: tl.constexpr, LOGG: tl.constexpr, NCR: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BV + tl.arange(0, BV)
    rmask = rows < n
    g = tl.arange(0, GP)
    full = rmask[:, None] & (g < G3)[None, :]
    nrm = tl.load(nrm_ptr + rows, mask=rmask, other=0.0)
    pos = nrm > 0
    nd1 = tl.where(pos, nrm, 1.0)
    nd = nd1[:, None]
    base = y_ptr + rows[:, None] * D + 3 * g[None, :]
    y0 = tl.where(pos[:, None], tl.math.div_rn(tl.load(base, mask=full, other=0.0), nd), 0.0)
    y1 = tl.where(pos[:, None], tl.math.div_rn(tl.load(base + 1, mask=full, other=0.0), nd), 0.0)
    y2 = tl.where(pos[:, None], tl.math.div_rn(tl.load(base + 2, mask=full, other=0.0), nd), 0.0)
    q0 = tl.zeros([BV], dtype=tl.float32)  # the last slot (pair, or one coordinate)
    q1 = tl.zeros([BV], dtype=tl.float32)
    if REM > 0:
        q0 = tl.where(pos, tl.math.div_rn(tl.load(y_ptr + rows * D + 3 * G3, mask=rmask, other=0.0), nd1), 0.0)
    if REM == 2:
        q1 = tl.where(pos, tl.math.div_rn(tl.load(y_ptr + rows * D + 3 * G3 + 1, mask=rmask, other=0.0), nd1), 0.0)
    code, s2, a0, a1, a2, b0, b1 = _slots(y0, y1, y2, q0, q1, full, g, G3, Tx, NTX, Te, NTE, Cr, Tr, NTR, DIR3,
                                          Tc, NTC, Cr2, Tr2, NTR2, DIR2, C1, T1, NT1, BX, BE, REM, JOINT)
    cn = tl.sqrt_rn(tree_sum(s2, BV, GP, LOGG))
    if NC:
        # fixed-point rounds codes = slots(ŷ/‖ŷ‖) (see the CPU kernel), until no code of the
        # block moves or NCR rounds: a row whose codes stopped moving stays put, so this equals
        # the CPU's per-row early stop
        valid = rmask[:, None] & (g < G)[None, :]
        moved = 1
        it = 0
        while (moved != 0) & (it < NCR):
            cd = tl.where(cn > 0, cn, 1.0)
            nw, s2, a0, a1, a2, b0, b1 = _slots(
                tl.math.div_rn(a0, cd[:, None]), tl.math.div_rn(a1, cd[:, None]), tl.math.div_rn(a2, cd[:, None]),
                tl.math.div_rn(b0, cd), tl.math.div_rn(b1, cd), full, g, G3, Tx, NTX, Te, NTE, Cr, Tr, NTR, DIR3,
                Tc, NTC, Cr2, Tr2, NTR2, DIR2, C1, T1, NT1, BX, BE, REM, JOINT)
            moved = tl.max(tl.max(tl.where(valid & (nw != code), 1, 0), axis=1), axis=0)
            code = nw
            cn = tl.sqrt_rn(tree_sum(s2, BV, GP, LOGG))
            it += 1
        g16 = f32_to_f16(tl.math.div_rn(nrm, cn))
    else:
        g16 = f32_to_f16(nrm)
    ovf = g16 == 0x7C00
    g16 = tl.where(ovf, 0, g16)
    canon = tl.load(canon_ptr + g, mask=g < G, other=0)
    code = tl.where((g16 == 0)[:, None], canon[None, :], code)  # norm underflow: the codes of y = 0
    tl.store(codes_ptr + rows[:, None] * G + g[None, :], code, mask=rmask[:, None] & (g < G)[None, :])
    tl.store(gam_ptr + rows, g16, mask=rmask)
    zero_i = tl.zeros([BV], dtype=tl.int32)
    tl.store(flag_ptr + zero_i, zero_i + 1, mask=rmask & ovf)


@kernel("octopus", "gpu", "encode")
def encode(x, P, signs, rht, rscale, G3, rem, bx, be, Tx, Te, Cr, Tr, DIR3, joint, Tc, Cr2, Tr2, DIR2, C1, T1,
           nc, canon, codes, gam, flags) -> None:
    n, D = x.shape
    if n == 0:
        return
    y = torch.empty((n, D), dtype=torch.float32, device=x.device)
    nrm = torch.empty((n,), dtype=torch.float32, device=x.device)
    rotate_rows(x, P, signs, rht, rscale, y, nrm)
    G = codes.shape[1]
    bv = block_vectors(n)
    gp = triton.next_power_of_2(G)
    _quant_kernel[(triton.cdiv(n, bv),)](
        y, nrm, Tx, Tx.shape[0], Te, Te.shape[0], Cr, Tr, Tr.shape[0], DIR3, Tc, Tc.shape[0], Cr2, Tr2, Tr2.shape[0],
        DIR2, C1, T1, T1.shape[0], canon, codes, gam, flags, n, D, G3, G,
        BX=bx, BE=be, REM=rem, JOINT=bool(joint), NC=bool(nc), BV=bv, GP=gp, LOGG=_log2(gp), NCR=NC_ROUNDS,
        enable_fp_fusion=False)


@triton.jit
def _dequant_kernel(data_ptr, row_bytes, Cr, DIR3, Cr2, DIR2, C1, w_ptr, g_ptr, n, D, G3,
                    W: tl.constexpr, BX: tl.constexpr, BE: tl.constexpr, REM: tl.constexpr,
                    BV: tl.constexpr, GP: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BV + tl.arange(0, BV)
    rmask = rows < n
    g = tl.arange(0, GP)
    NE: tl.constexpr = 1 << BE
    full = rmask[:, None] & (g < G3)[None, :]
    rowbase = rows * row_bytes
    c = load_field(data_ptr, rowbase[:, None], 2, g[None, :], W, full)
    ja = c & ((1 << BX) - 1)
    jb = (c >> BX) & (NE - 1)
    jr = c >> (BX + BE)
    k = 3 * (ja * NE + jb)
    r = tl.load(Cr + jr, mask=full, other=0.0)
    base = w_ptr + rows[:, None] * D + 3 * g[None, :]
    tl.store(base, r * tl.load(DIR3 + k, mask=full, other=0.0), mask=full)
    tl.store(base + 1, r * tl.load(DIR3 + k + 1, mask=full, other=0.0), mask=full)
    tl.store(base + 2, r * tl.load(DIR3 + k + 2, mask=full, other=0.0), mask=full)
    if REM == 2:
        cl = load_field(data_ptr, rowbase, 2, G3, W, rmask)
        k2 = 2 * (2 * (cl & ((1 << BX) - 1)) + ((cl >> BX) & 1))
        r2 = tl.load(Cr2 + (cl >> (BX + BE)), mask=rmask, other=0.0)
        tl.store(w_ptr + rows * D + 3 * G3, r2 * tl.load(DIR2 + k2, mask=rmask, other=0.0), mask=rmask)
        tl.store(w_ptr + rows * D + 3 * G3 + 1, r2 * tl.load(DIR2 + k2 + 1, mask=rmask, other=0.0), mask=rmask)
    if REM == 1:
        cl = load_field(data_ptr, rowbase, 2, G3, W, rmask)
        tl.store(w_ptr + rows * D + 3 * G3, tl.load(C1 + (cl & ((1 << BX) - 1)), mask=rmask, other=0.0), mask=rmask)
    h = load_u16(data_ptr, rowbase, 0, rmask)
    gv = f16_to_f32(h)
    gv = tl.where((h & 0x7C00) == 0x7C00, float("nan"), gv)  # an Inf/NaN norm: the vector is NaN
    tl.store(g_ptr + rows, gv, mask=rmask)


@kernel("octopus", "gpu", "decode")
def decode(data, W, G3, rem, bx, be, Cr, DIR3, Cr2, DIR2, C1, P, signs, rht, rscale, out) -> None:
    n, D = out.shape
    if n == 0:
        return
    w = torch.empty((n, D), dtype=torch.float32, device=out.device)
    gam = torch.empty((n,), dtype=torch.float32, device=out.device)
    G = G3 + (rem > 0)
    bv = block_vectors(n)
    _dequant_kernel[(triton.cdiv(n, bv),)](data, data.stride(0), Cr, DIR3, Cr2, DIR2, C1, w, gam, n, D, G3,
                                           W=W, BX=bx, BE=be, REM=rem, BV=bv, GP=triton.next_power_of_2(G),
                                           enable_fp_fusion=False)
    unrotate_scaled(w, gam, P, signs, rht, rscale, out)
