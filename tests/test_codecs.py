"""The harness, run over every registered codec and every configuration its class lists."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lowbit

from . import harness
from .strategies import tensors

CONFIGS = [(cid, cfg) for cid in lowbit.list_codecs() for cfg in lowbit.codec_class(cid).examples()]


def _id(p: tuple[str, dict]) -> str:
    cid, cfg = p
    return cid + ("" if not cfg else "-" + ",".join(f"{k}={v}" for k, v in cfg.items()))


@pytest.fixture(params=CONFIGS, ids=[_id(p) for p in CONFIGS], scope="module")
def codec(request: pytest.FixtureRequest) -> lowbit.Codec:
    cid, cfg = request.param
    return harness.driven(lowbit.get_codec(cid, **cfg))


def test_every_codec_is_covered() -> None:
    assert {cid for cid, _ in CONFIGS} == set(lowbit.list_codecs())
    assert len(CONFIGS) >= len(lowbit.list_codecs())


def test_config_roundtrip(codec: lowbit.Codec) -> None:
    harness.check_config_roundtrip(codec)


def test_layout(codec: lowbit.Codec) -> None:
    harness.check_layout(codec)


def test_ggml_type_traits(ggml: Any) -> None:
    """Every codec with a ggml type id has libggml's own block size, type size and type name."""
    seen = 0
    for cid, cfg in CONFIGS:
        codec = lowbit.get_codec(cid, **cfg)
        t = getattr(codec, "ggml_type", None)
        if t is None:
            continue
        tr = ggml.traits(t)
        assert (tr.type_name.decode().lower(), tr.blck_size, tr.type_size) == (
            cid.removesuffix("_ggml"), codec.block_size, codec.type_size), cid
        seen += 1
    assert seen >= 20


@given(data=st.data())
def test_roundtrip_within_bound(codec: lowbit.Codec, data: st.DataObject) -> None:
    harness.check_roundtrip_bound(codec, data.draw(tensors(codec)))


@given(data=st.data())
def test_idempotent(codec: lowbit.Codec, data: st.DataObject) -> None:
    harness.check_idempotent(codec, data.draw(tensors(codec)))


@settings(max_examples=5)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 4), blocks=st.integers(1, 6))
def test_decode_random_bytes_is_total(codec: lowbit.Codec, seed: int, rows: int, blocks: int) -> None:
    harness.check_decode_total(codec, (rows, 2, blocks * codec.block_size), seed)


@settings(max_examples=6)
@given(data=st.data())
def test_cpu_and_gpu_identical(codec: lowbit.Codec, data: st.DataObject) -> None:
    harness.check_cpu_gpu(codec, data.draw(tensors(codec)))


@pytest.mark.parametrize("codec_id", lowbit.list_codecs())
def test_golden_vectors(codec_id: str) -> None:
    assert harness.check_golden(codec_id) >= 1


def test_bad_inputs(codec: lowbit.Codec) -> None:
    harness.check_bad_inputs(codec)


@settings(max_examples=5)
@given(data=st.data())
def test_qtensor_bytes_roundtrip(codec: lowbit.Codec, data: st.DataObject) -> None:
    harness.check_qtensor_bytes(codec, data.draw(tensors(codec)))


@settings(max_examples=5)
@given(data=st.data())
def test_array_types(codec: lowbit.Codec, data: st.DataObject) -> None:
    harness.check_array_types(codec, data.draw(tensors(codec, specials=False)))


def test_empty_tensors(codec: lowbit.Codec) -> None:
    harness.check_empty(codec)


@settings(max_examples=5)
@given(data=st.data())
def test_bits_per_element(codec: lowbit.Codec, data: st.DataObject) -> None:
    harness.check_bits_per_element(codec, data.draw(tensors(codec)))


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_input_policy(codec: lowbit.Codec, backend: str) -> None:
    harness.check_input_policy(codec, backend)


def test_meta_tensors_are_refused(codec: lowbit.Codec) -> None:
    harness.check_meta_tensors(codec)
