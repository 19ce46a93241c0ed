"""GGUF codecs vs ggml's C library (ctypes) and gguf-py (numpy): same rows, same run.

    python benchmarks/bench_gguf.py [--threads 1,2] [--rows 4096] [--cols 4096] [--slow-rows 512]
                                    [--repeat 3] [--types q4_k,q6_k] [--data gaussian|gemma] [--json out.json]

For every GGUF type lowbit encodes: encode (no imatrix; with one where ggml's quantizer uses it) and
decode, as Melem/s, for

* lowbit's CPU kernels through the public API (``codec.encode``; ``lowbit.formats.gguf.dequantize``
  on the bytes), Numba threads set to 1 or 2 with ``numba.set_num_threads``;
* ggml C: ``ggml_quantize_chunk`` and the type's ``to_float`` (``dequantize_row_*``) from
  libggml-base built by :mod:`lowbit.tools.ggml_oracle` (plain ``-O3``, the same file llama-quantize
  links); for 2 threads the rows are split in halves over two Python threads (ctypes drops the GIL);
* gguf-py: ``gguf.quants.quantize`` / ``dequantize`` (numpy), halves over two threads for 2 threads.

Every side returns a new output array per call (lowbit's API allocates; ggml's runner allocates
with ``np.empty`` like the oracle does; gguf-py allocates), so first-touch page faults of a 64 MiB
output are in all three figures.

The decode-only types (IQ1/IQ2/IQ3) decode the same random bytes on all three sides. Every figure
is the best of ``--repeat`` runs after one warm-up (Numba compiles on first use), the three peers
interleaved run by run; every lowbit encode is checked byte-equal to ggml and every decode bit-equal
to ggml during the run.

``%BW`` is (bytes read + bytes written) / time over the copy bandwidth measured in the same run with
the same thread count (numpy ``copyto`` of 256 MiB, halves over threads for 2); on this CPU the
encoders are compute-bound, so it is mostly a sanity figure for decodes.

Rows: fast encodes and all decodes use ``--rows`` x ``--cols``; the slow encoders (k-quants, IQ4,
MXFP4/NVFP4, every imatrix path) use the first ``--slow-rows`` rows, the same rows for all three.
``--data gemma`` takes the rows from the gemma-3-270m GGUF in .cache/models instead (its largest 2-D
tensor, decoded to float32 and tiled to the shape); decoded weights lie on a quantization grid,
which can flatter or hurt a search-based encoder, so Gaussian is the default.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_ap = argparse.ArgumentParser()
_ap.add_argument("--threads", default="1,2")
_ap.add_argument("--rows", type=int, default=4096)
_ap.add_argument("--cols", type=int, default=4096)
_ap.add_argument("--slow-rows", type=int, default=512)
_ap.add_argument("--repeat", type=int, default=5)
_ap.add_argument("--types", default="")
_ap.add_argument("--data", default="gaussian", choices=["gaussian", "gemma"])
_ap.add_argument("--no-gguf-py", action="store_true")
_ap.add_argument("--json")
ARGS = _ap.parse_args()
THREADS = [int(t) for t in ARGS.threads.split(",")]
os.environ["NUMBA_NUM_THREADS"] = str(max(THREADS))  # must be set before numba is imported

import ctypes  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import lowbit  # noqa: E402
from lowbit.formats import gguf as G  # noqa: E402
from lowbit.tools.ggml_oracle import GGML, GGML_TYPES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# every registered codec with a ggml type encodes; the GGUF types without a codec decode only
ENCODE = sorted(c for c in lowbit.list_codecs() if hasattr(lowbit.codec_class(c), "ggml_type"))
DECODE_ONLY = [name for (name, _, _) in G.BLOCK.values()
               if name not in ENCODE and name not in ("f32", "f16", "bf16", "f64", "i8", "i16", "i32", "i64")
               and name in GGML_TYPES]
FAST_ENCODE = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1", "q8_k", "tq1_0", "tq2_0", "q1_0", "q2_0"}
BLOCK = {name: (bs, ts) for (name, bs, ts) in G.BLOCK.values()}


def best(fn, n):
    return race([fn], n)[0]


def race(fns, n):
    """Best-of-n seconds for each callable (None stays None), interleaved round by round so a burst
    of load from other jobs on the shared machine hits every peer alike; one warm-up call each."""
    live = [f for f in fns if f is not None]
    for f in live:
        f()
    t = {id(f): [] for f in live}
    for _ in range(n):
        for f in live:
            t0 = time.perf_counter()
            f()
            t[id(f)].append(time.perf_counter() - t0)
    return [None if f is None else min(t[id(f)]) for f in fns]


def halves(rows, k):
    """Row ranges for k threads."""
    cut = [rows * i // k for i in range(k + 1)]
    return [(cut[i], cut[i + 1]) for i in range(k)]


class Peer:
    """Runs a per-row-range callable on k threads (k = 1: inline)."""

    def __init__(self, k):
        self.k = k
        self.pool = ThreadPoolExecutor(k) if k > 1 else None

    def run(self, fn, rows):
        if self.pool is None:
            fn(0, rows)
            return
        list(self.pool.map(lambda ab: fn(*ab), halves(rows, self.k)))


def ggml_encoder(g, t, x, im, rb, k):
    """A callable that quantizes all rows of x into a new (rows, rb) uint8 array on k threads, as
    lowbit's encode does (it allocates its output too), and returns it."""
    tid = GGML_TYPES[t]
    rows, n = x.shape
    xp = x.ctypes.data
    peer = Peer(k)
    if tid in (GGML_TYPES["q8_1"], GGML_TYPES["q8_k"]):
        fn = getattr(g.lib, "quantize_row_q8_1_ref" if t == "q8_1" else "quantize_row_q8_K_ref")
        fn.restype, fn.argtypes = None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]

        def chunk(op, a, b):
            fn(xp + a * n * 4, op + a * rb, (b - a) * n)
    else:
        imp = None if im is None else im.ctypes.data

        def chunk(op, a, b):
            # ggml_quantize_chunk(type, src, dst, start (elements, a row start), nrows, n_per_row, imatrix)
            g.lib.ggml_quantize_chunk(tid, xp, op, a * n, b - a, n, imp)

    def run(zero=False):
        out = (np.zeros if zero else np.empty)((rows, rb), dtype=np.uint8)
        op = out.ctypes.data
        peer.run(lambda a, b: chunk(op, a, b), rows)
        return out

    return run


def ggml_decoder(g, t, raw, n, k):
    """A callable that dequantizes all rows of raw into a new float32 array on k threads."""
    tid = GGML_TYPES[t]
    rows, rb = raw.shape
    g.dequantize(raw[:1], t, n)  # resolves and caches to_float
    fn = g._to_float[tid]
    rp = raw.ctypes.data
    peer = Peer(k)

    def run():
        out = np.empty((rows, n), dtype=np.float32)
        op = out.ctypes.data
        peer.run(lambda a, b: fn(rp + a * rb, op + a * n * 4, (b - a) * n), rows)
        return out

    return run


def copy_bw(k, n):
    src = np.ones(32 << 20, dtype=np.float64)  # 256 MiB
    dst = np.empty_like(src)
    peer = Peer(k)
    t = best(lambda: peer.run(lambda a, b: np.copyto(dst[a:b], src[a:b]), src.size), n)
    return 2 * src.nbytes / t / 1e9


def load_data(rows, cols):
    if ARGS.data == "gaussian":
        return np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32), "Gaussian N(0,1)"
    path = next((ROOT / ".cache" / "models").glob("*.gguf"))
    f = G.read(path)
    tensors = [t for t in f.tensors if len(t.shape) == 2]
    big = max(tensors, key=lambda t: np.prod(t.shape))
    w = np.asarray(f.decode(big.name), dtype=np.float32).reshape(-1)
    need = rows * cols
    w = np.resize(w, need)  # tiles when the tensor is smaller
    return w.reshape(rows, cols), f"{path.name}: {big.name} {tuple(big.shape)} {big.type_name}"


def gguf_py_type(t):
    from gguf import GGMLQuantizationType as QT

    try:
        return QT(GGML_TYPES[t])
    except ValueError:
        return None


def main() -> None:
    from gguf import quants as gq

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # gguf-py multiplies NaN scales of random IQ bytes

    g = GGML.build()
    X, data_desc = load_data(ARGS.rows, ARGS.cols)
    rng = np.random.default_rng(1)
    imp = (rng.random(ARGS.cols) ** 2).astype(np.float32)
    sel = [t for t in ARGS.types.split(",") if t] or ENCODE + DECODE_ONLY
    loads = [os.getloadavg()]
    res = []
    bw = {k: copy_bw(k, ARGS.repeat) for k in THREADS}
    print(f"data: {data_desc}, {ARGS.rows}x{ARGS.cols} (slow encoders: first {ARGS.slow_rows} rows); "
          f"best of {ARGS.repeat}; Melem/s; ratio = lowbit / peer")
    print("copy bandwidth (read+write): " + ", ".join(f"{k} thread(s) {v:.1f} GB/s" for k, v in bw.items()))
    hdr = f"{'type':<11}{'op':<16}{'thr':>3}{'lowbit':>9}{'%BW':>5}{'ggml C':>9}{'ratio':>7}{'gguf-py':>9}{'ratio':>7}"
    print(hdr)

    def emit(r):
        gc = "-" if r["ggml_c"] is None else f"{r['ggml_c']:9.1f}"
        gr = "-" if r["ggml_c"] is None else f"{r['lowbit'] / r['ggml_c']:7.2f}"
        py = "-" if r["gguf_py"] is None else f"{r['gguf_py']:9.1f}"
        pr = "-" if r["gguf_py"] is None else f"{r['lowbit'] / r['gguf_py']:7.2f}"
        print(f"{r['type']:<11}{r['op']:<16}{r['threads']:>3}{r['lowbit']:9.1f}{r['bw_pct']:5.0f}{gc:>9}{gr:>7}{py:>9}{pr:>7}", flush=True)
        res.append(r)

    for t in sel:
        bs, ts = BLOCK[t]
        qt = gguf_py_type(t)
        n_el = ARGS.rows * ARGS.cols
        rb = ARGS.cols // bs * ts
        if t in DECODE_ONLY:
            raw = np.random.default_rng(GGML_TYPES[t]).integers(0, 256, (ARGS.rows, rb), dtype=np.uint8)
            ok = None
        else:
            c = lowbit.get_codec(t)
            # the types ggml quantizes only with an imatrix (IQ2_XXS, IQ2_XS, IQ1_S) have no plain encode row
            for with_im in ([True] if c.requires_importance else [False, True] if c.uses_importance else [False]):
                rows = ARGS.rows if (t in FAST_ENCODE and not with_im) else ARGS.slow_rows
                x = X[:rows]
                im = imp if with_im else None
                # ggml leaves Q8_K's bsums of all-zero blocks unwritten: the reference starts zeroed
                want = ggml_encoder(g, t, x, im, rb, 1)(zero=True)
                for k in THREADS:
                    numba.set_num_threads(k)
                    peer = Peer(k)
                    genc = ggml_encoder(g, t, x, im, rb, k)
                    pyf = None
                    if qt is not None and not with_im and not ARGS.no_gguf_py:
                        try:
                            gq.quantize(x[:8], qt)
                            pyf = lambda: peer.run(lambda a, b: gq.quantize(x[a:b], qt), rows)  # noqa: E731
                        except (NotImplementedError, TypeError, ValueError):
                            pyf = None
                    ours, theirs, py = race([lambda: c.encode(x, importance=im), genc, pyf],
                                            ARGS.repeat)
                    assert np.array_equal(c.encode(x, importance=im).data, want), f"{t}: encode differs from ggml"
                    m = rows * ARGS.cols / 1e6
                    emit({"type": t, "op": "encode+imatrix" if with_im else "encode", "threads": k, "rows": rows,
                          "lowbit": m / ours, "ggml_c": m / theirs, "gguf_py": None if py is None else m / py,
                          "bw_pct": 100 * rows * (ARGS.cols * 4 + rb) / ours / 1e9 / bw[k]})
            raw = ggml_encoder(g, t, X, imp if c.requires_importance else None, rb, max(THREADS))(zero=True)
        # ggml has no Q8_1 to_float (a dot-product operand only): its d and qs decode as Q8_0's, checked below
        wy = g.dequantize(raw, t, ARGS.cols)
        shape = (ARGS.rows, ARGS.cols)
        for k in THREADS:
            numba.set_num_threads(k)
            peer = Peer(k)
            pyf = None
            if qt is not None and not ARGS.no_gguf_py:
                try:
                    gq.dequantize(raw[:2], qt)
                    pyf = lambda: peer.run(lambda a, b: gq.dequantize(raw[a:b], qt), ARGS.rows)  # noqa: E731
                except (NotImplementedError, TypeError, ValueError):
                    pyf = None
            gf = None if t == "q8_1" else ggml_decoder(g, t, raw, ARGS.cols, k)
            ours, theirs, py = race([lambda: G.dequantize(raw, t, shape), gf, pyf], ARGS.repeat)
            y = G.dequantize(raw, t, shape)
            ok = (y.view(np.uint32) == wy.view(np.uint32)) | (np.isnan(y) & np.isnan(wy))
            assert ok.all(), f"{t}: decode differs from ggml"
            m = n_el / 1e6
            emit({"type": t, "op": "decode", "threads": k, "rows": ARGS.rows, "lowbit": m / ours,
                  "ggml_c": None if theirs is None else m / theirs, "gguf_py": None if py is None else m / py,
                  "bw_pct": 100 * ARGS.rows * (ARGS.cols * 4 + rb) / ours / 1e9 / bw[k]})
        loads.append(os.getloadavg())

    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                   .stdout.splitlines() if ln.startswith("Model name"))
    except Exception:  # noqa: BLE001 - lscpu missing: report "?"
        pass
    meta = {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "gguf": importlib.metadata.version("gguf"), "lowbit": lowbit.__version__,
            "ggml": str(g.path), "data": data_desc, "shape": [ARGS.rows, ARGS.cols], "slow_rows": ARGS.slow_rows,
            "copy_bw_gbs": bw, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loadavg_1m_min_max": [min(x[0] for x in loads), max(x[0] for x in loads)], "argv": sys.argv[1:]}
    print(json.dumps(meta))
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump({"meta": meta, "results": res}, f, indent=1)


if __name__ == "__main__":
    main()
