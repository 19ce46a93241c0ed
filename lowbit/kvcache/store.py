"""An append-only compressed KV store for one attention layer, framework-free (torch tensors).

Keys and values arrive as ``[batch, kv_heads, tokens, head_dim]``. New tokens go to a
full-precision *residual window*; whenever the window holds ``window + flush`` tokens, its oldest
``flush`` tokens are encoded (keys and values with their own codecs) and appended to the
compressed history. History is never re-encoded. The compressed history is one growing buffer per
tensor (capacity doubles, so appends cost amortised O(1) copies), which needs codecs whose side
arrays are per token (a scale or norm per vector, as element codecs with ``scale="channel"`` and the
rotated vector codecs have).

Attention (:meth:`KVStore.attend`) runs over the compressed history and the window with an online
softmax. If both codecs work on codes (TurboQuant, OCTOPUS, BFP: :mod:`lowbit.kvcache.codes`
computes ``q·kᵀ`` and ``p·v`` from the codes, the query rotated once), keys and values are never materialised: :attr:`attention_path` is
``"scores-on-codes"``. Otherwise the history is decoded block by block and attended in full
precision: ``"decode-then-attend"``.

>>> import torch, lowbit
>>> from lowbit.kvcache import KVStore
>>> s = KVStore("fp8_e4m3", "fp8_e4m3", window=4, flush=4, codec_params={"scale": "channel"})
>>> for t in range(10):
...     s.append(torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16))
>>> s.seq_length, s.compressed_length, s.window_length
(10, 4, 6)
>>> s.attend(torch.randn(1, 4, 1, 16)).shape           # 4 query heads share 2 kv heads (GQA)
torch.Size([1, 4, 1, 16])
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any, Callable, Mapping, TypeVar

import torch

import lowbit
from lowbit.codec import Codec, QTensor
from lowbit.errors import ConfigError, ShapeError

__all__ = ["KVStore", "as_codec", "locked"]

_F = TypeVar("_F", bound=Callable[..., Any])


def locked(method: _F) -> _F:
    """Run ``method`` holding ``self._lock`` (a re-entrant lock): a store or cache layer used from
    several threads serialises its operations instead of interleaving half-done appends."""
    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return run  # type: ignore[return-value]


class _Locked:
    """A re-entrant ``_lock`` per instance that copies and pickles as a fresh lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()


def as_codec(spec: Any, params: Mapping[str, Any] | None = None) -> Codec | None:
    """A codec from an id, a config dict or a Codec; ``None``/``"none"`` means full precision."""
    if spec is None or spec == "none":
        return None
    if isinstance(spec, Codec):
        return spec
    cfg = dict(spec) if isinstance(spec, Mapping) else {"id": spec}
    if params:
        accepted = lowbit.codec.codec_parameters(lowbit.codec_class(cfg["id"]))
        cfg.update({k: v for k, v in params.items() if k in accepted and k not in cfg})
    return lowbit.get_codec(cfg)


class _Growing:
    """A QTensor-shaped buffer growing along the token axis (axis 2 of ``[B, H, T, ...]``)."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.length = 0
        self.data: torch.Tensor | None = None
        self.aux: dict[str, torch.Tensor] = {}
        self.head_dim = 0

    def append(self, q: QTensor) -> None:
        n = q.shape[2]
        if self.data is None:
            self.head_dim = q.shape[-1]
            cap = max(n, 64)
            self.data = q.data.new_empty((q.data.shape[0], q.data.shape[1], cap) + tuple(q.data.shape[3:]))
            self.aux = {k: a.new_empty((a.shape[0], a.shape[1], cap) + tuple(a.shape[3:])) for k, a in q.aux.items()}
        cap = self.data.shape[2]
        if self.length + n > cap:  # double the capacity: appends copy O(1) amortised
            new = max(2 * cap, self.length + n)
            self.data = _grow(self.data, new)
            self.aux = {k: _grow(a, new) for k, a in self.aux.items()}
        self.data[:, :, self.length:self.length + n] = q.data
        for k, a in q.aux.items():
            self.aux[k][:, :, self.length:self.length + n] = a
        self.length += n

    def view(self, start: int = 0, stop: int | None = None) -> QTensor:
        stop = self.length if stop is None else stop
        assert self.data is not None
        B, H = self.data.shape[:2]
        return QTensor(self.data[:, :, start:stop], {k: a[:, :, start:stop] for k, a in self.aux.items()},
                       (B, H, stop - start, self.head_dim), self.codec)

    def index_batch(self, idx: torch.Tensor) -> None:
        if self.data is not None:
            self.data = self.data.index_select(0, idx.to(self.data.device))
            self.aux = {k: a.index_select(0, idx.to(a.device)) for k, a in self.aux.items()}

    def drop_front(self, n: int) -> None:
        """Forget the oldest n tokens (sliding windows)."""
        if n <= 0 or self.data is None:
            return
        keep = self.length - n
        self.data[:, :, :keep] = self.data[:, :, n:self.length].clone()
        for a in self.aux.values():
            a[:, :, :keep] = a[:, :, n:self.length].clone()
        self.length = keep

    def truncate(self, n: int) -> None:
        self.length = min(self.length, n)

    @property
    def nbytes(self) -> int:
        """Bytes of the tokens held (not of the spare capacity)."""
        if self.data is None or not self.length:
            return 0
        per_tok = self.data[:, :, :1].numel() * self.data.element_size()
        per_tok += sum(a[:, :, :1].numel() * a.element_size() for a in self.aux.values())
        return per_tok * self.length


def _grow(t: torch.Tensor, cap: int) -> torch.Tensor:
    out = t.new_empty(t.shape[:2] + (cap,) + t.shape[3:])
    out[:, :, : t.shape[2]] = t
    return out


class KVStore(_Locked):
    """One layer's compressed KV cache. See the module docstring.

    Thread-safe: every operation holds the store's lock, so appends from several threads and
    reads in between them see whole appends (two appends are serialised, in either order).

    Parameters
    ----------
    key_codec, value_codec:
        codec ids, config dicts or Codecs for keys and values (``None``: keep full precision).
    window:
        full-precision residual tokens kept after every flush (default 128).
    flush:
        tokens encoded at a time once the window is full (default 32).
    sliding_window:
        for sliding-window attention layers: only the last ``sliding_window`` tokens are attended
        to, and older ones are dropped.
    codec_params:
        parameters applied to both codecs where they accept them (e.g. ``{"scale": "channel"}``).
    """

    def __init__(self, key_codec: Any = "fp8_e4m3", value_codec: Any = "fp8_e4m3", *, window: int = 128,
                 flush: int = 32, sliding_window: int | None = None, codec_params: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if window < 0 or flush < 1:
            raise ConfigError(f"KVStore: window/flush: expected window >= 0 and flush >= 1, got {window}, {flush}")
        self.key_codec = as_codec(key_codec, codec_params)
        self.value_codec = as_codec(value_codec, codec_params)
        for name, c in (("key", self.key_codec), ("value", self.value_codec)):
            if c is not None:
                self._check_per_token(c, name)
        self.window, self.flush, self.sliding_window = int(window), int(flush), sliding_window
        self._k = _Growing(self.key_codec) if self.key_codec else None
        self._v = _Growing(self.value_codec) if self.value_codec else None
        self._kf: torch.Tensor | None = None  # full-precision keys/values: the window, or everything uncompressed
        self._vf: torch.Tensor | None = None
        self.compressed_length = 0
        self.dropped = 0  # tokens forgotten by a sliding window

    @staticmethod
    def _check_per_token(codec: Codec, what: str) -> None:
        B, H, T, D = 2, 3, 5, codec.block_size * max(1, 64 // codec.block_size)
        for name, (shape, _) in codec._aux_spec((B, H, T, D)).items():
            if tuple(shape[:3]) != (B, H, T):
                raise ConfigError(
                    f"KVStore: {what} codec {codec.codec_id!r}: side array {name!r} spans tokens (shape {shape} for "
                    f"[B, H, T, D] = {(B, H, T, D)}); the store needs per-token side data (e.g. scale='channel')")

    # ---- sizes ---------------------------------------------------------------------------------
    @property
    @locked
    def window_length(self) -> int:
        return 0 if self._kf is None else self._kf.shape[2]

    @property
    @locked
    def seq_length(self) -> int:
        """Tokens attended to (compressed history plus window)."""
        return self.compressed_length + self.window_length

    @property
    @locked
    def nbytes(self) -> int:
        """Bytes held: compressed history (codes and side arrays) plus the full-precision window."""
        full = sum(t.numel() * t.element_size() for t in (self._kf, self._vf) if t is not None)
        comp = sum(g.nbytes for g in (self._k, self._v) if g is not None)
        return full + comp

    @locked
    def nbytes_as(self, dtype: torch.dtype = torch.bfloat16) -> int:
        """What the same tokens would take uncompressed in ``dtype``."""
        if self._kf is None:
            return 0
        B, H, _, D = self._kf.shape
        return 2 * B * H * self.seq_length * D * torch.empty((), dtype=dtype).element_size()

    @property
    def attention_path(self) -> str:
        from .codes import supports

        if supports(self.key_codec) and supports(self.value_codec):
            return "scores-on-codes"
        return "decode-then-attend"

    # ---- writing -------------------------------------------------------------------------------
    @locked
    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Add tokens ``k, v: [B, H_kv, T, D]``; flushes the oldest window tokens into codes."""
        if k.ndim != 4 or k.shape != v.shape[:3] + (k.shape[3],) or k.shape[:3] != v.shape[:3]:
            raise ShapeError(f"KVStore.append: expected k, v of shape [B, H, T, D] with equal B, H, T, got {tuple(k.shape)} and {tuple(v.shape)}")
        self._kf = k if self._kf is None else torch.cat([self._kf, k], dim=2)
        self._vf = v if self._vf is None else torch.cat([self._vf, v], dim=2)
        if self._k is not None and self._v is not None:
            while self._kf.shape[2] >= self.window + self.flush:
                self._flush(self.flush)
        if self.sliding_window is not None:
            self.keep_last(self.sliding_window)

    def _flush(self, n: int) -> None:
        assert self._kf is not None and self._vf is not None and self._k is not None and self._v is not None
        # NaN/Inf only show up at positions every query masks out (padding); store them as 0
        k = torch.nan_to_num(self._kf[:, :, :n], nan=0.0, posinf=0.0, neginf=0.0).contiguous()
        v = torch.nan_to_num(self._vf[:, :, :n], nan=0.0, posinf=0.0, neginf=0.0).contiguous()
        self._k.append(self.key_codec.encode(k))
        self._v.append(self.value_codec.encode(v))
        self._kf, self._vf = self._kf[:, :, n:], self._vf[:, :, n:]
        self.compressed_length += n

    @locked
    def keep_last(self, n: int) -> None:
        """Forget all but the newest ``n`` tokens (sliding-window attention)."""
        excess = self.seq_length - n
        if excess <= 0:
            return
        from_codes = min(excess, self.compressed_length)
        if from_codes:
            self._k.drop_front(from_codes)
            self._v.drop_front(from_codes)
            self.compressed_length -= from_codes
        rest = excess - from_codes
        if rest:
            self._kf, self._vf = self._kf[:, :, rest:], self._vf[:, :, rest:]
        self.dropped += excess

    # ---- reading -------------------------------------------------------------------------------
    @locked
    def keys_values(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every held token's keys and values, decoded: ``[B, H, T, D]`` each (the fallback for
        attention code that wants plain tensors)."""
        if self._kf is None:
            raise ShapeError("KVStore: empty (append something first)")
        dtype = dtype or self._kf.dtype
        ks, vs = [], []
        if self.compressed_length:
            ks.append(self.key_codec.decode(self._k.view(), dtype=dtype))
            vs.append(self.value_codec.decode(self._v.view(), dtype=dtype))
        ks.append(self._kf.to(dtype))
        vs.append(self._vf.to(dtype))
        return torch.cat(ks, dim=2), torch.cat(vs, dim=2)

    @locked
    def attend(self, q: torch.Tensor, *, scale: float | None = None, mask: torch.Tensor | None = None,
               causal: bool = True, block: int = 1024) -> torch.Tensor:
        """softmax(q·Kᵀ·scale + mask)·V over every held token, in float32.

        ``q: [B, H_q, T_q, D]`` with ``H_q`` a multiple of ``H_kv`` (grouped-query attention).
        ``mask`` (additive, broadcastable to ``[B, H_q, T_q, T_kv]``) replaces the causal mask,
        which otherwise aligns the queries with the newest tokens.
        """
        if self._kf is None:
            raise ShapeError("KVStore.attend: empty (append something first)")
        B, Hq, Tq, D = q.shape
        Hk = self._kf.shape[1]
        if Hq % Hk:
            raise ShapeError(f"KVStore.attend: query heads {Hq} are not a multiple of key/value heads {Hk}")
        g = Hq // Hk
        scale = 1.0 / math.sqrt(D) if scale is None else scale
        T = self.seq_length
        qf = q.float().reshape(B, Hk, g * Tq, D)  # group the query heads that share a kv head
        m = torch.full((B, Hk, g * Tq, 1), -math.inf, device=q.device)
        den = torch.zeros_like(m)
        acc = torch.zeros((B, Hk, g * Tq, D), device=q.device)
        qpos = torch.arange(T - Tq, T, device=q.device)  # the queries are the newest tokens

        def bias(start: int, stop: int) -> torch.Tensor | None:
            if mask is not None:
                mb = torch.broadcast_to(mask, (B, Hq, Tq, T))[..., start:stop].float()
                return mb.reshape(B, Hk, g * Tq, stop - start)
            if not causal:
                return None
            kpos = torch.arange(start, stop, device=q.device)
            bad = kpos[None, :] > qpos[:, None]  # [Tq, n]
            b = torch.zeros(bad.shape, device=q.device).masked_fill(bad, -math.inf)
            return b.repeat(g, 1)[None, None]

        def step(s: torch.Tensor, vals: Any, start: int, stop: int, on_codes: bool) -> None:
            nonlocal m, den, acc
            bs = bias(start, stop)
            if bs is not None:
                s = s + bs
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            p = torch.exp(s - safe)
            corr = torch.exp(torch.where(torch.isfinite(m), m - safe, torch.full_like(m, -math.inf)))
            den = den * corr + p.sum(-1, keepdim=True)
            pv = codes.weighted_sum(p, vals) if on_codes else p @ vals.float()
            acc = acc * corr + pv
            m = m_new

        from . import codes

        on_codes = self.attention_path == "scores-on-codes"
        for start in range(0, self.compressed_length, block):
            stop = min(self.compressed_length, start + block)
            kq, vq = self._k.view(start, stop), self._v.view(start, stop)
            if on_codes:
                s = codes.scores(qf, kq) * scale
                step(s, vq, start, stop, True)
            else:
                kd = self.key_codec.decode(kq).float()
                s = (qf @ kd.transpose(-1, -2)) * scale
                step(s, self.value_codec.decode(vq), start, stop, False)
        c = self.compressed_length
        if T > c:  # the full-precision window (empty with window=0 right after a flush)
            s = (qf @ self._kf.float().transpose(-1, -2)) * scale
            step(s, self._vf, c, T, False)
        out = torch.where(den > 0, acc / den.clamp_min(1e-38), torch.zeros_like(acc))  # fully masked rows: 0
        return out.reshape(B, Hq, Tq, D).to(q.dtype)

    # ---- beam search, batch edits, cropping -------------------------------------------------------
    @locked
    def index_batch(self, idx: torch.Tensor) -> None:
        """Keep (and reorder, repeat) batch rows: beam search's ``reorder_cache``."""
        for gr in (self._k, self._v):
            if gr is not None:
                gr.index_batch(idx)
        if self._kf is not None:
            self._kf = self._kf.index_select(0, idx.to(self._kf.device))
            self._vf = self._vf.index_select(0, idx.to(self._vf.device))

    @locked
    def crop(self, length: int) -> None:
        """Keep the first ``length`` tokens (assisted decoding rolls back drafts). Tokens already
        in the compressed history can be dropped but not restored to full precision."""
        if length >= self.seq_length:
            return
        if length >= self.compressed_length:
            keep = length - self.compressed_length
            self._kf, self._vf = self._kf[:, :, :keep], self._vf[:, :, :keep]
            return
        self._k.truncate(length)
        self._v.truncate(length)
        self.compressed_length = length
        self._kf, self._vf = self._kf[:, :, :0], self._vf[:, :, :0]
