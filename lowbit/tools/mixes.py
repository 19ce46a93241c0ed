"""llama-quantize-style type mixes (``Q4_K_M`` and friends) and llama.cpp imatrix files.

:func:`gguf_mix_plan` chooses a GGUF type per tensor the way llama.cpp's ``llama_tensor_get_type``
does for dense (non-MoE, non-Falcon) models: which tensors may be quantized at all, the mix's
default type, the bumps for output / tied embeddings, attention-V and FFN-down layers
(``use_more_bits``), and the fallback when a row length is not a multiple of the type's block
(Q4_K → Q5_0, Q6_K → Q8_0, …, F16 when nothing fits). Rules written from llama.cpp's
``src/llama-quant.cpp``; a test checks them against a real Q4_K_M file made by llama-quantize.

:func:`read_imatrix` reads llama.cpp importance matrices, both the legacy ``.dat`` layout and
the GGUF layout (``<tensor>.in_sum2`` / ``<tensor>.counts``), into per-column weights for
``importance=``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterable

import numpy as np

from lowbit.errors import ConfigError, FormatError

__all__ = ["MIXES", "FTYPE", "gguf_mix_plan", "quantizable", "read_imatrix", "write_imatrix_dat"]

# mix name -> default type (llama.cpp's LLAMA_FTYPE_MOSTLY_*)
MIXES = {
    "q4_0": "q4_0", "q4_1": "q4_1", "q5_0": "q5_0", "q5_1": "q5_1", "q8_0": "q8_0",
    "q2_k": "q2_k", "q3_k_s": "q3_k", "q3_k_m": "q3_k", "q3_k_l": "q3_k", "q4_k_s": "q4_k", "q4_k_m": "q4_k",
    "q5_k_s": "q5_k", "q5_k_m": "q5_k", "q6_k": "q6_k",
}
# general.file_type values llama-quantize writes
FTYPE = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12,
         "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18}
_BLOCK = {"q4_0": 32, "q4_1": 32, "q5_0": 32, "q5_1": 32, "q8_0": 32, "q2_k": 256, "q3_k": 256, "q4_k": 256,
          "q5_k": 256, "q6_k": 256}
_FALLBACK = {"q2_k": "q4_0", "q3_k": "q4_0", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}
_NOT_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj", "ssm_conv1d",
                  "shortconv.conv.weight", "attn_rel_b.weight", "position_embd", "token_types")


def quantizable(name: str, shape: tuple[int, ...]) -> bool:
    """llama.cpp's ``tensor_allows_quantization`` for the usual tensors: 2-D+ weights, no norms,
    no router gates and the other small special cases."""
    return len(shape) >= 2 and name.endswith("weight") and not any(s in name for s in _NOT_QUANTIZED)


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def gguf_mix_plan(tensors: Iterable[tuple[str, tuple[int, ...]]], mix: str) -> dict[str, str | None]:
    """``{name: ggml type name, or None to keep it as it is}`` for ``tensors`` (name, numpy shape)
    in file order, under llama-quantize's ``mix`` (``"q4_k_m"`` …)."""
    mix = mix.lower()
    if mix not in MIXES:
        raise ConfigError(f"mix: expected one of {sorted(MIXES)}, got {mix!r}")
    items = list(tensors)
    names = [n for n, _ in items]
    tied = "output.weight" not in names
    n_wv = sum(_category(n) == "attn_v" for n in names)
    n_down = sum(_category(n) == "ffn_down" for n in names)
    i_wv = i_down = 0
    out: dict[str, str | None] = {}
    for name, shape in items:
        if not quantizable(name, shape):
            out[name] = None
            continue
        cat = _category(name)
        t = MIXES[mix]
        nx = shape[-1]
        if cat == "output" or (tied and cat == "token_embd"):
            t = "q8_0" if nx % _BLOCK[t] else ("q6_k" if t != "q8_0" else t)
        elif cat == "attn_v":
            if mix == "q2_k":
                t = "q3_k"  # (q4_k when n_gqa >= 4; the GQA ratio is not known from shapes alone)
            elif mix == "q3_k_m":
                t = "q5_k" if i_wv < 2 else "q4_k"
            elif mix == "q3_k_l":
                t = "q5_k"
            elif mix in ("q4_k_m", "q5_k_m") and _use_more_bits(i_wv, n_wv):
                t = "q6_k"
            elif mix == "q4_k_s" and i_wv < 4:
                t = "q5_k"
            i_wv += 1
        elif cat == "ffn_down":
            i = i_down
            if mix == "q2_k":
                t = "q3_k"
            elif mix == "q3_k_m":
                t = "q5_k" if i < n_down // 16 else "q4_k"
            elif mix == "q3_k_l":
                t = "q5_k"
            elif mix in ("q4_k_m", "q5_k_m") and _use_more_bits(i, n_down):
                t = "q6_k"
            elif mix == "q4_k_s" and i < n_down // 8:
                t = "q5_k"
            i_down += 1
        elif cat == "attn_output":
            t = {"q2_k": "q3_k", "q3_k_m": "q4_k", "q3_k_l": "q5_k"}.get(mix, t)
        if nx % _BLOCK[t]:  # tensor_type_fallback
            t = _FALLBACK.get(t, t)
            if nx % _BLOCK[t]:
                t = "f16"
        out[name] = t
    return out


# ---- imatrix files ------------------------------------------------------------------------------

def read_imatrix(path: str | Path) -> dict[str, np.ndarray]:
    """Per-column importance weights ``{tensor name: float32 [ncols]}`` from a llama.cpp imatrix:
    the GGUF layout (``in_sum2 / counts``) or the legacy binary ``.dat`` (``values / ncall``)."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        from lowbit.formats import gguf

        out = {}
        with gguf.read(path) as g:
            sums = {t.name[: -len(".in_sum2")]: t for t in g.tensors if t.name.endswith(".in_sum2")}
            for name, t in sums.items():
                s = np.asarray(g.decode(t.name), dtype=np.float64)
                counts = np.asarray(g.decode(name + ".counts"), dtype=np.float64).reshape(-1)
                s = s.reshape(-1, s.shape[-1]) if s.ndim > 1 else s.reshape(1, -1)
                with np.errstate(divide="ignore", invalid="ignore"):
                    w = np.where(counts[:, None] > 0, s / counts[:, None], 0.0)
                out[name] = w[0].astype(np.float32) if w.shape[0] == 1 else w.astype(np.float32)
        return out
    return _read_dat(path)


def _read_dat(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(raw):
            raise FormatError(f"imatrix {path}: {what}: needs {n} bytes at offset {pos}, file has {len(raw) - pos}")
        b = raw[pos:pos + n]
        pos += n
        return b

    (n_entries,) = struct.unpack("<i", take(4, "entry count"))
    if n_entries < 0 or n_entries > len(raw) // 12:
        raise FormatError(f"imatrix {path}: entry count {n_entries} cannot fit in {len(raw)} bytes")
    out = {}
    for i in range(n_entries):
        (ln,) = struct.unpack("<i", take(4, f"entry {i} name length"))
        try:
            name = take(ln, f"entry {i} name").decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"imatrix {path}: entry {i} name is not UTF-8") from None
        ncall, nval = struct.unpack("<ii", take(8, f"entry {name!r} counts"))
        if nval < 0:
            raise FormatError(f"imatrix {path}: entry {name!r}: negative value count {nval}")
        vals = np.frombuffer(take(4 * nval, f"entry {name!r} values"), dtype="<f4").astype(np.float32)
        out[name] = vals / np.float32(ncall) if ncall > 0 else vals
    return out


def write_imatrix_dat(path: str | Path, entries: dict[str, tuple[int, np.ndarray]], dataset: str = "lowbit") -> None:
    """Write the legacy layout: ``{name: (ncall, summed values)}`` (used by tests and tools)."""
    b = struct.pack("<i", len(entries))
    for name, (ncall, vals) in entries.items():
        nb = name.encode()
        v = np.asarray(vals, dtype="<f4")
        b += struct.pack("<i", len(nb)) + nb + struct.pack("<ii", ncall, v.size) + v.tobytes()
    d = dataset.encode()
    b += struct.pack("<i", 0) + struct.pack("<i", len(d)) + d
    Path(path).write_bytes(b)
