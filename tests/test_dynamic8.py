"""``dynamic8`` against bitsandbytes itself (installed, CPU): the dynamic maps, ``quantize_blockwise``
codes and absmax byte for byte, ``dequantize_blockwise`` bit for bit, on both backends; the golden
vectors (made by lowbit's independent oracle) are checked against bitsandbytes too."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

import lowbit
from lowbit.codecs._dynamic_map import dynamic_map, quantize_lut
from lowbit.tools import oracles as O

from .harness import gpu_tensor

torch = pytest.importorskip("torch")
F = pytest.importorskip("bitsandbytes.functional")


def _ours(x: np.ndarray, bs: int, signed: bool, backend: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codec = lowbit.get_codec("dynamic8", blocksize=bs, signed=signed)
    q = codec.encode(x if backend == "cpu" else gpu_tensor(x), backend=backend)
    y = codec.decode(q, backend=backend)
    cpu = lambda a: a.cpu().numpy() if hasattr(a, "cpu") else np.asarray(a)  # noqa: E731
    return cpu(q.data).reshape(-1), cpu(q.aux["absmax"]).reshape(-1), cpu(y).reshape(-1)


def _bnb(x: np.ndarray, bs: int, signed: bool, dtype=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = torch.from_numpy(x.reshape(-1).copy())
    if dtype is not None:
        t = t.to(dtype)
    code = None if signed else F.create_dynamic_map(signed=False)
    q, st = F.quantize_blockwise(t, code=code, blocksize=bs)
    st.dtype = torch.float32
    y = F.dequantize_blockwise(q, st)
    return q.numpy().reshape(-1), st.absmax.numpy().reshape(-1), y.numpy().reshape(-1)


def _same(a: np.ndarray, b: np.ndarray, what: str) -> None:
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    assert a.shape == b.shape and a.dtype.itemsize == b.dtype.itemsize, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    ua, ub = a.view(f"u{a.dtype.itemsize}"), b.view(f"u{b.dtype.itemsize}")
    bad = np.flatnonzero(ua != ub)
    assert bad.size == 0, f"{what}: {bad.size} of {a.size} differ, first at {bad[0]}: {a[bad[0]]!r} vs {b[bad[0]]!r}"


@pytest.mark.parametrize("signed", [True, False])
def test_maps_are_bitsandbytes_maps(signed: bool) -> None:
    ref = F.create_dynamic_map(signed=signed).numpy()
    _same(dynamic_map(signed), ref, "lowbit.codecs._dynamic_map")
    _same(np.array(O.reference_dynamic_map(signed), np.float32), ref, "oracle map")
    assert quantize_lut(ref)[0] == 0 and quantize_lut(ref)[65535] == 255


def _hard_inputs(rng: np.random.Generator, bs: int, signed: bool) -> np.ndarray:
    """Blocks of very different magnitudes; values on and next to the lookup table's grid
    boundaries and the map's midpoints (block max 1); a zero block; a block with a subnormal
    absmax (1/absmax overflows); a negative block maximum."""
    nblk = 24
    x = rng.standard_normal((nblk, bs)) * np.exp2(rng.integers(-30, 30, (nblk, 1)))
    code = dynamic_map(True)
    grid = ((np.arange(1, 65536, 37) - 0.5) * 2 / 65535 - 1).astype(np.float32)
    mids = ((code[:-1].astype(np.float64) + code[1:]) / 2).astype(np.float32)
    edge = np.concatenate([grid, mids, np.nextafter(grid, np.float32(2)), np.nextafter(mids, np.float32(-2))])
    rows = []
    for i in range(0, edge.size, bs - 1):
        chunk = np.zeros(bs, np.float32)
        part = edge[i:i + bs - 1]
        chunk[:part.size] = part
        chunk[-1] = 1.0
        rows.append(chunk)
    x = np.concatenate([x.astype(np.float32).reshape(-1, bs), np.array(rows, np.float32)])
    x[0] = 0.0
    x[1] = 0.0
    x[1, :3] = [1e-39, -4e-40, 1e-45]  # subnormal absmax
    x[2, 5] = -np.abs(x[2]).max() * 2  # negative block maximum
    if not signed:
        x[3:] = np.abs(x[3:])  # optimizer second moments; row 2 keeps negatives (clamped to 0)
    return x.astype(np.float32)


@pytest.mark.parametrize("bs,signed", [(64, True), (256, True), (4096, True), (256, False), (1024, False)])
def test_quantize_blockwise_byte_for_byte(bs: int, signed: bool) -> None:
    rng = np.random.default_rng(bs + signed)
    x = _hard_inputs(rng, bs, signed)
    if bs == 4096:
        x = x[:6]
    qb, ab, yb = _bnb(x, bs, signed)
    for be in ("cpu", "gpu"):
        qo, ao, yo = _ours(x, bs, signed, be)
        _same(ao, ab, f"absmax on {be}")
        _same(qo, qb, f"codes on {be}")
        _same(yo, yb, f"decoded on {be} vs dequantize_blockwise")
    with np.errstate(invalid="ignore", divide="ignore"):
        exact = np.abs(x.reshape(-1, 1).astype(np.float64) / np.repeat(ab, bs)[:, None].clip(1e-300, None)
                       - dynamic_map(signed)[None, :]).argmin(1)
    assert (qb != exact).any(), "the inputs should include values where bitsandbytes' table differs from exact nearest"


def test_partial_last_block_and_half_precision_inputs() -> None:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(1000) * 3).astype(np.float32)  # 1000 = 3 full blocks of 256 + 232
    qb, ab, yb = _bnb(x, 256, True)
    for be in ("cpu", "gpu"):
        qo, ao, yo = _ours(x[None], 256, True, be)
        _same(qo, qb, f"codes on {be}")
        _same(ao, ab, f"absmax on {be}")
        _same(yo, yb, f"decoded on {be}")
    for dt in (torch.float16, torch.bfloat16):
        xt = torch.from_numpy(x).to(dt)
        qb, ab, _ = _bnb(x, 256, True, dtype=dt)
        q = lowbit.encode(xt[None], "dynamic8", blocksize=256)
        _same(q.data.numpy().reshape(-1), qb, f"codes of {dt} input")
        _same(q.aux["absmax"].numpy().reshape(-1), ab, f"absmax of {dt} input")
        st = F.QuantState(absmax=torch.from_numpy(ab), code=F.create_dynamic_map(), blocksize=256, dtype=dt)
        yb16 = F.dequantize_blockwise(torch.from_numpy(qb), st)  # bitsandbytes rounds its float32 product once
        assert torch.equal(lowbit.decode(q).reshape(-1).to(dt).view(torch.int16), yb16.view(torch.int16))


def test_golden_vectors_agree_with_bitsandbytes() -> None:
    doc = json.loads((resources.files("lowbit") / "spec" / "vectors" / "dynamic8.json").read_text())
    assert doc["cases"]
    for case in doc["cases"]:
        cfg = case["config"]
        x = np.frombuffer(bytes.fromhex(case["input"]), np.float32).reshape(case["shape"])
        if x.shape[-1] % cfg["blocksize"]:
            rows = [_bnb(r, cfg["blocksize"], cfg["signed"]) for r in x]  # bitsandbytes blocks the flat tensor
            qb, ab = np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])
        else:
            qb, ab, _ = _bnb(x, cfg["blocksize"], cfg["signed"])
        _same(np.frombuffer(bytes.fromhex(case["data"]), np.uint8), qb, f"{case['name']}: golden codes vs bitsandbytes")
        _same(np.frombuffer(bytes.fromhex(case["aux"]["absmax"]["hex"]), np.float32), ab,
              f"{case['name']}: golden absmax vs bitsandbytes")


def test_adam8bit_optimizer_states_decode() -> None:
    """bitsandbytes' own 8-bit Adam (blocks of 256): its first/second moment states are dynamic8
    QTensors (signed / unsigned map) that decode to its dequantize_blockwise bit for bit."""
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 512))
    opt = bnb.optim.Adam8bit([p], lr=1e-3, min_8bit_size=0)
    p.grad = torch.randn_like(p)
    opt.step()
    st = opt.state[p]
    for i, signed in ((1, True), (2, False)):
        q, am, qm = st[f"state{i}"], st[f"absmax{i}"], st[f"qmap{i}"]
        codec = lowbit.get_codec("dynamic8", blocksize=256, signed=signed)
        _same(codec.code_map, qm.numpy(), f"qmap{i}")
        ref = F.dequantize_blockwise(q, absmax=am, code=qm, blocksize=256).numpy()
        Q = lowbit.QTensor(q.numpy(), {"absmax": am.numpy().reshape(64, 2)}, (64, 512), codec)
        for be in ("cpu", "gpu"):
            Qb = Q if be == "cpu" else lowbit.QTensor(gpu_tensor(Q.data), {"absmax": gpu_tensor(Q.aux["absmax"])}, Q.shape, codec)
            y = lowbit.decode(Qb, backend=be)
            _same(y.cpu().numpy() if hasattr(y, "cpu") else y, ref, f"state{i} decoded on {be}")
