"""Integrity (issue 18): the header digest covers codec configs and side-array layout, reading
verifies by default, convert/quantize/audit refuse tampered input, and side arrays that contradict
their codec are refused at load."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.formats import safetensors as st


def _x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)


def _saved(tmp_path: Path, **kw) -> Path:
    p = tmp_path / "w.safetensors"
    lowbit.save(p, {"w": lowbit.encode(_x(), "fp8_e4m3", scale="channel"), "b": _x()[0]}, **kw)
    return p


def _rewrite_header(p: Path, edit) -> None:
    """Replace the JSON header by ``edit(header dict)`` (same data section, length re-padded)."""
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    head = edit(json.loads(raw[8:8 + n]))
    blob = json.dumps(head, separators=(",", ":")).encode()
    blob += b" " * (-(8 + len(blob)) % 8)
    p.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])


def _flip_code_byte(p: Path, name: str = "w") -> None:
    with lowbit.open_file(p, verify=False) as f:
        at = f._start + f.info(name)["data_offsets"][0] + 1
    raw = bytearray(p.read_bytes())
    raw[at] ^= 0x01
    p.write_bytes(bytes(raw))


def test_changed_codec_id_fails_verification(tmp_path: Path) -> None:
    p = _saved(tmp_path)
    raw = p.read_bytes()
    assert raw.count(b"fp8_e4m3") == 1
    p.write_bytes(raw.replace(b"fp8_e4m3", b"fp8_e5m2"))  # same length: only the digest can tell
    for kw in ({}, {"verify": True}):
        with pytest.raises(lowbit.FormatError, match="header digest mismatch"):
            lowbit.load(p, **kw)
    q = lowbit.load(p, verify=False)["w"]  # unverified, it is read as the other codec
    assert q.codec_id == "fp8_e5m2"


def test_header_digest_covers_every_header_byte(tmp_path: Path) -> None:
    p = _saved(tmp_path, metadata={"note": "abc"})
    with lowbit.open_file(p) as f:
        assert st.HEADER_DIGEST_KEY in f.metadata and len(f.metadata[st.HEADER_DIGEST_KEY]) == 64
        assert st.HEADER_DIGEST_KEY not in st.user_metadata(f.metadata)
    raw = p.read_bytes()
    p.write_bytes(raw.replace(b'"abc"', b'"abd"'))
    with pytest.raises(lowbit.FormatError, match="header digest"):
        lowbit.load(p)


def test_files_without_a_header_digest_stay_readable(tmp_path: Path) -> None:
    """Files written before the header digest: verify checks their tensor bytes only."""
    p = _saved(tmp_path)
    _rewrite_header(p, lambda h: {**h, "__metadata__": {k: v for k, v in h["__metadata__"].items() if k != st.HEADER_DIGEST_KEY}})
    assert lowbit.load(p, verify=True)["w"].codec_id == "fp8_e4m3"
    _flip_code_byte(p)
    with pytest.raises(lowbit.FormatError, match="checksum mismatch"):
        lowbit.load(p)


def test_flipped_code_byte_never_decodes_silently(tmp_path: Path) -> None:
    p = _saved(tmp_path)
    _flip_code_byte(p)
    with pytest.raises(lowbit.FormatError, match="'w': checksum mismatch"):
        lowbit.load(p)
    with lowbit.open_file(p) as f:  # lazily: the tensor that changed fails on its first read
        assert f.get("b").shape == (32,)
        with pytest.raises(lowbit.FormatError, match="checksum mismatch"):
            f.get("w")


def test_each_tensor_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _saved(tmp_path)
    calls: list[str] = []
    real = st.SafetensorsFile.verify

    def counting(self, name=None, raw=None):
        calls.append(name)
        return real(self, name, raw)

    monkeypatch.setattr(st.SafetensorsFile, "verify", counting)
    with lowbit.open_file(p) as f:
        for _ in range(3):
            f.get("w"), f.get("b")
    assert sorted(calls) == ["b", "w", "w.__aux__.scale"]


@pytest.mark.parametrize("break_aux", ["dtype", "shape", "emptied", "missing"])
def test_side_arrays_that_contradict_the_codec_fail_at_load(tmp_path: Path, break_aux: str) -> None:
    q = lowbit.encode(_x(), "fp8_e4m3", scale="channel")
    p = tmp_path / "a.safetensors"
    if break_aux in ("dtype", "shape"):
        s = q.aux["scale"]
        bad = lowbit.QTensor(q.data, {"scale": s.astype(np.float16) if break_aux == "dtype" else s[:2]}, q.shape, q.codec)
        lowbit.save(p, {"w": bad})
    else:
        lowbit.save(p, {"w": q}, checksums=False)

        def edit(h):
            index = json.loads(h["__metadata__"]["lowbit"])
            if break_aux == "emptied":
                index["tensors"]["w"]["aux"] = []
            else:
                del h["w.__aux__.scale"]
            h["__metadata__"]["lowbit"] = json.dumps(index)
            return h

        _rewrite_header(p, edit)
    with pytest.raises(lowbit.FormatError, match=r"'w'.*(aux|side array)"):
        lowbit.load(p)


def test_convert_quantize_audit_verify_their_input(tmp_path: Path) -> None:
    """No laundering: a tampered file is refused, not rewritten with fresh digests."""
    from lowbit.tools.audit import audit_file
    from lowbit.tools.convert import convert_file
    from lowbit.tools.quantize import quantize_file

    q = tmp_path / "q.safetensors"
    lowbit.save(q, {"w": lowbit.encode(np.tile(_x(), (1, 8)), "q4_0")})
    _flip_code_byte(q)
    with pytest.raises(lowbit.FormatError, match="checksum mismatch"):
        convert_file(q, tmp_path / "out.safetensors", progress=False)
    assert not (tmp_path / "out.safetensors").exists()
    with pytest.raises(lowbit.FormatError, match="checksum mismatch"):
        audit_file(q)
    f = tmp_path / "f.safetensors"
    lowbit.save(f, {"w": np.tile(_x(), (1, 8))})
    _flip_code_byte(f)
    with pytest.raises(lowbit.FormatError, match="checksum mismatch"):
        quantize_file(f, tmp_path / "fq.safetensors", codec=lowbit.get_codec("q4_0"), progress=False)
    assert not (tmp_path / "fq.safetensors").exists()
