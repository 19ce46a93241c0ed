"""Hostile files: mutated safetensors files and QTensor byte strings never crash, hang or raise
anything but a LowbitError (issue 9). Budget: 5 000 inputs per reader in CI, 100 000 with
``--fuzz-long``; every read is timed and must finish within a bound.

Mutations: truncation, bit flips, random byte runs, header rewrites (huge counts and dims,
negative/overflowing dims, overlapping and out-of-range offsets, unknown dtypes, duplicate names,
bad UTF-8, deep nesting, header-length bombs), and lowbit metadata rewrites (bad configs, shapes).
Crafted classes (issue 18, :mod:`lowbit.tools.hostile`): nested lowbit metadata, shapes whose
product passes int64, floods of empty lists / strings / arrays and of zero-size tensors (below the
readers' limits, where each must stay cheap, and just past them, where each must be refused before
it is parsed), overlapping GGUF tensors (a read file must have none).
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.codec import QTensor
from lowbit.tools import hostile as H

READ_SECONDS = 2.0  # a read that takes longer counts as a hang


def _seed_files(tmp: Path) -> list[bytes]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 64)).astype(np.float32)
    out = []
    for i, tensors in enumerate([
        {"w": lowbit.encode(x, "fp8_e4m3", scale="channel"), "b": x[0]},
        {"q": lowbit.encode(x, "fp4_e2m1", scale="block:4x16"), "i": lowbit.encode(x, "int4"), "s": np.float32(2).reshape(())},
        {"a": x.astype(np.float16), "m": lowbit.encode(x, "minifloat", ebits=3, mbits=2, special="finite")},
    ]):
        p = tmp / f"seed{i}.safetensors"
        lowbit.save(p, tensors, metadata={"k": "v"})
        out.append(p.read_bytes())
    return out


def _header_mutation(raw: bytes, rng: np.random.Generator) -> bytes:
    """Rewrite one field of the JSON header (keeping the file otherwise valid)."""
    (n,) = struct.unpack("<Q", raw[:8])
    n = min(n, len(raw) - 8)
    head = raw[8:8 + n].decode("utf-8", "surrogateescape")
    choices = [
        lambda h: re.sub(r'"shape":\[[^\]]*\]', lambda m: json.dumps([int(rng.integers(-5, 2**62))] * int(rng.integers(0, 4))).replace(" ", "").join(['"shape":', '']), h, count=1),
        lambda h: re.sub(r'"data_offsets":\[\d+,\d+\]', lambda m: '"data_offsets":' + json.dumps([int(rng.integers(-10, 10**6)), int(rng.integers(-10, 10**6))]).replace(" ", ""), h, count=1),
        lambda h: re.sub(r'"dtype":"[A-Z0-9_]+"', '"dtype":"' + str(rng.choice(["F99", "U8", "F4", "BF16", "I64", "", "F8_E4M3"])) + '"', h, count=1),
        lambda h: h.replace("}", ',' + h[1:h.index(":")] + ":{}}", 1),  # a duplicate name
        lambda h: h[:-1] + ',"x":' + "[" * int(rng.integers(100, 100000)) + "]" * 3 + "}",  # deep nesting
        lambda h: h.replace('\\"id\\"', '\\"' + str(rng.choice(["ebits", "scale", "bits", "shape"])) + '\\"', 1),
        lambda h: re.sub(r'\\"shape\\":\[[^\]]*\]', '\\"shape\\":' + json.dumps([int(rng.integers(-3, 2**40))]), h, count=1),
        lambda h: re.sub(r'\\"(scale|overflow|special)\\":[^,}]*', lambda m: '\\"' + m.group(1) + '\\":' + json.dumps(rng.choice(["x", "block:0x0", "nan", None]) if rng.random() < 0.9 else 7), h, count=1),
        lambda h: h.replace('"__metadata__"', '"__metadata__":{"lowbit":"{\\"format\\":1,\\"tensors\\":[]}"},"y"', 1),
    ]
    try:
        h = choices[int(rng.integers(len(choices)))](head)
    except ValueError:  # the (already mangled) header has no such field: leave it
        return raw
    b = h.encode("utf-8", "surrogateescape")
    return struct.pack("<Q", len(b)) + b + raw[8 + n:]


def _crafted_safetensors(rng: np.random.Generator) -> bytes:
    """One of the crafted classes: a file built to exercise exactly one limit of the reader."""
    from lowbit.formats import safetensors as st

    k = int(rng.integers(5))
    past = rng.random() < 0.05  # rarely a flood just past a limit (tens of MB): refused unparsed
    if k == 0:
        return H.safetensors_deep_lowbit(int(rng.choice([st.MAX_JSON_DEPTH - 3, st.MAX_JSON_DEPTH + 1, 3000, 100_000])))
    if k == 1:
        dims = [0] + [int(2 ** rng.integers(20, 80)) for _ in range(int(rng.integers(1, 4)))]
        rng.shuffle(dims)
        return H.safetensors_big_shape(dims, str(rng.choice(["U8", "F32", "F64", "F4"])))
    if k == 2:
        return H.safetensors_list_flood(st.MAX_JSON_VALUES // 2 + 1 if past else int(rng.integers(1, 20_000)))
    if k == 3:
        return H.safetensors_zero_tensors(st.MAX_TENSORS + 1 if past else int(rng.integers(1, 5_000)))
    n = int(rng.integers(1, 64))  # two tensors over the same bytes
    return H.safetensors_bytes({"a": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]},
                                "b": {"dtype": "U8", "shape": [n], "data_offsets": [int(rng.integers(0, n)), int(rng.integers(0, n)) + n]}},
                               b"\0" * (2 * n))


def _crafted_gguf(rng: np.random.Generator) -> bytes:
    """The GGUF reader's crafted classes: metadata floods, zero-size tensor floods, overlaps."""
    from lowbit.formats import gguf as G

    k = int(rng.integers(4))
    past = rng.random() < 0.05
    if k == 0:
        return H.gguf_string_flood(G.MAX_METADATA_VALUES if past else int(rng.integers(1, 20_000)), int(rng.choice([0, 1, 7])))
    if k == 1:
        return H.gguf_array_flood(G.MAX_METADATA_VALUES if past else int(rng.integers(1, 20_000)))
    if k == 2:
        return H.gguf_zero_tensors(G.MAX_TENSORS + 1 if past else int(rng.integers(1, 3_000)))
    nb = 32 * int(rng.integers(1, 5))
    return H.gguf_overlap(32 * int(rng.integers(0, 5)), 32 * int(rng.integers(0, 5)), nbytes=nb)


def mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(raw)
    (n,) = struct.unpack("<Q", raw[:8]) if len(raw) >= 8 else (0,)
    n = min(n, len(raw) - 8)  # the header as far as it really reaches (it may be corrupted already)
    kind = int(rng.integers(8)) if n > 0 else int(rng.choice([0, 1, 3, 5]))
    if kind == 0:  # truncation
        return bytes(b[: int(rng.integers(0, len(b)))])
    if kind == 1:  # bit flips anywhere
        for _ in range(int(rng.integers(1, 8))):
            i = int(rng.integers(len(b)))
            b[i] ^= 1 << int(rng.integers(8))
        return bytes(b)
    if kind == 2:  # bit flips in the header
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(8, 8 + n))
            b[i] ^= 1 << int(rng.integers(8))
        return bytes(b)
    if kind == 3:  # header length bombs and lies
        v = int(rng.choice([0, 1, 7, 2**63 - 1, 2**40, len(b), len(b) - 8, int(rng.integers(0, 2**64, dtype=np.uint64))]))
        return struct.pack("<Q", v % 2**64) + bytes(b[8:])
    if kind == 4:  # invalid UTF-8 in the header
        i = int(rng.integers(8, 8 + n))
        b[i] = int(rng.choice([0xFF, 0xC0, 0x80, 0xED]))
        return bytes(b)
    if kind == 5:  # random bytes in the data
        i = int(rng.integers(len(b)))
        run = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        return bytes(b[:i]) + run + bytes(b[i + len(run):])
    return _header_mutation(raw, rng)


def _read_everything(path: Path) -> None:
    """What a user does with a downloaded file: load it and decode every tensor; a GGUF file that
    was read must hold no two tensors over the same bytes."""
    for t in lowbit.load(path).values():
        if isinstance(t, QTensor):
            lowbit.decode(t)
    if path.suffix == ".gguf":
        from lowbit.formats import gguf as G

        with G.read(path) as f:
            spans = sorted((t.offset, t.offset + t.nbytes) for t in f.tensors if t.nbytes)
            assert all(b0 >= a1 for (_, a1), (b0, _) in zip(spans, spans[1:])), "tensors overlap"


def _peak_rss() -> int:
    """The process's peak resident set so far, in bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


MEMORY_SLACK = 256 << 20  # no mutant may raise the process's peak by more than this


def _timed(fn, arg) -> tuple[str, float]:
    t0 = time.perf_counter()
    try:
        fn(arg)
        outcome = "ok"
    except lowbit.LowbitError:
        outcome = "refused"
    except Exception as e:  # anything else is a bug: report the input that caused it
        raise AssertionError(f"{type(e).__name__}: {e}") from e
    return outcome, time.perf_counter() - t0


def _check(fn, arg) -> str:
    """Read once; a read slower than READ_SECONDS is read again and fails only if it is slow
    again: a parse that costs too much costs it every time, a stall of a shared machine does not
    (a fresh-clone CI run once saw a 0.03 s read take 2.6 s)."""
    outcome, dt = _timed(fn, arg)
    if dt >= READ_SECONDS:
        outcome, dt2 = _timed(fn, arg)
        assert dt2 < READ_SECONDS, f"a read took {dt:.1f} s, and {dt2:.1f} s again"
    return outcome


def _fuzz_reader(label: str, suffix: str, seeds: list[bytes], make_input, tmp_path: Path, budget: int) -> dict[str, int]:
    """Read ``budget`` mutants ``make_input(i)`` completely (a file in /dev/shm when there is one):
    every read returns or raises LowbitError within READ_SECONDS, the peak RSS grows less than
    MEMORY_SLACK over the run, and a failing input is kept next to the test's temporary files."""
    target = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    path = target / f"lowbit-fuzz-{os.getpid()}{suffix}"
    counts = {"ok": 0, "refused": 0}
    for s in seeds:  # the unmutated files read cleanly (and Numba compiles the decoders before measuring)
        path.write_bytes(s)
        _read_everything(path)
    peak0 = _peak_rss()
    try:
        for i in range(budget):
            data = make_input(i)
            path.write_bytes(data)
            try:
                counts[_check(_read_everything, path)] += 1
            except AssertionError as e:
                keep = tmp_path / f"crash-{i}{suffix}"
                keep.write_bytes(data)
                raise AssertionError(f"input {i} (saved as {keep}): {e}") from None
    finally:
        path.unlink(missing_ok=True)
    grown = _peak_rss() - peak0
    print(f"\nfuzz {label}: {budget} inputs, {counts}, peak RSS grew {grown >> 20} MiB")
    assert grown < MEMORY_SLACK, f"the reads raised the peak RSS by {grown >> 20} MiB"
    return counts


def test_fuzz_safetensors_reader(tmp_path: Path, fuzz_budget: int) -> None:
    seeds = _seed_files(tmp_path)
    rng = np.random.default_rng(int(os.environ.get("LOWBIT_FUZZ_SEED", "1")))

    def make_input(i: int) -> bytes:
        if rng.random() < 0.04:  # a crafted class (issue 18), sometimes mutated further
            data = _crafted_safetensors(rng)
            return mutate(data, rng) if rng.random() < 0.3 else data
        data = mutate(seeds[i % len(seeds)], rng)
        if rng.random() < 0.2 and len(data) > 16:  # stack a second mutation
            data = mutate(data, rng)
        return data

    counts = _fuzz_reader("safetensors reader", ".safetensors", seeds, make_input, tmp_path, fuzz_budget)
    assert counts["refused"] > fuzz_budget // 10 and counts["ok"] > 0, counts  # both paths exercised


def test_fuzz_qtensor_frombytes(fuzz_budget: int) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 32)).astype(np.float32)
    seeds = [lowbit.encode(x, "fp6_e2m3", scale="tensor").tobytes(), lowbit.encode(x, "int2").tobytes()]
    counts = {"ok": 0, "refused": 0}
    for i in range(fuzz_budget):
        raw = bytearray(seeds[i % 2])
        k = int(rng.integers(4))
        if k == 0:
            raw = raw[: int(rng.integers(len(raw)))]
        elif k == 1:
            for _ in range(int(rng.integers(1, 6))):
                j = int(rng.integers(len(raw)))
                raw[j] ^= 1 << int(rng.integers(8))
        elif k == 2:  # rewrite numbers in the header
            s = bytes(raw).decode("latin-1")
            s = re.sub(r"\d+", lambda m: str(int(rng.integers(-2, 2**40))) if rng.random() < 0.3 else m.group(0), s, count=6)
            raw = bytearray(s.encode("latin-1"))
        else:
            raw[8:16] = struct.pack("<Q", int(rng.integers(0, 2**63)))

        def decode_it(b: bytes) -> None:
            QTensor.frombytes(b).decode()

        counts[_check(decode_it, bytes(raw))] += 1
    print(f"\nfuzz QTensor bytes: {counts}")
    assert counts["refused"] > 0 and counts["ok"] > 0, counts


@pytest.mark.parametrize("name", ["dup", "deep", "bomb"])
def test_specific_hostile_headers(tmp_path: Path, name: str) -> None:
    p = tmp_path / "h.safetensors"
    head = {"dup": b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
            "deep": b'{"a":' + b"[" * 200000 + b"]" * 200000 + b"}",
            "bomb": b"{}"}[name]
    n = 2**62 if name == "bomb" else len(head)
    p.write_bytes(struct.pack("<Q", n) + head + b"\0")
    with pytest.raises(lowbit.FormatError, match={"dup": "repeats the key", "deep": "JSON", "bomb": "header length"}[name]):
        lowbit.load(p)


# ---- GGUF ----------------------------------------------------------------------------------------

def _gguf_seeds(tmp: Path) -> list[bytes]:
    """Small GGUF files covering every kind of header field: scalars of each type, strings, arrays
    of numbers, strings and arrays; tensors of plain, legacy, k-quant and grid i-quant types."""
    from lowbit.formats import gguf as G

    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    meta = {"general.architecture": "llama", "general.alignment": 32, "u8": 7, "i64": -2**40, "f": 0.5, "b": True,
            "tokens": ["<s>", "é", ""], "scores": np.array([0.0, -1.5, 2.0], np.float32),
            "nested": [["a", "b"], ["c"]]}
    types = {"u8": (G.UINT8, None), "nested": (G.ARRAY, G.ARRAY)}
    out = []
    for i, tensors in enumerate([
        {"w.q4_k": lowbit.encode(x, "q4_k"), "n.f32": x[0, :5].copy(), "h.f16": x[:2, :8].astype(np.float16)},
        {"w.q4_0": lowbit.encode(x, "q4_0"), "w.q8_0": lowbit.encode(x[:1], "q8_0"), "w.q6_k": lowbit.encode(x[:2], "q6_k")},
    ]):
        p = tmp / f"seed{i}.gguf"
        G.save(p, tensors, meta, metadata_types=types)
        out.append(p.read_bytes())
    # grid i-quants have no encoder: random block bytes (their fp16 scales may be Inf/NaN: decoding is total)
    p = tmp / "seed_iq.gguf"
    specs = [("iq2_xxs", (2, 256)), ("iq3_s", (1, 256)), ("iq1_m", (1, 256))]
    with G.Writer(p, [(f"t.{t}", t, s) for t, s in specs], {"general.architecture": "llama"}) as w:
        for t, s in specs:
            _, bs, ts = next(v for v in G.BLOCK.values() if v[0] == t)
            w.write(f"t.{t}", rng.integers(0, 256, s[0] * s[1] // bs * ts, dtype=np.uint8))
    out.append(p.read_bytes())
    return out


def _gguf_fields(raw: bytes) -> list[tuple[int, str, str]]:
    """(offset, struct format, kind) of every number in a well-formed GGUF header: the fields a
    hostile file would lie in."""
    fields: list[tuple[int, str, str]] = [(4, "<I", "version"), (8, "<Q", "count"), (16, "<Q", "count")]
    n_t, n_kv = struct.unpack_from("<QQ", raw, 8)
    pos = 24
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}

    def string() -> None:
        nonlocal pos
        fields.append((pos, "<Q", "length"))
        pos += 8 + struct.unpack_from("<Q", raw, pos)[0]

    def value(vt: int) -> None:
        nonlocal pos
        if vt in scalar:
            pos += struct.calcsize(scalar[vt])
        elif vt == 8:
            string()
        else:
            et, n = struct.unpack_from("<IQ", raw, pos)
            fields.extend([(pos, "<I", "type"), (pos + 4, "<Q", "count")])
            pos += 12
            for _ in range(n):
                value(et)

    for _ in range(n_kv):
        string()
        vt = struct.unpack_from("<I", raw, pos)[0]
        fields.append((pos, "<I", "type"))
        pos += 4
        value(vt)
    for _ in range(n_t):
        string()
        nd = struct.unpack_from("<I", raw, pos)[0]
        fields.append((pos, "<I", "ndims"))
        pos += 4
        fields.extend((pos + 8 * j, "<Q", "dim") for j in range(nd))
        pos += 8 * nd
        fields.extend([(pos, "<I", "type"), (pos + 4, "<Q", "offset")])
        pos += 12
    return fields


def _gguf_mutation(raw: bytes, fields: list[tuple[int, str, str]], rng: np.random.Generator) -> bytes:
    """Set one header number to a hostile value for its kind."""
    off, fmt, kind = fields[int(rng.integers(len(fields)))]
    cur = struct.unpack_from(fmt, raw, off)[0]
    top = 2 ** (8 * struct.calcsize(fmt)) - 1
    hostile = {
        "version": [0, 1, 2, 4, top],
        "count": [0, 1, cur + 1, cur * 1000 + 7, 2**31, 2**62, top],
        "length": [0, cur + 1, max(cur - 1, 0), 2**32, 2**63, top],
        "type": [13, 14, 30, 39, 40, 99, 2**31, top] + list(range(13)),
        "ndims": [0, 2, 3, 5, 100, top],
        "dim": [0, 1, 3, 7, 2**31, 2**32 + 1, 2**62, top, cur * 2, cur + 1],
        "offset": [0, 1, 16, 31, cur + 32, cur - 32 if cur >= 32 else 33, 2**40, top],
    }[kind]
    v = int(hostile[int(rng.integers(len(hostile)))]) % (top + 1)
    b = bytearray(raw)
    struct.pack_into(fmt, b, off, v)
    return bytes(b)


def test_fuzz_gguf_reader(tmp_path: Path, fuzz_budget: int) -> None:
    seeds = _gguf_seeds(tmp_path)
    maps = [_gguf_fields(s) for s in seeds]
    rng = np.random.default_rng(int(os.environ.get("LOWBIT_FUZZ_SEED", "1")) + 100)

    def make_input(i: int) -> bytes:
        if rng.random() < 0.04:  # a crafted class (issue 18)
            return _crafted_gguf(rng)
        k = i % len(seeds)
        data = seeds[k]
        for _ in range(1 + int(rng.random() < 0.25)):  # sometimes two mutations
            kind = int(rng.integers(5))
            if kind <= 1:  # a structured lie in the header
                data = _gguf_mutation(data, maps[k], rng) if len(data) == len(seeds[k]) else data
            elif kind == 2:  # truncation
                data = data[: int(rng.integers(0, max(len(data), 1)))]  # may reach empty
            elif kind == 3:  # bit flips anywhere
                b = bytearray(data)
                for _ in range(int(rng.integers(1, 6)) if b else 0):
                    b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
                data = bytes(b)
            else:  # a run of random bytes (bad UTF-8 in names and keys included)
                j = int(rng.integers(len(data))) if data else 0
                run = rng.integers(0, 256, int(rng.integers(1, 24)), dtype=np.uint8).tobytes()
                data = data[:j] + run + data[j + len(run):]
        return data

    counts = _fuzz_reader("GGUF reader", ".gguf", seeds, make_input, tmp_path, fuzz_budget)
    assert counts["refused"] > fuzz_budget // 10 and counts["ok"] > fuzz_budget // 20, counts


def test_gguf_field_map_covers_the_seeds(tmp_path: Path) -> None:
    """The structured mutations reach every field kind (the map parses the seeds completely)."""
    for s in _gguf_seeds(tmp_path):
        kinds = {k for _, _, k in _gguf_fields(s)}
        assert {"version", "count", "length", "type", "ndims", "dim", "offset"} <= kinds
