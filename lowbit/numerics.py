"""Element number formats, each derived from a handful of parameters.

A :class:`FloatFormat` is fully described by its exponent bits, mantissa bits, bias, sign,
special-value policy and the meaning of the all-zero exponent field; an :class:`IntFormat` by
its bit width and signedness. Everything else (largest value, smallest normal and subnormal,
the value of every code, the canonical name) is *derived* here, never written out per format.

Bit layout of a float code, most significant bit first::

    [sign (0 or 1 bit)] [exponent field: ebits] [mantissa field: mbits]

Value of a code with exponent field ``E`` and mantissa field ``m`` (bias ``b``, ``M = mbits``):

* ``E > 0``: ``(1 + m / 2**M) * 2**(E - b)``                       (normal)
* ``E == 0``: ``(m / 2**M) * 2**(1 - b)``                          (subnormal, the default)
  or ``±0`` for every ``m`` when ``subnormals=False`` (flush to zero)
  or ``(1 + m / 2**M) * 2**(-b)`` when ``zero=False`` (E8M0: no zero, all binades normal)

Special codes (``Special``):

* ``ieee``:   exponent field all ones: ``m == 0`` is ±Inf, ``m != 0`` is NaN (e5m2)
* ``fn``:     no Inf; only the all-ones magnitude code is NaN (e4m3fn, e8m0fnu)
* ``fnuz``:   no Inf, no negative zero; the code ``1000…0`` is the only NaN (e4m3fnuz)
* ``finite``: every code is a finite number (e2m1fn, e2m3fn, e3m2fn)

Canonical names follow ml_dtypes (``float8_e4m3fn``, ``float6_e2m3fn``, ``float8_e8m0fnu``,
``float8_e4m3b11fnuz``); :meth:`FloatFormat.from_name` inverts :attr:`FloatFormat.name`.

>>> f = FloatFormat(ebits=4, mbits=3, special="fn")
>>> f.name, f.max, f.min_normal, f.min_subnormal
('float8_e4m3fn', 448.0, 0.015625, 0.001953125)
>>> FloatFormat.from_name("float4_e2m1fn").values()[:8].tolist()
[0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
"""

from __future__ import annotations

import enum
import functools
import math
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .errors import ConfigError

__all__ = [
    "Special",
    "FloatFormat",
    "IntFormat",
    "ElementFormat",
    "ElementEncoding",
    "parse_format",
    "OVERFLOW_POLICIES",
    "NAN_POLICIES",
]


class Special(str, enum.Enum):
    """How a float format spends codes on Inf and NaN (see the module docstring)."""

    IEEE = "ieee"
    FN = "fn"
    FNUZ = "fnuz"
    FINITE = "finite"


def _pow2(e: int) -> float:
    """2**e as a Python float (exact for every exponent fp32 can hold, subnormals included)."""
    return math.ldexp(1.0, e)


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point element format (see the module docstring for the encoding).

    Parameters
    ----------
    ebits, mbits:
        exponent field width (1–8) and mantissa field width (0–10).
    bias:
        exponent bias; default ``2**(ebits-1) - 1`` (one more for ``fnuz``).
    signed:
        whether the code has a sign bit (``False`` for E8M0 and the UE4M3/UE5M3 scales).
    special:
        a :class:`Special` policy or its string value.
    subnormals:
        ``False`` flushes the all-zero exponent field to ±0. Default ``True`` (``False`` when
        ``zero=False``, where the field is an ordinary binade).
    zero:
        ``False`` for formats with no zero, whose all-zero exponent field is a normal binade
        (E8M0).

    Every finite value must be exactly representable in float32, so that decoding to float32
    is exact: the largest binade is at most 2**127 and the smallest step at least 2**-149.

    >>> FloatFormat(8, 0, signed=False, special="fn", zero=False).name
    'float8_e8m0fnu'
    """

    ebits: int
    mbits: int
    bias: int | None = None
    signed: bool = True
    special: Special | str = Special.IEEE
    subnormals: bool | None = None
    zero: bool = True
    kind: Literal["float"] = field(default="float", init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen dataclass: normalise fields once, here
        try:
            set_(self, "special", Special(self.special))
        except ValueError:
            raise ConfigError(
                f"float format: special: expected one of {[s.value for s in Special]}, "
                f"got {self.special!r}"
            ) from None
        for name, lo, hi in (("ebits", 1, 8), ("mbits", 0, 10)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"float format: {name}: expected an int in [{lo}, {hi}], got {v!r}")
        if self.subnormals is None or (self.mbits == 0 and self.zero):
            # with no mantissa bits the all-zero exponent field holds only ±0 either way
            set_(self, "subnormals", bool(self.zero))
        if not self.zero and self.subnormals:
            raise ConfigError("float format: zero=False (no zero) cannot have subnormals")
        if self.bias is None:
            set_(self, "bias", self.standard_bias)
        if not isinstance(self.bias, int) or isinstance(self.bias, bool):
            raise ConfigError(f"float format: bias: expected an int, got {self.bias!r}")
        if self.special is Special.FNUZ and not (self.signed and self.zero):
            raise ConfigError("float format: special='fnuz' needs a sign bit and a zero (its NaN is -0)")
        if self.special is Special.IEEE and self.ebits < 2:
            raise ConfigError("float format: special='ieee' needs ebits >= 2 (all-ones exponent is reserved)")
        if self.max_mag_code < 1 or not self.max > 0:
            raise ConfigError(f"float format {self.name}: has no positive finite value")
        if self.max_exponent > 127 or self.min_step_exponent < -149:
            raise ConfigError(
                f"float format {self.name}: values must be exact in float32: expected binades "
                f"within 2**-149 .. 2**127, got steps down to 2**{self.min_step_exponent} and "
                f"values up to 2**{self.max_exponent}"
            )

    # ---- structure ------------------------------------------------------------------------
    @property
    def bits(self) -> int:
        """Code width in bits (sign + exponent + mantissa)."""
        return int(self.signed) + self.ebits + self.mbits

    @property
    def standard_bias(self) -> int:
        """The bias implied by the name when no ``b<bias>`` is spelled out."""
        return (1 << (self.ebits - 1)) - 1 + (1 if Special(self.special) is Special.FNUZ else 0)

    @property
    def has_inf(self) -> bool:
        return self.special is Special.IEEE

    @property
    def has_nan(self) -> bool:
        if self.special is Special.IEEE:
            return self.mbits > 0
        return self.special in (Special.FN, Special.FNUZ)

    @property
    def has_negative_zero(self) -> bool:
        return self.signed and self.zero and self.special is not Special.FNUZ

    @property
    def min_binade(self) -> int:
        """Unbiased exponent of the lowest normal binade (``te_min``)."""
        return (1 - self.bias) if self.zero else -self.bias

    @property
    def max_mag_code(self) -> int:
        """Magnitude code (sign bit clear) of the largest finite value."""
        all_ones = (1 << (self.ebits + self.mbits)) - 1
        if self.special is Special.IEEE:
            return (((1 << self.ebits) - 1) << self.mbits) - 1
        if self.special is Special.FN:
            return all_ones - 1
        return all_ones

    @property
    def max_exponent(self) -> int:
        """floor(log2(max)): the exponent of the top binade (``emax`` in the MX spec)."""
        return math.frexp(self.max)[1] - 1

    @property
    def min_step_exponent(self) -> int:
        """log2 of the finest spacing between values: every value is a multiple of it."""
        return self.min_binade - self.mbits

    # ---- values ---------------------------------------------------------------------------
    @property
    def max(self) -> float:
        """Largest finite value."""
        return self.code_value(self.max_mag_code)

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value (``2**(1-bias)``, or ``2**-bias`` without a zero)."""
        return _pow2(self.min_binade)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value (equal to ``min_normal`` without subnormals)."""
        return _pow2(self.min_binade - self.mbits) if self.subnormals else self.min_normal

    @property
    def eps(self) -> float:
        """Distance from 1.0 to the next larger value's ratio: ``2**-mbits``."""
        return _pow2(-self.mbits)

    def code_value(self, code: int) -> float:
        """The value of one code as a Python float (NaN codes give NaN carrying the sign bit)."""
        E, M = self.ebits, self.mbits
        sign = (code >> (E + M)) & 1 if self.signed else 0
        mag = code & ((1 << (E + M)) - 1)
        ef, m = mag >> M, mag & ((1 << M) - 1)
        if self.special is Special.FNUZ and sign and mag == 0:
            return -math.nan
        if self.special is Special.IEEE and ef == (1 << E) - 1:
            v = math.inf if m == 0 else math.nan
        elif self.special is Special.FN and mag == (1 << (E + M)) - 1:
            v = math.nan
        elif ef == 0 and self.zero:
            v = m * _pow2(1 - self.bias - M) if self.subnormals else 0.0
        else:
            v = (1.0 + m * _pow2(-M)) * _pow2(ef - self.bias)
        if v == 0.0 and self.special is Special.FNUZ:
            return 0.0  # fnuz has no negative zero (flushed codes included)
        return -v if sign else v

    @functools.cache
    def values(self) -> np.ndarray:
        """The value of every code 0 … 2**bits − 1, as float64 (read-only)."""
        out = np.array([self.code_value(c) for c in range(1 << self.bits)], dtype=np.float64)
        # NaN signs: Python's -math.nan keeps the sign bit; make it explicit for the float32 cast
        out.setflags(write=False)
        return out

    # ---- names ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Canonical name, ml_dtypes style: ``float{bits}_e{E}m{M}[b{bias}]{suffix}[qualifiers]``."""
        base = f"float{self.bits}_e{self.ebits}m{self.mbits}"
        if self.bias != self.standard_bias:
            base += f"b{self.bias}"
        return base + _suffix(self) + _qualifiers(self)

    @classmethod
    def from_name(cls, name: str) -> "FloatFormat":
        """Inverse of :attr:`name`. Raises :class:`ConfigError` for names it cannot parse."""
        m = _NAME_RE.fullmatch(name)
        if not m:
            raise ConfigError(f"float format: name: expected e.g. 'float8_e4m3fn', got {name!r}")
        bits, E, M = int(m["bits"]), int(m["e"]), int(m["m"])
        sfx, q = m["sfx"] or "", m["q"] or ""
        unsigned = sfx.endswith("u") and sfx != "fnuz"
        core = sfx[:-1] if unsigned else sfx
        signed = not unsigned
        n = int(signed) + E + M
        special = {
            "": Special.IEEE,
            "f": Special.FINITE,
            "fnan": Special.FN,
            "fnuz": Special.FNUZ,
            "fn": Special.FINITE if n <= 6 else Special.FN,
        }.get(core)
        if special is None or n != bits:
            raise ConfigError(f"float format: name {name!r} is not a canonical format name")
        zero = _zero_from_name(M, special, signed, q)
        subnormals = None if q != "_ftz" else False
        bias = int(m["b"]) if m["b"] else None
        fmt = cls(E, M, bias=bias, signed=signed, special=special, subnormals=subnormals, zero=zero)
        if fmt.name != name:
            raise ConfigError(f"float format: name {name!r} is not canonical (did you mean {fmt.name!r}?)")
        return fmt


def _suffix(f: FloatFormat) -> str:
    """The special-value suffix. Convention (LLVM/ml_dtypes): 'fn' means NaN-only for 8-bit
    formats (e4m3fn) and finite-only for sub-byte ones (e2m1fn); the rare other two combinations
    get 'f' (finite, >6 bits) and 'fnan' (NaN-only, <=6 bits) so every name stays unique."""
    core = {
        Special.IEEE: "",
        Special.FNUZ: "fnuz",
        Special.FINITE: "fn" if f.bits <= 6 else "f",
        Special.FN: "fn" if f.bits > 6 else "fnan",
    }[f.special]
    return core + ("u" if not f.signed and core != "fnuz" else "")


def _conventional_zero(mbits: int, special: Special, signed: bool) -> bool:
    """Unsigned NaN-only power-of-two formats (E8M0) conventionally have no zero."""
    return not (mbits == 0 and not signed and special is Special.FN)


def _qualifiers(f: FloatFormat) -> str:
    if f.zero != _conventional_zero(f.mbits, f.special, f.signed):
        return "_z" if f.zero else "_nz"
    return "" if f.subnormals or not f.zero else "_ftz"


def _zero_from_name(M: int, special: Special, signed: bool, q: str) -> bool:
    conventional = _conventional_zero(M, special, signed)
    return (not conventional) if q in ("_z", "_nz") else conventional


_NAME_RE = re.compile(
    r"float(?P<bits>\d+)_e(?P<e>\d+)m(?P<m>\d+)(?:b(?P<b>-?\d+))?(?P<sfx>fnuz|fnanu|fnan|fnu|fn|fu|f|u)?(?P<q>_ftz|_nz|_z)?"
)


@dataclass(frozen=True)
class IntFormat:
    """A two's complement (or unsigned) integer element format of 1–16 bits.

    ``symmetric=True`` drops the most negative code from the range (``-127 … 127`` for int8),
    as MXINT8 and symmetric absmax quantizers do; the code still decodes (totality).

    >>> IntFormat(4).name, IntFormat(4).min, IntFormat(4).max
    ('int4', -8.0, 7.0)
    """

    bits: int
    signed: bool = True
    symmetric: bool = False
    kind: Literal["int"] = field(default="int", init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or not 1 <= self.bits <= 16:
            raise ConfigError(f"int format: bits: expected an int in [1, 16], got {self.bits!r}")
        if self.symmetric and (not self.signed or self.bits < 2):
            raise ConfigError("int format: symmetric=True needs a signed format of at least 2 bits")

    @property
    def name(self) -> str:
        return ("int" if self.signed else "uint") + str(self.bits) + ("_sym" if self.symmetric else "")

    @property
    def max(self) -> float:
        return float((1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1)

    @property
    def min(self) -> float:
        if not self.signed:
            return 0.0
        return -self.max if self.symmetric else float(-(1 << (self.bits - 1)))

    has_nan = False
    has_inf = False

    def code_value(self, code: int) -> float:
        code &= (1 << self.bits) - 1
        if self.signed and code >> (self.bits - 1):
            return float(code - (1 << self.bits))
        return float(code)

    @functools.cache
    def values(self) -> np.ndarray:
        out = np.array([self.code_value(c) for c in range(1 << self.bits)], dtype=np.float64)
        out.setflags(write=False)
        return out


ElementFormat = FloatFormat | IntFormat


def parse_format(name: str) -> ElementFormat:
    """Parse a canonical element format name (``float8_e4m3fn``, ``int4``, ``uint8``, ``int8_sym``)."""
    m = re.fullmatch(r"(u?)int(\d+)(_sym)?", name)
    if m:
        return IntFormat(int(m[2]), signed=not m[1], symmetric=bool(m[3]))
    return FloatFormat.from_name(name)


# --------------------------------------------------------------------------------------------
# Encoding policy: what the kernels need, derived once from a format and two policies.
# --------------------------------------------------------------------------------------------

OVERFLOW_POLICIES = ("saturate", "nan", "inf", "raise")
NAN_POLICIES = ("nan", "raise")

# Integer codes of the policies, as the kernels see them.
OVF_SATURATE, OVF_NAN, OVF_INF, OVF_RAISE = range(4)
NAN_ENCODE, NAN_RAISE = range(2)


def _lcm8(width: int) -> int:
    return width * 8 // math.gcd(width, 8)


@dataclass(frozen=True)
class ElementEncoding:
    """An element format plus the policies that make float32 → code a total function.

    Parameters
    ----------
    fmt:
        the element format.
    overflow:
        what happens to values outside the range — finite values that round beyond ``max``,
        ±Inf, negative values in unsigned formats, and zero in formats without a zero:
        ``"saturate"`` (to ±max, to 0 for negatives in unsigned formats, to the smallest value
        when there is no zero), ``"nan"``, ``"inf"`` (±Inf for too large values, NaN otherwise)
        or ``"raise"``. Default: ``"inf"`` for IEEE formats with Inf, ``"nan"`` for formats with
        NaN, ``"saturate"`` otherwise — the same choices as ml_dtypes' casts.
    on_nan:
        ``"nan"`` encodes NaN inputs as the format's NaN (keeping the sign where the format has
        one); ``"raise"`` refuses them. Default ``"nan"`` when the format has a NaN, else ``"raise"``.
    storage_bits:
        width of each code's slot in the packed bit stream (≥ the code width; default: the code
        width, i.e. dense packing). Slots wider than the code leave the top bits zero; codes
        with non-zero padding bits decode as NaN (or 0 for formats without NaN).

    Codes are packed LSB-first: code ``i`` of a row occupies bits ``[i*w, (i+1)*w)`` of the
    row's little-endian bit stream. A *group* is the smallest whole number of codes that fills
    whole bytes: ``lcm(w, 8) / w`` codes in ``lcm(w, 8) / 8`` bytes.
    """

    fmt: ElementFormat
    overflow: str | None = None
    on_nan: str | None = None
    storage_bits: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        f = self.fmt
        if self.overflow is None:
            set_(self, "overflow", "inf" if f.has_inf else "nan" if f.has_nan else "saturate")
        if self.on_nan is None:
            set_(self, "on_nan", "nan" if f.has_nan else "raise")
        if self.storage_bits is None:
            set_(self, "storage_bits", f.bits)
        if self.overflow not in OVERFLOW_POLICIES:
            raise ConfigError(f"{f.name}: overflow: expected one of {OVERFLOW_POLICIES}, got {self.overflow!r}")
        if self.on_nan not in NAN_POLICIES:
            raise ConfigError(f"{f.name}: on_nan: expected one of {NAN_POLICIES}, got {self.on_nan!r}")
        if self.overflow == "nan" and not f.has_nan:
            raise ConfigError(f"{f.name}: overflow='nan': the format has no NaN (use 'saturate' or 'raise')")
        if self.overflow == "inf" and not f.has_inf:
            raise ConfigError(f"{f.name}: overflow='inf': the format has no Inf (use 'saturate' or 'raise')")
        if self.on_nan == "nan" and not f.has_nan:
            raise ConfigError(f"{f.name}: on_nan='nan': the format has no NaN (use 'raise')")
        sb = self.storage_bits
        if not isinstance(sb, int) or isinstance(sb, bool) or not f.bits <= sb <= 24:
            raise ConfigError(f"{f.name}: storage_bits: expected an int in [{f.bits}, 24], got {sb!r}")

    # ---- packing --------------------------------------------------------------------------
    @property
    def group_codes(self) -> int:
        """Codes per packing group."""
        return _lcm8(self.storage_bits) // self.storage_bits

    @property
    def group_bytes(self) -> int:
        """Bytes per packing group."""
        return _lcm8(self.storage_bits) // 8

    @property
    def clamp_range(self) -> tuple[float, float]:
        """[lo, hi]: the smallest and largest values the encoder produces. Scaled encoders clamp
        finite inputs to it (for unsigned formats lo is 0, or the smallest value without a zero)."""
        f = self.fmt
        if isinstance(f, IntFormat):
            return f.min, f.max
        lo = -f.max if f.signed else f.code_value(0)
        return lo, f.max

    # ---- the decode table -----------------------------------------------------------------
    @functools.cached_property
    def lut(self) -> np.ndarray:
        """float32 value of every storage slot pattern (2**storage_bits entries, read-only)."""
        v = self.fmt.values()
        n_slot = 1 << self.storage_bits
        bad = math.nan if self.fmt.has_nan else 0.0  # non-zero padding bits
        out = np.full(n_slot, bad, dtype=np.float64)
        out[: v.size] = v
        lut = out.astype(np.float32)
        # float64 -> float32 keeps NaN signs on every platform numpy supports; assert it anyway
        lut.setflags(write=False)
        return lut

    # ---- integers for the kernels ---------------------------------------------------------
    @functools.cached_property
    def params(self) -> "KernelParams":
        return KernelParams.from_encoding(self)


@dataclass(frozen=True)
class KernelParams:
    """The integers an element-encoding kernel needs, all derived from an ElementEncoding.

    They are passed to the Numba kernels as one int64 array (indexed by the ``P_*`` constants in
    :mod:`lowbit.kernels.cpu.minifloat`) and to the Triton kernels as compile-time constants.
    """

    is_int: int          # 0 float, 1 integer
    mbits: int           # mantissa bits (floats)
    min_binade: int      # te_min: unbiased exponent of the lowest normal binade
    zero: int            # 1 when the exponent field 0 holds the zero/subnormals
    subnormals: int      # 1 when subnormals exist
    signed: int
    sign_shift: int      # position of the sign bit (= code bits - 1 when signed)
    max_mag: int         # magnitude code of +max
    neg_max_mag: int     # magnitude of the most negative value (ints: 2**(b-1) or its symmetric cut)
    nan_code: int        # positive NaN code, -1 when none
    neg_nan_code: int    # NaN code for negative NaN inputs, -1 when none
    inf_mag: int         # magnitude code of +Inf, -1 when none
    negzero_ok: int      # 1 when magnitude code 0 keeps the sign: it is -0, or -min without a zero
    overflow: int        # OVF_* policy
    on_nan: int          # NAN_* policy
    width: int           # storage bits per code
    group_codes: int
    group_bytes: int

    @classmethod
    def from_encoding(cls, enc: ElementEncoding) -> "KernelParams":
        f = enc.fmt
        common = dict(
            overflow=OVERFLOW_POLICIES.index(enc.overflow),
            on_nan=NAN_POLICIES.index(enc.on_nan),
            width=enc.storage_bits,
            group_codes=enc.group_codes,
            group_bytes=enc.group_bytes,
        )
        if isinstance(f, IntFormat):
            return cls(
                is_int=1, mbits=0, min_binade=0, zero=1, subnormals=1, signed=int(f.signed),
                sign_shift=f.bits - 1, max_mag=int(f.max), neg_max_mag=int(-f.min),
                nan_code=-1, neg_nan_code=-1, inf_mag=-1, negzero_ok=0, **common,
            )
        EM = f.ebits + f.mbits
        if f.special is Special.IEEE:
            qnan = (((1 << f.ebits) - 1) << f.mbits) | (1 << (f.mbits - 1)) if f.mbits else -1
            nan, inf = qnan, ((1 << f.ebits) - 1) << f.mbits
        elif f.special is Special.FN:
            nan, inf = (1 << EM) - 1, -1
        elif f.special is Special.FNUZ:
            nan, inf = 1 << EM, -1  # the "negative zero" code
        else:
            nan, inf = -1, -1
        if nan >= 0 and f.signed and f.special is not Special.FNUZ:
            neg_nan = nan | (1 << EM)
        else:
            neg_nan = nan
        return cls(
            is_int=0, mbits=f.mbits, min_binade=f.min_binade, zero=int(f.zero),
            subnormals=int(bool(f.subnormals)), signed=int(f.signed), sign_shift=EM,
            max_mag=f.max_mag_code, neg_max_mag=f.max_mag_code, nan_code=nan, neg_nan_code=neg_nan,
            inf_mag=inf, negzero_ok=int(f.signed and f.special is not Special.FNUZ), **common,
        )

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, k) for k in self.__dataclass_fields__], dtype=np.int64)
