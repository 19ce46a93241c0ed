"""``lowbit compare``: per-tensor error between two checkpoints, and rate-distortion plots.

``compare_files(a, b)`` decodes every tensor the two files share (A is the reference) and reports
RMSE, SQNR and the largest absolute error, with each side's bits per element.
``codec_sweep(file, codecs)`` encodes a file's float tensors with several codecs and
``plot_rate_distortion`` draws SQNR against bits per element (PNG; needs matplotlib).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

import lowbit
from lowbit.codec import QTensor

__all__ = ["compare_files", "codec_sweep", "plot_rate_distortion", "values"]


def values(t: Any) -> np.ndarray:
    """float64 values of a QTensor or array."""
    return np.asarray(lowbit.decode(t) if isinstance(t, QTensor) else t, dtype=np.float64)


def _bits(t: Any) -> float:
    if isinstance(t, QTensor):
        return t.bits_per_element
    return float(np.asarray(t).dtype.itemsize * 8)


def error_stats(ref: np.ndarray, y: np.ndarray) -> dict[str, float]:
    fin = np.isfinite(ref) & np.isfinite(y)
    e = np.where(fin, y - ref, 0.0)
    err = float(np.sum(e * e))
    sig = float(np.sum(np.where(fin, ref, 0.0) ** 2))
    n = max(int(fin.sum()), 1)
    return {
        "rmse": math.sqrt(err / n),
        "sqnr_db": 10 * math.log10(sig / err) if err > 0 and sig > 0 else math.inf,
        "max_abs_error": float(np.max(np.abs(e))) if e.size else 0.0,
        "nonfinite_mismatch": int((np.isfinite(ref) != np.isfinite(y)).sum()),
    }


def compare_files(a: str | Path, b: str | Path) -> dict[str, Any]:
    """Tensor by tensor (memory-mapped, one pair at a time)."""
    rows, only_a, only_b = [], [], []
    with lowbit.open_file(a) as fa, lowbit.open_file(b) as fb:
        na, nb = set(fa.names()), set(fb.names())
        only_a, only_b = sorted(na - nb), sorted(nb - na)
        for name in sorted(na & nb):
            ta, tb = fa.get(name, copy=False), fb.get(name, copy=False)
            xa, xb = values(ta), values(tb)
            row: dict[str, Any] = {"name": name, "shape": list(xa.shape), "bits_a": _bits(ta), "bits_b": _bits(tb)}
            if xa.shape != xb.shape:
                row["error"] = f"shapes differ: {list(xa.shape)} vs {list(xb.shape)}"
            else:
                row.update(error_stats(xa, xb))
            rows.append(row)
    return {"a": str(a), "b": str(b), "tensors": rows, "only_in_a": only_a, "only_in_b": only_b}


def codec_sweep(path: str | Path, codecs: list[lowbit.Codec]) -> list[dict[str, Any]]:
    """Rate and distortion of each codec over the file's float tensors (decoded QTensors too)."""
    from lowbit.tools.demo import rate_distortion

    with lowbit.open_file(path) as f:
        tensors = {n: values(f.get(n, copy=False)).astype(np.float32) for n in f.names()}
    tensors = {n: x for n, x in tensors.items() if x.ndim >= 1 and x.size}
    out = []
    for c in codecs:
        r = rate_distortion(c, tensors)
        r["codec"] = c.get_config()
        out.append(r)
    return out


def plot_rate_distortion(rows: list[dict[str, Any]], png: str | Path, title: str = "") -> None:
    """SQNR (dB) against bits per element, one labelled point per codec."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise lowbit.LowbitError("the rate-distortion plot needs matplotlib (pip install 'lowbit[plot]')") from None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in rows:
        if not r.get("elements") or not math.isfinite(r.get("sqnr_db", math.nan)):
            continue
        cfg = dict(r["codec"])
        label = cfg.pop("id") + (f" ({cfg['scale']})" if cfg.get("scale") else "")
        ax.scatter(r["bits_per_element"], r["sqnr_db"], s=18)
        ax.annotate(label, (r["bits_per_element"], r["sqnr_db"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("bits per element (scales and side data included)")
    ax.set_ylabel("SQNR (dB)")
    ax.set_title(title or "rate-distortion")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
