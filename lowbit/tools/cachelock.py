"""An inter-process lock for the build and download caches (``.cache/``): two test workers, or two
checkouts sharing ``LOWBIT_GGML_CACHE`` / ``LOWBIT_MODEL_CACHE``, never build or assemble the same
file at once; the second waits, then finds the first one's result.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> with cache_lock(d, "demo"):
...     pass
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

__all__ = ["cache_lock"]


@contextlib.contextmanager
def cache_lock(cache: str | os.PathLike[str], name: str) -> Iterator[None]:
    """Hold ``<cache>/.<name>.lock`` exclusively (``flock``; released when the block ends or the
    process dies). Where ``fcntl`` is missing (Windows) it is a no-op."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    Path(cache).mkdir(parents=True, exist_ok=True)
    with open(Path(cache) / f".{name}.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
