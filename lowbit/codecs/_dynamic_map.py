"""bitsandbytes' 8-bit dynamic map and its CPU quantization lookup table — shared by every codec
that stores codes of that map (``dynamic8``; bitsandbytes' nested absmax in NF4/FP4
``double_quant`` uses the signed map and the same table).

``dynamic_map(signed)`` is ``bitsandbytes.functional.create_dynamic_map(signed)`` (7 exponent
bits, 8 total) reproduced in float32: for exponents i = 0 … 6, the midpoints of
``torch.linspace(0.1, 1, n_i)`` (float32: ``start + step*k`` for the first half, ``end -
step*(n-1-k)`` for the rest, one rounding each) times ``float32(10**(i - 6))``, with
``n_i = 2**i + 1`` and both signs (signed) or ``n_i = 2**(i+1) + 1`` and positive only
(unsigned), plus 0 and 1; sorted ascending (256 entries either way).

``quantize_lut(code)`` is bitsandbytes' CPU ``build_quantize_lut``: for each of the 65536 points
``val_i = fl32(-1 + fl32(fl32(2*i) / 65535))`` the index of the first midpoint
``fl32(0.5 * fl32(code[j] + code[j+1]))`` that is not below ``val_i`` (the number of midpoints
strictly below it). Its encoder looks up ``lut[trunc(fl32(fl32(fl32(v + 1) * 0.5) * 65535) + 0.5)]``
— nearest on a 65536-point grid, not an exact nearest search (research/blockfloat.md §4.3).

>>> from lowbit.codecs._dynamic_map import dynamic_map, quantize_lut
>>> m = dynamic_map(True)
>>> m.shape, float(m[0]), float(m[-1]), int(quantize_lut(m)[65535])
((256,), -0.992968738079071, 1.0, 255)
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["dynamic_map", "quantize_lut", "LUT_SIZE"]

F32 = np.float32
LUT_SIZE = 65536


@functools.cache
def dynamic_map(signed: bool = True) -> np.ndarray:
    """The 256 float32 entries of bitsandbytes' dynamic map, ascending (read-only)."""
    data = [F32(0.0), F32(1.0)]
    for i in range(7):
        n = (2 ** i if signed else 2 ** (i + 1)) + 1
        step = F32((F32(1.0) - F32(0.1)) / F32(n - 1))
        k = np.arange(n)
        # torch.linspace in float32: start + step*k below the middle, end - step*(n-1-k) from it,
        # each one product and one sum rounded once (exact in float64, then rounded to float32)
        lin = np.where(k < n // 2, np.float64(F32(0.1)) + np.float64(step) * k,
                       np.float64(F32(1.0)) - np.float64(step) * (n - 1 - k)).astype(F32)
        means = ((lin[:-1] + lin[1:]).astype(F32) / F32(2.0)).astype(F32)
        scale = F32(10.0 ** (i - 6))  # torch casts the Python float to float32 before the product
        data += list((scale * means).astype(F32))
        if signed:
            data += list((-scale * means).astype(F32))
    out = np.sort(np.array(data, dtype=F32))
    assert out.size == 256
    out.setflags(write=False)
    return out


@functools.cache
def _lut(key: bytes) -> np.ndarray:
    code = np.frombuffer(key, dtype=F32)
    mids = (F32(0.5) * (code[:-1] + code[1:]).astype(F32)).astype(F32)
    i = np.arange(LUT_SIZE)
    val = (F32(-1.0) + ((F32(2.0) * i.astype(F32)).astype(F32) / F32(LUT_SIZE - 1)).astype(F32)).astype(F32)
    lut = np.searchsorted(mids, val, side="left").astype(np.uint8)  # midpoints strictly below val
    lut.setflags(write=False)
    return lut


def quantize_lut(code: np.ndarray) -> np.ndarray:
    """bitsandbytes' 65536-entry uint8 table for the ascending 256-entry ``code`` (read-only)."""
    code = np.ascontiguousarray(code, dtype=F32)
    if code.shape != (256,) or not (np.diff(code) > 0).all():
        raise ValueError("quantize_lut: expected 256 ascending float32 entries")
    return _lut(code.tobytes())
