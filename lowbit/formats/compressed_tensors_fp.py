"""compressed-tensors float layouts (llm-compressor checkpoints; vLLM reads them).

config.json's ``quantization_config`` has ``"quant_method": "compressed-tensors"`` and a
``format``; per quantized Linear ``<m>`` the tensors are:

* ``nvfp4-pack-quantized``: ``<m>.weight_packed`` U8 ``[out, in/2]`` (even element in the low
  nibble), ``<m>.weight_scale`` F8_E4M3 ``[out, in/16]``, ``<m>.weight_global_scale`` F32
  ``[1]`` — a **divisor**: value = ``e2m1 * (weight_scale / weight_global_scale)``. lowbit:
  ``nvfp4`` with ``recipe="compressed_tensors"``, ``aux["global_scale"]`` = the divisor.
* ``mxfp4-pack-quantized``: ``<m>.weight_packed`` U8 ``[out, in/2]`` + ``<m>.weight_scale`` U8
  (E8M0, bias 127) ``[out, in/32]``, no global. lowbit: ``mxfp4`` (``scale_rounding="even"``,
  compressed-tensors' rule; decoding does not depend on it).
* ``mxfp6-pack-quantized``: ``<m>.weight_packed`` U8 ``[out, 3*in/4]`` (four E2M3 codes in three
  bytes, LSB first) + ``<m>.weight_scale`` U8 ``[out, in/32]``. lowbit: ``mxfp6_e2m3``.
* ``mxfp8-quantized``: ``<m>.weight`` F8_E4M3 ``[out, in]`` + ``<m>.weight_scale`` U8 ``[out, in/32]``.
  lowbit: ``mxfp8_e4m3`` (``mxfp8_e5m2`` for F8_E5M2 weights).
* ``float-quantized`` (FP8): ``<m>.weight`` F8_E4M3 (or F8_E5M2) ``[out, in]`` + ``<m>.weight_scale``:
  ``[ceil(out/R), ceil(in/C)]`` for ``strategy: block`` with ``block_structure: [R, C]`` (the
  usual 128×128), ``[out, 1]`` for ``channel``, ``[1]`` for ``tensor``; value = ``fp8 * scale``.
  lowbit: ``fp8_e4m3`` / ``fp8_e5m2`` with ``scale="block:RxC" | "channel" | "tensor"``.
  Scales stored as BF16/F16 are widened to float32 exactly; writing back uses the dtype
  recorded in ``info`` (or ``scale_dtype=``) and refuses scales that dtype cannot hold.

lowbit's block bytes are the scale byte followed by the packed codes of each block, so
conversion interleaves or splits bytes; nothing is re-quantized. ``input_global_scale``,
biases and unquantized tensors pass through as arrays; a ModelOpt ``<m>.input_scale`` next to an
NVFP4 ``<m>.weight`` is written as ``<m>.input_global_scale``, its reciprocal (exact or refused).

>>> import numpy as np, lowbit
>>> from lowbit.formats.compressed_tensors_fp import from_compressed_tensors, to_compressed_tensors
>>> w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
>>> tensors = {"l.weight": lowbit.encode(w, "mxfp4", scale_rounding="even"),
...            "m.weight": lowbit.encode(w, "fp8_e4m3", scale="block:128x128")}
>>> st, cfg = to_compressed_tensors(tensors)
>>> sorted(st), cfg["format"]
(['l.weight_packed', 'l.weight_scale', 'm.weight', 'm.weight_scale'], 'mixed-precision')
>>> back = from_compressed_tensors(st, cfg)
>>> all(back[n].data.tobytes() == tensors[n].data.tobytes() for n in tensors)
True
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import numpy as np

from ..codec import QTensor, get_codec
from ..errors import FormatError, LowbitError
from .layouts import _ml_dtypes, as_numpy, join_blocks, split_blocks, u8
from .modelopt import convert_nvfp4_recipe, reciprocal_scale

__all__ = ["from_compressed_tensors", "to_compressed_tensors", "FORMATS"]

FROM, TO = "from_compressed_tensors", "to_compressed_tensors"
FORMATS = ("nvfp4-pack-quantized", "mxfp4-pack-quantized", "mxfp6-pack-quantized", "mxfp8-quantized",
           "float-quantized")
_FP8 = {"float8_e4m3fn": "fp8_e4m3", "float8_e5m2": "fp8_e5m2"}


def _block_structures(config: Mapping[str, Any] | None) -> list[tuple[int, int]]:
    """Every ``block_structure`` of the config's weight schemes (for FP8 block scales)."""
    out = []
    qc = (config or {}).get("quantization_config", config or {})
    for grp in (qc.get("config_groups") or {}).values():
        w = (grp or {}).get("weights") or {}
        bs = w.get("block_structure")
        if w.get("strategy") == "block" and bs:
            if isinstance(bs, str):  # old configs: "128x128"
                bs = [int(v) for v in re.split(r"[x,]", bs)]
            out.append((int(bs[0]), int(bs[1])))
    return out


def _fp8_scale_mode(name: str, w: np.ndarray, s: np.ndarray, blocks: list[tuple[int, int]]) -> str:
    """The lowbit scale mode of an FP8 weight from its scale's shape."""
    if s.size == 1 and s.ndim <= 1:
        return "tensor"
    if s.shape in (w.shape[:-1] + (1,), w.shape[:-1]):
        return "channel"
    if w.ndim == 2 and s.ndim == 2:
        M, K = w.shape
        for R, C in blocks + [(128, 128)]:
            if s.shape == (-(-M // R), -(-K // C)):
                return f"block:{R}x{C}"
    raise LowbitError(f"compressed-tensors: {name!r}: scale shape {s.shape} fits no tensor/channel/block strategy "
                      f"for weight {w.shape} (block structures tried: {blocks + [(128, 128)]})")


def from_compressed_tensors(tensors: Mapping[str, Any], config: Mapping[str, Any] | None = None, *,
                            info: dict[str, Any] | None = None) -> dict[str, Any]:
    """compressed-tensors tensors (+ ``quantization_config``, optional) → ``{name: QTensor | array}``.

    ``<w>_packed`` + ``<w>_scale`` (+ ``<w>_global_scale``) → QTensor ``<w>`` (nvfp4 or mxfp4 by
    the scale's group size); a float8 ``<w>`` + ``<w>_scale`` → QTensor ``<w>`` (fp8_e4m3/e5m2).
    ``info``, if given, receives what the QTensors do not hold (scale dtypes and shapes), for
    :func:`to_compressed_tensors` to write the same tensors back."""
    qc = (config or {}).get("quantization_config", config or {})
    if qc and str(qc.get("quant_method", "compressed-tensors")) not in ("compressed-tensors", "compressed_tensors"):
        raise LowbitError(f"compressed-tensors: quant_method {qc.get('quant_method')!r}: expected 'compressed-tensors'")
    blocks = _block_structures(config)
    out: dict[str, Any] = {}
    used: set[str] = set()
    for name, t in tensors.items():
        a = as_numpy(t)
        if name.endswith("_packed"):
            base = name[: -len("_packed")]
            if a.dtype == np.int32:  # pack-quantized integers (W4A16, W8A16, ...)
                out[base] = _int_from(tensors, base, qc)
                if info is not None:
                    info[base] = {"format": "pack-quantized"}
                used |= {name, base + "_scale", base + "_shape", base + "_zero_point", base + "_g_idx"}
                continue
            if a.dtype != np.uint8:
                raise LowbitError(f"compressed-tensors: {name!r}: {a.dtype} packed weights: expected uint8 (FP4/FP6) "
                                  f"or int32 (pack-quantized integers)")
            if base + "_zero_point" in tensors:
                raise LowbitError(f"compressed-tensors: {base!r}: asymmetric FP4 (weight_zero_point) has no lowbit codec")
            if base + "_scale" not in tensors:
                raise FormatError(f"compressed-tensors: {name!r} without {base + '_scale'!r}")
            s = as_numpy(tensors[base + "_scale"])
            K = a.shape[-1] * 2
            lead = a.shape[:-1]
            if s.shape == lead + (K // 16,) and K % 16 == 0 and base + "_global_scale" in tensors:
                g = as_numpy(tensors[base + "_global_scale"])
                if g.size != 1 or g.dtype != np.float32:
                    raise LowbitError(f"compressed-tensors: {base + '_global_scale'!r}: expected one float32, got "
                                      f"{g.dtype} {g.shape}")
                sb = u8(s)
                if (sb & 0x80).any():  # UE4M3 = E4M3 with the sign bit clear
                    raise LowbitError(f"compressed-tensors: {base + '_scale'!r}: negative E4M3 block scales have no UE4M3 code")
                q = QTensor(join_blocks(sb, a, 8), {"global_scale": np.array(g.reshape(()), np.float32)}, lead + (K,),
                            get_codec("nvfp4", recipe="compressed_tensors"))
                if info is not None:
                    info[base] = {"format": "nvfp4-pack-quantized", "global_shape": list(g.shape)}
                used |= {base + "_global_scale"}
            elif s.shape == lead + (K // 32,) and K % 32 == 0:
                if base + "_global_scale" in tensors:
                    raise LowbitError(f"compressed-tensors: {base!r}: group-32 FP4 with a global scale is not MXFP4")
                q = QTensor(join_blocks(u8(s), a, 16), {}, lead + (K,), get_codec("mxfp4", scale_rounding="even"))
                if info is not None:
                    info[base] = {"format": "mxfp4-pack-quantized", "scale_dtype": s.dtype.name}
            elif s.shape[:-1] == lead and s.shape[-1] * 24 == a.shape[-1] and base + "_global_scale" not in tensors:
                # MXFP6 E2M3: 32 six-bit codes in 24 bytes per group, as lowbit packs them
                q = QTensor(join_blocks(u8(s), a, 24), {}, lead + (s.shape[-1] * 32,),
                            get_codec("mxfp6_e2m3", scale_rounding="even"))
                if info is not None:
                    info[base] = {"format": "mxfp6-pack-quantized", "scale_dtype": s.dtype.name}
            else:
                raise LowbitError(f"compressed-tensors: {base!r}: scale shape {s.shape} for packed weight {a.shape} is "
                                  f"neither NVFP4 (groups of 16 + global scale), MXFP4 nor MXFP6 (groups of 32)")
            out[base] = q
            used |= {name, base + "_scale"}
        elif a.dtype.name in _FP8 and name + "_scale" in tensors:
            if name + "_zero_point" in tensors:
                raise LowbitError(f"compressed-tensors: {name!r}: asymmetric FP8 (zero point) has no lowbit codec")
            s = as_numpy(tensors[name + "_scale"])
            if s.dtype.name in ("uint8", "float8_e8m0fnu") and s.shape == a.shape[:-1] + (a.shape[-1] // 32,) \
                    and a.shape[-1] % 32 == 0:
                # mxfp8-quantized: FP8 elements with E8M0 scales per 32
                cid = {"fp8_e4m3": "mxfp8_e4m3", "fp8_e5m2": "mxfp8_e5m2"}[_FP8[a.dtype.name]]
                out[name] = QTensor(join_blocks(u8(s), np.ascontiguousarray(a).view(np.uint8), 32), {}, a.shape,
                                    get_codec(cid, scale_rounding="even"))
                if info is not None:
                    info[name] = {"format": "mxfp8-quantized", "scale_dtype": s.dtype.name}
                used |= {name, name + "_scale"}
                continue
            if s.dtype.name not in ("float32", "bfloat16", "float16"):
                raise LowbitError(f"compressed-tensors: {name + '_scale'!r}: expected float scales, got {s.dtype}")
            mode = _fp8_scale_mode(name, a, s, blocks)
            codec = get_codec(_FP8[a.dtype.name], scale=mode)
            aux_shape = codec._aux_spec(a.shape)["scale"][0]
            s32 = s.astype(np.float32).reshape(aux_shape)  # bf16/f16 -> f32 is exact
            out[name] = QTensor(np.ascontiguousarray(a).view(np.uint8), {"scale": s32}, a.shape, codec)
            if info is not None:
                info[name] = {"format": "float-quantized", "scale_dtype": s.dtype.name, "scale_shape": list(s.shape)}
            used |= {name, name + "_scale"}
    for name, t in tensors.items():
        if name not in used:
            out[name] = as_numpy(t)
    return out


def _int_groups(qc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [g["weights"] for g in (qc.get("config_groups") or {}).values()
            if isinstance(g, Mapping) and isinstance(g.get("weights"), Mapping) and g["weights"].get("type") == "int"]


def _int_from(tensors: Mapping[str, Any], base: str, qc: Mapping[str, Any]) -> QTensor:
    """A pack-quantized integer weight ``<base>_packed`` (+ scale, shape, zero point, g_idx) -> ``int``
    QTensor; the bit width from the config's integer group (or, without a config, the only width
    the packed row length allows)."""
    from .compressed_tensors_int import from_compressed_tensors as int_from

    for k in ("_scale", "_shape"):
        if base + k not in tensors:
            raise FormatError(f"compressed-tensors: {base + '_packed'!r} without {base + k!r}")
    packed, shape = as_numpy(tensors[base + "_packed"]), as_numpy(tensors[base + "_shape"]).reshape(-1)
    N, K = (int(v) for v in shape)
    widths = sorted({int(w["num_bits"]) for w in _int_groups(qc)})
    if len(widths) != 1:
        widths = [b for b in range(1, 9) if -(-K * b // 32) == packed.shape[-1]]
    if len(widths) != 1:
        raise LowbitError(f"compressed-tensors: {base + '_packed'!r}: cannot tell the bit width (candidates {widths}); "
                          f"give the quantization_config")
    sc = as_numpy(tensors[base + "_scale"])
    ng = sc.shape[-1]
    strategies = {w.get("strategy") for w in _int_groups(qc)}
    channel = ng == 1 and ("group" not in strategies or K == ng)
    kw = {"weight_zero_point": tensors.get(base + "_zero_point"), "weight_g_idx": tensors.get(base + "_g_idx")}
    return int_from(packed, sc, shape, **kw, num_bits=widths[0], group_size=None if channel else -(-K // ng),
                    strategy="channel" if channel else "group")


def _scheme(fmt: str, q: QTensor) -> dict[str, Any]:
    """The ``weights`` QuantizationArgs of a config group for one QTensor."""
    if fmt == "pack-quantized":
        c = q.codec
        args = {"num_bits": c.bits, "type": "int", "symmetric": bool(c.symmetric), "dynamic": False,
                "observer": "minmax", "strategy": "channel" if c.group_size is None else "group",
                "group_size": c.group_size}
        if c.act_order:
            args["actorder"] = "group"
        return args
    if fmt == "nvfp4-pack-quantized":
        return {"num_bits": 4, "type": "float", "symmetric": True, "strategy": "tensor_group", "group_size": 16,
                "dynamic": False, "observer": "minmax", "scale_dtype": "torch.float8_e4m3fn"}
    if fmt == "mxfp4-pack-quantized":
        return {"num_bits": 4, "type": "float", "symmetric": True, "strategy": "group", "group_size": 32,
                "dynamic": False, "observer": "minmax", "scale_dtype": "torch.uint8"}
    if fmt in ("mxfp6-pack-quantized", "mxfp8-quantized"):
        return {"num_bits": 6 if fmt.startswith("mxfp6") else 8, "type": "float", "symmetric": True,
                "strategy": "group", "group_size": 32, "dynamic": False, "observer": "minmax",
                "scale_dtype": "torch.uint8"}
    mode = q.codec.scale
    args: dict[str, Any] = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False, "observer": "minmax"}
    if mode.startswith("block:"):
        R, C = (int(v) for v in mode[len("block:"):].split("x"))
        args.update(strategy="block", block_structure=[R, C])
    else:
        args.update(strategy=mode)
    return args


def to_compressed_tensors(tensors: Mapping[str, Any], *, info: Mapping[str, Any] | None = None,
                          scale_dtype: str | None = None, allow_global_rounding: bool = False,
                          ignore: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{name: QTensor | array}`` → (compressed-tensors tensors, ``quantization_config``).

    nvfp4 (either recipe: a torchao-recipe global is reciprocated only when exact, see
    :func:`lowbit.formats.modelopt.convert_nvfp4_recipe`), mxfp4, and fp8_e4m3/fp8_e5m2 with
    tensor/channel/block scales are written; any other codec raises LowbitError. ``scale_dtype``
    (``"bfloat16"``, ``"float16"``) overrides the FP8 scale dtype recorded in ``info``."""
    ml_dtypes = _ml_dtypes()

    info = info or {}
    out: dict[str, Any] = {}
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    nv_modules = {n.rsplit(".", 1)[0] for n, t in tensors.items()
                  if isinstance(t, QTensor) and t.codec_id == "nvfp4" and n.endswith(".weight")}
    for name, t in tensors.items():
        if not isinstance(t, QTensor):
            if name.endswith(".input_scale") and name[: -len(".input_scale")] in nv_modules and np.size(as_numpy(t)) == 1:
                # ModelOpt's NVFP4 activation multiplier -> compressed-tensors' divisor, shape [1]
                base = name[: -len(".input_scale")]
                out[base + ".input_global_scale"] = reciprocal_scale(
                    t, f"compressed-tensors: {name!r}", allow_global_rounding=allow_global_rounding).reshape(1)
            else:
                out[name] = as_numpy(t)
            continue
        q = t.numpy()
        extra = info.get(name, {})
        if q.codec_id == "nvfp4":
            fmt = "nvfp4-pack-quantized"
            q = convert_nvfp4_recipe(q, "compressed_tensors", allow_global_rounding=allow_global_rounding)
            scales, codes = split_blocks(q.data, 1, 8)
            out[name + "_packed"] = codes
            out[name + "_scale"] = scales[..., 0].view(ml_dtypes.float8_e4m3fn)
            gshape = tuple(extra.get("global_shape", [1]))
            out[name + "_global_scale"] = np.asarray(q.aux["global_scale"], np.float32).reshape(gshape)
        elif q.codec_id == "mxfp4":
            fmt = "mxfp4-pack-quantized"
            scales, codes = split_blocks(q.data, 1, 16)
            out[name + "_packed"] = codes
            sdt = extra.get("scale_dtype", "uint8")
            out[name + "_scale"] = scales[..., 0].view(ml_dtypes.float8_e8m0fnu if sdt == "float8_e8m0fnu" else np.uint8)
        elif q.codec_id in ("mxfp6_e2m3", "mxfp8_e4m3", "mxfp8_e5m2"):
            six = q.codec_id == "mxfp6_e2m3"
            fmt = "mxfp6-pack-quantized" if six else "mxfp8-quantized"
            scales, codes = split_blocks(q.data, 1, 24 if six else 32)
            if six:
                out[name + "_packed"] = codes
            else:
                fp8 = ml_dtypes.float8_e4m3fn if q.codec_id == "mxfp8_e4m3" else ml_dtypes.float8_e5m2
                out[name] = codes.view(fp8)
            sdt = extra.get("scale_dtype", "uint8")
            out[name + "_scale"] = scales[..., 0].view(ml_dtypes.float8_e8m0fnu if sdt == "float8_e8m0fnu" else np.uint8)
        elif q.codec_id == "int" and getattr(q.codec, "axis", -1) == -1 and len(q.shape) == 2:
            from .compressed_tensors_int import to_compressed_tensors as int_to

            fmt = "pack-quantized"
            for k, v in int_to(q).items():
                if k == "weight_scale" and q.codec.scale_dtype == "bfloat16":
                    v = v.view(ml_dtypes.bfloat16)
                out[name + k[len("weight"):]] = v
        elif q.codec_id in ("fp8_e4m3", "fp8_e5m2") and q.codec.scale is not None:
            fmt = "float-quantized"
            mode = q.codec.scale
            if mode.startswith("block:") and len(q.shape) != 2:
                raise LowbitError(f"compressed-tensors: {name!r}: block scales need a 2-D weight, got shape {q.shape}")
            fp8 = ml_dtypes.float8_e4m3fn if q.codec_id == "fp8_e4m3" else ml_dtypes.float8_e5m2
            out[name] = q.data.view(fp8).reshape(q.shape)
            s = np.asarray(q.aux["scale"], np.float32)
            sdt = scale_dtype or extra.get("scale_dtype", "float32")
            sd = np.dtype(getattr(ml_dtypes, sdt) if sdt == "bfloat16" else sdt)
            sc = s.astype(sd)
            if not np.array_equal(sc.astype(np.float32), s):
                raise LowbitError(f"compressed-tensors: {name!r}: its float32 scales are not all exact in {sdt}; "
                                  f"write them as float32 (scale_dtype='float32')")
            default_shape = {"tensor": (1,), "channel": q.shape[:-1] + (1,)}.get(mode, s.shape)
            shape = tuple(extra.get("scale_shape", default_shape))
            if math.prod(shape) != s.size:
                shape = default_shape
            out[name + "_scale"] = sc.reshape(shape)
        else:
            raise LowbitError(f"compressed-tensors: tensor {name!r}: codec {q.codec_id} "
                              f"({q.codec.get_config()}) has no compressed-tensors float layout and is not a 2-D "
                              f"int codec for pack-quantized (expected int with groups along the rows, nvfp4, mxfp4, mxfp6_e2m3, mxfp8_e4m3/e5m2, or fp8_e4m3/fp8_e5m2 with a tensor, channel or "
                              f"block scale)")
        args = _scheme(fmt, q)
        key = (fmt, repr(sorted(args.items())))
        grp = groups.setdefault(key, {"targets": [], "weights": args, "input_activations": None,
                                      "output_activations": None, "format": fmt})
        grp["targets"].append(name.rsplit(".", 1)[0] if name.endswith("weight") and "." in name else name)
    formats = sorted({k[0] for k in groups})
    config = {
        "quant_method": "compressed-tensors",
        "format": formats[0] if len(formats) == 1 else "mixed-precision",
        "quantization_status": "compressed",
        "config_groups": {f"group_{i}": g for i, g in enumerate(groups.values())},
        "ignore": list(ignore or []),
        "kv_cache_scheme": None,
    }
    return out, config
