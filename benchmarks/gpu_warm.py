"""Warm the JIT caches before the GPU tests: one process per codec family, in parallel, encodes
and decodes a tiny tensor with every configuration on the CPU (Numba, ``cache=True``: the
compiled code lands in ``lowbit/kernels/cpu/__pycache__``) and, on a CUDA device, on the GPU
(Triton's on-disk cache). The pytest workers then load compiled code instead of each compiling
every kernel again, which on a cold machine costs more than the tests themselves.

    python benchmarks/gpu_warm.py [--families mx,nvfp4] [--jobs 16] [--gpu]

Failures are printed and counted but are not the check's verdict: the tests that follow report
the same problem with the details.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time


def warm_family(args: tuple[str, bool]) -> tuple[str, int, list[str], float]:
    """Every configuration of every codec in one family: (family, configs, errors, seconds)."""
    family, gpu = args
    import numpy as np

    import lowbit

    t0 = time.monotonic()
    errors, n = [], 0
    rng = np.random.default_rng(0)
    for cid in lowbit.list_codecs():
        cls = lowbit.codec_class(cid)
        if cls.family != family:
            continue
        for cfg in cls.examples():
            n += 1
            try:
                codec = lowbit.get_codec(cid, **cfg)
                x = rng.standard_normal((2, 4 * codec.block_size)).astype(np.float32)
                codec.decode(codec.encode(x, backend="cpu"), backend="cpu")
                if gpu:
                    import torch

                    codec.decode(codec.encode(torch.from_numpy(x).cuda(), backend="gpu"), backend="gpu")
            except Exception as e:  # noqa: BLE001 - reported; the tests give the details
                errors.append(f"{cid} {cfg}: {type(e).__name__}: {e}"[:200])
    return family, n, errors, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", help="comma-separated families (default: all)")
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--gpu", action="store_true", help="also compile the Triton kernels on the CUDA device")
    a = ap.parse_args(argv)
    import lowbit

    fams = sorted({lowbit.codec_class(c).family for c in lowbit.list_codecs()})
    if a.families:
        fams = [f for f in fams if f in a.families.split(",")]
    with mp.get_context("spawn").Pool(max(1, min(a.jobs, len(fams)))) as pool:
        bad = 0
        for fam, n, errors, secs in pool.imap_unordered(warm_family, [(f, a.gpu) for f in fams]):
            bad += len(errors)
            print(f"gpu_warm: {fam:<14} {n:3d} configurations in {secs:5.1f} s" + (f", {len(errors)} errors" if errors else ""), flush=True)
            for e in errors:
                print(f"gpu_warm:   {e}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
