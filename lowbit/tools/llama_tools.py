"""llama.cpp's own command-line tools as the judge of lowbit's GGUF files (the tests and benchmarks).

``llama-quantize``, ``llama-perplexity``, ``llama-gguf-split`` and ``llama-imatrix`` are built from the same pinned
llama-cpp-python sdist as the ggml oracle (:mod:`lowbit.tools.ggml_oracle`), in the same cache
directory (``LOWBIT_GGML_CACHE``, default ``.cache/ggml-oracle``), under ``tools-build/``. Nothing
of it is committed or shipped; the build runs once (a few minutes on two cores) and is reused.

    tools = LlamaTools.build()                                   # once, then cached
    tools.run("llama-quantize", "in-f32.gguf", "out.gguf", "Q4_K_M", "2")
    ppl = tools.perplexity("model.gguf", "text.txt", ctx=128)    # llama-perplexity's final estimate

Build choices (each one keeps the judge the tool users run, and the build inside the CI budget):

* static executables (``BUILD_SHARED_LIBS=OFF``): no rpath or library-path set-up to go wrong;
* ``GGML_NATIVE=ON``: the CPU backend for the machine it runs on, as a user's own build is — the
  perplexity run is then fast; the quantizers (``ggml-base``, ``ggml-quants.c``) are plain C at -O3;
* C++ at ``-O1``: llama.cpp's C++ (the model loader, the tools, the large ``llama-common`` library
  they link) is glue whose speed does not matter here, and -O1 roughly halves its compile time;
  the C of ggml keeps its -O3;
* no CURL, OpenSSL, server, web UI, examples or tests.

Every failure raises :class:`~lowbit.tools.ggml_oracle.OracleUnavailable` naming the step: a test
that needs the judge fails loudly rather than skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from .ggml_oracle import OracleUnavailable, _run, default_cache_dir, sdist_source

__all__ = ["LlamaTools", "TOOLS"]

#: the executables built (cmake target = file name)
TOOLS = ("llama-quantize", "llama-perplexity", "llama-gguf-split", "llama-imatrix")

_CMAKE_OPTIONS = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=ON", "-DGGML_OPENMP=OFF",
                  "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON",
                  "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_COMMON=ON", "-DLLAMA_CURL=OFF",
                  "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_HTML=OFF", "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG"]

# llama-perplexity's last line: "Final estimate: PPL = 20.6740 +/- 0.61234"
_FINAL = re.compile(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)")


def _build(cache: Path) -> Path:
    bindir = cache / "tools-build" / "bin"
    if all((bindir / t).is_file() for t in TOOLS):
        return bindir
    tree = sdist_source(cache)
    for tool in ("cmake", "cc", "c++"):
        if shutil.which(tool) is None:
            raise OracleUnavailable(f"llama.cpp tools: need {tool} on PATH to build {', '.join(TOOLS)}")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    build = cache / "tools-build"
    stamp = build / "lowbit-options.txt"  # the options this tree was configured with
    if not stamp.is_file() or stamp.read_text() != "\n".join(_CMAKE_OPTIONS):
        shutil.rmtree(build, ignore_errors=True)
        _run(["cmake", "-S", str(tree), "-B", str(build), *gen, *_CMAKE_OPTIONS], "cmake configure of the llama.cpp tools")
        stamp.write_text("\n".join(_CMAKE_OPTIONS))
    # an existing tree builds only what is missing (a tool added to TOOLS later)
    _run(["cmake", "--build", str(build), "--target", *TOOLS, "-j", str(max(os.cpu_count() or 1, 1))],
         "cmake build of the llama.cpp tools")
    missing = [t for t in TOOLS if not (bindir / t).is_file()]
    if missing:
        raise OracleUnavailable(f"llama.cpp tools: build finished but {missing} are missing from {bindir}")
    return bindir


class LlamaTools:
    """The built executables; :meth:`run` calls one and raises with its output on a non-zero exit.

    >>> LlamaTools.build().bin("llama-quantize").name  # doctest: +SKIP
    'llama-quantize'
    """

    def __init__(self, bindir: str | os.PathLike[str]) -> None:
        self.bindir = Path(bindir)

    @classmethod
    def build(cls, cache: Path | None = None) -> "LlamaTools":
        """Build (once; cached; one process at a time) and return the tools. Raises OracleUnavailable."""
        from .cachelock import cache_lock

        cache = cache or default_cache_dir()
        with cache_lock(cache, "tools-build"):
            return cls(_build(cache))

    def bin(self, name: str) -> Path:
        if name not in TOOLS:
            raise ValueError(f"llama.cpp tools: {name!r} is not built (built: {', '.join(TOOLS)})")
        return self.bindir / name

    def run(self, name: str, *args: str | os.PathLike[str], timeout: float = 900) -> subprocess.CompletedProcess:
        """Run one tool; a non-zero exit raises RuntimeError with the command and its output's tail."""
        cmd = [str(self.bin(name)), *map(str, args)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            tail = (r.stdout[-2000:] + "\n" + r.stderr[-4000:]).strip()
            raise RuntimeError(f"{name} exited {r.returncode}: {' '.join(cmd)}\n{tail}")
        return r

    def perplexity(self, model: str | os.PathLike[str], text: str | os.PathLike[str], *, ctx: int = 128,
                   chunks: int | None = None, threads: int = 2, batch: int | None = None) -> tuple[float, float]:
        """llama-perplexity's final estimate (PPL, its +/-) of ``model`` on the text file, context ``ctx``."""
        args: list[str] = ["-m", str(model), "-f", str(text), "-c", str(ctx), "-t", str(threads), "--no-warmup"]
        if chunks is not None:
            args += ["--chunks", str(chunks)]
        if batch is not None:
            args += ["-b", str(batch)]
        r = self.run("llama-perplexity", *args)
        m = _FINAL.search(r.stdout + r.stderr)
        if m is None:
            raise RuntimeError(f"llama-perplexity printed no final estimate:\n{(r.stdout + r.stderr)[-3000:]}")
        return float(m.group(1)), float(m.group(2))
