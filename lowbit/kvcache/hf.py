"""transformers integration: :class:`LowbitCache`, a ``Cache`` for ``model.generate``.

::

    from lowbit.kvcache import LowbitCache, use_lowbit_attention
    use_lowbit_attention(model)                 # optional: attention computed on the codes
    out = model.generate(ids, past_key_values=LowbitCache(model.config), max_new_tokens=128)

Each full-attention and sliding-window layer gets a :class:`LowbitLayer` around a
:class:`~lowbit.kvcache.KVStore`; other layer kinds (linear attention, KV-sharing dummies) keep
transformers' own layers. Beam search (``reorder_cache``), batch edits, cropping and sliding windows
are honoured. transformers 5.x keeps no registry of cache implementations that a library could add
to (``generate(cache_implementation="lowbit")`` is refused by its ``GenerationConfig`` check), so the
cache is passed as an object, as above; that is the whole equivalent.

Two attention paths:

* default — ``update`` returns the decoded keys and values and the model's own attention (SDPA,
  eager, …) runs on them; the store holds only codes and the window, decoded tensors are transient;
* fused — after :func:`use_lowbit_attention` the model calls lowbit's attention function, which
  attends over the store directly (scores on codes when the codecs provide them), and ``update``
  decodes nothing. The cache chooses this path when ``config._attn_implementation == "lowbit"``.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

import torch

try:
    from transformers.cache_utils import DYNAMIC_LAYER_TYPE_MAPPING, Cache, CacheLayerMixin, get_layer_types_and_kwargs
except ImportError as e:  # pragma: no cover
    raise ImportError("lowbit.kvcache.hf needs transformers >= 5 (pip install 'transformers>=5')") from e

from lowbit.errors import ConfigError
from lowbit.kvcache.presets import kv_preset
from lowbit.kvcache.store import KVStore, _Locked, locked

__all__ = ["LowbitLayer", "LowbitCache", "use_lowbit_attention", "DEFAULT_KV"]

# The default configuration: TurboQuant-MSE at 4 bits for keys and values (random rotation per
# head dimension, Lloyd-Max codes, a float16 norm per vector: 4.25 bits/element at head_dim 64),
# attended on the codes; a 128-token full-precision window flushed 32 tokens at a time.
DEFAULT_KV: dict[str, Any] = kv_preset("lowbit:default")

_ACTIVE = threading.local()  # the cache whose layer was updated last, for the fused attention


class LowbitLayer(_Locked, CacheLayerMixin):
    """One attention layer's cache: a :class:`KVStore` plus transformers' bookkeeping (thread-safe:
    an update, its lazy initialisation and the edits hold the layer's lock)."""

    is_croppable = True

    def __init__(self, *, key_codec: Any = None, value_codec: Any = None, window: int = 128, flush: int = 32,
                 sliding_window: int | None = None, codec_params: Mapping[str, Any] | None = None,
                 fused: bool = False, **_: Any) -> None:
        CacheLayerMixin.__init__(self)
        _Locked.__init__(self)
        self.kv_args = dict(key_codec=key_codec, value_codec=value_codec, window=window, flush=flush, codec_params=codec_params)
        self.sliding_window = sliding_window
        self.is_sliding = sliding_window is not None
        self.fused = fused
        self.store: KVStore | None = None
        self.cumulative_length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        # vector codecs (TurboQuant, OCTOPUS) take the head dimension: the model's, unless given
        args = dict(self.kv_args)
        args["codec_params"] = {"dim": int(key_states.shape[-1]), **dict(args.get("codec_params") or {})}
        self.store = KVStore(**args)
        self.is_initialized = True

    @locked
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self.store is not None
        if self.is_sliding:  # the previous step's attention is done: keep what this one may see
            self.store.keep_last(self.sliding_window - 1)
        self.cumulative_length += key_states.shape[-2]
        self.store.append(key_states, value_states)
        if self.fused:
            out = (key_states, value_states)  # lowbit's attention reads the store itself
        else:
            out = self.store.keys_values(self.dtype)
        return out

    @locked
    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        if self.is_sliding:
            past = self.cumulative_length
            offset = max(past - self.sliding_window + 1, 0)
            length = (self.sliding_window - 1 if past >= self.sliding_window else past) + query_length
            return length, offset
        return self.get_seq_length() + query_length, 0

    @locked
    def get_seq_length(self) -> int:
        return self.cumulative_length

    def get_max_length(self) -> int:
        return -1

    @locked
    def reset(self) -> None:
        self.store = None
        self.is_initialized = False
        self.cumulative_length = 0

    @locked
    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.store is not None:
            self.store.index_batch(beam_idx)

    @locked
    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.store is not None and self.store._kf is not None:
            B = self.store._kf.shape[0]
            self.store.index_batch(torch.arange(B).repeat_interleave(repeats))

    @locked
    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.store is not None:
            self.store.index_batch(torch.as_tensor(indices))

    @locked
    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("LowbitLayer.crop: pass a negative count of tokens to remove")
        if tokens_to_remove == 0 or self.store is None:
            return
        if self.is_sliding:
            raise NotImplementedError("LowbitLayer.crop: sliding-window layers cannot be cropped")
        n = abs(tokens_to_remove)
        self.store.crop(self.store.seq_length - n)
        self.cumulative_length -= n

    def offload(self) -> None:
        raise NotImplementedError("LowbitLayer: offloading is not supported (the compressed cache is the memory saving)")

    prefetch = offload


class LowbitCache(Cache):
    """A transformers ``Cache`` whose attention layers keep compressed keys and values.

    Parameters
    ----------
    config:
        the model config (``model.config``); decides the layer kinds and sliding windows.
    key_codec, value_codec, window, flush, codec_params:
        see :class:`~lowbit.kvcache.KVStore`; defaults: :data:`DEFAULT_KV` (4-bit, 128-token window).
    preset:
        a named setting of :mod:`lowbit.kvcache.presets` used as the base instead of :data:`DEFAULT_KV`,
        e.g. ``"llama.cpp:q8_0"`` (llama.cpp's ``-ctk q8_0 -ctv q8_0``) or ``"vllm:fp8"``; the other
        keywords override it.
    layer_overrides:
        ``{layer_index: {"key_codec": ..., ...}}`` (negative indices count from the end), e.g. keep
        the first and last layers at 8 bits: ``{0: {"key_codec": "fp8_e4m3"}, -1: {...}}``.

    Every setting is checked here, against the config, not at the first forward: codec names and
    parameters (each distinct layer setting builds its store once, at the model's head dimension),
    ``window``/``flush``, override indices (in range, each layer once, attention layers only) and
    override keys; a bad one raises :class:`~lowbit.errors.ConfigError` naming it.

    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from lowbit.kvcache import LowbitCache
    >>> cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                   num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    >>> _ = torch.manual_seed(0)
    >>> model = LlamaForCausalLM(cfg).eval()
    >>> cache = LowbitCache(cfg, window=4, flush=4)
    >>> out = model.generate(torch.ones(1, 3, dtype=torch.long), past_key_values=cache, max_new_tokens=12,
    ...                      min_new_tokens=12, do_sample=False, pad_token_id=0)  # random weights: no early EOS
    >>> out.shape, cache.layers[0].store.compressed_length
    (torch.Size([1, 15]), 8)
    """

    def __init__(self, config: Any = None, *, key_codec: Any = None, value_codec: Any = None, window: int | None = None,
                 flush: int | None = None, codec_params: Mapping[str, Any] | None = None,
                 layer_overrides: Mapping[int, Mapping[str, Any]] | None = None, preset: str | None = None) -> None:
        if config is None:
            raise ValueError("LowbitCache: pass the model config (LowbitCache(model.config))")
        text = config.get_text_config(decoder=True)
        types, per_kw = get_layer_types_and_kwargs(text)
        base = dict(DEFAULT_KV) if preset is None else kv_preset(preset)
        for k, v in (("key_codec", key_codec), ("value_codec", value_codec), ("window", window), ("flush", flush)):
            if v is not None:
                base[k] = v
        base["codec_params"] = codec_params if codec_params is not None else base.get("codec_params")
        over = _overrides(layer_overrides, types)
        fused = getattr(text, "_attn_implementation", None) == "lowbit"
        head_dim = _head_dim(text)
        checked: set[str] = set()
        layers = []
        for i, (t, kw) in enumerate(zip(types, per_kw)):
            if t in ("full_attention", "sliding_attention"):
                args = {**base, **over.get(i, {})}
                _check_store_args(args, head_dim, i, checked)
                sw = kw.get("sliding_window") if t == "sliding_attention" else None
                layers.append(LowbitLayer(**args, sliding_window=sw, fused=fused))
            else:
                layers.append(DYNAMIC_LAYER_TYPE_MAPPING[t](**kw))
        super().__init__(layers=layers)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        _ACTIVE.cache = self
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    @property
    def nbytes(self) -> int:
        """Bytes held by every layer's store (codes, side arrays, windows)."""
        return sum(l.store.nbytes for l in self.layers if isinstance(l, LowbitLayer) and l.store is not None)

    def nbytes_as(self, dtype: torch.dtype = torch.bfloat16) -> int:
        """What the same tokens would take in a plain cache of ``dtype``."""
        return sum(l.store.nbytes_as(dtype) for l in self.layers if isinstance(l, LowbitLayer) and l.store is not None)


_STORE_KEYS = ("key_codec", "value_codec", "window", "flush", "codec_params")


def _overrides(layer_overrides: Mapping[int, Mapping[str, Any]] | None, types: list[str]) -> dict[int, dict[str, Any]]:
    """``layer_overrides`` with indices resolved (negative from the end); out-of-range, repeated,
    non-attention or non-integer indices and unknown keys raise ConfigError."""
    n = len(types)
    out: dict[int, dict[str, Any]] = {}
    for i, o in (layer_overrides or {}).items():
        if isinstance(i, bool) or not isinstance(i, int):
            raise ConfigError(f"LowbitCache: layer_overrides: expected integer layer indices, got {i!r}")
        if not -n <= i < n:
            raise ConfigError(f"LowbitCache: layer_overrides: layer {i} is out of range for a model with {n} layers "
                              f"(indices {-n}..{n - 1}; negative ones count from the end)")
        j = i % n
        if j in out:
            raise ConfigError(f"LowbitCache: layer_overrides: layer {j} is given twice (as {j} and {j - n})")
        if not isinstance(o, Mapping):
            raise ConfigError(f"LowbitCache: layer_overrides[{i}]: expected a dict of settings, got {type(o).__name__}")
        bad = [k for k in o if k not in _STORE_KEYS]
        if bad:
            import difflib

            hint = difflib.get_close_matches(str(bad[0]), _STORE_KEYS, n=1)
            raise ConfigError(f"LowbitCache: layer_overrides[{i}]: unknown setting {bad[0]!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; settings: {', '.join(_STORE_KEYS)}")
        if types[j] not in ("full_attention", "sliding_attention"):
            raise ConfigError(f"LowbitCache: layer_overrides: layer {j} is a {types[j]!r} layer, which keeps no "
                              f"key/value cache to compress")
        out[j] = dict(o)
    return out


def _head_dim(text: Any) -> int | None:
    """The attention head dimension the config states (``head_dim``, else hidden / heads)."""
    hd = getattr(text, "head_dim", None)
    if isinstance(hd, int) and hd > 0:
        return hd
    h, a = getattr(text, "hidden_size", None), getattr(text, "num_attention_heads", None)
    return h // a if isinstance(h, int) and isinstance(a, int) and a > 0 and h % a == 0 else None


def _check_store_args(args: Mapping[str, Any], head_dim: int | None, layer: int, checked: set[str]) -> None:
    """Build the layer's store once per distinct setting, at the config's head dimension: bad codec
    names or parameters, windows and head dimensions the codec cannot split raise ConfigError now."""
    key = repr(sorted((k, repr(v)) for k, v in args.items()))
    if key in checked:
        return
    params = dict(args.get("codec_params") or {})
    if head_dim is not None:
        params = {"dim": head_dim, **params}
    try:
        store = KVStore(**{**args, "codec_params": params})
    except ConfigError as e:
        raise ConfigError(f"LowbitCache: layer {layer}: {e}") from e
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"LowbitCache: layer {layer}: bad cache setting ({e})") from e
    if head_dim is not None:
        for what, c in (("key", store.key_codec), ("value", store.value_codec)):
            if c is not None and head_dim % c.block_size:
                raise ConfigError(f"LowbitCache: layer {layer}: {what} codec {c.codec_id!r} has blocks of {c.block_size} "
                                  f"elements, which do not divide the model's head dimension {head_dim}")
    checked.add(key)


def _lowbit_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                      **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention over the layer's compressed store (transformers' attention-function signature)."""
    cache = getattr(_ACTIVE, "cache", None)
    layer = cache.layers[module.layer_idx] if cache is not None and module.layer_idx < len(cache.layers) else None
    if not isinstance(layer, LowbitLayer) or not layer.fused or layer.store is None:
        # not our cache (or no cache): plain attention on what the model passed
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    store = layer.store
    mask = None
    if attention_mask is not None:
        m = attention_mask[..., -store.seq_length:]
        mask = torch.zeros(m.shape, dtype=torch.float32, device=m.device).masked_fill(~m, float("-inf")) if m.dtype == torch.bool else m
    out = store.attend(query, scale=scaling, mask=mask, causal=mask is None)
    return out.transpose(1, 2).contiguous(), None


def use_lowbit_attention(model: Any) -> Any:
    """Register lowbit's attention function and switch ``model`` to it (returns the model)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("lowbit", _lowbit_attention)
    AttentionMaskInterface.register("lowbit", sdpa_mask)
    model.set_attn_implementation("lowbit")
    return model
