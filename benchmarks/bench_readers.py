"""Parse cost of the hardened readers at their limits (issue 18): crafted files from
:mod:`lowbit.tools.hostile` (floods of metadata values and of zero-size tensors, sized at or one past
each limit), a realistic GGUF vocabulary, and the cost of verification (SHA-256 of every tensor on
first read) on a lowbit safetensors file. Prints one table; ``--json PATH`` writes the numbers.

    python benchmarks/bench_readers.py [--quick] [--json results-readers.json]

MB/s = bytes of header/metadata over wall time (best of ``--repeat``); the limits are the readers'
constants (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lowbit  # noqa: E402
from lowbit.formats import gguf as G  # noqa: E402
from lowbit.formats import safetensors as st  # noqa: E402
from lowbit.tools import hostile as H  # noqa: E402


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _outcome(fn) -> str:
    try:
        fn()
        return "read"
    except lowbit.LowbitError:
        return "refused"


def _vocab(n: int) -> bytes:
    """A tokenizer-like GGUF: n tokens of 2..12 UTF-8 bytes, n float32 scores, n int32 types, n merges."""
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyzé▁ĠČ")
    toks = ["".join(rng.choice(letters, int(rng.integers(1, 7)))) + str(i) for i in range(n)]
    kv = [H._s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, n) + b"".join(H._s(t) for t in toks),
          H._s("tokenizer.ggml.merges") + struct.pack("<IIQ", 9, 8, n) + b"".join(H._s(t + " " + t[:2]) for t in toks),
          H._s("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, n) + rng.standard_normal(n).astype("<f4").tobytes(),
          H._s("tokenizer.ggml.token_type") + struct.pack("<IIQ", 9, 5, n) + np.ones(n, "<i4").tobytes()]
    return H.gguf_bytes(kv, [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a quarter of each limit (a fast look)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    f = 4 if a.quick else 1
    nv, nt = G.MAX_METADATA_VALUES // f - 1, G.MAX_TENSORS // f
    cases = [
        ("GGUF: empty strings at the value limit", ".gguf", lambda: H.gguf_string_flood(nv), G.read),
        ("GGUF: 8-byte strings at the value limit", ".gguf", lambda: H.gguf_string_flood(nv, 8), G.read),
        ("GGUF: empty arrays at the value limit", ".gguf", lambda: H.gguf_array_flood(nv), G.read),
        ("GGUF: one value past the limit", ".gguf", lambda: H.gguf_string_flood(G.MAX_METADATA_VALUES), G.read),
        ("GGUF: 262 144-token vocabulary (tokens, merges, scores, types)", ".gguf", lambda: _vocab(262_144 // f), G.read),
        ("GGUF: zero-size tensors at the tensor limit (load)", ".gguf", lambda: H.gguf_zero_tensors(nt), G.load),
        ("safetensors: zero-size tensors at the tensor limit (load)", ".safetensors", lambda: H.safetensors_zero_tensors(nt), lowbit.load),
        ("safetensors: one tensor past the limit", ".safetensors", lambda: H.safetensors_zero_tensors(st.MAX_TENSORS + 1), lowbit.load),
        ("safetensors: empty-list flood past the value limit", ".safetensors", lambda: H.safetensors_list_flood(st.MAX_JSON_VALUES // 2 + 1), lowbit.load),
    ]
    rows = []
    d = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    for label, suffix, build, read in cases:
        p = d / f"case{suffix}"
        data = build()
        p.write_bytes(data)
        outcome = _outcome(lambda: read(p))
        dt = _best(lambda: _outcome(lambda: read(p)), a.repeat)
        rows.append({"case": label, "bytes": len(data), "seconds": dt, "MB_per_s": len(data) / dt / 1e6, "outcome": outcome})
        print(f"| {label} | {len(data) / 1e6:.1f} | {dt:.3f} | {len(data) / dt / 1e6:.0f} | {outcome} |", flush=True)
        p.unlink()
    # verification: SHA-256 of every tensor on first read, on a 256 MiB lowbit file
    x = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)
    p = d / "v.safetensors"
    lowbit.save(p, {f"w{i}": lowbit.encode(x, "fp8_e4m3", scale="channel") for i in range(4 // f or 1)} | {"f": x})
    size = p.stat().st_size

    def read_all(verify):
        with lowbit.open_file(p, verify=verify) as fh:
            for n in fh.keys():
                fh.raw(n).sum(dtype=np.uint64)  # touch every byte, as a copy or decode would
    t_off = _best(lambda: read_all(False), a.repeat)
    t_on = _best(lambda: read_all(None), a.repeat)
    ver = {"bytes": size, "unverified_s": t_off, "verified_s": t_on, "sha256_GB_per_s": size / max(t_on - t_off, 1e-9) / 1e9}
    print(f"verify: {size / 2**20:.0f} MiB, every byte read: {t_off:.3f} s unverified, {t_on:.3f} s verified "
          f"(+{(t_on / t_off - 1) * 100:.0f} %, SHA-256 at {ver['sha256_GB_per_s']:.2f} GB/s)")
    p.unlink()
    d.rmdir()
    info = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average": os.getloadavg()}
    print(json.dumps(info))
    if a.json:
        Path(a.json).write_text(json.dumps({"info": info, "cases": rows, "verify": ver}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
