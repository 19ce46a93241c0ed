"""Named KV-cache settings that reproduce other engines' cache types, for :class:`LowbitCache`
(``preset=``) and :class:`KVStore` (``KVStore(**kv_preset(name))``).

* ``llama.cpp:<type>`` — llama.cpp's ``--cache-type-k/--cache-type-v`` (``-ctk q8_0 -ctv q8_0``):
  every key and value vector is quantized along the head dimension in blocks of the ggml type
  (32 elements), with no full-precision window; the bytes are ggml's ``quantize_row_*`` (the GGUF
  codecs are byte-identical with libggml). Types: q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl.
* ``vllm:fp8`` / ``vllm:fp8_e4m3`` / ``vllm:fp8_e5m2`` — vLLM's ``--kv-cache-dtype`` without
  calibrated scales (k_scale = v_scale = 1.0, its default): a saturating cast of each element to
  OCP FP8 (``__NV_SATFINITE``), no window.
* ``lowbit:default`` — :data:`lowbit.kvcache.hf.DEFAULT_KV` (TurboQuant-MSE 4-bit, 128-token window).

>>> from lowbit.kvcache.presets import kv_preset
>>> kv_preset("llama.cpp:q4_0")
{'key_codec': 'q4_0', 'value_codec': 'q4_0', 'window': 0, 'flush': 1}
>>> sorted(PRESETS)[:3]
['llama.cpp:iq4_nl', 'llama.cpp:q4_0', 'llama.cpp:q4_1']
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

from lowbit.errors import ConfigError

__all__ = ["PRESETS", "kv_preset"]

LLAMA_CPP_CACHE_TYPES = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")

PRESETS: dict[str, dict[str, Any]] = {
    **{f"llama.cpp:{t}": {"key_codec": t, "value_codec": t, "window": 0, "flush": 1} for t in LLAMA_CPP_CACHE_TYPES},
    **{f"vllm:{name}": {"key_codec": {"id": cid, "overflow": "saturate"}, "value_codec": {"id": cid, "overflow": "saturate"},
                        "window": 0, "flush": 1}
       for name, cid in (("fp8", "fp8_e4m3"), ("fp8_e4m3", "fp8_e4m3"), ("fp8_e5m2", "fp8_e5m2"))},
    "lowbit:default": {"key_codec": {"id": "turboquant_mse", "bits": 4}, "value_codec": {"id": "turboquant_mse", "bits": 4},
                       "window": 128, "flush": 32},
}


def kv_preset(name: str) -> dict[str, Any]:
    """The settings of preset ``name`` (a fresh copy); an unknown name raises ConfigError with the list."""
    if name not in PRESETS:
        hint = difflib.get_close_matches(name, PRESETS, n=1)
        raise ConfigError(f"unknown KV preset {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; presets: {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])
