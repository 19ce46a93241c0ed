"""Write the golden vectors ``lowbit/spec/vectors/<codec_id>.json`` from the oracles.

The bytes come from a real oracle run, never from lowbit's encoder: ml_dtypes' casts where the
element format exists there, and :class:`lowbit.tools.oracles.ReferenceQuantizer` (an independent
nearest-value search) otherwise; for the block-scaled families torchao, compressed-tensors and
bitsandbytes on the CPU, or the references in :mod:`lowbit.tools.blockscaled_oracles` where no
peer has the format. Where both exist they must agree; the one documented exception
is ml_dtypes < 0.7 rounding float32-subnormal inputs to E8M0 (1.36·2**-127 → 2**-126 instead of
2**-127; :data:`lowbit.tools.oracle_versions.ML_DTYPES_E8M0_SUBNORMALS`), where the reference is used
and the case says so in ``notes``.

    python -m lowbit.tools.regen_vectors                # write the missing files
    python -m lowbit.tools.regen_vectors fp8_e4m3 -f    # rewrite one (after a reviewed change)
    python -m lowbit.tools.regen_vectors --check        # regenerate in memory, compare, exit 1 on drift
"""

from __future__ import annotations

import argparse
import sys
import zlib
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

import lowbit
from lowbit.codecs.minifloat import ElementCodec
from lowbit.numerics import FloatFormat
from lowbit.tools import blockscaled_oracles as BO
from lowbit.tools import oracles as O
from lowbit.tools.oracle_versions import ML_DTYPES_E8M0_SUBNORMALS

VECTOR_DIR = Path(str(resources.files("lowbit") / "spec" / "vectors"))


def _inputs(codec: ElementCodec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Grid points, midpoints (ties) and their neighbours, ±max and beyond, random values at
    several scales, and the specials the codec's policy accepts."""
    fmt = codec.format
    v = O.reference_values(fmt)
    g = np.unique(v[np.isfinite(v)])
    mids = (g[1:] + g[:-1]) / 2
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        pool = np.concatenate([g, mids, [g[-1] * 1.0625, g[-1] * 4, g[0] * 1.0625]]).astype(np.float32)
    pool = np.concatenate([pool, np.nextafter(pool, np.float32(np.inf)), np.nextafter(pool, np.float32(-np.inf))])
    x = rng.choice(pool[np.isfinite(pool)], n).astype(np.float64)
    rnd = rng.standard_normal(n) * np.exp2(rng.uniform(np.log2(max(np.abs(g[g != 0]).min(), 2.0**-149)), np.log2(np.abs(g).max()) + 1, n))
    x = np.where(rng.random(n) < 0.35, rnd, x)
    if codec.scale is not None:  # give rows different magnitudes so the scales differ
        x = x * np.exp2(rng.integers(-20, 20, shape[:-1] + (1,))).reshape(-1).repeat(shape[-1])[:n]
    with np.errstate(over="ignore"):  # values past float32's range become ±Inf on purpose
        x = x.astype(np.float32)
    policy = codec.input_policy()
    specials = [0.0, -0.0]
    if policy["nan"] != "raise":
        specials += [np.nan, -np.nan]
    if policy["inf"] != "raise":
        specials += [np.inf, -np.inf]
    if isinstance(fmt, FloatFormat) and not fmt.zero and codec.scale is None:
        specials += [2.0**-130, 1.25 * 2.0**-127]  # float32 subnormals (see the module notes)
    specials_arr = np.array(specials, dtype=np.float32)
    pos = rng.choice(n, size=min(n, specials_arr.size), replace=False)
    x[pos] = specials_arr[: pos.size]
    if policy["overflow"] == "raise":
        x = np.clip(x, g[0], g[-1])
    return x.reshape(shape)


def element_oracle(codec: ElementCodec, x: np.ndarray) -> dict[str, Any]:
    fmt, enc = codec.format, codec.encoding
    notes: list[str] = []
    aux: dict[str, np.ndarray] = {}
    v = x
    s_el = None
    if codec.scale is not None:
        mode, R, C = codec._mode, codec._R, codec._C
        grid = O.producible_values(fmt)
        s = O.reference_scale(x, mode, fmt.max, float(grid[grid > 0].min()), R, C, signed=fmt.signed)
        aux["scale"] = s
        s_el = O.expand_scale(s, x.shape, mode, R, C)
        with np.errstate(all="ignore"):
            vs = (x / s_el).astype(np.float32)
        v = np.where(np.isfinite(x), np.clip(vs, np.float32(grid[0]), np.float32(grid[-1])), x).astype(np.float32)
    ref = O.ReferenceQuantizer(enc)(v)
    assert (ref >= 0).all(), f"{codec!r}: the inputs contain values the policy refuses"
    codes = ref
    oracle = "lowbit.tools.oracles.ReferenceQuantizer (independent nearest-value search)"
    t = O.ml_dtypes_type(fmt)
    if t is not None and enc.storage_bits == fmt.bits and _ml_dtypes_policies(enc):
        import ml_dtypes

        md = O.ml_dtypes_cast(v, fmt)
        oracle = f"ml_dtypes {ml_dtypes.__version__} astype({fmt.name}) from float32"
        differ = md != codes
        if differ.any():
            known = differ & (np.abs(v) < np.float32(2.0**-126)) & (fmt.name == "float8_e8m0fnu") \
                & ML_DTYPES_E8M0_SUBNORMALS.present()
            if (differ & ~known).any():
                i = np.argwhere(differ & ~known)[0]
                raise SystemExit(f"{codec!r}: ml_dtypes and the reference disagree at {tuple(i)}: "
                                 f"x={v[tuple(i)]!r} ml_dtypes={md[tuple(i)]} reference={codes[tuple(i)]}")
            notes.append(f"{int(known.sum())} float32-subnormal input(s): ml_dtypes rounds them to E8M0 wrongly "
                         "(1.25*2**-127 -> 2**-126); the reference quantizer's codes are used there")
            md = np.where(known, codes, md)
        codes = md
    data = O.pack_codes(codes, enc.storage_bits)
    vals = O.reference_values(fmt).astype(np.float32)
    y = vals[codes]
    if s_el is not None:
        with np.errstate(all="ignore"):
            y = np.where(np.isnan(y), y, (y * s_el).astype(np.float32)).astype(np.float32)
    return {"data": data, "aux": aux, "decoded": y.astype(np.float32), "oracle": oracle, "notes": notes}


def _ml_dtypes_policies(enc: Any) -> bool:
    """ml_dtypes' cast implements the default policies (and maps NaN to -0 where the format
    has no NaN, so inputs for those carry no NaN)."""
    f = enc.fmt
    default_ovf = "inf" if f.has_inf else "nan" if f.has_nan else "saturate"
    return enc.overflow == default_ovf


ORACLES: dict[str, Callable[[Any, np.ndarray], dict[str, Any]]] = {
    "minifloat": element_oracle, "mx": BO.golden_oracle, "nvfp4": BO.golden_oracle, "bnb": BO.golden_oracle}
# families that choose their own inputs (and shape): codec, shape, rng -> float32 array
from lowbit.tools import kv_oracles as _kv  # noqa: E402

ORACLES["turboquant"] = _kv.turboquant_oracle
ORACLES["bfp"] = _kv.bfp_oracle
ORACLES["octopus"] = _kv.octopus_oracle


def _blockscaled_inputs(codec: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return BO.golden_inputs(codec, rng)  # chooses its own shape


INPUTS: dict[str, Callable[[Any, tuple[int, ...], np.random.Generator], np.ndarray]] = {
    "turboquant": _kv.kv_inputs,
    "bfp": _kv.bfp_inputs,
    "octopus": _kv.kv_inputs,
    "mx": _blockscaled_inputs, "nvfp4": _blockscaled_inputs, "bnb": _blockscaled_inputs,
}
def int_inputs(codec: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Rows of different magnitudes and offsets, exact ties, zeros, an all-zero group, ±Inf."""
    n = int(np.prod(shape))
    x = rng.standard_normal(n) * np.exp2(rng.integers(-12, 12, n // shape[-1] + 1)).repeat(shape[-1])[:n]
    x = x + np.where(rng.random(n) < 0.3, rng.standard_normal(n) * 4, 0.0)
    x = np.where(rng.random(n) < 0.15, np.round(x * 4) / 4 + 0.125, x)
    x = x.astype(np.float32)
    x[: min(8, n)] = 0.0
    if n > 16:
        x[rng.integers(8, n)] = np.inf
        x[rng.integers(8, n)] = -np.inf
    return x.reshape(shape)


def int_oracle(codec: Any, x: np.ndarray) -> dict[str, Any]:
    cfg = codec
    codes, s, z, y = O.reference_int(x, cfg.bits, cfg.group_size, cfg.axis, cfg.symmetric, cfg.scale_dtype)
    aux = {"scale": O.scale_array(s, cfg.scale_dtype)}
    if z is not None:
        aux["zero"] = z.astype(np.uint8)
    if getattr(cfg, "act_order", False):  # the default column map: column // group_size
        aux["g_idx"] = (np.arange(x.shape[-1]) // cfg.group_size).astype(np.int32)
    return {"data": O.pack_codes(codes, cfg.bits), "aux": aux, "decoded": y,
            "oracle": "lowbit.tools.oracles.reference_int (group-by-group reading of spec/int.toml)", "notes": []}


def nonuniform_oracle(codec: Any, x: np.ndarray) -> dict[str, Any]:
    codes, lut, y = O.reference_nonuniform(x, codec.bits, codec.group_size, codec.axis, codec.lut_dtype, codec.iterations)
    return {"data": O.pack_codes(codes, codec.bits), "aux": {"lut": lut.astype(codec.lut_dtype)}, "decoded": y,
            "oracle": "lowbit.tools.oracles.reference_nonuniform (group-by-group reading of spec/nonuniform.toml)",
            "notes": []}


def dense_sparse_oracle(codec: Any, x: np.ndarray) -> dict[str, Any]:
    """Selection by a plain sort (|x| descending, index ascending), the inner family's oracle on
    the rest, the CSR built by hand."""
    inner = codec.inner
    flat = x.reshape(-1)
    n = int(np.floor(codec.fraction * flat.size))
    ok = [i for i in range(flat.size) if np.isfinite(flat[i]) and abs(float(flat[i])) <= 65504.0]
    sel = sorted(sorted(ok, key=lambda i: (-abs(float(flat[i])), i))[:n])
    dense = x.copy()
    dense.reshape(-1)[sel] = 0.0
    r = ORACLES[inner.family](inner, dense)
    K = x.shape[-1]
    rows = flat.size // K
    indptr = [sum(1 for i in sel if i // K < row) for row in range(rows + 1)]
    vals = flat[sel].astype(np.float16)
    y = r["decoded"].copy()
    y.reshape(-1)[sel] = vals.astype(np.float32)
    aux = {"dense." + k: v for k, v in r["aux"].items()}
    aux.update({"indptr": np.array(indptr, np.int32), "indices": np.array([i % K for i in sel], np.int32), "values": vals})
    return {"data": r["data"], "aux": aux, "decoded": y, "oracle": "plain-sort selection + " + r["oracle"], "notes": []}


def bitmod_oracle(codec: Any, x: np.ndarray) -> dict[str, Any]:
    codes, s, t, y = O.reference_bitmod(x, codec.bits, codec.group_size)
    return {"data": O.pack_codes(codes, codec.bits), "aux": {"scale": s, "dtype": t}, "decoded": y,
            "oracle": "lowbit.tools.oracles.reference_bitmod (group-by-group reading of spec/bitmod.toml)", "notes": []}


def dynamic8_oracle(codec: Any, x: np.ndarray) -> dict[str, Any]:
    codes, am, y = O.reference_dynamic8(x, codec.blocksize, codec.signed)
    return {"data": codes, "aux": {"absmax": am}, "decoded": y,
            "oracle": "lowbit.tools.oracles.reference_dynamic8 (element-by-element reading of spec/dynamic8.toml; "
                      "tests/test_dynamic8.py checks these vectors against bitsandbytes)", "notes": []}


def dynamic8_inputs(codec: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """int_inputs without ±Inf (refused), with a negative block maximum and map entries times the absmax."""
    x = int_inputs(codec, shape, rng)
    x[~np.isfinite(x)] = 0.0
    x[-1, :8] = codec.code_map[rng.integers(0, 256, 8)] * np.float32(3.0)
    x[-1, 8] = -4.0
    return x


def qjl_oracle(codec: Any, x: np.ndarray) -> dict[str, Any]:
    data, norms, y = O.reference_qjl(x, codec.bits, codec.seed)
    return {"data": data, "aux": {"norm": norms}, "decoded": y,
            "oracle": "lowbit.tools.oracles.reference_qjl (row-by-row reading of spec/qjl.toml)", "notes": []}


def finite_inputs(codec: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """int_inputs without ±Inf (for codecs that refuse them)."""
    x = int_inputs(codec, shape, rng)
    x[~np.isfinite(x)] = 0.0
    return x


def rotated_oracle(codec: Any, x: np.ndarray) -> dict[str, Any]:
    """The spec's rotation read block by block, the inner family's oracle, the inverse rotation."""
    from ..codecs.rotated import haar_matrix, hadamard_signs

    B = codec.block
    s = hadamard_signs(codec.seed, B)
    Q = haar_matrix(codec.seed, B) if codec.kind == "haar" else None
    y = O.reference_rotate(x, codec.kind, B, s, Q)
    r = ORACLES[codec.inner.family](codec.inner, y)
    dec = O.reference_rotate(r["decoded"], codec.kind, B, s, Q, inverse=True)
    return {"data": r["data"], "aux": {"inner." + k: v for k, v in r["aux"].items()}, "decoded": dec,
            "oracle": "lowbit.tools.oracles.reference_rotate + " + r["oracle"], "notes": r["notes"]}


ORACLES.update({"int": int_oracle,
                                                                  "bitmod": bitmod_oracle, "dynamic8": dynamic8_oracle, "qjl": qjl_oracle,
                                                                  "rotated": rotated_oracle,
                                                                  "nonuniform": nonuniform_oracle,
                                                                  "dense_sparse": dense_sparse_oracle})
INPUTS.update({"int": int_inputs,
                                                                                      "nonuniform": int_inputs,
                                                                                      "dense_sparse": int_inputs,
                                                                                      "bitmod": int_inputs,
                                                                                      "dynamic8": dynamic8_inputs,
                                                                                      "qjl": finite_inputs,
                                                                                      "rotated": finite_inputs})
SHAPES = {None: (4, 64), "tensor": (4, 64), "channel": (6, 32), "block": (5, 48)}


# ---- GGUF: ggml's own C library (lowbit.tools.ggml_oracle) ------------------------------------------

def gguf_inputs(codec: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """(``shape`` is not used: always) rows of two blocks: Gaussian, heavy-tailed, one outlier, constant, all-zero, tiny."""
    K = 2 * codec.block_size
    rows = [rng.standard_normal(K), rng.standard_t(3, K), rng.standard_normal(K) * 0.01, np.full(K, 0.37),
            np.zeros(K), rng.standard_normal(K) * 1e-5]
    rows[2][5] = 7.5
    return np.asarray(rows, dtype=np.float32)


def gguf_oracle(codec: Any, x: np.ndarray) -> dict[str, Any]:
    """ggml_quantize_chunk and the type's dequantize_row_* from libggml-base: no imatrix, or all ones
    for the types ggml quantizes only with one (the uniform imatrix the test harness passes too)."""
    from lowbit.tools.ggml_oracle import GGML

    g = GGML.build()
    ones = getattr(codec, "requires_importance", False)
    data = g.quantize(x, codec.codec_id, np.ones(x.shape[-1], np.float32) if ones else None)
    notes = ["imatrix: all ones (ggml requires one for this type)"] if ones else []
    return {"data": data, "aux": {}, "decoded": g.dequantize(data, codec.codec_id, x.shape[-1]),
            "oracle": "ggml libggml-base (llama-cpp-python sdist): ggml_quantize_chunk + dequantize_row", "notes": notes}


ORACLES.update({"gguf_legacy": gguf_oracle, "gguf_kquants": gguf_oracle, "gguf_iq": gguf_oracle})
INPUTS.update({"gguf_legacy": gguf_inputs, "gguf_kquants": gguf_inputs, "gguf_iq": gguf_inputs})


def cases_for(codec_id: str) -> dict[str, Any]:
    cls = lowbit.codec_class(codec_id)
    oracle = ORACLES.get(cls.family)
    if oracle is None:
        raise SystemExit(f"{codec_id}: no oracle registered for family {cls.family!r}")
    cases, used = [], set()
    for cfg in cls.examples():
        codec = lowbit.get_codec(codec_id, **cfg)
        seed = zlib.crc32(repr(sorted(codec.get_config().items())).encode())
        rng = np.random.default_rng(seed)
        mode = codec._mode if isinstance(codec, ElementCodec) else None
        shape = SHAPES.get(mode, (4, 64))
        if cls.family in ("turboquant", "bfp", "octopus"):  # vector codecs: a few vectors per row, 12 in all
            shape = (4, 3 * codec.block_size)
        K = -(-shape[-1] // codec.block_size) * codec.block_size
        shape = shape[:-1] + (K,)
        x = INPUTS.get(cls.family, _inputs)(codec, shape, rng)
        shape = x.shape
        r = oracle(codec, x)
        used.add(r["oracle"])
        case = {
            "name": ",".join(f"{k}={v}" for k, v in cfg.items()) or "default",
            "config": codec.get_config(),
            "shape": list(shape),
            "input": O.to_hex(x),
            "data": O.to_hex(r["data"]),
            "aux": {k: {"dtype": a.dtype.name, "shape": list(a.shape), "hex": O.to_hex(a)} for k, a in r["aux"].items()},
            "decoded": O.to_hex(r["decoded"]),
            "oracle": r["oracle"],
        }
        if r["notes"]:
            case["notes"] = r["notes"]
        cases.append(case)
    return {
        "codec_id": codec_id,
        "generator": "python -m lowbit.tools.regen_vectors",
        "format": "hex strings are little-endian bytes: input/decoded float32, data uint8, aux per dtype",
        "oracles": sorted(used),
        "cases": cases,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lowbit.tools.regen_vectors", description=__doc__.split("\n\n")[0])
    ap.add_argument("codec_ids", nargs="*", help="codec ids (default: every registered codec)")
    ap.add_argument("-f", "--force", action="store_true", help="overwrite existing files")
    ap.add_argument("--check", action="store_true", help="compare with the files on disk; exit 1 on drift")
    args = ap.parse_args(argv)
    ids = args.codec_ids or lowbit.list_codecs()
    drift = 0
    for cid in ids:
        path = VECTOR_DIR / f"{cid}.json"
        text = O.dump_json(cases_for(cid))
        if args.check:
            same = path.is_file() and path.read_text() == text
            drift += not same
            print(f"{cid}: {'ok' if same else 'DIFFERS'}")
            continue
        if path.exists() and not args.force:
            print(f"{cid}: exists (use --force to rewrite)")
            continue
        path.write_text(text)
        print(f"{cid}: wrote {path.name}")
    return 1 if drift else 0


if __name__ == "__main__":
    sys.exit(main())
