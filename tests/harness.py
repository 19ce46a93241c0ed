"""Checks every registered codec must pass (DESIGN.md §5). ``tests/test_codecs.py`` runs them
over ``lowbit.list_codecs()`` and each class's ``examples()``, so a new codec needs no new test code.

Every check raises AssertionError with the codec, the first differing block and the differing
bits, so a failure says where to look.
"""

from __future__ import annotations

import json
import math
import tomllib
from importlib import resources
from typing import Any

import numpy as np
import pytest

import lowbit
from lowbit import _arrays
from lowbit.codec import QTensor
from lowbit.layout import spec_path
from lowbit.tools.oracle_versions import GGUF_PY_Q8_1_SIZE

# ---- comparison helpers -------------------------------------------------------------------------


def assert_same_bytes(a: Any, b: Any, codec: lowbit.Codec, what: str) -> None:
    """uint8 arrays equal; else name the first differing (row, block) and the differing bits."""
    a, b = _arrays.to_numpy(a), _arrays.to_numpy(b)
    assert a.shape == b.shape, f"{codec!r}: {what}: shapes {a.shape} != {b.shape}"
    if np.array_equal(a, b):
        return
    rows_a, rows_b = a.reshape(-1, a.shape[-1] if a.ndim else 1), b.reshape(-1, b.shape[-1] if b.ndim else 1)
    r, c = (int(v) for v in np.argwhere(rows_a != rows_b)[0])
    ts = codec.type_size
    blk = c // ts
    ba = rows_a[r, blk * ts:(blk + 1) * ts].tobytes().hex()
    bb = rows_b[r, blk * ts:(blk + 1) * ts].tobytes().hex()
    n_bad = int((rows_a.reshape(rows_a.shape[0], -1, ts) != rows_b.reshape(rows_b.shape[0], -1, ts)).any(-1).sum()) if rows_a.shape[-1] % ts == 0 else -1
    raise AssertionError(f"{codec!r}: {what}: {n_bad} block(s) differ; first at row {r}, block {blk}: {ba} != {bb} "
                         f"(xor {int(ba, 16) ^ int(bb, 16):0{len(ba)}x})")


def assert_same_bits(a: Any, b: Any, codec: lowbit.Codec, what: str) -> None:
    """float arrays bit-identical (NaN payloads and signed zeros included)."""
    a, b = _arrays.to_numpy(a), _arrays.to_numpy(b)
    assert a.shape == b.shape and a.dtype == b.dtype, f"{codec!r}: {what}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
    bits_of = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}  # any aux dtype, compared as bits
    ua, ub = a.view(bits_of[a.itemsize]), b.view(bits_of[b.itemsize])
    if np.array_equal(ua, ub):
        return
    idx = tuple(int(i) for i in np.argwhere(ua != ub)[0])
    raise AssertionError(f"{codec!r}: {what}: {int((ua != ub).sum())} element(s) differ; first at {idx}: "
                         f"{a[idx]!r} (0x{int(ua[idx]):08x}) != {b[idx]!r} (0x{int(ub[idx]):08x})")


def gpu_tensor(x: np.ndarray) -> Any:
    """A torch tensor on the device the gpu backend uses here (CUDA, or CPU in the interpreter)."""
    import torch

    t = torch.from_numpy(np.require(x, requirements=["C", "W"]))  # (0-d stays 0-d)
    return t.cuda() if torch.cuda.is_available() else t


def _same_q(q1: QTensor, q2: QTensor, codec: lowbit.Codec, what: str) -> None:
    assert_same_bytes(q1.data, q2.data, codec, f"{what}: data")
    assert set(q1.aux) == set(q2.aux), f"{codec!r}: {what}: aux keys {sorted(q1.aux)} != {sorted(q2.aux)}"
    for k in q1.aux:
        assert_same_bits(q1.aux[k], q2.aux[k], codec, f"{what}: aux[{k!r}]")


# ---- the checks ---------------------------------------------------------------------------------


def check_config_roundtrip(codec: lowbit.Codec) -> None:
    cfg = codec.get_config()
    again = json.loads(json.dumps(cfg))
    assert again == cfg, f"{codec!r}: config is not JSON-clean: {cfg}"
    c2 = lowbit.get_codec(**again)
    assert c2 == codec and hash(c2) == hash(codec), f"{codec!r}: get_codec(**config) gave {c2!r}"
    assert lowbit.get_codec(again) == codec
    assert c2.get_config() == cfg
    assert eval(repr(codec), {"lowbit": lowbit}) == codec, f"repr does not evaluate back: {codec!r}"


def check_layout(codec: lowbit.Codec) -> None:
    """The codec's block layout against sources it is not derived from. ``Codec.block_size`` and
    ``type_size`` are read from the layout, so comparing those would test nothing; instead: the
    fields tile the block with no gap, a row of three blocks takes three blocks' bytes, the spec
    file's own ``ggml_type`` is the codec class's, and for a GGUF type gguf-py's
    ``GGML_QUANT_SIZES`` (an independent table) gives the same block and type size under the same
    name (libggml's own traits are checked in test_codecs.test_ggml_type_traits)."""
    lay = codec.layout
    assert lay.block_size >= 1 and lay.type_size >= 1
    assert sum(f.nbytes for f in lay.fields) == lay.type_size, f"{codec!r}: fields leave a gap"
    assert codec.row_bytes(lay.block_size * 3) == 3 * lay.type_size
    spec_type = tomllib.loads(spec_path(codec.codec_id).read_text()).get("ggml_type")
    assert spec_type == getattr(codec, "ggml_type", None), (
        f"{codec!r}: spec ggml_type {spec_type!r} != class {getattr(codec, 'ggml_type', None)!r}")
    if spec_type is None:
        return
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    known = {int(t): t for t in GGMLQuantizationType}
    if spec_type in known:  # gguf 0.19 predates Q2_0 (42); libggml's check covers it
        t = known[spec_type]
        assert t.name.lower() == codec.codec_id.removesuffix("_ggml"), f"{codec!r}: ggml type {spec_type} is {t.name}"
        if t is GGMLQuantizationType.Q8_1 and GGUF_PY_Q8_1_SIZE.present():
            return  # gguf-py's table is stale there (see the quirk); libggml's traits decide
        assert GGML_QUANT_SIZES[t] == (lay.block_size, lay.type_size), (
            f"{codec!r}: gguf-py {t.name} is {GGML_QUANT_SIZES[t]}, spec {(lay.block_size, lay.type_size)}")


def check_roundtrip_bound(codec: lowbit.Codec, x: np.ndarray) -> None:
    q = codec.encode(x, backend="cpu")
    assert isinstance(q, QTensor) and q.shape == x.shape and q.codec == codec
    assert q.data.dtype == np.uint8 and q.data.shape == x.shape[:-1] + (codec.row_bytes(x.shape[-1]),)
    y = codec.decode(q, backend="cpu")
    assert y.dtype == np.float32 and y.shape == x.shape
    bound = codec.error_bound(x, q)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    check = np.isfinite(bound)
    with np.errstate(invalid="ignore"):
        err = np.abs(yd - xd)
    bad = check & ~(err <= bound)
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        raise AssertionError(f"{codec!r}: |decode - x| = {err[i]!r} > bound {bound[i]!r} at {i} (x={x[i]!r}, y={y[i]!r})")
    policy = codec.input_policy()
    if policy["nan"] == "nan":
        nan_in = np.isnan(x)
        assert np.isnan(y[nan_in]).all(), f"{codec!r}: NaN input did not decode to NaN"


def check_idempotent(codec: lowbit.Codec, x: np.ndarray) -> None:
    q = codec.encode(x, backend="cpu")
    y = codec.decode(q, backend="cpu")
    over = np.isinf(y) & np.isfinite(x)
    if over.any() and x.shape[-1] % codec.block_size == 0:
        # a code whose value lies past float32's range (MXFP4 4 * 2**126 under RCEIL) decodes to
        # ±Inf, which cannot be fed back: check the other blocks (those become zeros)
        bs = codec.block_size
        blk = np.repeat(over.reshape(over.shape[:-1] + (-1, bs)).any(-1), bs, axis=-1).reshape(x.shape)
        x = np.where(blk, np.float32(0), x).astype(np.float32)
        q = codec.encode(x, backend="cpu")
        y = codec.decode(q, backend="cpu")
    kind = codec.idempotence()
    assert kind in ("bytes", "values", "bound", "deterministic"), f"{codec!r}: idempotence() returned {kind!r}"
    if kind == "deterministic":
        # decode is an estimator (turboquant_prod: MSE part plus a QJL sign sketch; rotated codecs
        # with norm_correction=False shrink the norm by ||c|| every round, as published). What they
        # still owe: encoding is a deterministic function of the input, and so is re-encoding.
        _same_q(q, codec.encode(x, backend="cpu"), codec, "encode(x) twice")
        _same_q(codec.encode(y, backend="cpu"), codec.encode(y.copy(), backend="cpu"), codec, "encode(decode(q)) twice")
        return
    if kind == "bound":
        # a reference encoder that is not idempotent itself (it says so), or a scale computed from
        # data: the decoded tensor must still encode, and within the codec's bound
        try:
            codec.encode(y, backend="cpu")
        except lowbit.RangeError:
            return  # decoded values past the accepted input range (the block's top value)
        check_roundtrip_bound(codec, y)
        return
    q2 = codec.encode(y, backend="cpu", **codec.reencode_kwargs(q))
    if kind == "values":
        assert_same_bits(codec.decode(q2, backend="cpu"), y, codec, "decode(encode(decode(q))) vs decode(q)")
        return
    _same_q(q, q2, codec, "encode(decode(encode(x))) vs encode(x)")


def random_aux(codec: lowbit.Codec, shape: tuple[int, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Plausible side arrays: positive finite floats, random integers."""
    out = {}
    for name, (ashape, dt) in codec._aux_spec(shape).items():
        if np.dtype(dt).kind == "f":
            out[name] = np.asarray(np.exp2(rng.uniform(-20, 20, ashape)) * rng.random(ashape), dtype=dt)
        else:
            info = np.iinfo(dt)
            out[name] = np.asarray(rng.integers(max(info.min, -(2**31)), min(info.max, 2**31 - 1), ashape, dtype=dt))
    return out


def family_has(family: str, backend: str, op: str) -> bool:
    """Whether ``family`` has a ``backend`` kernel for ``op`` (TurboQuant composes its codec from
    per-instance kernels: ``encode_instance``, ``decode_instance``)."""
    from lowbit.kernels.registry import has_kernel

    return has_kernel(family, backend, op) or has_kernel(family, backend, op + "_instance")


def skip_without_gpu_kernel(codec: lowbit.Codec, op: str) -> None:
    """A codec family without a Triton kernel for ``op`` yet: skip, visibly, with the reason
    (``backend="gpu"`` raises BackendUnavailable for it; nothing falls back)."""
    if "gpu" not in codec.backends():  # the codec knows its kernels (wrappers: the inner codec's)
        pytest.skip(f"{codec.codec_id}: no gpu {op} kernel for family {codec.family!r} yet")


def check_decode_total(codec: lowbit.Codec, shape: tuple[int, ...], seed: int, *, gpu: bool = True) -> None:
    """Random bytes decode without error, deterministically, identically on both backends."""
    rng = np.random.default_rng(seed)
    nb = math.prod(shape[:-1]) * codec.row_bytes(shape[-1])
    raw = rng.integers(0, 256, nb, dtype=np.uint8)
    aux = random_aux(codec, shape, rng)
    y1 = codec.decode_bytes(raw.tobytes(), shape, aux=aux, backend="cpu")
    y2 = codec.decode_bytes(raw, shape, aux=aux, backend="cpu")
    assert y1.shape == shape and y1.dtype == np.float32
    assert_same_bits(y1, y2, codec, "decode of random bytes, twice")
    if gpu:
        skip_without_gpu_kernel(codec, "decode")
        yg = codec.decode_bytes(gpu_tensor(raw), shape, aux={k: gpu_tensor(v) for k, v in aux.items()}, backend="gpu")
        assert_same_bits(y1, yg, codec, "decode of random bytes, cpu vs gpu")


def check_cpu_gpu(codec: lowbit.Codec, x: np.ndarray) -> None:
    """Identical encode bytes and decode bits on the Numba and Triton backends."""
    skip_without_gpu_kernel(codec, "encode")
    qc = codec.encode(x, backend="cpu")
    qg = codec.encode(gpu_tensor(x), backend="gpu")
    _same_q(qc, qg, codec, "encode cpu vs gpu")
    assert_same_bits(codec.decode(qc, backend="cpu"), codec.decode(qg, backend="gpu"), codec, "decode cpu vs gpu")


def driven(codec: lowbit.Codec) -> lowbit.Codec:
    """The codec as the harness drives it. A codec that ggml quantizes only with an imatrix
    (``requires_importance``, e.g. IQ2_XXS) gets ``importance=`` all ones, the uniform imatrix, on every
    encode that passes none; the refusal itself is tested in tests/test_gguf.py. So does a wrapper
    (``dense_sparse``, ``rotated``) around such a codec: it hands ``importance=`` on to the inner codec.
    Other codecs as they are.

    The instance's ``_encode`` hook is shadowed (not ``encode``): ``get_config`` reports the public
    attributes of the instance, and a shadowed ``encode`` would be one (not JSON, not a parameter)."""
    inner_codec: Any = codec
    while inner_codec is not None and not getattr(inner_codec, "requires_importance", False):
        inner_codec = getattr(inner_codec, "inner", None)
    if inner_codec is None:
        return codec
    inner = codec._encode

    def _encode_with_importance(x2d: Any, shape: tuple[int, ...], backend: str, importance: Any = None) -> Any:
        if importance is None:
            importance = np.ones(shape[-1], np.float32)
        return inner(x2d, shape, backend, importance=importance)

    codec._encode = _encode_with_importance  # type: ignore[method-assign]  (shadows the method on this instance)
    return codec


def load_vectors(codec_id: str) -> dict[str, Any]:
    path = resources.files("lowbit") / "spec" / "vectors" / f"{codec_id}.json"
    assert path.is_file(), f"{codec_id}: no golden vectors at lowbit/spec/vectors/{codec_id}.json (python -m lowbit.tools.regen_vectors {codec_id})"
    return json.loads(path.read_text())


def check_golden(codec_id: str, *, backends: tuple[str, ...] = ("cpu", "gpu")) -> int:
    """Every case of spec/vectors/<codec_id>.json: our bytes, side arrays and decoded bits equal the
    oracle's, on each backend. Returns the number of cases."""
    doc = load_vectors(codec_id)
    assert doc["cases"], f"{codec_id}: no cases in the golden vector file"
    have = lowbit.get_codec(doc["cases"][0]["config"]).backends()
    missing = [be for be in backends if be not in have]
    for n, case in enumerate(doc["cases"]):
        codec = driven(lowbit.get_codec(case["config"]))
        assert codec.codec_id == codec_id
        shape = tuple(case["shape"])
        x = np.frombuffer(bytes.fromhex(case["input"]), dtype=np.float32).reshape(shape)
        want = np.frombuffer(bytes.fromhex(case["data"]), dtype=np.uint8).reshape(shape[:-1] + (-1,))
        want_y = np.frombuffer(bytes.fromhex(case["decoded"]), dtype=np.float32).reshape(shape)
        for be in backends:
            if be in missing:
                continue
            xin = x if be == "cpu" else gpu_tensor(x)
            q = codec.encode(xin, backend=be)
            assert_same_bytes(q.data, want, codec, f"golden case {n} ({case.get('name')}) on {be}: data")
            for k, ent in case.get("aux", {}).items():
                a = np.frombuffer(bytes.fromhex(ent["hex"]), dtype=ent["dtype"]).reshape(ent["shape"])
                assert_same_bits(q.aux[k], a, codec, f"golden case {n} on {be}: aux[{k!r}]")
            assert_same_bits(codec.decode(q, backend=be), want_y, codec, f"golden case {n} on {be}: decoded")
    if missing:  # the other backends were checked; say which one was not
        pytest.skip(f"{codec_id}: golden vectors checked on {[b for b in backends if b not in missing]}; "
                    f"no kernels on {missing} yet")
    return len(doc["cases"])


def check_bad_inputs(codec: lowbit.Codec) -> None:
    from lowbit.errors import ConfigError, DTypeError, RangeError, ShapeError

    bs = codec.block_size
    good = np.zeros((2, 2 * bs), np.float32) + 0.5
    if bs > 1:
        with pytest.raises(ShapeError, match=codec.codec_id):
            codec.encode(np.zeros((2, 2 * bs + 1), np.float32))
    with pytest.raises(DTypeError, match="float64"):
        codec.encode(good.astype(np.float64))
    with pytest.raises(DTypeError, match="int32"):
        codec.encode(good.astype(np.int32))
    with pytest.raises(DTypeError):
        codec.encode(good.tolist())
    with pytest.raises(ShapeError):
        codec.encode(np.array(1.0, dtype=np.float32))
    with pytest.raises(ConfigError, match="no_such_kwarg"):
        codec.encode(good, no_such_kwarg=1)
    with pytest.raises(ConfigError):
        codec.encode(good, backend="tpu")
    q = codec.encode(good)
    raw = q.data.tobytes()
    with pytest.raises(ShapeError, match="truncated"):
        codec.decode_bytes(raw[:-1], good.shape, aux=q.aux)
    with pytest.raises(ShapeError, match="oversized"):
        codec.decode_bytes(raw + b"\0", good.shape, aux=q.aux)
    with pytest.raises(DTypeError):
        codec.decode(raw)
    if codec.input_policy()["nan"] == "raise":
        bad = good.copy()
        bad[1, -1] = np.nan
        with pytest.raises(RangeError, match=r"NaN at index \(1, " + str(2 * bs - 1) + r"\)"):
            codec.encode(bad)
    for aux_bad in ({"bogus": np.zeros(1, np.float32)},):
        with pytest.raises(lowbit.LowbitError):
            codec.decode_bytes(raw, good.shape, aux=aux_bad)


def check_qtensor_bytes(codec: lowbit.Codec, x: np.ndarray) -> None:
    q = codec.encode(x, backend="cpu")
    b = q.tobytes()
    q2 = QTensor.frombytes(b)
    assert q2.codec == codec and q2.shape == q.shape
    _same_q(q, q2, codec, "QTensor.frombytes(tobytes())")
    assert_same_bits(codec.decode(q), lowbit.decode(q2), codec, "decode after frombytes")
    for cut in (0, 3, 15, len(b) // 2, len(b) - 1):
        with pytest.raises(lowbit.FormatError):
            QTensor.frombytes(b[:cut])


def check_array_types(codec: lowbit.Codec, x: np.ndarray) -> None:
    """numpy in → numpy out, torch in → torch out; float16/bfloat16 inputs equal their float32 upcast."""
    import ml_dtypes
    import torch

    q = codec.encode(x, backend="cpu")
    qt = codec.encode(torch.from_numpy(x), backend="cpu")
    assert isinstance(qt.data, torch.Tensor) and qt.data.dtype == torch.uint8
    _same_q(q, qt.numpy(), codec, "torch vs numpy input")
    yt = codec.decode(qt)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32
    assert_same_bits(codec.decode(q), yt.numpy(), codec, "torch vs numpy decode")
    assert codec.decode(qt, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert codec.decode(q, dtype=np.float16).dtype == np.float16
    assert codec.decode(q, dtype="bfloat16").dtype == ml_dtypes.bfloat16
    with np.errstate(all="ignore"):
        # this check is about dtypes, not overflow: keep values finite in the narrower type
        for low in (np.clip(x, -65504, 65504).astype(np.float16),
                    np.clip(x, -3.38e38, 3.38e38).astype(ml_dtypes.bfloat16)):
            ql = codec.encode(low, backend="cpu")
            _same_q(ql, codec.encode(low.astype(np.float32), backend="cpu"), codec, f"{low.dtype} input")
        xb = torch.from_numpy(x).to(torch.bfloat16)
        _same_q(codec.encode(xb).numpy(), codec.encode(xb.float().numpy()), codec, "torch bfloat16 input")


def check_empty(codec: lowbit.Codec) -> None:
    bs = codec.block_size
    for shape in ((0, bs), (3, 0), (2, 0, bs)):
        x = np.zeros(shape, np.float32)
        q = codec.encode(x)
        assert q.shape == shape and q.data.shape == shape[:-1] + (codec.row_bytes(shape[-1]),)
        assert codec.decode(q).shape == shape


def check_bits_per_element(codec: lowbit.Codec, x: np.ndarray) -> None:
    q = codec.encode(x, backend="cpu")
    bpe = codec.bits_per_element(x.shape)
    assert math.isclose(bpe, q.bits_per_element, rel_tol=0, abs_tol=1e-12), f"{codec!r}: bits_per_element {bpe} != actual {q.bits_per_element}"
    assert bpe >= codec.layout.bits_per_element


FLT_MAX = float(np.finfo(np.float32).max)
POLICY_PROBES = {  # input kind -> the probe values put into an otherwise ordinary block
    "nan": [np.nan, -np.nan],
    "inf": [np.inf, -np.inf],
    # the top of float32 (FLT_MAX, 1e37): scale arithmetic must not overflow to Inf or collapse to 0
    "overflow": [3e38, -3e38, FLT_MAX, -FLT_MAX, 1e37, -1e37],
    "negative": [-0.75],
    "negative_zero": [-0.0],
    "subnormal": [1e-40, -1e-40, 1.4e-45, -1.4e-45, 1.1754942e-38, -1.1754942e-38],  # smallest, largest
}


def _holds_both_signs(codec: lowbit.Codec, base: np.ndarray) -> bool:
    """Whether one block of the codec can hold a positive and a negative value at once (a 1-bit
    asymmetric integer group cannot: one end of its range is 0)."""
    x = base.copy()
    x[1, 1], x[1, 2] = 0.5, -0.5
    try:
        y = _arrays.to_numpy(codec.decode(codec.encode(x, backend="cpu"), backend="cpu"))
    except lowbit.LowbitError:
        return False
    return bool(y[1, 1] > 0 and y[1, 2] < 0)


def check_input_policy(codec: lowbit.Codec, backend: str) -> None:
    """Put each awkward input into an ordinary block (overflow probes also as a ±pair in one
    block) and check the codec does what its ``input_policy()`` declares, on the given backend.
    A probe the format can represent (1e37 in a format whose range reaches past it) may instead be
    encoded within the codec's error bound, except under "saturate", which must give a non-zero
    value of the probe's sign (the end of the block's range on that side)."""
    from lowbit.errors import RangeError

    policy = codec.input_policy()
    assert set(POLICY_PROBES) <= set(policy), f"{codec!r}: input_policy() lacks {sorted(set(POLICY_PROBES) - set(policy))}"
    if backend == "gpu":
        skip_without_gpu_kernel(codec, "encode")
    K = codec.block_size * max(1, -(-8 // codec.block_size))
    base = np.linspace(0.25, 0.75, 2 * K, dtype=np.float32).reshape(2, K)
    both = _holds_both_signs(codec, base)
    for kind, probes in POLICY_PROBES.items():
        action = policy[kind]
        for p in probes:
            if kind in ("subnormal", "overflow") and p < 0 and policy["negative"] != "encode":
                continue  # a negative probe in an unsigned format is a "negative" input
            pairs = [False, True] if kind == "overflow" and policy["negative"] == "encode" else [False]
            for pair in pairs:
                x = base.copy()
                x[1, 1] = p
                if pair:
                    x[1, 2] = -p
                _check_probe(codec, backend, x, kind, p, action, pair, both)


def _check_probe(codec: lowbit.Codec, backend: str, x: np.ndarray, kind: str, p: float, action: str,
                 pair: bool, both: bool) -> None:
    from lowbit.errors import RangeError

    xin = x if backend == "cpu" else gpu_tensor(x)
    p = float(x[1, 1])  # the float32 value the codec sees (1e37 and 1.4e-45 are not float32 values)
    what = f"{codec!r} on {backend}: input {kind} {p!r}{' (with its negation in the block)' if pair else ''} declared {action!r}"

    def in_range(y: float) -> bool:  # encoded like any value: the format holds it
        bound = codec.error_bound(x, codec.encode(x, backend="cpu"))[1, 1]
        return bool(np.isfinite(y) and np.isfinite(bound) and abs(y - p) <= bound)

    if action == "raise":
        try:
            q = codec.encode(xin, backend=backend)
        except RangeError:
            return
        y = float(_arrays.to_numpy(codec.decode(q, backend=backend))[1, 1])
        assert kind == "overflow" and in_range(y), f"{what}: no RangeError, decoded {y!r}"
        return
    q = codec.encode(xin, backend=backend)
    y = float(_arrays.to_numpy(codec.decode(q, backend=backend))[1, 1])
    if action == "nan":
        assert np.isnan(y) or (kind == "overflow" and in_range(y)), f"{what}: decoded {y!r}"
    elif action == "inf":
        assert (np.isinf(y) and np.sign(y) == np.sign(p)) or (kind == "overflow" and in_range(y)), f"{what}: decoded {y!r}"
    elif action == "zero":  # a zero; its sign is not promised
        assert y == 0.0, f"{what}: decoded {y!r}"
    elif action == "saturate":
        # finite, unless the codec's own bound says its largest code times the block scale
        # lies past float32 (MXFP4 under RCEIL decodes 4 * 2**126 * 2 = 2**128 as Inf)
        assert np.isfinite(y) or np.isinf(codec.error_bound(x, codec.encode(x, backend="cpu"))[1, 1]), \
            f"{what}: decoded {y!r}"
        if kind == "overflow" and (both or not pair):  # the end of the range on the probe's side
            assert y != 0 and np.sign(y) == np.sign(p), f"{what}: decoded {y!r}"
        assert np.sign(y) == np.sign(p) or y == 0 or kind in ("negative", "negative_zero"), f"{what}: decoded {y!r}"
    elif action == "keep":  # -0.0 stays -0.0
        assert y == 0.0 and np.signbit(y), f"{what}: decoded {y!r}"
    elif action == "nearest":  # lossy table codecs: the nearest level, like any value (no exact -0)
        bound = codec.error_bound(x, codec.encode(x, backend="cpu"))[1, 1]
        assert np.isfinite(y) and abs(y - p) <= bound, f"{what}: decoded {y!r}, bound {bound}"
    elif action == "encode":  # rounded like any value: within the codec's bound
        assert np.isfinite(y), f"{what}: decoded {y!r}"
        bound = codec.error_bound(x, codec.encode(x, backend="cpu"))[1, 1]
        assert abs(y - p) <= bound, f"{what}: decoded {y!r}, bound {bound}"
    else:
        raise AssertionError(f"{what}: unknown policy word")


def check_meta_tensors(codec: lowbit.Codec) -> None:
    """torch "meta" tensors (a shape without data) are refused with a LowbitError naming the codec,
    on encode (every backend) and on decode of a QTensor whose arrays are meta tensors."""
    import torch

    K = codec.block_size * max(1, -(-16 // codec.block_size))
    x = torch.empty((2, K), device="meta")
    for be in ("cpu", "gpu", "auto"):
        with pytest.raises(lowbit.LowbitError, match=codec.codec_id):
            codec.encode(x, backend=be)
    q = codec.encode(torch.linspace(0.25, 0.75, 2 * K).reshape(2, K), backend="cpu")
    qm = QTensor(q.data.to("meta"), {k: v.to("meta") for k, v in q.aux.items()}, q.shape, codec)
    for be in ("cpu", "auto"):
        with pytest.raises(lowbit.LowbitError, match=codec.codec_id):
            codec.decode(qm, backend=be)
