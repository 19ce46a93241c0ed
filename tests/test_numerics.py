"""Element formats derived from parameters: names, limits, value tables, validation."""

from __future__ import annotations

import itertools
import math

import ml_dtypes
import numpy as np
import pytest

from lowbit import ConfigError
from lowbit.numerics import ElementEncoding, FloatFormat, IntFormat, Special, parse_format

ML = ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e4m3b11fnuz",
      "float8_e4m3", "float8_e3m4", "float8_e8m0fnu", "float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn"]


def all_formats():
    for E, M, signed, special, (zero, sub), bias in itertools.product(
            range(1, 9), range(0, 11), (True, False), list(Special),
            ((True, True), (True, False), (False, False)), (None, 3, 11, 120)):
        try:
            yield FloatFormat(E, M, bias=bias, signed=signed, special=special, subnormals=sub, zero=zero)
        except ConfigError:
            pass


def test_names_are_unique_and_invertible() -> None:
    seen: dict[str, FloatFormat] = {}
    n = 0
    for f in all_formats():
        n += 1
        assert seen.setdefault(f.name, f) == f, f"two formats named {f.name}: {seen[f.name]} and {f}"
        assert FloatFormat.from_name(f.name) == f
        assert parse_format(f.name) == f
    assert n > 4000 and len(seen) > 4000


@pytest.mark.parametrize("name", ML)
def test_limits_match_ml_dtypes_finfo(name: str) -> None:
    f = FloatFormat.from_name(name)
    fi = ml_dtypes.finfo(getattr(ml_dtypes, name))
    assert f.max == float(fi.max)
    assert f.min_normal == float(fi.smallest_normal)
    assert f.min_subnormal == float(fi.smallest_subnormal)
    assert f.bits == fi.bits
    assert f.eps == float(fi.eps)


@pytest.mark.parametrize("name", ML)
def test_value_table_matches_ml_dtypes(name: str) -> None:
    f = FloatFormat.from_name(name)
    t = getattr(ml_dtypes, name)
    want = np.arange(1 << f.bits).astype(np.uint8).view(t).astype(np.float32)
    assert np.array_equal(f.values().astype(np.float32).view(np.uint32), want.view(np.uint32))


def test_well_known_formats() -> None:
    f = FloatFormat(4, 3, special="fn")
    assert (f.name, f.max, f.max_exponent) == ("float8_e4m3fn", 448.0, 8)
    assert FloatFormat(2, 1, special="finite").values()[:8].tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    e8m0 = FloatFormat(8, 0, signed=False, special="fn", zero=False)
    assert e8m0.name == "float8_e8m0fnu" and e8m0.code_value(0) == 2.0**-127 and math.isnan(e8m0.code_value(255))
    assert FloatFormat(4, 3, signed=False, special="fn").name == "float7_e4m3fnu"
    assert FloatFormat(5, 3, signed=False, special="fn").max == 114688.0
    assert FloatFormat(5, 10).name == "float16_e5m10" and FloatFormat(5, 10).max == 65504.0
    assert FloatFormat(8, 7).name == "float16_e8m7"
    assert IntFormat(4).name == "int4" and (IntFormat(4).min, IntFormat(4).max) == (-8, 7)
    assert IntFormat(8, symmetric=True).name == "int8_sym" and parse_format("uint4") == IntFormat(4, signed=False)


def test_nan_codes_carry_the_sign() -> None:
    f = FloatFormat(4, 3, special="fn")
    assert np.signbit(f.values()[0xFF]) and not np.signbit(f.values()[0x7F])
    fnuz = FloatFormat(4, 3, special="fnuz")
    assert math.isnan(fnuz.code_value(0x80))
    assert all(not np.signbit(v) for v in fnuz.values() if v == 0)  # no -0, flushed codes included


@pytest.mark.parametrize("kwargs,match", [
    (dict(ebits=0, mbits=3), "ebits"),
    (dict(ebits=9, mbits=3), "ebits"),
    (dict(ebits=4, mbits=11), "mbits"),
    (dict(ebits=4, mbits=3, special="nope"), "special"),
    (dict(ebits=4, mbits=3, special="fnuz", signed=False), "fnuz"),
    (dict(ebits=1, mbits=3, special="ieee"), "ieee"),
    (dict(ebits=8, mbits=3, bias=-10), "float32"),
    (dict(ebits=8, mbits=10, bias=150), "float32"),
    (dict(ebits=4, mbits=3, zero=False, subnormals=True), "zero=False"),
    (dict(ebits=4, mbits=3, bias=2.5), "bias"),
])
def test_invalid_formats_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FloatFormat(**kwargs)


@pytest.mark.parametrize("name", ["float8_e4m3fnx", "float8_e4m3b7", "float9_e4m3fn", "bfloat16", "int0", "int17"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ConfigError):
        parse_format(name)


def test_encoding_policies() -> None:
    f = FloatFormat(2, 1, special="finite")
    assert ElementEncoding(f).overflow == "saturate" and ElementEncoding(f).on_nan == "raise"
    with pytest.raises(ConfigError, match="no NaN"):
        ElementEncoding(f, overflow="nan")
    with pytest.raises(ConfigError, match="no Inf"):
        ElementEncoding(FloatFormat(4, 3, special="fn"), overflow="inf")
    with pytest.raises(ConfigError, match="storage_bits"):
        ElementEncoding(f, storage_bits=3)
    e = ElementEncoding(f, storage_bits=6)
    assert (e.group_codes, e.group_bytes) == (4, 3)
    assert ElementEncoding(FloatFormat(8, 10, bias=127)).group_codes == 8  # 19-bit codes: 8 in 19 bytes
    assert np.isnan(ElementEncoding(FloatFormat(4, 3, signed=False, special="fn"), storage_bits=8).lut[0x80])


def test_fast_path_agrees_with_the_general_routine() -> None:
    """The CPU kernels' vectorized fast path against the general routine that reads like the spec,
    on every float32 exponent field (zeros, subnormals, Inf and NaN included), for formats of
    every kind (the oracle tests compare both with ml_dtypes and the reference)."""
    from numba import njit

    import lowbit
    from lowbit.kernels.cpu.minifloat import _quantize

    @njit
    def general(u, p, out):
        for i in range(u.size):
            out[i] = _quantize(u[i], p)

    rng = np.random.default_rng(0)
    # mantissas: exact ties at every bit position (1 << k) and their neighbours, then random ones
    k = np.arange(23, dtype=np.uint32)
    mant = np.concatenate([0, 1 << k, (1 << k) - 1, (1 << k) + 1, 3 << k[:-1], (1 << 23) - 1, rng.integers(0, 1 << 23, 100)], axis=None)
    mant = np.unique(mant.astype(np.uint32) & 0x7FFFFF)
    e32 = np.arange(256, dtype=np.uint32)
    u = ((e32[:, None] << 23) | mant[None, :]).reshape(-1)
    u = np.concatenate([u, u | np.uint32(0x80000000)])  # both signs
    x = u.view(np.float32)
    formats = [FloatFormat(4, 3, special="fn"), FloatFormat(2, 1, special="finite"), FloatFormat(5, 2),
               FloatFormat(8, 0, signed=False, special="fn", zero=False), FloatFormat(3, 2, subnormals=False, special="finite"),
               FloatFormat(5, 10), FloatFormat(8, 7), FloatFormat(8, 10, bias=130), FloatFormat(4, 3, special="fnuz"),
               FloatFormat(4, 6, signed=False, zero=False, special="finite"), IntFormat(4), IntFormat(8, signed=False),
               IntFormat(16, symmetric=True), FloatFormat(2, 0, signed=False, special="finite"),
               FloatFormat(3, 0, special="fn")]
    for f in formats:
        for ovf in ("saturate", None):
            enc = ElementEncoding(f, overflow=ovf, on_nan="nan" if f.has_nan else "raise", storage_bits=24)
            want = np.empty(u.size, np.int64)
            general(u, enc.params.as_array(), want)
            keep = want >= 0  # refused inputs raise as a whole; compare the rest
            xs = x[keep][: (keep.sum() // 8) * 8]
            kw = dict(overflow=enc.overflow, on_nan=enc.on_nan, storage_bits=24)
            if isinstance(f, IntFormat):
                c = lowbit.get_codec("integer", bits=f.bits, signed=f.signed, symmetric=f.symmetric, **kw)
            else:
                c = lowbit.get_codec("minifloat", ebits=f.ebits, mbits=f.mbits, bias=f.bias, signed=f.signed,
                                     special=f.special.value, subnormals=f.subnormals, zero=f.zero, **kw)
            q = c.encode(xs.reshape(1, -1)).data.reshape(-1, 3).astype(np.int64)
            got = q[:, 0] | (q[:, 1] << 8) | (q[:, 2] << 16)
            assert np.array_equal(got, want[keep][: xs.size]), f"{f.name} {enc.overflow}"
