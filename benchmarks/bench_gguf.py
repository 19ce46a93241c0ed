"""GGUF codecs vs ggml's C library (ctypes, single thread) and gguf-py (numpy), same rows.

    python benchmarks/bench_gguf.py [--rows 512] [--cols 4096] [--json out.json]

Prints Melem/s for our encode (no imatrix, and with one where ggml has an imatrix path) against
ggml's ``ggml_quantize_chunk`` and gguf-py's ``quantize``, and our decode against ggml's
``dequantize_row_*`` and gguf-py's ``dequantize``; each figure is the best of 3 runs after a warm-up
(Numba compiles on first use). Encodes are checked byte-equal to ggml while timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import lowbit  # noqa: E402
from lowbit.tools.ggml_oracle import GGML, GGML_TYPES  # noqa: E402

TYPES = ["q4_0", "q8_0", "mxfp4_ggml", "tq2_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs"]
IMATRIX = {"q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs", "q4_0"}


def best(fn, n=3):
    fn()
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--json")
    a = ap.parse_args()
    import gguf
    from gguf import GGMLQuantizationType as QT
    from gguf import quants as gq

    g = GGML.build()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.rows, a.cols)).astype(np.float32)
    imp = (rng.random(a.cols) ** 2).astype(np.float32)
    n = x.size / 1e6
    res = []
    print(f"{a.rows}x{a.cols} float32, single thread; Melem/s (ratio = ours / peer)")
    print(f"{'type':<11}{'op':<16}{'lowbit':>9}{'ggml C':>9}{'ratio':>7}{'gguf-py':>9}{'ratio':>7}")
    for t in TYPES:
        c = lowbit.get_codec(t)
        qtype = QT(GGML_TYPES[t]) if t != "mxfp4_ggml" else QT.MXFP4
        for with_im in ([False, True] if t in IMATRIX else [False]):
            im = imp if with_im else None
            ours = best(lambda: c.encode(x, importance=im))
            theirs = best(lambda: g.quantize(x, t, im))
            assert np.array_equal(c.encode(x, importance=im).data, g.quantize(x, t, im))
            py = None
            if not with_im:
                try:
                    py = best(lambda: gq.quantize(x, qtype), n=1)
                except NotImplementedError:
                    py = None
            row = {"type": t, "op": "encode+imatrix" if with_im else "encode", "lowbit": n / ours,
                   "ggml_c": n / theirs, "gguf_py": None if py is None else n / py}
            res.append(row)
        raw = g.quantize(x, t)
        q = c.encode(x)
        ours = best(lambda: c.decode(q))
        theirs = best(lambda: g.dequantize(raw, t, a.cols))
        try:
            py = best(lambda: gq.dequantize(raw, qtype), n=1)
        except NotImplementedError:
            py = None
        res.append({"type": t, "op": "decode", "lowbit": n / ours, "ggml_c": n / theirs,
                    "gguf_py": None if py is None else n / py})
    for r in res:
        py = "-" if r["gguf_py"] is None else f"{r['gguf_py']:9.1f}"
        pr = "-" if r["gguf_py"] is None else f"{r['lowbit'] / r['gguf_py']:7.2f}"
        print(f"{r['type']:<11}{r['op']:<16}{r['lowbit']:9.1f}{r['ggml_c']:9.1f}{r['lowbit'] / r['ggml_c']:7.2f}{py:>9}{pr:>7}")
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "gguf": getattr(gguf, "__version__", "?"), "shape": [a.rows, a.cols],
            "date": time.strftime("%Y-%m-%d")}
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "results": res}, f, indent=1)


if __name__ == "__main__":
    main()
