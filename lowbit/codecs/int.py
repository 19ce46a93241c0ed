"""Uniform integer codes with a scale (and a zero point) per group: the ``int`` codec and the
layouts people name (KIVI keys/values, HQQ and quanto int4/int2).

Layout (spec/int.toml): ``q.data`` holds the unsigned codes ``0 … 2**bits - 1``, packed LSB-first
along each row exactly like the element codecs (4-bit: even element in the low nibble; 3-bit:
8 codes in 3 bytes). Side arrays: ``aux["scale"]`` (float16, float32, or bfloat16 stored as its
uint16 bit pattern) and, when asymmetric, ``aux["zero"]`` (uint8 integer zero points), one per
group (see :mod:`lowbit.codecs._groups` for the group geometry); ``aux["g_idx"]`` (int32, one
per column) with ``act_order=True``. Decoding is ``(code - zero) * scale`` in float32 (exact);
symmetric codecs use the fixed zero point ``2**(bits-1)`` (offset binary, as GPTQ ``sym=True``
and compressed-tensors store them) and never write code 0.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .. import _arrays
from ..codec import Codec
from ..errors import ConfigError, RangeError, ShapeError
from ..kernels.registry import get_kernel
from ..layout import BlockLayout
from . import _groups as G

__all__ = ["Int", "Kivi2", "Kivi4", "Hqq4", "Hqq2", "Quanto4", "Quanto2"]


class Int(Codec, codec_id="int"):
    """Integer codes of 1–8 bits with a float scale (and an integer zero point) per group.

    Parameters
    ----------
    bits:
        1 … 8 (symmetric: 2 … 8).
    group_size:
        elements per group (32, 64, 128, …) or None for the whole axis (per-token / per-channel).
    axis:
        -1: groups run along each row (per-token groups of a ``[T, D]`` K/V tensor; GPTQ/AWQ
        groups of input channels of a ``[out, in]`` weight); -2: groups run down the columns
        (per-channel groups of ``group_size`` tokens: KIVI's key layout).
    symmetric:
        True: ``scale = RD(amax / (2**(bits-1) - 1))``, codes ``-(2**(bits-1)-1) … 2**(bits-1)-1``
        stored with the offset ``2**(bits-1)``. False: min–max with an integer zero point, the
        range always containing 0 (as GPTQ): ``scale = RD((max - min) / (2**bits - 1))``.
    scale_dtype:
        "float16", "bfloat16" or "float32" (float32 scales keep 16 significant bits, so every
        decoded value is exact in float32). RD rounds down to that grid; see spec/int.toml.
    act_order:
        store a column → group map ``aux["g_idx"]`` (GPTQ act-order; ``axis=-1`` only); pass
        ``encode(x, g_idx=...)`` to choose it (default ``column // group_size``).

    Re-encoding a decoded tensor reproduces every byte, scale and zero point.

    >>> import numpy as np, lowbit
    >>> c = lowbit.get_codec("int", bits=4, group_size=4)
    >>> q = c.encode(np.array([[0.0, 1.0, 2.0, 3.0, -1.0, 0.5, 0.25, 2.0]], np.float32))
    >>> q.data.tobytes().hex(), q.aux["scale"].tolist(), q.aux["zero"].tolist()
    ('50fa80f6', [[0.199951171875, 0.199951171875]], [[0, 5]])
    >>> [round(float(v), 3) for v in c.decode(q)[0]]
    [0.0, 1.0, 2.0, 2.999, -1.0, 0.6, 0.2, 2.0]
    """

    encode_kwargs = ("g_idx",)

    def __init__(self, *, bits: int = 4, group_size: int | None = 128, axis: int = -1, symmetric: bool = False,
                 scale_dtype: str = "float16", act_order: bool = False) -> None:
        given = _apply_preset(self, dict(bits=bits, group_size=group_size, axis=axis, symmetric=symmetric,
                                         scale_dtype=scale_dtype, act_order=act_order))
        bits, group_size, axis = given["bits"], given["group_size"], given["axis"]
        symmetric, scale_dtype, act_order = given["symmetric"], given["scale_dtype"], given["act_order"]
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
            raise ConfigError(f"{self.codec_id}: bits: expected an int in [1, 8], got {bits!r}")
        if not isinstance(symmetric, bool) or not isinstance(act_order, bool):
            raise ConfigError(f"{self.codec_id}: symmetric and act_order: expected booleans, got {symmetric!r}, {act_order!r}")
        if symmetric and bits < 2:
            raise ConfigError(f"{self.codec_id}: symmetric=True needs bits >= 2 (a sign and a magnitude), got {bits}")
        G.check_group_config(self.codec_id, group_size, axis, scale_dtype)
        if act_order and (axis != -1 or group_size is None):
            raise ConfigError(f"{self.codec_id}: act_order=True needs axis=-1 and a group_size, got axis={axis}, group_size={group_size}")
        self.bits, self.group_size, self.axis = bits, group_size, axis
        self.symmetric, self.scale_dtype, self.act_order = symmetric, scale_dtype, act_order

    # ---- layout ---------------------------------------------------------------------------
    @property
    def layout(self) -> BlockLayout:
        return BlockLayout.from_spec("int", w=self.bits)

    @property
    def maxq(self) -> int:
        return (1 << self.bits) - 1

    def _code_range(self) -> tuple[int, int, int]:
        """(zconst, qlo, qhi): the symmetric offset and the codes the encoder writes."""
        if self.symmetric:
            off = 1 << (self.bits - 1)
            return off, 1, self.maxq
        return 0, 0, self.maxq

    def geometry(self, shape: tuple[int, ...]) -> G.Geometry:
        return G.Geometry.of(shape, self.group_size, self.axis)

    def _aux_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
        geo = self.geometry(shape)
        ash = geo.aux_shape(shape, self.axis)
        spec = {"scale": (ash, G.SCALE_DTYPES[self.scale_dtype][4])}
        if not self.symmetric:
            spec["zero"] = (ash, "uint8")
        if self.act_order:
            spec["g_idx"] = ((shape[-1],), "int32")
        return spec

    # ---- encode / decode --------------------------------------------------------------------
    def _gcol(self, geo: G.Geometry, g_idx: Any, x2d: Any) -> Any:
        torch_mode = _arrays.is_torch(x2d)
        xp = _torch() if torch_mode else np
        if g_idx is None:
            return geo.gcol(xp, x2d.device if torch_mode else None)
        if torch_mode:
            t = _arrays.gpu_tensor(g_idx if _arrays.is_torch(g_idx) else np.asarray(g_idx))
            return t.to(xp.int64).clamp(0, max(geo.NGc - 1, 0)).to(xp.int32).to(x2d.device)
        return np.clip(np.asarray(_arrays.to_numpy(g_idx), dtype=np.int64), 0, max(geo.NGc - 1, 0)).astype(np.int32)

    def _check_g_idx(self, g_idx: Any, shape: tuple[int, ...]) -> Any:
        if g_idx is None:
            return None
        if not self.act_order:
            raise ConfigError(f"{self.codec_id}: g_idx=: expected act_order=True in the codec config, got act_order=False")
        a = _arrays.to_numpy(g_idx)
        geo = self.geometry(shape)
        if a.shape != (shape[-1],) or a.dtype.kind not in "iu" or (a.size and (a.min() < 0 or a.max() >= geo.NGc)):
            raise ShapeError(f"{self.codec_id}: g_idx: expected {shape[-1]} integers in [0, {geo.NGc}), got "
                             f"{a.dtype} {a.shape}" + (f" in [{a.min()}, {a.max()}]" if a.size and a.dtype.kind in 'iu' else ""))
        return a.astype(np.int32)

    def _refuse_nan(self, x2d: Any, shape: tuple[int, ...]) -> None:
        xp = _torch() if _arrays.is_torch(x2d) else np
        if bool(xp.isnan(x2d).any()):
            x = _arrays.to_numpy(x2d)
            flat = int(np.flatnonzero(np.isnan(x))[0])
            idx = tuple(int(i) for i in np.unravel_index(flat, shape))
            raise RangeError(f"{self.codec_id}: input has NaN at index {idx}, but integer codes have no NaN; nothing was encoded")

    def _params(self, x2d: Any, geo: G.Geometry, gcol: Any, explicit: bool) -> tuple[Any, Any]:
        lo, hi = G.group_minmax(x2d, geo, gcol if explicit else None)
        return G.int_params(lo, hi, self.bits, self.symmetric, self.scale_dtype)

    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str, g_idx: Any = None) -> tuple[Any, dict[str, Any]]:
        g = self._check_g_idx(g_idx, shape)
        self._refuse_nan(x2d, shape)
        geo = self.geometry(shape)
        gcol = self._gcol(geo, g, x2d)
        s, z = self._params(x2d, geo, gcol, g is not None)
        out = _empty_u8(x2d, (x2d.shape[0], self.row_bytes(shape[-1])))
        zconst, qlo, qhi = self._code_range()
        if x2d.shape[0] and shape[-1]:
            get_kernel("int", backend, "encode")(x2d, s, z, geo, gcol, self.bits, zconst, qlo, qhi, out)
        return out, self._aux_out(s, z, gcol, shape, geo)

    def _aux_out(self, s: Any, z: Any, gcol: Any, shape: tuple[int, ...], geo: G.Geometry) -> dict[str, Any]:
        ash = geo.aux_shape(shape, self.axis)
        aux = {"scale": G.scale_to_aux(s, self.scale_dtype).reshape(ash)}
        if z is not None:
            aux["zero"] = (z.astype(np.uint8) if isinstance(z, np.ndarray) else z.to(_torch().uint8)).reshape(ash)
        if self.act_order:
            aux["g_idx"] = gcol
        return aux

    def _decode(self, data2d: Any, aux: Mapping[str, Any], shape: tuple[int, ...], backend: str) -> Any:
        geo = self.geometry(shape)
        rows, K = data2d.shape[0], shape[-1]
        torch_mode = _arrays.is_torch(data2d)
        out = (_torch().empty((rows, K), dtype=_torch().float32, device=data2d.device) if torch_mode
               else np.empty((rows, K), dtype=np.float32))
        if not rows or not K:
            return out
        s = G.scale_from_aux(aux["scale"], self.scale_dtype).reshape(-1)
        z = aux.get("zero")
        z = None if z is None else (z.astype(np.int32) if not torch_mode else z.to(_torch().int32)).reshape(-1)
        gcol = self._gcol(geo, aux["g_idx"] if self.act_order else None, data2d)
        zconst, _, _ = self._code_range()
        get_kernel("int", backend, "decode")(data2d, s, z, geo, gcol, self.bits, zconst, out, self._decode_shift)
        return out

    _decode_shift = 0  # sliced codes (sliceable_int) are shifted back to the parent's width

    # ---- what the harness checks ------------------------------------------------------------
    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        if cls.preset or cls is not Int:
            return [{}]
        return [
            {"group_size": 8},
            {"bits": 3, "group_size": 8, "symmetric": True, "scale_dtype": "float32"},
            {"bits": 2, "group_size": 3, "axis": -2, "scale_dtype": "bfloat16"},
            {"bits": 8, "group_size": None, "symmetric": True},
            {"bits": 1, "group_size": 16, "scale_dtype": "float32"},
            {"bits": 4, "group_size": 4, "act_order": True},
        ]

    def input_policy(self) -> dict[str, str]:
        return {"nan": "raise", "inf": "saturate", "overflow": "saturate", "negative": "encode",
                "negative_zero": "zero", "subnormal": "encode"}

    def error_bound(self, x: np.ndarray, q: Any) -> np.ndarray:
        """Half a step inside the group's range [-z*s, (2**b-1-z)*s] (plus the float32 division's
        2**-24 relative error), the distance to that range outside it (saturation)."""
        x = np.asarray(x, np.float32)
        s, z = self.expand_params(q)
        zconst, qlo, qhi = self._code_range()
        lo_r, hi_r = (qlo - z) * s, (qhi - z) * s
        xd = x.astype(np.float64)
        out = np.maximum(np.maximum(lo_r - xd, xd - hi_r), 0.0)
        bound = out + 0.5 * s + 2.0**-23 * np.abs(xd) + 2.0**-149
        return np.where(np.isfinite(x), bound, np.inf)

    def expand_params(self, q: Any) -> tuple[np.ndarray, np.ndarray]:
        """float64 (scale, zero point) of every element of ``q`` (host side, for bounds and tests)."""
        shape = q.shape
        geo = self.geometry(shape)
        s = G.scale_from_aux(_arrays.to_numpy(q.aux["scale"]), self.scale_dtype).astype(np.float64).reshape(-1)
        zconst, _, _ = self._code_range()
        z = (_arrays.to_numpy(q.aux["zero"]).astype(np.float64).reshape(-1) if "zero" in q.aux
             else np.full(s.shape, float(zconst)))
        gcol = self._gcol(geo, q.aux.get("g_idx") if self.act_order else None, np.zeros(1, np.float32)).astype(np.int64)
        r = np.arange(geo.rows)
        gr = (r // geo.M) * geo.NGr + (r % geo.M) // geo.Gr
        idx = (gr[:, None] * geo.NGc + gcol[None, :]).reshape(shape) if geo.rows else np.zeros(shape, np.int64)
        return s[idx], z[idx]

    def interesting_values(self) -> np.ndarray:
        k = np.arange(-(1 << self.bits), (1 << self.bits) + 1, dtype=np.float64)
        v = np.concatenate([k, k + 0.5, [0.0, 1e-3, -1e-3, 65504.0, -65504.0]])
        return np.unique(v.astype(np.float32))


def _torch() -> Any:
    import torch

    return torch


def _empty_u8(like: Any, shape: tuple[int, int]) -> Any:
    if _arrays.is_torch(like):
        return _torch().zeros(shape, dtype=_torch().uint8, device=like.device)
    return np.zeros(shape, dtype=np.uint8)


def _apply_preset(self: Codec, given: dict[str, Any]) -> dict[str, Any]:
    out = dict(given)
    out.update(getattr(self, "preset", {}))
    return out


# ---- presets --------------------------------------------------------------------------------------


class _KiviBase(Int):
    """KIVI (Liu et al., ICML 2024): asymmetric min–max integers, keys quantized per channel
    (groups of ``group_size`` tokens down each channel of ``[..., T, D]``), values per token
    (groups of ``group_size`` channels along each token).

    KIVI keeps a full-precision *residual window* of the most recent tokens (and, for keys, the
    tokens that do not yet fill a group); that window belongs to the KV store, not to this codec:
    encode only whole groups of tokens for keys (``T`` a multiple of ``group_size``), and keep the
    rest in full precision. Scales are float16 as in KIVI; the zero point is stored as an integer
    code (KIVI stores the float16 minimum instead; an integer zero point makes re-encoding exact).
    """

    def __init__(self, *, kind: str = "key", group_size: int | None = 32) -> None:
        if kind not in ("key", "value"):
            raise ConfigError(f"{self.codec_id}: kind: expected 'key' (per-channel) or 'value' (per-token), got {kind!r}")
        super().__init__(group_size=group_size, axis=-2 if kind == "key" else -1)
        self.kind = kind

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "kind": self.kind, "group_size": self.group_size}

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{"kind": "key", "group_size": 4}, {"kind": "value", "group_size": 8}]


class Kivi2(_KiviBase, codec_id="kivi2", preset={"bits": 2, "symmetric": False, "scale_dtype": "float16", "act_order": False}):
    """KIVI-2: 2-bit asymmetric, keys per channel / values per token (``kind=``), groups of 32.

    >>> import numpy as np, lowbit
    >>> k = np.arange(16, dtype=np.float32).reshape(4, 4)     # 4 tokens x 4 channels
    >>> q = lowbit.get_codec("kivi2", kind="key", group_size=4).encode(k)
    >>> q.aux["scale"].shape, lowbit.decode(q)[:, 0].tolist()  # one scale per channel
    ((1, 4), [0.0, 4.0, 8.0, 12.0])
    """


class Kivi4(_KiviBase, codec_id="kivi4", preset={"bits": 4, "symmetric": False, "scale_dtype": "float16", "act_order": False}):
    """KIVI-4: 4-bit asymmetric, keys per channel / values per token (``kind=``), groups of 32.

    >>> import numpy as np, lowbit
    >>> v = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    >>> q = lowbit.get_codec("kivi4", kind="value").encode(v)   # one scale per token
    >>> q.aux["scale"].shape, q.bits_per_element
    ((2, 1), 4.75)
    """


class _WeightPreset(Int):
    """Asymmetric group-wise weight quantization along the input channels (``axis=-1``)."""

    def __init__(self, *, group_size: int | None = 64, scale_dtype: str = "float16") -> None:
        super().__init__(group_size=group_size, axis=-1, scale_dtype=scale_dtype)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "group_size": self.group_size, "scale_dtype": self.scale_dtype}

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{"group_size": 8}]


_ASYM = {"symmetric": False, "axis": -1, "act_order": False}


class Hqq4(_WeightPreset, codec_id="hqq4", preset={"bits": 4, **_ASYM}):
    """HQQ-compatible int4 (hqq ``BaseQuantizeConfig(nbits=4, group_size=64, axis=1)``): asymmetric,
    groups of 64 along the input channels, float16 scale and zero, ``W = (W_q - zero) * scale``.

    The zero point is an integer (HQQ's ``round_zero=True``); :mod:`lowbit.formats.hqq` converts
    to and from hqq's ``W_q`` / ``meta`` tensors.

    >>> import numpy as np, lowbit
    >>> q = lowbit.get_codec("hqq4").encode(np.linspace(-1, 1, 64, dtype=np.float32)[None])
    >>> q.aux["scale"].dtype, q.aux["zero"].tolist()
    (dtype('float16'), [[8]])
    """


class Hqq2(_WeightPreset, codec_id="hqq2", preset={"bits": 2, **_ASYM}):
    """HQQ-compatible int2 (``nbits=2``, groups of 64); see :class:`Hqq4`.

    >>> import numpy as np, lowbit
    >>> lowbit.get_codec("hqq2").bits_per_element((16, 64))
    2.375
    """


class _QuantoPreset(_WeightPreset):
    def __init__(self, *, group_size: int | None = 128, scale_dtype: str = "float16") -> None:
        super().__init__(group_size=group_size, scale_dtype=scale_dtype)


class Quanto4(_QuantoPreset, codec_id="quanto4", preset={"bits": 4, **_ASYM}):
    """optimum-quanto-compatible ``qint4`` weights (groups of 128 along the input channels,
    ``axis=0`` in quanto's terms): asymmetric, with quanto's integer zero-point ``shift``
    (``W = (data - shift) * scale``); :mod:`lowbit.formats.quanto` converts both ways.

    >>> import numpy as np, lowbit
    >>> lowbit.get_codec("quanto4").bits_per_element((8, 256))
    4.1875
    """


class Quanto2(_QuantoPreset, codec_id="quanto2", preset={"bits": 2, **_ASYM}):
    """optimum-quanto-compatible ``qint2`` weights; see :class:`Quanto4`.

    >>> import numpy as np, lowbit
    >>> lowbit.get_codec("quanto2").bits_per_element((8, 256))
    2.1875
    """
