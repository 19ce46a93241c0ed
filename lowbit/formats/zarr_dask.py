"""A float array into a quantized zarr v3 array, chunk by chunk, with dask.array.

:func:`to_zarr` writes a float array (numpy, dask or zarr) into a zarr v3 array whose serializer
is lowbit's codec (:class:`lowbit.formats.zarr_codecs.ZarrLowbit`): Dask encodes each chunk where
it runs (threads, processes or a ``distributed`` cluster: whatever scheduler is active), and every
stored chunk is a self-contained QTensor. Reading (``zarr.open_array(...)[...]`` or
``dask.array.from_zarr``) decodes chunk by chunk.

The chunks must line up with the codec's blocks, so that encoding chunk by chunk gives exactly the
bytes of encoding the whole array (:func:`check_chunks`, a ConfigError naming the chunk size that
would fit otherwise):

* the last dimension of a chunk is a multiple of the codec's block size (GGUF types 32 or 256,
  MX 32, NVFP4 16, ...); rows are free;
* a codec with side arrays must tile them: per-row scales (``scale="channel"``) need chunks
  spanning whole rows, per-group scales chunks of whole groups, and a per-tensor scale
  (``scale="tensor"``, NVFP4's global scale) a single chunk.

>>> import numpy as np, lowbit, zarr
>>> x = np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32)
>>> z = to_zarr(x, zarr.storage.MemoryStore(), "q4_k", chunks=(16, 256))
>>> np.array_equal(z[:], lowbit.decode(lowbit.encode(x, "q4_k")))
True
>>> to_zarr(x, zarr.storage.MemoryStore(), "q4_k", chunks=(16, 128))
Traceback (most recent call last):
...
lowbit.errors.ConfigError: zarr chunks (16, 128) for q4_k: the last dimension of a chunk must be a multiple of the codec's block of 256 elements (e.g. chunks (16, 256))
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..codec import Codec, get_codec
from ..errors import ConfigError, LowbitError

__all__ = ["check_chunks", "default_chunks", "to_zarr"]


def _as_codec(codec: Any) -> Codec:
    if isinstance(codec, Codec):
        return codec
    return get_codec(codec) if isinstance(codec, (str, dict)) else get_codec(dict(codec))


def default_chunks(codec: Codec, shape: tuple[int, ...], target: int = 1 << 22) -> tuple[int, ...]:
    """Whole rows, about ``target`` elements per chunk (the whole array for a per-tensor scale)."""
    if codec._aux_spec(shape) and _aux_total(codec, shape) == _aux_total(codec, (1,) * (len(shape) - 1) + shape[-1:]):
        return tuple(shape)  # one side array element for the whole tensor
    rows = max(1, target // max(shape[-1], 1))
    return tuple(min(rows, d) for d in shape[:-1]) + (shape[-1],)


def _aux_total(codec: Codec, shape: tuple[int, ...]) -> int:
    return sum(math.prod(s) for s, _ in codec._aux_spec(tuple(shape)).values())


def check_chunks(codec: Any, shape: tuple[int, ...], chunks: tuple[int, ...]) -> None:
    """Refuse chunks whose encoding would differ from the whole array's (see the module doc)."""
    c = _as_codec(codec)
    shape, chunks = tuple(int(d) for d in shape), tuple(int(d) for d in chunks)
    name = c.codec_id
    if len(chunks) != len(shape) or not shape or any(k < 1 for k in chunks):
        raise ConfigError(f"zarr chunks {chunks} for an array of shape {shape}: expected one positive size per dimension")
    try:
        c._check_shape(shape)
    except LowbitError as e:
        raise ConfigError(f"zarr array of shape {shape}: {e}") from None
    b = c.block_size
    if chunks[-1] % b:
        fit = max(b, chunks[-1] // b * b)
        raise ConfigError(f"zarr chunks {chunks} for {name}: the last dimension of a chunk must be a multiple of the "
                          f"codec's block of {b} elements (e.g. chunks {chunks[:-1] + (fit,)})")
    if not c._aux_spec(shape) or all(k >= d for k, d in zip(chunks, shape)):
        return
    if any(d % k for d, k in zip(shape, chunks)):
        raise ConfigError(f"zarr chunks {chunks} for {name} with side arrays {sorted(c._aux_spec(shape))}: every "
                          f"dimension of the shape {shape} must be a multiple of the chunk's (edge chunks would be "
                          "padded and scaled on their own)")
    n = math.prod(d // k for d, k in zip(shape, chunks))
    if n * _aux_total(c, chunks) != _aux_total(c, shape):
        whole = shape[:-1] and chunks[-1] < shape[-1]
        hint = (f"chunks spanning whole rows, e.g. {chunks[:-1] + (shape[-1],)}" if whole and
                _aux_total(c, chunks[:-1] + (shape[-1],)) * math.prod(d // k for d, k in zip(shape[:-1], chunks[:-1]))
                == _aux_total(c, shape) else f"a single chunk {shape}")
        raise ConfigError(f"zarr chunks {chunks} for {c.get_config()}: its side arrays "
                          f"{sorted(c._aux_spec(shape))} (scales) span more than one chunk, so a chunk-wise encoding "
                          f"would differ from the array's; use {hint}")


def to_zarr(x: Any, store: Any, codec: Any, *, chunks: tuple[int, ...] | None = None, path: str | None = None,
            overwrite: bool = False, compute: bool = True) -> Any:
    """Encode the float array ``x`` chunk-wise with Dask into a new zarr v3 array at ``store``
    (a path, URL or zarr store; ``path`` inside it) whose serializer is lowbit's ``codec``
    (an id, a config dict or a Codec). ``chunks`` default: whole rows, about 4 M elements each.
    Returns the zarr array (with ``compute=False``: ``(array, dask delayed)``)."""
    try:
        import dask.array as da
        import zarr
    except ImportError as e:
        raise LowbitError(f"to_zarr needs dask[array] and zarr ({e}); pip install 'lowbit[dask,zarr]'") from None
    from .zarr_codecs import ZarrLowbit

    c = _as_codec(codec)
    dtype = np.dtype(x.dtype)
    if not np.issubdtype(dtype, np.floating) and dtype.name != "bfloat16":
        raise ConfigError(f"to_zarr: expected a float array, got {dtype}")
    shape = tuple(int(d) for d in x.shape)
    chunks = tuple(int(k) for k in (chunks or default_chunks(c, shape)))
    check_chunks(c, shape, chunks)
    arr = x if isinstance(x, da.Array) else da.from_array(x, chunks=chunks)
    arr = arr.astype(np.float32).rechunk(chunks)
    if isinstance(store, (str, os.PathLike)) and "://" not in os.fspath(store):
        store = os.path.abspath(store)  # the workers' working folder is not this one
    z = zarr.create_array(store=store, name=path, shape=shape, chunks=chunks, dtype="float32",
                          serializer=ZarrLowbit(codec=c.get_config()), compressors=None, fill_value=0.0,
                          overwrite=overwrite)
    job = da.to_zarr(arr, z, compute=compute, lock=False)
    return z if compute else (z, job)
