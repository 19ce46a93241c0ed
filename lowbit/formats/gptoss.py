"""gpt-oss MXFP4 (openai/gpt-oss-20b/120b; transformers ``integrations/mxfp4.py``), and its
exact conversion to and from GGUF's MXFP4 blocks (ggml type 39).

config.json: ``"quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [...]}``.
Only the MoE experts are quantized: per weight ``<w>`` (e.g.
``model.layers.0.mlp.experts.gate_up_proj``)

* ``<w>_blocks`` U8 ``[..., G, 16]``: 32 E2M1 codes per group, element 2j in the **low** nibble
  of byte j and 2j+1 in the high nibble (OCP order);
* ``<w>_scales`` U8 ``[..., G]``: E8M0 exponents, value ``2**(byte - 127)`` (bias 127).

That is lowbit's ``mxfp4`` block (scale byte, then the 16 code bytes) with the groups laid end
to end: QTensor ``<w>`` of shape ``[..., G * 32]``. The scale rule gpt-oss was produced with is
not recorded; decoding does not depend on it (``scale_rounding=`` picks the config).

GGUF's MXFP4 block has the same exponent byte and the same 4-bit codes (its value table
``kvalues = 2 * E2M1`` is paired with ``2**(e - 128)``, the same products), but byte j holds
element j (low nibble) and element j + 16 (high nibble). :func:`to_ggml_mxfp4` /
:func:`from_ggml_mxfp4` move the nibbles; they refuse the NaN scale 0xFF, which ggml decodes as
the finite ``2**127``. The one value-level difference left: code 8 (-0) decodes to +0 in ggml.

>>> import numpy as np, lowbit
>>> from lowbit.formats.gptoss import from_gptoss, to_gptoss, to_ggml_mxfp4, from_ggml_mxfp4
>>> q = lowbit.encode(np.arange(64, dtype=np.float32).reshape(1, 64) / 8, "mxfp4")
>>> st, cfg = to_gptoss({"experts.down_proj": q})
>>> st["experts.down_proj_blocks"].shape, st["experts.down_proj_scales"].shape, cfg["quant_method"]
((1, 2, 16), (1, 2), 'mxfp4')
>>> from_gptoss(st, cfg)["experts.down_proj"].data.tobytes() == q.data.tobytes()
True
>>> g = to_ggml_mxfp4(q.data)                      # GGUF MXFP4 bytes, same size
>>> from_ggml_mxfp4(g, q.shape).data.tobytes() == q.data.tobytes()
True
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..codec import QTensor, codec_class, get_codec
from ..errors import FormatError, LowbitError, UnknownCodecError
from .layouts import as_numpy, join_blocks, split_blocks

__all__ = ["from_gptoss", "to_gptoss", "to_ggml_mxfp4", "from_ggml_mxfp4", "to_gguf_qtensor", "from_gguf_qtensor"]

FROM, TO = "from_gptoss", "to_gptoss"


def from_gptoss(tensors: Mapping[str, Any], config: Mapping[str, Any] | None = None, *,
                scale_rounding: str = "rceil", info: dict[str, Any] | None = None) -> dict[str, Any]:
    """gpt-oss tensors → ``{name: QTensor | array}``: each ``<w>_blocks`` + ``<w>_scales`` pair
    becomes the mxfp4 QTensor ``<w>``; everything else passes through."""
    qc = (config or {}).get("quantization_config", config or {})
    if qc and qc.get("quant_method", "mxfp4") != "mxfp4":
        raise LowbitError(f"gpt-oss: quant_method {qc.get('quant_method')!r}: expected 'mxfp4'")
    codec = get_codec("mxfp4", scale_rounding=scale_rounding)
    out: dict[str, Any] = {}
    used: set[str] = set()
    for name in tensors:
        if not name.endswith("_blocks"):
            continue
        base = name[: -len("_blocks")]
        if base + "_scales" not in tensors:
            raise FormatError(f"gpt-oss: {name!r} without {base + '_scales'!r}")
        b, s = as_numpy(tensors[name]), as_numpy(tensors[base + "_scales"])
        if b.dtype != np.uint8 or s.dtype != np.uint8 or b.ndim < 2 or b.shape[-1] != 16 or s.shape != b.shape[:-1]:
            raise FormatError(f"gpt-oss: {base!r}: expected U8 blocks [..., G, 16] and U8 scales [..., G], got "
                              f"{b.dtype} {b.shape} and {s.dtype} {s.shape}")
        lead = b.shape[:-2]
        G = b.shape[-2]
        out[base] = QTensor(join_blocks(s, b.reshape(lead + (G * 16,)), 16), {}, lead + (G * 32,), codec)
        used |= {name, base + "_scales"}
    for name, t in tensors.items():
        if name not in used:
            out[name] = as_numpy(t)
    if info is not None:
        info["modules_to_not_convert"] = list(qc.get("modules_to_not_convert", [])) if qc else []
    return out


def to_gptoss(tensors: Mapping[str, Any], *, info: Mapping[str, Any] | None = None,
              modules_to_not_convert: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{name: QTensor | array}`` → (gpt-oss tensors, ``quantization_config``): mxfp4 QTensors
    become ``<name>_blocks`` / ``<name>_scales``; other codecs are refused; arrays pass through."""
    out: dict[str, Any] = {}
    for name, t in tensors.items():
        if not isinstance(t, QTensor):
            out[name] = as_numpy(t)
            continue
        if t.codec_id != "mxfp4":
            raise LowbitError(f"gpt-oss: tensor {name!r}: codec {t.codec_id} has no gpt-oss layout (expected mxfp4)")
        q = t.numpy()
        scales, codes = split_blocks(q.data, 1, 16)
        lead = q.shape[:-1]
        G = q.shape[-1] // 32
        out[name + "_blocks"] = codes.reshape(lead + (G, 16))
        out[name + "_scales"] = scales.reshape(lead + (G,))
    skip = modules_to_not_convert if modules_to_not_convert is not None else (info or {}).get("modules_to_not_convert", [])
    return out, {"quant_method": "mxfp4", "modules_to_not_convert": list(skip)}


# ---- GGUF MXFP4 ------------------------------------------------------------------------------------

def _check_no_nan_scale(scales: np.ndarray, direction: str) -> None:
    if (scales == 0xFF).any():
        raise LowbitError(f"MXFP4 {direction}: a block has the E8M0 scale byte 0xFF, NaN in OCP MX but the finite "
                          f"2**127 in GGUF; its values cannot be carried exactly")


def to_ggml_mxfp4(data: Any) -> np.ndarray:
    """OCP-order MXFP4 block bytes (lowbit ``mxfp4`` data, ``(..., nb * 17)``) → GGUF MXFP4
    block bytes of the same shape: the exponent byte is kept, the nibbles are reordered."""
    scales, codes = split_blocks(as_numpy(data), 1, 16)
    _check_no_nan_scale(scales, "to GGUF")
    lead = codes.shape[:-1]
    b = codes.reshape(lead + (-1, 16))
    # unpack OCP pairs: byte j -> element 2j (low nibble), element 2j+1 (high nibble)
    el = np.empty(b.shape[:-1] + (32,), dtype=np.uint8)
    el[..., 0::2] = b & 0x0F
    el[..., 1::2] = b >> 4
    # repack GGUF halves: byte j = element j (low nibble) | element j+16 (high nibble)
    g = el[..., :16] | (el[..., 16:] << 4)
    return join_blocks(scales, g.reshape(lead + (-1,)), 16)


def from_ggml_mxfp4(raw: Any, shape: tuple[int, ...], *, scale_rounding: str = "floor") -> QTensor:
    """GGUF MXFP4 block bytes (``bytes`` or uint8 array) of a tensor of ``shape`` → an mxfp4
    QTensor (``scale_rounding="floor"``: ggml's encoder rule)."""
    shape = tuple(int(d) for d in shape)
    if not shape or shape[-1] % 32:
        raise FormatError(f"GGUF MXFP4: shape {shape}: the last dimension must be a multiple of 32")
    a = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray, memoryview)) else as_numpy(raw)
    want = shape[:-1] + (shape[-1] // 32 * 17,)
    if a.dtype != np.uint8 or a.size != int(np.prod(want)):
        raise FormatError(f"GGUF MXFP4: expected {int(np.prod(want))} bytes for shape {shape}, got {a.size} ({a.dtype})")
    scales, codes = split_blocks(a.reshape(want), 1, 16)
    _check_no_nan_scale(scales, "from GGUF")
    g = codes.reshape(want[:-1] + (-1, 16))
    # unpack GGUF halves: element j = low nibble of byte j, element j+16 = its high nibble
    el = np.concatenate([g & 0x0F, g >> 4], axis=-1)
    # repack OCP pairs: byte j = element 2j | element 2j+1 << 4
    b = el[..., 0::2] | (el[..., 1::2] << 4)
    data = join_blocks(scales, b.reshape(want[:-1] + (-1,)), 16)
    return QTensor(data, {}, shape, get_codec("mxfp4", scale_rounding=scale_rounding))


def to_gguf_qtensor(q: QTensor) -> QTensor:
    """An mxfp4 QTensor as a QTensor of lowbit's GGUF codec ``mxfp4_ggml`` (same shape, same
    codes), for writing with the GGUF container. Needs that codec to be registered."""
    try:
        codec_class("mxfp4_ggml")
    except UnknownCodecError:
        raise LowbitError("to_gguf_qtensor: the codec 'mxfp4_ggml' (GGUF MXFP4) is not registered in this build; "
                          "use to_ggml_mxfp4() for the raw GGUF block bytes") from None
    if q.codec_id != "mxfp4":
        raise LowbitError(f"to_gguf_qtensor: expected an mxfp4 QTensor, got {q.codec_id}")
    return QTensor(to_ggml_mxfp4(q.numpy().data), {}, q.shape, get_codec("mxfp4_ggml"))


def from_gguf_qtensor(q: QTensor, *, scale_rounding: str = "floor") -> QTensor:
    """Inverse of :func:`to_gguf_qtensor`."""
    if q.codec_id != "mxfp4_ggml":
        raise LowbitError(f"from_gguf_qtensor: expected an mxfp4_ggml QTensor, got {q.codec_id}")
    return from_ggml_mxfp4(q.numpy().data, q.shape, scale_rounding=scale_rounding)
