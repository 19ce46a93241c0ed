"""compressed-tensors' preset schemes (W4A16, W8A16, FP8_DYNAMIC, NVFP4A16, ...) computed from float
weights exactly as compressed-tensors and llm-compressor compute them, into lowbit QTensors.

The schemes themselves come from ``compressed_tensors.quantization.preset_name_to_scheme`` (nothing
restated here); what this module adds is the weight quantizer, so that ``lowbit convert --scheme``
needs no calibration run and no GPU, and its bytes equal the bytes of llm-compressor's
``QuantizationModifier(scheme=..., ignore=["lm_head"])`` + ``ModelCompressor`` for the same model:

* **observer: min-max** (llm-compressor's default ``minmax`` observer; for a weight it sees the
  tensor once): per group of ``group_size`` columns, per row (``channel``) or per tensor, the
  minimum and maximum, each widened to include 0.
* **scale** = ``max(|min|, |max|) / (range / 2)`` symmetric, ``(max - min) / range`` asymmetric,
  where ``range`` is ``2**bits - 1`` for integers (int4: 15, so the divisor is 7.5, not 7: lowbit's
  own ``int`` codec divides by 7, which made hand-built checkpoints' scales 7.5/7 = 1.071x
  compressed-tensors' and moved ~70 % of the codes), 2 * 448 for FP8 and 2 * 6 for FP4.
  Asymmetric zero point = ``round(clamp(-8 - min / scale, -8, 7))`` (int4).
  A zero scale becomes the scale dtype's epsilon (0.125 for FP8 E4M3).
* **arithmetic in the weight's dtype**: like torch, every step (``max / 7.5``, ``x / scale``,
  ``+ zero_point``) is computed in float32 and rounded to the weight's dtype (bfloat16, float16),
  then rounded to the grid (round half to even; clamped). Scales are stored in the weight's dtype.
* **MXFP4** (group 32, E8M0 scales): the group absmax rounded to a power of two on its bits in the
  weight dtype (compressed-tensors' round_to_power_2), exponent ``127 + log2 - 2``.
* **NVFP4** (``tensor_group``): a float32 global scale ``448 * 6 / absmax`` shared by the layers
  llm-compressor fuses (q/k/v, gate/up; ``FUSED_LAYER_NAMES``), block scales
  ``global * absmax16 / 6`` rounded to E4M3, codes ``x / (scale / global)`` rounded to E2M1.

>>> import numpy as np
>>> from lowbit.formats import ct_schemes
>>> args = ct_schemes.weight_args("W4A16", group_size=32)
>>> args["num_bits"], args["strategy"], args["group_size"], args["symmetric"]
(4, 'group', 32, True)
>>> w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
>>> q = ct_schemes.quantize(w, args)
>>> bool(q.aux["scale"][0, 0] == np.float32(1) / np.float32(7.5))   # max |w| of the group / 7.5
True
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from ..codec import QTensor, get_codec
from ..errors import ConfigError, LowbitError
from ._int32pack import pack_bits
from ._intq import make_qtensor
from .layouts import _ml_dtypes, join_blocks

__all__ = ["SCHEMES", "scheme", "weight_args", "quantize", "global_scale", "check_weight", "fused_groups",
           "SchemeError"]

#: the preset names this module computes (weights; activations, where the preset has them, are
#: dynamic, so the consumer computes them at run time and the checkpoint needs no calibration)
SCHEMES = ("W4A16", "W4A16_ASYM", "W8A16", "W2A16", "W3A16", "W5A16", "W6A16", "W7A16", "W8A8", "INT8",
           "W4A8", "W4AFP8", "FP8_DYNAMIC", "NVFP4A16", "MXFP4A16", "MXFP4")

#: what llm-compressor 0.14 fuses for one shared NVFP4 global scale (observers/helpers.py,
#: FUSED_LAYER_NAMES): sibling modules of one parent
FUSED_LAYER_NAMES = (("gate_proj", "up_proj"), ("q_proj", "k_proj", "v_proj"), ("q_a_proj", "kv_a_proj_with_mqa"),
                     ("w1", "w3"))


class SchemeError(ConfigError):
    """A scheme that cannot be written for a weight (the consumer would refuse it at load)."""


def _ct() -> Any:
    try:
        from compressed_tensors import quantization
    except ImportError:
        raise LowbitError("convert --scheme: compressed-tensors' presets need the compressed-tensors package "
                          "(pip install compressed-tensors)") from None
    return quantization


def scheme(name: str, *, group_size: int | None = None, targets: Iterable[str] = ("Linear",)) -> Any:
    """compressed-tensors' ``QuantizationScheme`` for a preset name, with ``group_size`` overriding
    the weights' group size (group strategies only). LowbitError names the presets we compute."""
    q = _ct()
    key = str(name).upper()
    if key not in SCHEMES:
        static = ""
        if q.is_preset_scheme(key):
            act = q.preset_name_to_scheme(key, ["Linear"]).input_activations
            static = (" (it needs calibrated static activation scales, which a weight-only conversion cannot make)"
                      if act is not None and act.dynamic is not True else  # False, or "local" (a calibrated global scale)
                      " (its weight quantizer is not implemented in lowbit yet)")
        raise SchemeError(f"convert: --scheme: {name!r} is not one lowbit computes{static}; expected one of "
                          f"{list(SCHEMES)}")
    s = q.preset_name_to_scheme(key, list(targets))
    if group_size is not None:
        strat = str(getattr(s.weights.strategy, "value", s.weights.strategy))
        if strat not in ("group", "tensor_group"):
            raise SchemeError(f"convert: --group-size: scheme {key} quantizes weights per {strat}, it has no group size")
        if strat == "tensor_group" and int(group_size) != s.weights.group_size:
            raise SchemeError(f"convert: --group-size: {key} has fixed groups of {s.weights.group_size} "
                              f"(its block scales are E4M3 per 16 values), got {group_size}")
        s.weights = s.weights.model_copy(update={"group_size": int(group_size)})
    return s


def weight_args(name: str, *, group_size: int | None = None) -> dict[str, Any]:
    """The weights' QuantizationArgs of a preset as a JSON-clean dict."""
    return scheme(name, group_size=group_size).weights.model_dump(mode="json")


# ---- arithmetic as torch does it in a dtype -----------------------------------------------------------

def _dtype_name(w: np.ndarray) -> str:
    n = w.dtype.name
    if n not in ("float32", "float16", "bfloat16"):
        raise LowbitError(f"compressed-tensors scheme: weights must be float32, float16 or bfloat16, got {n}")
    return n


def _in(dt: Any, x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the weight dtype (RNE), as float32."""
    return np.asarray(x, np.float32).astype(dt).astype(np.float32)


def _groups(w: np.ndarray, args: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """The weight as (rows, groups, group width) float32 for the args' strategy."""
    N, K = w.shape
    s = args["strategy"]
    x = w.astype(np.float32)
    if s in ("group", "tensor_group"):
        g = int(args["group_size"])
        return x.reshape(N, K // g, g), g
    if s == "channel":
        return x.reshape(N, 1, K), K
    if s == "tensor":
        return x.reshape(1, 1, N * K), N * K
    raise SchemeError(f"compressed-tensors scheme: weight strategy {s!r} is not computed by lowbit")


def check_weight(name: str, shape: tuple[int, ...], args: Mapping[str, Any]) -> None:
    """Refuse, naming the rule, a weight the consumer would reject at load: group size not
    dividing the columns (compressed-tensors' rule), odd columns for FP4, a non-2-D weight."""
    if len(shape) != 2:
        raise SchemeError(f"convert: tensor {name!r}: compressed-tensors quantizes 2-D Linear weights, got shape {list(shape)}")
    K = shape[1]
    if args["strategy"] in ("group", "tensor_group") and K % int(args["group_size"]):
        g = int(args["group_size"])
        raise SchemeError(f"convert: --group-size {g}: tensor {name!r} has {K} columns, not a multiple of {g} "
                          f"(compressed-tensors requires the group size to divide the input columns: "
                          f"'tensor column shape must be divisible by the given group_size')")


def global_scale(weights: Iterable[np.ndarray]) -> np.ndarray:
    """NVFP4's float32 global scale [1] for weights that share one (a fused group):
    ``448 * 6 / absmax`` computed in the weights' dtype as torch computes it,
    ``reciprocal(absmax) * 2688`` (compressed-tensors' generate_gparam), 1.0 where that is not finite."""
    ws = list(weights)
    dt = ws[0].dtype
    amax = np.float32(0)
    for w in ws:
        a = np.asarray(w, np.float32)
        amax = max(amax, np.float32(np.abs(a).max()) if a.size else np.float32(0))
    tiny = np.float32(np.finfo(np.float16).tiny) if dt.name == "float16" else (
        np.float32(np.finfo(np.float32).tiny))  # bfloat16's smallest normal is float32's
    amax = max(amax, tiny)
    with np.errstate(over="ignore", divide="ignore"):
        # torch's ``scalar / tensor`` is ``tensor.reciprocal() * scalar``: two roundings
        g = _in(dt, _in(dt, np.float32(1) / np.float32(amax)) * np.float32(448.0 * 6.0))
    if not np.isfinite(g):
        g = np.float32(1.0)
    return np.array([g], np.float32)


def fused_groups(modules: Iterable[str]) -> list[list[str]]:
    """The modules that share an NVFP4 global scale, as llm-compressor fuses them: siblings named
    by one :data:`FUSED_LAYER_NAMES` entry, when the parent has all of them; everything else alone."""
    mods = list(modules)
    present = set(mods)
    taken: set[str] = set()
    out = []
    for m in mods:
        if m in taken:
            continue
        parent, _, leaf = m.rpartition(".")
        for names in FUSED_LAYER_NAMES:
            sib = [f"{parent}.{n}" if parent else n for n in names]
            if leaf in names and all(s in present for s in sib):
                out.append(sib)
                taken |= set(sib)
                break
        else:
            out.append([m])
            taken.add(m)
    return out


# ---- the quantizers -------------------------------------------------------------------------------------

def quantize(w: Any, args: Mapping[str, Any], *, gscale: np.ndarray | None = None, name: str = "weight") -> QTensor:
    """A 2-D float weight (numpy float32/float16/ml_dtypes bfloat16) quantized by a scheme's weight
    args: an ``int`` QTensor (integer schemes), ``fp8_e4m3`` (FP8), ``mxfp4`` (MXFP4) or ``nvfp4``
    with ``recipe="compressed_tensors"`` (NVFP4; ``gscale`` is the fused global scale, computed
    from this weight alone when None)."""
    w = np.asarray(w)
    dtn = _dtype_name(w)
    dt = w.dtype
    check_weight(name, tuple(w.shape), args)
    kind, bits = args["type"], int(args["num_bits"])
    if kind == "int":
        return _quantize_int(w, args, dt)
    if kind == "float" and bits == 8 and args["strategy"] in ("channel", "tensor"):
        return _quantize_fp8(w, args, dt, dtn)
    if kind == "float" and bits == 4 and args["strategy"] == "tensor_group":
        return _quantize_nvfp4(w, args, dt, gscale)
    if kind == "float" and bits == 4 and args["strategy"] == "group" and int(args["group_size"]) == 32:
        return _quantize_mxfp4(w, args, dt)
    raise SchemeError(f"compressed-tensors scheme: {kind} {bits}-bit {args['strategy']} weights are not computed by lowbit")


def _minmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.minimum(x.min(-1), np.float32(0)), np.maximum(x.max(-1), np.float32(0))


def _eps(dt: Any) -> np.float32:
    return np.float32(np.finfo(dt).eps)


def _quantize_int(w: np.ndarray, args: Mapping[str, Any], dt: Any) -> QTensor:
    N, K = w.shape
    b = int(args["num_bits"])
    qmin, qmax = np.float32(-(2.0 ** b) / 2), np.float32(2.0 ** b / 2 - 1)
    x, g = _groups(w, args)
    mn, mx = _minmax(x)
    rng = qmax - qmin
    if args["symmetric"]:
        scale = _in(dt, np.maximum(np.abs(mn), np.abs(mx)) / _in(dt, _in(dt, rng) / np.float32(2)))
        zp = None
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = _in(dt, _in(dt, mx - mn) / _in(dt, rng))
            zpf = np.clip(_in(dt, qmin - _in(dt, mn / scale)), qmin, qmax)
        zp = np.rint(np.nan_to_num(zpf, nan=0.0)).astype(np.int64)  # round half to even, like torch.round
    scale = np.where(scale == 0, _eps(dt), scale).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = _in(dt, x / scale[..., None])
        if zp is not None:
            y = _in(dt, y + zp[..., None].astype(np.float32))
    codes = np.rint(np.clip(y, qmin, qmax)).astype(np.int64).reshape(N, K)
    off = 1 << (b - 1)
    scales = scale.astype(dt)  # (N, groups) in the weight dtype
    zeros = None if zp is None else (zp + off)
    return make_qtensor(pack_bits(codes + off, b), scales, zeros, None, (N, K), bits=b,
                        group_size=None if args["strategy"] == "channel" else g,
                        where="compressed-tensors scheme")


def _quantize_fp8(w: np.ndarray, args: Mapping[str, Any], dt: Any, dtn: str) -> QTensor:
    ml = _ml_dtypes()
    N, K = w.shape
    x, _ = _groups(w, args)
    mn, mx = _minmax(x)
    scale = _in(dt, np.maximum(np.abs(mn), np.abs(mx)) / _in(dt, np.float32(896) / np.float32(2)))
    scale = np.where(scale == 0, _eps(dt), scale).astype(np.float32)
    y = np.clip(_in(dt, x / scale[..., None]), -448, 448)
    codes = y.astype(ml.float8_e4m3fn).reshape(N, K)
    mode = args["strategy"]
    codec = get_codec("fp8_e4m3", scale=mode)
    aux_shape = codec._aux_spec((N, K))["scale"][0]
    return QTensor(codes.view(np.uint8), {"scale": scale.reshape(aux_shape)}, (N, K), codec)


_E2M1_EDGES = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], np.float32)


def _e2m1_codes(y: np.ndarray) -> np.ndarray:
    """E2M1 codes of float32 values, rounded as compressed-tensors' cast_to_fp4 rounds (to
    nearest, ties to even: 0.25 -> 0, 0.75 -> 1, 2.5 -> 2, 5 -> 4), sign from the value's sign
    (a value that rounds to zero keeps its sign bit, like torch.sign(x) * 0 = -0.0)."""
    a = np.abs(y)
    # magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6 are codes 0..7; ties go to the even code
    idx = np.searchsorted(_E2M1_EDGES, a, side="left")
    tie_up = np.isin(a, _E2M1_EDGES[[1, 3, 5]])  # 0.75 -> 1.0, 1.75 -> 2.0, 3.5 -> 4.0 (even codes)
    idx = np.where(tie_up, idx + 1, idx)
    return (idx.astype(np.uint8) | np.where(y < 0, 8, 0).astype(np.uint8))


def _quantize_nvfp4(w: np.ndarray, args: Mapping[str, Any], dt: Any, gscale: np.ndarray | None) -> QTensor:
    ml = _ml_dtypes()
    N, K = w.shape
    g = np.asarray(global_scale([w]) if gscale is None else gscale, np.float32).reshape(1)
    x, _ = _groups(w, args)
    mn, mx = _minmax(x)
    local = _in(dt, np.maximum(np.abs(mn), np.abs(mx)) / _in(dt, np.float32(12) / np.float32(2)))
    s = np.clip(g[0] * local, -448, 448).astype(ml.float8_e4m3fn).astype(np.float32)
    s = np.where(s == 0, np.float32(0.125), s)
    s8 = s.astype(ml.float8_e4m3fn)  # what the checkpoint stores
    # the compressor quantizes with the scale held in the weight dtype (exact for E4M3 values)
    eff = s.astype(dt).astype(np.float32) / g[0]
    y = np.clip(x / eff[..., None], -6, 6)
    c = _e2m1_codes(y).reshape(N, K)
    packed = (c[:, 0::2] | (c[:, 1::2] << 4)).astype(np.uint8)
    data = join_blocks(s8.view(np.uint8), packed, 8)
    return QTensor(data, {"global_scale": np.array(g[0], np.float32)}, (N, K),
                   get_codec("nvfp4", recipe="compressed_tensors"))


_FLOAT_BITS = {"float32": (np.uint32, 23, 8), "bfloat16": (np.uint16, 7, 8), "float16": (np.uint16, 10, 5)}


def _e8m0_of_absmax(amax: np.ndarray, dt: Any) -> np.ndarray:
    """compressed-tensors' MX scale exponent (generate_mx_scales + round to uint8): the group absmax,
    held in the weight dtype, rounded to a power of two on its bits (add half an E2M1 ulp at the
    element's mantissa width, keep sign and exponent), then ``127 + log2 - 2``, clamped to 0..255."""
    ui, mant, ebits = _FLOAT_BITS[np.dtype(dt).name]
    bits = np.ascontiguousarray(amax.astype(dt)).view(ui).astype(np.int64)
    mask = ((1 << (ebits + 1)) - 1) << mant
    r = ((bits + (1 << (mant - 1 - 1))) & mask) & ((1 << (ebits + mant)) - 1)  # the sign of |x| is 0
    field = r >> mant
    bias = (1 << (ebits - 1)) - 1
    e = np.where(field > 0, field - bias, -10**6)  # a zero power of two: log2 = -inf -> code 0
    return np.clip(127 + e - 2, 0, 255).astype(np.int64)


def _quantize_mxfp4(w: np.ndarray, args: Mapping[str, Any], dt: Any) -> QTensor:
    N, K = w.shape
    x, _ = _groups(w, args)
    mn, mx = _minmax(x)
    code = _e8m0_of_absmax(np.maximum(np.abs(mn), np.abs(mx)), dt)
    with np.errstate(under="ignore", over="ignore"):
        scale = _in(dt, np.exp2(code.astype(np.float32) - 127))
    scale = np.where(scale == 0, np.float32(1), scale)  # the uint8 scale dtype's "epsilon" is 1
    with np.errstate(over="ignore", under="ignore"):
        y = np.clip(_in(dt, x / scale[..., None]), -6, 6)
    c = _e2m1_codes(y).reshape(N, K)
    packed = (c[:, 0::2] | (c[:, 1::2] << 4)).astype(np.uint8)
    stored = np.round(np.log2(scale.astype(np.float32))).astype(np.int64) + 127  # what compress_mx_scale writes
    data = join_blocks(np.clip(stored, 0, 255).astype(np.uint8), packed, 16)
    return QTensor(data, {}, (N, K), get_codec("mxfp4", scale_rounding="even"))
