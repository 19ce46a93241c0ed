"""NVIDIA ModelOpt NVFP4 ("unified HF checkpoint", nvidia/* NVFP4 repos; TensorRT-LLM, vLLM, SGLang).

Per quantized Linear ``<m>``:

* ``<m>.weight`` U8 ``[out, in/2]``: E2M1 codes, the even element in the low nibble;
* ``<m>.weight_scale`` F8_E4M3 ``[out, in/16]``: one (non-negative) E4M3 scale per 16 elements;
* ``<m>.weight_scale_2`` F32 ``()``: the per-tensor scale, a **multiplier** (amax / (6 * 448));
* ``<m>.input_scale`` F32 ``()`` (activations; carried as a plain array).

Decoded value = ``e2m1 * (weight_scale * weight_scale_2)`` — lowbit's ``nvfp4`` codec with
``recipe="torchao"`` (same bytes per block: the scale byte, then the 8 code bytes) and
``aux["global_scale"] = weight_scale_2``. The sidecar ``hf_quant_config.json`` is the config::

    {"producer": {"name": "modelopt", ...}, "quantization": {"quant_algo": "NVFP4", "group_size": 16, ...}}

An ``nvfp4`` QTensor made with ``recipe="compressed_tensors"`` (global scale a *divisor*) is
written with ``weight_scale_2 = 1 / global_scale`` only when that decodes to exactly the same
values (e.g. power-of-two globals); otherwise :func:`to_modelopt` refuses, unless
``allow_global_rounding=True`` (then values may move by one float32 ulp). compressed-tensors'
activation divisor ``<m>.input_global_scale`` becomes ``<m>.input_scale`` (its reciprocal) under
the same rule.

>>> import numpy as np, lowbit
>>> from lowbit.formats.modelopt import from_modelopt, to_modelopt
>>> q = lowbit.encode(np.linspace(-3, 3, 32, dtype=np.float32).reshape(2, 16), "nvfp4")
>>> st, cfg = to_modelopt({"l.weight": q})
>>> sorted(st), st["l.weight_scale"].dtype.name, cfg["quantization"]["quant_algo"]
(['l.weight', 'l.weight_scale', 'l.weight_scale_2'], 'float8_e4m3fn', 'NVFP4')
>>> back = from_modelopt(st, cfg)["l.weight"]
>>> back.data.tobytes() == q.data.tobytes(), float(back.aux["global_scale"]) == float(q.aux["global_scale"])
(True, True)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

import lowbit
from ..codec import QTensor, get_codec
from ..errors import ConfigError, FormatError, LowbitError
from .layouts import _ml_dtypes, as_numpy, join_blocks, same_values, split_blocks, u8

__all__ = ["from_modelopt", "to_modelopt", "convert_nvfp4_recipe", "reciprocal_scale", "QUANT_ALGOS"]

FROM, TO = "from_modelopt", "to_modelopt"

#: quant_algo values whose weights are NVFP4 with weight_scale_2 as a multiplier (W4A8 only
#: changes how the global was chosen, not how it decodes; AWQ adds pre_quant_scale arrays)
QUANT_ALGOS = ("NVFP4", "NVFP4_AWQ", "W4A8_NVFP4_FP8")


def convert_nvfp4_recipe(q: QTensor, recipe: str, *, allow_global_rounding: bool = False) -> QTensor:
    """The same NVFP4 codes and block scales under the other global-scale convention
    (``"torchao"``: multiplier, ``"compressed_tensors"``: divisor): the global becomes its
    float32 reciprocal. Refused (LowbitError) when the result would not decode to bitwise the
    same values, unless ``allow_global_rounding``."""
    if q.codec_id != "nvfp4":
        raise ConfigError(f"convert_nvfp4_recipe: expected an nvfp4 QTensor, got {q.codec_id}")
    if q.codec.recipe == recipe:
        return q
    cfg = q.codec.get_config()
    cfg["recipe"] = recipe
    if cfg.get("scale_format", "ue4m3") != "ue4m3":
        raise LowbitError(f"nvfp4 scale_format={cfg['scale_format']!r}: only UE4M3 scales exist in checkpoint layouts")
    g = np.float32(as_numpy(q.aux["global_scale"]))
    with np.errstate(all="ignore"):
        r = np.float32(1.0) / g  # one correctly rounded float32 division
    out = QTensor(q.data, {"global_scale": np.array(r, dtype=np.float32)}, q.shape, get_codec(cfg))
    if not allow_global_rounding and not same_values(lowbit.decode(q.numpy()), lowbit.decode(out.numpy())):
        raise LowbitError(
            f"nvfp4: the global scale {float(g)!r} ({q.codec.recipe} convention) has no float32 reciprocal that "
            f"decodes to the same values under the {recipe} convention (the codes and block scales carry over, "
            f"but decoded values would move by 1 ulp); pass allow_global_rounding=True to accept that")
    return out


def reciprocal_scale(a: Any, what: str, *, allow_global_rounding: bool = False) -> np.ndarray:
    """The float32 reciprocal of a per-tensor activation scale (ModelOpt ``input_scale`` is a
    multiplier, compressed-tensors ``input_global_scale`` a divisor). Refused unless the
    reciprocal is exact (x * r == 1, i.e. powers of two) or ``allow_global_rounding``."""
    x = np.asarray(as_numpy(a), dtype=np.float32)
    with np.errstate(all="ignore"):
        r = (np.float32(1.0) / x).astype(np.float32)
        # the product of two float32 values is exact in float64
        exact = bool((x.astype(np.float64) * r.astype(np.float64) == 1.0).all())
    if not allow_global_rounding and not exact:
        raise LowbitError(f"{what}: the activation scale {x.reshape(-1)[:1].tolist()} has no exact float32 "
                          f"reciprocal (ModelOpt multiplies by it, compressed-tensors divides); pass "
                          f"allow_global_rounding=True to accept a 1-ulp change")
    return r


def _algo(config: Mapping[str, Any] | None) -> str | None:
    if not config:
        return None
    qc = config.get("quantization", config.get("quantization_config", config))
    if isinstance(qc, Mapping) and "quantization" in qc:
        qc = qc["quantization"]
    algo = qc.get("quant_algo") if isinstance(qc, Mapping) else None
    return None if algo is None else str(algo)


def from_modelopt(tensors: Mapping[str, Any], config: Mapping[str, Any] | None = None, *,
                  info: dict[str, Any] | None = None) -> dict[str, Any]:
    """ModelOpt NVFP4 tensors (+ hf_quant_config.json, optional) → ``{name: QTensor | array}``:
    every ``<w>`` with ``<w>_scale`` and ``<w>_scale_2`` becomes one nvfp4 QTensor ``<w>``
    (recipe torchao); everything else (input_scale, biases, unquantized layers) passes through."""
    algo = _algo(config)
    if algo is not None and algo.upper() not in QUANT_ALGOS:
        raise LowbitError(f"modelopt: quant_algo {algo!r}: lowbit reads {list(QUANT_ALGOS)} (NVFP4 weights)")
    codec = get_codec("nvfp4", recipe="torchao")
    out: dict[str, Any] = {}
    used: set[str] = set()
    for name in tensors:
        if not name.endswith("_scale_2"):
            continue
        base = name[: -len("_scale_2")]
        if base not in tensors or base + "_scale" not in tensors:
            raise FormatError(f"modelopt: {name!r} without {base!r} and {base + '_scale'!r}")
        w, s, g = as_numpy(tensors[base]), as_numpy(tensors[base + "_scale"]), as_numpy(tensors[name])
        if w.dtype != np.uint8 or s.dtype.itemsize != 1 or w.ndim < 1:
            raise FormatError(f"modelopt: {base!r}: expected U8 packed codes and 1-byte (F8_E4M3) scales, "
                              f"got {w.dtype} and {s.dtype}")
        K = w.shape[-1] * 2
        if s.shape != w.shape[:-1] + (K // 16,) or K % 16:
            raise LowbitError(f"modelopt: {base!r}: scales {s.shape} do not run along the last axis of the packed "
                              f"weight {w.shape} in blocks of 16 (the transposed MoE-expert export "
                              f"[E, in/2, out] is not supported)")
        if g.size != 1 or g.dtype != np.float32:
            raise LowbitError(f"modelopt: {name!r}: expected one float32 global scale, got {g.dtype} {g.shape} "
                              f"(per-expert globals cannot be carried by one nvfp4 QTensor)")
        sb = u8(s)
        if (sb & 0x80).any():  # UE4M3 is E4M3 with the sign bit clear
            raise LowbitError(f"modelopt: {base + '_scale'!r}: negative E4M3 block scales (sign bit set) have no "
                              f"UE4M3 code")
        data = join_blocks(sb, w, 8)
        out[base] = QTensor(data, {"global_scale": np.array(g.reshape(()), dtype=np.float32)}, w.shape[:-1] + (K,), codec)
        if info is not None:
            info[base] = {"global_shape": list(g.shape)}
        used |= {base, base + "_scale", name}
    for name, t in tensors.items():
        if name not in used:
            out[name] = as_numpy(t)
    return out


def to_modelopt(tensors: Mapping[str, Any], *, info: Mapping[str, Any] | None = None,
                allow_global_rounding: bool = False, exclude_modules: list[str] | None = None
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{name: QTensor | array}`` → (ModelOpt tensors, hf_quant_config.json dict). nvfp4
    QTensors are written as ``<name>``, ``<name>_scale`` (F8_E4M3), ``<name>_scale_2`` (F32);
    other QTensors are refused (ModelOpt NVFP4 has no layout for them); arrays pass through."""
    ml_dtypes = _ml_dtypes()

    out: dict[str, Any] = {}
    for name, t in tensors.items():
        if not isinstance(t, QTensor):
            if name.endswith(".input_global_scale") and np.size(as_numpy(t)) == 1:
                # compressed-tensors' activation divisor -> ModelOpt's multiplier, a scalar
                base = name[: -len(".input_global_scale")]
                out[base + ".input_scale"] = reciprocal_scale(
                    t, f"modelopt: {name!r}", allow_global_rounding=allow_global_rounding).reshape(())
            else:
                out[name] = as_numpy(t)
            continue
        if t.codec_id != "nvfp4":
            raise LowbitError(f"modelopt: tensor {name!r}: codec {t.codec_id} has no ModelOpt NVFP4 layout "
                              f"(expected nvfp4)")
        q = convert_nvfp4_recipe(t.numpy(), "torchao", allow_global_rounding=allow_global_rounding)
        scales, codes = split_blocks(q.data, 1, 8)
        out[name] = codes
        out[name + "_scale"] = scales[..., 0].view(ml_dtypes.float8_e4m3fn)
        gshape = tuple((info or {}).get(name, {}).get("global_shape", ()))
        out[name + "_scale_2"] = np.asarray(q.aux["global_scale"], dtype=np.float32).reshape(gshape)
    config = {"producer": {"name": "modelopt", "version": f"lowbit-{lowbit.__version__}"},
              "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16,
                               "exclude_modules": list(exclude_modules or [])}}
    return out, config
