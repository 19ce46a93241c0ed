"""Rate–distortion table of every KV codec at 2, 3 and 4 bits, on random unit vectors and on
real keys; writes docs/kv-quality.md.

    python benchmarks/bench_kv_quality.py                    # print the table
    python benchmarks/bench_kv_quality.py --write            # and rewrite docs/kv-quality.md

Columns (all float64 statistics of lowbit's float32 encode → decode, or scores on the codes):

* ``bits/elt``: ``codec.bits_per_element`` — norms, padding and side data included;
* ``MSE``: mean over vectors of ‖x̂ − x‖² / ‖x‖² (for unit vectors: the paper's D_mse);
* ``d·IP err``: d · E[(q·x̂ − q·x)²] / E[‖q‖²‖x‖²] — for unit q and x the paper's d·D_prod;
* ``IP bias``: Σ s·t / Σ t² with t = q·x and s its estimate (1 = unbiased on average;
  the MSE quantizers shrink inner products, §1.6 of research/kvcodecs.md).

Random: 4 000 unit vectors at d = 128 against 32 unit queries (128 000 pairs). Real: the
post-RoPE keys of SmolLM2-135M layers 1, 15 and 29 (3 KV heads × 118 tokens, head_dim 64,
tests/data/smollm2_kv.npz, made by ``python -m lowbit.tools.real_keys``) for the MSE, and layer
15's real queries (9 query heads on 3 KV heads × 16 positions) for the inner products.
BFP runs over the 192 channels of a token (3 heads × 64) in blocks of 32; its "+K-sort" rows
permute those channels by the K-sort permutation of W_k's RMSNorm-folded row norms (weights
only) and exist only on real keys; their rate counts the stored permutation (192 × 16 bits per
layer) over the sample's 118 tokens — over a long cache it tends to 4.25. BFP's mantissa has 4–8 bits, so it has no 2- or 3-bit row.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

import lowbit
from lowbit.codecs.bfp import ksort_permutation
from lowbit.kvcache import scores

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "smollm2_kv.npz"
OUT = ROOT / "docs" / "kv-quality.md"


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def rotated_codecs(bits: int, d: int) -> list[tuple[str, Any]]:
    out = [("turboquant_mse", lowbit.get_codec("turboquant_mse", dim=d, bits=bits)),
           ("turboquant_mse (no norm corr.)", lowbit.get_codec("turboquant_mse", dim=d, bits=bits, norm_correction=False)),
           ("turboquant_prod", lowbit.get_codec("turboquant_prod", dim=d, bits=bits)),
           ("octopus", lowbit.get_codec("octopus", dim=d, bits=bits)),
           ("octopus joint", lowbit.get_codec("octopus", dim=d, bits=bits, joint=True))]
    return out


def stats(x: np.ndarray, xh: np.ndarray, q: np.ndarray, s: np.ndarray, t: np.ndarray, d: int) -> dict[str, float]:
    x, xh = x.astype(np.float64), xh.astype(np.float64)
    mse = float((((xh - x) ** 2).sum(-1) / np.maximum((x * x).sum(-1), 1e-300)).mean())
    s, t = s.astype(np.float64), t.astype(np.float64)
    qn = (q.astype(np.float64) ** 2).sum(-1)
    xn = (x**2).sum(-1)
    scale = float(np.mean(qn[:, None] * xn[None, :])) if qn.ndim == 1 else float(np.mean(qn[..., :, None] * xn[..., None, :]))
    return {"mse": mse, "ip": d * float(((s - t) ** 2).mean()) / scale, "bias": float((s * t).sum() / (t * t).sum())}


def random_rows() -> list[dict[str, Any]]:
    d = 128
    x = unit(4000, d, 1)
    q = unit(32, d, 2)
    t = q @ x.T
    rows = []
    for bits in (2, 3, 4):
        for name, c in rotated_codecs(bits, d):
            qt = c.encode(x)
            rows.append({"data": "random", "bits": bits, "codec": name, "rate": c.bits_per_element((1, d)),
                         **stats(x, c.decode(qt), q, scores(q, qt), t, d)})
        if bits == 4:
            c = lowbit.get_codec("bfp", mbits=4, block=32)
            xh = c.decode(c.encode(x))
            rows.append({"data": "random", "bits": bits, "codec": "bfp (mbits 4, block 32)",
                         "rate": c.bits_per_element((1, d)), **stats(x, xh, q, q @ xh.T, t, d)})
    return rows


def real_rows() -> list[dict[str, Any]]:
    z = dict(np.load(DATA))
    d = 64
    keys = {L: z[f"k{L}"] for L in (1, 15, 29)}          # [3, 118, 64]
    q15 = z["q15"]                                       # [9, 16, 64], head h on kv-head h // 3
    qg = q15.reshape(3, 3 * 16, d)                       # query heads grouped by their kv-head
    t15 = np.einsum("hmd,hnd->hmn", qg, keys[15])
    rows = []

    def add(bits: int, name: str, rate: float, dec: dict[int, np.ndarray], s15: np.ndarray) -> None:
        xs = np.concatenate([keys[L].reshape(-1, d) for L in keys])
        xh = np.concatenate([dec[L].reshape(-1, d) for L in keys])
        st = stats(xs, xh, qg.reshape(-1, d), s15, t15, d)
        # the IP scale must pair each query with its own kv-head's keys
        qn = (qg.astype(np.float64) ** 2).sum(-1)
        kn = (keys[15].astype(np.float64) ** 2).sum(-1)
        scale = float(np.mean(qn[:, :, None] * kn[:, None, :]))
        st["ip"] = d * float(((s15.astype(np.float64) - t15) ** 2).mean()) / scale
        rows.append({"data": "real", "bits": bits, "codec": name, "rate": rate, **st})

    for bits in (2, 3, 4):
        for name, c in rotated_codecs(bits, d):
            enc = {L: c.encode(keys[L]) for L in keys}
            add(bits, name, c.bits_per_element((1, d)), {L: c.decode(enc[L]) for L in keys}, scores(qg, enc[15]))
        if bits == 4:
            for ks in (False, True):
                c = lowbit.get_codec("bfp", mbits=4, block=32, ksort=ks)
                dec = {}
                for L in keys:
                    tok = np.transpose(keys[L], (1, 0, 2)).reshape(-1, 3 * d)   # tokens × (head, dim)
                    kw = {"permutation": ksort_permutation(z[f"wkg_rows{L}"], 3, d, rope="half")} if ks else {}
                    y = c.decode(c.encode(tok, **kw))
                    dec[L] = np.transpose(y.reshape(-1, 3, d), (1, 0, 2))
                s15 = np.einsum("hmd,hnd->hmn", qg, dec[15])
                # the permutation (192 uint16 per layer) is counted over this sample's 118 tokens
                add(bits, "bfp (mbits 4, block 32)" + (" + K-sort" if ks else ""),
                    c.bits_per_element((keys[15].shape[1], 3 * d)), dec, s15)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| data | bits | codec | bits/elt | MSE | d·IP err | IP bias |", "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['data']} | {r['bits']} | {r['codec']} | {r['rate']:.3f} | {r['mse']:.4f} | "
                   f"{r['ip']:.4f} | {r['bias']:.3f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"rewrite {OUT.relative_to(ROOT)}")
    a = ap.parse_args()
    rows = random_rows() + real_rows()
    tab = table(rows)
    print(tab)
    if a.write:
        doc = __doc__.split("\n\n", 1)[1]
        OUT.write_text(
            "# KV codecs: rate and distortion\n\n"
            f"Generated by `python benchmarks/bench_kv_quality.py --write` (lowbit {lowbit.__version__}, "
            f"{time.strftime('%Y-%m-%d')}); do not edit by hand.\n\n" + doc
            + "\n" + tab + "\n")
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
