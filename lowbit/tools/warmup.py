"""``lowbit warmup``: compile the CPU kernels ahead of time, in parallel, into Numba's on-disk cache.

Numba compiles a kernel on its first call and caches the machine code on disk (next to the module,
or in the user cache directory when the install is read-only; ``NUMBA_CACHE_DIR`` moves it). A
user's first encode therefore pays the compile; ``lowbit warmup`` pays it up front, for the codecs
asked for (all by default), with one worker process per kernel family so that the families compile
on all cores at once. Later processes load the cached code instead of compiling.

Each family is warmed in a fresh process: every example configuration of each of its codecs
encodes and decodes a small tensor (with a uniform ``importance=`` where the codec takes one, which
compiles the importance path too), so both the encoder and the decoder are cached. The result
lists the seconds each family took (compile plus the tiny run).

>>> from lowbit.tools.warmup import families
>>> sorted(families(["q4_k", "q6_k", "fp8_e4m3"]).items())
[('gguf_kquants', ['q4_k', 'q6_k']), ('minifloat', ['fp8_e4m3'])]
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Iterable

import lowbit
from lowbit.errors import ConfigError

__all__ = ["families", "warm_family", "warmup"]


def families(codec_ids: Iterable[str] | None = None) -> dict[str, list[str]]:
    """``{kernel family: [codec ids]}`` for ``codec_ids`` (all registered codecs by default); an
    unknown id raises ConfigError (UnknownCodecError) with the registry's suggestion."""
    out: dict[str, list[str]] = {}
    for cid in (lowbit.list_codecs() if codec_ids is None else list(codec_ids)):
        cls = lowbit.codec_class(cid)
        out.setdefault(str(getattr(cls, "family", cid)), []).append(cid)
    return out


def _inputs(codec: lowbit.Codec) -> Any:
    import numpy as np

    K = codec.block_size * max(1, -(-256 // codec.block_size))  # >= 256 columns, whole blocks
    for cand in (K, 64, 128):
        try:
            codec._check_shape((2, cand))
            K = cand
            break
        except lowbit.LowbitError:
            continue
    x = np.random.default_rng(0).standard_normal((2, K)).astype(np.float32)
    return x


def warm_family(codec_ids: list[str]) -> dict[str, Any]:
    """Encode and decode a small tensor with every example configuration of ``codec_ids`` on the
    CPU (this process compiles or loads their kernels); returns seconds and any failures."""
    import numpy as np

    t0 = time.perf_counter()
    failed: dict[str, str] = {}
    for cid in codec_ids:
        for cfg in lowbit.codec_class(cid).examples():
            try:
                codec = lowbit.get_codec(cid, **cfg)
                x = _inputs(codec)
                kw: dict[str, Any] = {}
                if "importance" in getattr(codec, "encode_kwargs", ()):
                    kw["importance"] = np.ones(x.shape[-1], np.float32)
                q = codec.encode(x, backend="cpu", **kw)
                codec.decode(q, backend="cpu")
                if kw and not getattr(codec, "requires_importance", False):
                    codec.encode(x, backend="cpu")  # the path without importance compiles separately
            except Exception as e:  # noqa: BLE001 - reported per codec, the others still warm
                failed[f"{cid} {cfg}" if cfg else cid] = f"{type(e).__name__}: {e}"
    return {"codecs": list(codec_ids), "seconds": time.perf_counter() - t0, "failed": failed}


def warmup(codec_ids: Iterable[str] | None = None, *, jobs: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Compile the kernels of ``codec_ids`` (default: every codec) with ``jobs`` processes (default:
    the CPU count), one kernel family per task. Returns ``{"families": {family: result}, "seconds": wall}``
    where each result is :func:`warm_family`'s."""
    fams = families(codec_ids)
    if not fams:
        raise ConfigError("warmup: no codecs given")
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(fams)))
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    from lowbit.tools.progress import Progress

    # the big families first, so the last task to start is a short one
    order = sorted(fams, key=lambda f: -len(fams[f]))
    # spawn: a clean interpreter per worker (no inherited Numba/Triton state, and safe under threads)
    ctx = multiprocessing.get_context("spawn")
    with Progress(len(order), "warmup", unit="families", enabled=progress) as bar, \
            ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futs = {pool.submit(warm_family, fams[f]): f for f in order}
        for fut in as_completed(futs):
            f = futs[fut]
            results[f] = fut.result()
            bar.update(1, f"{f} {results[f]['seconds']:.1f} s")
    return {"families": {f: results[f] for f in order}, "seconds": time.perf_counter() - t0, "jobs": jobs}
