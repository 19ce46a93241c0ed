"""ggml's own C library as the oracle for every GGUF codec (the tests and the golden vectors).

The oracle is ``libggml-base`` built from the ggml sources vendored in the llama-cpp-python sdist
(a pinned version, fetched from PyPI with pip), compiled here with cmake: only the ``ggml-base``
target, about 20 s on two cores. Nothing of it is committed; the build lives in a cache directory
(``.cache/ggml-oracle`` in the repository by default, ``LOWBIT_GGML_CACHE`` to move it).

    lib = GGML.build()                       # download + build once, then cached
    raw = lib.quantize(x, "q4_k", imatrix)   # ggml_quantize_chunk: the bytes a GGUF file holds
    y = lib.dequantize(raw, "q4_k", n)       # the type's to_float (dequantize_row_*)

Every step that fails raises :class:`OracleUnavailable` with what went wrong: the tests that
need the oracle fail loudly rather than skip.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LLAMA_CPP_PYTHON_VERSION", "GGML_TYPES", "GGML", "OracleUnavailable", "default_cache_dir", "sdist_source"]

#: the llama-cpp-python release whose vendored ggml is the oracle (ggml 0.25.3, llama.cpp 0c1e57098)
LLAMA_CPP_PYTHON_VERSION = "0.3.36"

#: lowbit codec id -> ggml type id (enum ggml_type in ggml/include/ggml.h)
GGML_TYPES = {
    "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q8_1": 9,
    "q2_k": 10, "q3_k": 11, "q4_k": 12, "q5_k": 13, "q6_k": 14, "q8_k": 15,
    "iq2_xxs": 16, "iq2_xs": 17, "iq3_xxs": 18, "iq1_s": 19, "iq4_nl": 20, "iq3_s": 21,
    "iq2_s": 22, "iq4_xs": 23, "iq1_m": 29, "tq1_0": 34, "tq2_0": 35, "mxfp4_ggml": 39,
    "nvfp4_ggml": 40, "q1_0": 41, "q2_0": 42,
}


class OracleUnavailable(RuntimeError):
    """The ggml oracle could not be downloaded, built or loaded (the message says which step)."""


def default_cache_dir() -> Path:
    env = os.environ.get("LOWBIT_GGML_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".cache" / "ggml-oracle"


class _Traits(ctypes.Structure):
    # struct ggml_type_traits (ggml/include/ggml.h)
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


_ROW_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def _run(cmd: list[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stdout[-3000:] + "\n" + r.stderr[-3000:]).strip()
        raise OracleUnavailable(f"ggml oracle: {what} failed (exit {r.returncode}): {' '.join(cmd)}\n{tail}")


def sdist_source(cache: Path) -> Path:
    """Download the pinned sdist with pip (once) and extract its vendored llama.cpp tree (once);
    return the tree's root (``.../vendor/llama.cpp``). The caller holds the cache lock."""
    cache.mkdir(parents=True, exist_ok=True)
    dl = cache / "sdist"
    name = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    if not (dl / name).is_file():
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              "-d", str(dl), f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"], "pip download of the sdist")
    if not (dl / name).is_file():
        raise OracleUnavailable(f"ggml oracle: pip download left no {name} in {dl}")
    src = cache / "src"
    top = src / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
    if not (top / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
        shutil.rmtree(src, ignore_errors=True)
        with tarfile.open(dl / name) as tf:
            members = [m for m in tf.getmembers() if "/vendor/llama.cpp/" in m.name and (m.isreg() or m.isdir())]
            tf.extractall(src, members=members, filter="data")
    return top / "vendor" / "llama.cpp"


def _build(cache: Path) -> Path:
    """Download the pinned sdist with pip, build ggml-base; return the path of the shared library."""
    lib = cache / "build" / "bin" / "libggml-base.so"
    if lib.is_file():
        return lib
    tree = sdist_source(cache)
    for tool in ("cmake", "cc"):
        if shutil.which(tool) is None:
            raise OracleUnavailable(f"ggml oracle: needs {tool} on PATH to build libggml-base")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    build = cache / "build"
    shutil.rmtree(build, ignore_errors=True)
    _run(["cmake", "-S", str(tree), "-B", str(build), *gen, "-DCMAKE_BUILD_TYPE=Release",
          "-DBUILD_SHARED_LIBS=ON", "-DGGML_NATIVE=OFF", "-DGGML_OPENMP=OFF", "-DLLAMA_BUILD_TESTS=OFF",
          "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
          "-DLLAMA_BUILD_COMMON=OFF", "-DLLAMA_CURL=OFF"], "cmake configure")
    _run(["cmake", "--build", str(build), "--target", "ggml-base", "-j", str(max(os.cpu_count() or 1, 1))],
         "cmake build of ggml-base")
    if not lib.is_file():
        found = sorted(str(p) for p in build.rglob("libggml-base*"))
        raise OracleUnavailable(f"ggml oracle: build finished but {lib} is missing (found {found})")
    return lib


class GGML:
    """ctypes bindings to the pieces of libggml-base the tests use."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self.lib = lib = ctypes.CDLL(os.fspath(path))
        except OSError as e:
            raise OracleUnavailable(f"ggml oracle: cannot load {path}: {e}") from None
        self.path = Path(path)
        lib.ggml_row_size.restype = ctypes.c_size_t
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        lib.ggml_get_type_traits.restype = ctypes.POINTER(_Traits)
        lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        lib.ggml_fp32_to_fp16_row.restype = None
        lib.ggml_fp32_to_fp16_row.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        self._to_float: dict[int, Any] = {}

    @classmethod
    def build(cls, cache: Path | None = None) -> "GGML":
        """Build (once; cached; one process at a time) and load the oracle. Raises OracleUnavailable on any failure."""
        from .cachelock import cache_lock

        cache = cache or default_cache_dir()
        with cache_lock(cache, "build"):
            return cls(_build(cache))

    @staticmethod
    def type_id(t: str | int) -> int:
        return GGML_TYPES[t] if isinstance(t, str) else int(t)

    def traits(self, t: str | int) -> _Traits:
        return self.lib.ggml_get_type_traits(self.type_id(t)).contents

    def row_size(self, t: str | int, n: int) -> int:
        return int(self.lib.ggml_row_size(self.type_id(t), n))

    def requires_imatrix(self, t: str | int) -> bool:
        """``ggml_quantize_requires_imatrix``: ggml aborts the process if such a type is quantized without one."""
        return bool(self.lib.ggml_quantize_requires_imatrix(self.type_id(t)))

    def quantize(self, x: np.ndarray, t: str | int, imatrix: np.ndarray | None = None) -> np.ndarray:
        """``ggml_quantize_chunk`` over float32 rows ``x`` (rows, n): uint8 (rows, row_bytes).

        The output buffer starts zeroed (ggml leaves Q8_K's bsums of all-zero blocks unwritten). A type
        that ggml quantizes only with an imatrix raises ValueError without one (ggml would abort)."""
        x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
        rows, n = x.shape
        tid = self.type_id(t)
        rb = self.row_size(tid, n)
        out = np.zeros((rows, rb), dtype=np.uint8)
        im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
        if im is not None and im.shape != (n,):
            raise ValueError(f"imatrix: expected shape ({n},), got {im.shape}")
        if im is None and rows and self.requires_imatrix(tid):
            raise ValueError(f"ggml type {tid}: ggml_quantize_chunk requires an imatrix for this type (it would abort)")
        if rows and tid in (GGML_TYPES["q8_1"], GGML_TYPES["q8_k"]):
            # ggml_quantize_chunk refuses Q8_1 and Q8_K (dot-product operands, not file types): use their
            # reference quantizers, quantize_row_q8_{1,K}_ref, through the type traits
            fn = getattr(self.lib, "quantize_row_q8_1_ref" if tid == GGML_TYPES["q8_1"] else "quantize_row_q8_K_ref")
            fn.restype = None
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            fn(x.ctypes.data, out.ctypes.data, rows * n)
        elif rows:
            got = self.lib.ggml_quantize_chunk(tid, x.ctypes.data, out.ctypes.data, 0, rows, n,
                                               None if im is None else im.ctypes.data)
            assert got == out.nbytes, (got, out.nbytes)
        return out

    def dequantize(self, raw: np.ndarray, t: str | int, n: int) -> np.ndarray:
        """The type's ``to_float`` (``dequantize_row_*``) over rows of ``n`` elements: float32."""
        tid = self.type_id(t)
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        rb = self.row_size(tid, n)
        rows = raw.size // rb if rb else 0
        assert rows * rb == raw.size
        if tid == GGML_TYPES["q8_1"]:
            # ggml has no Q8_1 dequantizer (it is only a dot-product operand): its d and qs are
            # Q8_0's fields, so drop s and use dequantize_row_q8_0
            blocks = raw.reshape(-1, 36)
            q80 = np.concatenate([blocks[:, :2], blocks[:, 4:]], axis=1)
            return self.dequantize(q80, "q8_0", n)
        fn = self._to_float.get(tid)
        if fn is None:
            ptr = self.traits(tid).to_float or ctypes.cast(getattr(self.lib, "dequantize_row_q8_K"), ctypes.c_void_p).value
            fn = self._to_float[tid] = _ROW_FN(ptr)
        out = np.empty((rows, n), dtype=np.float32)
        if rows:
            fn(raw.ctypes.data, out.ctypes.data, rows * n)
        return out

    def fp32_to_fp16(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        out = np.empty(x.size, dtype=np.uint16)
        self.lib.ggml_fp32_to_fp16_row(x.ctypes.data, out.ctypes.data, x.size)
        return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


if __name__ == "__main__":  # python -m lowbit.tools.ggml_oracle: build and report
    g = GGML.build()
    print(g.path, g.row_size("q4_k", 256))
