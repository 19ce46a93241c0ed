"""``lowbit audit`` (issue 9, item 5): decoded-value checks, codes against the float original, and
the boundary score that separates weights pinned to rounding edges from ordinary trained weights."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.formats import gguf as G
from lowbit.tools.audit import CODE_BITS, audit_file, boundary_score, code_steps
from lowbit.tools.cli import main
from lowbit.tools.ggml_oracle import GGML
from lowbit.tools.mixes import write_imatrix_dat


def _weights(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    # heavy-ish tails, a few outlier columns: closer to trained weights than a plain normal
    w = rng.standard_t(5, shape).astype(np.float32) * 0.02
    w[:, rng.integers(0, shape[1], 3)] *= 8
    return w


# ---- the code-bit map ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ty", sorted(CODE_BITS))
def test_code_steps_are_the_code_spacing(ty: str) -> None:
    """Codes are linear in each block: setting every code to 2 moves each element by exactly the step
    that 0 -> 1 measured (so the map names the code bits, not a scale), and an element's residual
    against its own quantization is within half a step unless clipped."""
    rng = np.random.default_rng(3)
    codec = lowbit.get_codec(ty)
    x = _weights(rng, (6, 512))
    q = codec.encode(x, backend="cpu")
    data = np.asarray(q.data)
    step = code_steps(data, ty, x.shape)
    start, end, one = CODE_BITS[ty]
    two = (one << 1) & 0xFF  # 0x11 -> 0x22, 0x55 -> 0xAA, 0x01 -> 0x02: code 2 everywhere
    b = data.reshape(-1, codec.type_size).copy()
    b[:, start:end] = 0
    v0 = np.asarray(codec.decode_bytes(b.reshape(-1), x.shape), dtype=np.float64)
    b[:, start:end] = two
    v2 = np.asarray(codec.decode_bytes(b.reshape(-1), x.shape), dtype=np.float64)
    np.testing.assert_allclose(v2 - v0, 2 * step.astype(np.float64), rtol=1e-5, atol=1e-9)
    assert (step != 0).mean() > 0.9
    r = np.abs(x - np.asarray(codec.decode(q), dtype=np.float32)) / np.abs(step)
    # clipping happens only at the ends of the code range: a small minority
    assert np.mean(r <= 0.5 + 1e-3) > 0.97


def test_code_bits_outside_a_block_are_refused() -> None:
    with pytest.raises(lowbit.LowbitError, match="no boundary score"):
        boundary_score(np.zeros((1, 256), np.float32), "iq2_xxs")


# ---- check 2: codes against the float original, on files ggml's own tools would write ------------------

def _ggml_file(path: Path, ggml: GGML, tensors: dict[str, np.ndarray], ty: str,
               imatrix: dict[str, np.ndarray] | None = None) -> None:
    """A GGUF whose blocks are ggml_quantize_chunk's output, written by gguf-py."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    for name, x in tensors.items():
        raw = ggml.quantize(x, ty, None if imatrix is None else imatrix[name])
        w.add_tensor(name, raw.reshape(x.shape[0], -1),
                     raw_dtype=gguf.GGMLQuantizationType[ty.upper()])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def float_and_q4k(tmp_path_factory: pytest.TempPathFactory, ggml: GGML) -> tuple[Path, Path, dict[str, np.ndarray]]:
    d = tmp_path_factory.mktemp("audit")
    rng = np.random.default_rng(11)
    tensors = {"blk.0.attn_q.weight": _weights(rng, (16, 512)), "blk.0.ffn_down.weight": _weights(rng, (24, 768))}
    ref = d / "float.safetensors"
    lowbit.save(ref, tensors)
    qf = d / "q4_k.gguf"
    _ggml_file(qf, ggml, tensors, "q4_k")
    return ref, qf, tensors


def test_honest_ggml_file_passes(float_and_q4k) -> None:
    ref, qf, _ = float_and_q4k
    rep = audit_file(qf, reference=ref)
    assert rep["ok"], rep["findings"]
    assert all(e["checks"] == ["decoded", "codes"] for e in rep["tensors"])


def _tamper(src: Path, dst: Path, name: str, blocks: list[int], how: str) -> None:
    with G.read(src) as g:
        t = g.tensor(name)
        buf = bytearray(src.read_bytes())
    ts = lowbit.get_codec(t.type_name).type_size
    for b in blocks:
        at = t.offset + b * ts
        if how == "codes":  # flip the low bit of a few 4-bit codes (qs starts at byte 16 of a Q4_K block)
            for k in (16, 40, 99):
                buf[at + k] ^= 0x01
        else:  # the super-block scale d (first two bytes) rewritten to fp16 60000
            buf[at:at + 2] = struct.pack("<e", 60000.0)
    dst.write_bytes(bytes(buf))


def test_changed_codes_are_flagged_by_tensor_and_block(float_and_q4k, tmp_path: Path) -> None:
    ref, qf, _ = float_and_q4k
    bad = tmp_path / "tampered.gguf"
    _tamper(qf, bad, "blk.0.ffn_down.weight", [4, 17, 29], "codes")
    rep = audit_file(bad, reference=ref)
    assert not rep["ok"]
    (f,) = rep["findings"]  # the decoded values stay plausible: only the code comparison sees it
    assert f["tensor"] == "blk.0.ffn_down.weight" and f["check"] == "codes"
    assert f["blocks"] == [4, 17, 29]
    assert "row 1, elements 256..511" in f["message"]  # block 4 of 3 per row: row 1, second block


def test_rewritten_scale_is_flagged_without_a_reference(float_and_q4k, tmp_path: Path) -> None:
    _, qf, _ = float_and_q4k
    bad = tmp_path / "scaled.gguf"
    _tamper(qf, bad, "blk.0.attn_q.weight", [5], "scale")
    rep = audit_file(bad)
    (f,) = rep["findings"]
    assert f["tensor"] == "blk.0.attn_q.weight" and f["check"] == "scale" and f["blocks"] == [5]
    # and without tampering the same file is clean
    assert audit_file(qf)["ok"]


def test_nan_scale_is_flagged(float_and_q4k, tmp_path: Path) -> None:
    _, qf, _ = float_and_q4k
    with G.read(qf) as g:
        t = g.tensor("blk.0.attn_q.weight")
    buf = bytearray(qf.read_bytes())
    buf[t.offset + 2 * 144:t.offset + 2 * 144 + 2] = struct.pack("<e", float("nan"))
    bad = tmp_path / "nan.gguf"
    bad.write_bytes(bytes(buf))
    (f,) = audit_file(bad)["findings"]
    assert f["check"] == "finite" and f["blocks"] == [2]


def test_imatrix_quantized_file_is_checked_with_its_imatrix(float_and_q4k, ggml: GGML, tmp_path: Path) -> None:
    """A file quantized with an importance matrix matches only when the audit uses the same one."""
    ref, _, tensors = float_and_q4k
    rng = np.random.default_rng(2)
    imx = {n: (rng.random(x.shape[1]) ** 4 + 1e-3).astype(np.float32) for n, x in tensors.items()}
    qf = tmp_path / "imx.gguf"
    _ggml_file(qf, ggml, tensors, "q4_k", imx)
    dat = tmp_path / "imatrix.dat"
    write_imatrix_dat(dat, {n: (1, v) for n, v in imx.items()})  # one call: the values are the averages
    assert audit_file(qf, reference=ref, imatrix=dat)["ok"]
    rep = audit_file(qf, reference=ref)
    assert {f["tensor"] for f in rep["findings"]} == set(tensors)


def test_real_model_file_passes_the_value_checks(gemma_gguf: Path) -> None:
    """An honest real GGUF (Q4_K, Q6_K, Q5_0, Q8_0, F32) written by llama.cpp: nothing flagged."""
    rep = audit_file(gemma_gguf, types=())
    assert rep["ok"], rep["findings"][:3]
    assert sum("decoded" in e["checks"] for e in rep["tensors"]) == 127


# ---- check 3: the boundary score ---------------------------------------------------------------------

def project_to_edges(w: np.ndarray, ty: str, rng: np.random.Generator, sweeps: int = 2) -> np.ndarray:
    """What a quantization-conditioned attack leaves (Mind the Gap, seeds/): weights moved inside the
    interval that rounds to the same codes, pushed to its edge. One element per block per pass is
    moved to 0.495 steps from its code's value, and kept only where re-encoding the block still
    gives the same bytes (the attack needs the quantized model unchanged, scales included)."""
    c = lowbit.get_codec(ty)
    ts, bs = c.type_size, c.block_size
    q = c.encode(w, backend="cpu")
    ref = np.asarray(q.data).reshape(-1, ts)
    dec = np.asarray(c.decode(q)).reshape(-1, bs)
    step = np.abs(code_steps(np.asarray(q.data), ty, w.shape)).reshape(-1, bs)
    wp = w.reshape(-1, bs).copy()
    side = np.where(wp >= dec, 1.0, -1.0)
    target = (dec + side * 0.495 * step).astype(np.float32)
    rows = np.arange(wp.shape[0])
    for _ in range(sweeps):
        order = np.argsort(rng.random(wp.shape), axis=1)
        for j in range(bs):
            col = order[:, j]
            old = wp[rows, col].copy()
            wp[rows, col] = target[rows, col]
            got = np.asarray(c.encode(wp.reshape(w.shape), backend="cpu").data).reshape(-1, ts)
            undo = (got != ref).any(axis=1)
            wp[rows[undo], col[undo]] = old[undo]
    out = wp.reshape(w.shape)
    assert np.array_equal(np.asarray(c.encode(out, backend="cpu").data), np.asarray(q.data))
    return out


@pytest.mark.parametrize("ty", ["q4_k", "q6_k", "q4_0"])
def test_boundary_score_separates_projected_from_trained_weights(minilm_safetensors: Path, ty: str) -> None:
    with lowbit.open_file(minilm_safetensors) as f:
        w = np.asarray(f.get("encoder.layer.3.output.dense.weight"), dtype=np.float32)  # (384, 1536), trained
    ordinary = boundary_score(w, ty)["score"]
    attacked = boundary_score(project_to_edges(w[:16], ty, np.random.default_rng(0)), ty)["score"]
    assert ordinary < 1.5 and attacked > 3.0, (ordinary, attacked)


def test_audit_cli_flags_the_projected_tensor(minilm_safetensors: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with lowbit.open_file(minilm_safetensors) as f:
        names = [n for n in f.names() if n.endswith("output.dense.weight") and "attention" not in n][:3]
        tensors = {n: np.asarray(f.get(n), dtype=np.float32)[:32] for n in names}
    tensors[names[1]] = project_to_edges(tensors[names[1]], "q4_k", np.random.default_rng(1))
    path = tmp_path / "suspect.safetensors"
    lowbit.save(path, tensors)
    assert main(["audit", str(path), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert [f["tensor"] for f in rep["findings"]] == [names[1]]
    scores = {e["tensor"]: e["boundary"]["q4_k"]["score"] for e in rep["tensors"]}
    assert scores[names[0]] < 1.5 and scores[names[2]] < 1.5
    del tensors[names[1]]
    lowbit.save(path, tensors)
    assert main(["audit", str(path)]) == 0
    assert "ok: nothing flagged" in capsys.readouterr().out


def test_lowbit_file_with_side_arrays_is_checked_value_by_value(tmp_path: Path) -> None:
    """A codec whose scales live in side arrays: a changed code byte is named by its elements, a
    changed scale by the values it moves."""
    rng = np.random.default_rng(4)
    x = _weights(rng, (4, 128))
    ref = tmp_path / "ref.safetensors"
    lowbit.save(ref, {"w": x})
    q = lowbit.get_codec("fp4_e2m1", scale="block:1x32").encode(x)
    good = tmp_path / "good.safetensors"
    lowbit.save(good, {"w": q})
    assert audit_file(good, reference=ref)["ok"]
    data = np.asarray(q.data).copy()
    data[2, 10] ^= 0x10  # the high nibble: element 21 of row 2
    bad = tmp_path / "bad.safetensors"
    lowbit.save(bad, {"w": lowbit.QTensor(data, q.aux, q.shape, q.codec)})
    (f,) = audit_file(bad, reference=ref)["findings"]
    assert f["check"] == "codes" and f["blocks"] == [2 * 64 + 10] and "row 2, elements 20..21" in f["message"]
