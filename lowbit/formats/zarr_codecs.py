"""lowbit codecs for numcodecs and zarr v3, so zarr arrays can be stored quantized chunk by chunk
(and processed chunk-wise by Dask) — the path for checkpoints too large for one machine.

Both store each chunk as :meth:`QTensor.tobytes` (codec config, shape, the exact encoded bytes and
side arrays), so a chunk decodes on its own. Registered through entry points (``numcodecs.codecs``
and ``zarr.codecs``, name ``lowbit``), so ``numcodecs.get_codec({"id": "lowbit", ...})`` and zarr
metadata ``{"name": "lowbit", "configuration": {"codec": {...}}}`` find them once lowbit is
installed. Chunks' last dimension must be a multiple of the codec's block size.

>>> import numpy as np, numcodecs
>>> c = numcodecs.get_codec({"id": "lowbit", "codec": {"id": "fp8_e4m3", "scale": "channel"}})
>>> x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
>>> y = c.decode(c.encode(x))
>>> y.shape, float(np.abs(y - x).max()) < 0.07
((2, 32), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codec import Codec, QTensor, get_codec

__all__ = ["NumcodecsLowbit", "ZarrLowbit"]


def _codec(config: Any) -> Codec:
    return config if isinstance(config, Codec) else get_codec(dict(config))


def _encode_chunk(codec: Codec, a: np.ndarray) -> bytes:
    a = np.asarray(a)
    if a.dtype == np.float64:  # zarr arrays are often float64 by default: round once to float32
        a = a.astype(np.float32)
    return codec.encode(a if a.ndim else a.reshape(1), backend="cpu").tobytes()


try:
    from numcodecs.abc import Codec as _NCBase
    from numcodecs.compat import ndarray_copy
except ImportError:  # numcodecs is optional
    _NCBase = object  # type: ignore[assignment,misc]
    ndarray_copy = None


class NumcodecsLowbit(_NCBase):  # type: ignore[misc,valid-type]
    """A numcodecs codec (buffer to buffer) wrapping any lowbit codec: ``codec`` is its config."""

    codec_id = "lowbit"

    def __init__(self, codec: dict[str, Any]) -> None:
        self.codec = dict(_codec(codec).get_config())

    def encode(self, buf: Any) -> bytes:
        return _encode_chunk(_codec(self.codec), np.asarray(buf))

    def decode(self, buf: Any, out: Any = None) -> Any:
        q = QTensor.frombytes(memoryview(buf).cast("B") if not isinstance(buf, bytes) else buf)
        y = q.decode()
        if out is not None and ndarray_copy is not None:
            return ndarray_copy(y, out)
        return y

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "codec": self.codec}

    def __repr__(self) -> str:
        return f"NumcodecsLowbit(codec={self.codec!r})"


try:
    from zarr.abc.codec import ArrayBytesCodec as _ZBase
except ImportError:  # zarr is optional
    _ZBase = object  # type: ignore[assignment,misc]


@dataclass(frozen=True)
class ZarrLowbit(_ZBase):  # type: ignore[misc,valid-type]
    """A zarr v3 array-to-bytes codec ("serializer") wrapping any lowbit codec."""

    is_fixed_size = False
    codec: dict[str, Any]

    def __init__(self, *, codec: dict[str, Any]) -> None:
        object.__setattr__(self, "codec", dict(_codec(codec).get_config()))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ZarrLowbit":
        cfg = data.get("configuration") or {}
        return cls(codec=cfg["codec"])

    def to_dict(self) -> dict[str, Any]:
        return {"name": "lowbit", "configuration": {"codec": self.codec}}

    def evolve_from_array_spec(self, array_spec: Any) -> "ZarrLowbit":
        return self

    def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
        """At array creation: a chunk's last dimension must hold whole blocks of the codec."""
        chunks = getattr(chunk_grid, "chunk_shape", None)
        c = _codec(self.codec)
        if chunks and int(chunks[-1]) % c.block_size:
            from ..errors import ConfigError

            raise ConfigError(f"zarr chunks {tuple(chunks)} for {c.codec_id}: the last dimension of a chunk must be a "
                              f"multiple of the codec's block of {c.block_size} elements")

    async def _encode_single(self, chunk_array: Any, chunk_spec: Any) -> Any:
        a = chunk_array.as_numpy_array().reshape(chunk_spec.shape)
        raw = _encode_chunk(_codec(self.codec), a)
        return chunk_spec.prototype.buffer.from_bytes(raw)

    async def _decode_single(self, chunk_bytes: Any, chunk_spec: Any) -> Any:
        q = QTensor.frombytes(chunk_bytes.to_bytes())
        y = q.decode().reshape(chunk_spec.shape).astype(chunk_spec.dtype.to_native_dtype())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(y)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: Any) -> int:
        raise NotImplementedError  # variable size: not fixed
