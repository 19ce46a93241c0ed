"""The compressed KV store and its transformers integration.

Exactness is checked where it can be exact: a store that never flushes (or a lossless codec) must
reproduce transformers' own DynamicCache token for token — greedy, batch with left padding, beam
search, sliding-window layers — on both attention paths. Lossy configurations are checked against
decoding the same codes by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import lowbit  # noqa: E402
from lowbit.kvcache import KVStore  # noqa: E402


def _kv(B=2, H=2, T=5, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, T, D, generator=g), torch.randn(B, H, T, D, generator=g)


def test_flush_accounting_and_append_only() -> None:
    s = KVStore("fp8_e4m3", "int8", window=6, flush=4, codec_params={"scale": "channel"})
    seen_k = []
    for t in range(23):
        k, v = _kv(T=1, seed=t)
        s.append(k, v)
        seen_k.append(k)
        assert s.window_length < 6 + 4 and s.seq_length == t + 1
        assert s.compressed_length % 4 == 0
    assert (s.compressed_length, s.window_length) == (16, 7)
    # the compressed history is exactly the codes of the flushed tokens (never re-encoded)
    allk = torch.cat(seen_k, dim=2)
    want = lowbit.decode(lowbit.encode(allk[:, :, :16].contiguous(), "fp8_e4m3", scale="channel"))
    got_k, _ = s.keys_values()
    assert torch.equal(got_k[:, :, :16], want) and torch.equal(got_k[:, :, 16:], allk[:, :, 16:])
    B, H, D = 2, 2, 16
    codes = 16 * B * H * (D * 1 + 4) * 2  # fp8 codes + fp32 scale per vector, keys and values
    assert s.nbytes == codes + 2 * B * H * 7 * D * 4
    assert s.nbytes_as(torch.bfloat16) == 2 * B * H * 23 * D * 2


@pytest.mark.parametrize(("Hq", "codec", "window", "flush"), [
    (2, {"id": "fp4_e2m1", "scale": "channel"}, 3, 5), (4, {"id": "fp4_e2m1", "scale": "channel"}, 3, 5),
    (8, {"id": "fp4_e2m1", "scale": "channel"}, 3, 5),
    (4, {"id": "fp4_e2m1", "scale": "channel"}, 0, 7),          # no window: everything compressed
    (4, {"id": "turboquant_mse", "dim": 16, "bits": 4}, 3, 5),  # scores on the codes
    (2, {"id": "octopus", "dim": 16, "bits": 4}, 0, 1),
])
def test_attend_matches_softmax_over_decoded(Hq: int, codec: dict, window: int, flush: int) -> None:
    s = KVStore(codec, {"id": "fp6_e2m3", "scale": "channel"} if codec["id"] == "fp4_e2m1" else codec,
                window=window, flush=flush)
    for t in range(4):
        s.append(*_kv(T=7, seed=t))
    K, V = s.keys_values()
    q = torch.randn(2, Hq, 3, 16, generator=torch.Generator().manual_seed(9))
    g = Hq // 2
    Kr, Vr = K.repeat_interleave(g, dim=1), V.repeat_interleave(g, dim=1)
    T = K.shape[2]
    causal = torch.ones(3, T, dtype=torch.bool).tril(T - 3)
    ref = torch.softmax((q @ Kr.transpose(-1, -2)) / math.sqrt(16) + torch.zeros(3, T).masked_fill(~causal, -math.inf), -1) @ Vr
    out = s.attend(q, block=5)  # several blocks: exercises the online softmax
    on_codes = codec["id"] != "fp4_e2m1"
    assert s.attention_path == ("scores-on-codes" if on_codes else "decode-then-attend")
    assert s.window_length == (0 if window == 0 else s.window_length)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5 if on_codes else 1e-6)


def test_store_refuses_token_spanning_side_data() -> None:
    with pytest.raises(lowbit.ConfigError, match="spans tokens"):
        KVStore({"id": "fp8_e4m3", "scale": "tensor"}, "fp8_e4m3")
    with pytest.raises(lowbit.ShapeError):
        KVStore().append(torch.zeros(2, 3), torch.zeros(2, 3))


def test_crop_and_reorder() -> None:
    s = KVStore("fp8_e4m3", "fp8_e4m3", window=2, flush=2)
    k, v = _kv(B=3, T=9)
    s.append(k, v)
    s.index_batch(torch.tensor([2, 0, 0]))
    K, _ = s.keys_values()
    full = KVStore("fp8_e4m3", "fp8_e4m3", window=2, flush=2)
    full.append(k[[2, 0, 0]], v[[2, 0, 0]])
    assert torch.equal(K, full.keys_values()[0])
    s.crop(7)
    assert s.seq_length == 7 and torch.equal(s.keys_values()[0], K[:, :, :7])
    s.crop(3)
    assert s.seq_length == 3 and s.window_length == 0


def _model(config_cls=None, **kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256)
    if config_cls is None:
        return LlamaForCausalLM(LlamaConfig(**base)).eval()
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config_cls(**base, **kw)).eval()


def _generate(model, cache, ids, mask=None, **kw):
    return model.generate(ids, attention_mask=mask, past_key_values=cache, max_new_tokens=24, do_sample=False, pad_token_id=0, **kw)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("arch", ["llama", "qwen2-sliding", "mistral-sliding"])
def test_lossless_cache_reproduces_dynamic_cache(fused: bool, arch: str) -> None:
    from lowbit.kvcache import LowbitCache, use_lowbit_attention

    if arch == "llama":
        model = _model()
    elif arch == "qwen2-sliding":
        from transformers import Qwen2Config

        model = _model(Qwen2Config, use_sliding_window=True, sliding_window=6, max_window_layers=1)
    else:
        from transformers import MistralConfig

        model = _model(MistralConfig, sliding_window=6)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 128, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    mask[2, :1] = 0
    ref = _generate(model, None, ids, mask)
    ref_beam = _generate(model, None, ids[:1], None, num_beams=3)
    if fused:
        use_lowbit_attention(model)
    out = _generate(model, LowbitCache(model.config, window=10**6), ids, mask)
    assert torch.equal(out, ref)
    beam = _generate(model, LowbitCache(model.config, window=10**6), ids[:1], None, num_beams=3)
    assert torch.equal(beam, ref_beam)
    layers = LowbitCache(model.config).layers
    if arch != "llama":
        assert any(l.is_sliding for l in layers)


def test_lossy_cache_fused_equals_decode_path_and_saves_memory() -> None:
    from lowbit.kvcache import LowbitCache, use_lowbit_attention

    model = _model()
    ids = torch.randint(1, 128, (2, 40), generator=torch.Generator().manual_seed(2))
    c1 = LowbitCache(model.config, window=8, flush=8, layer_overrides={-1: {"key_codec": {"id": "fp8_e4m3", "scale": "channel"}}})
    out1 = _generate(model, c1, ids)
    assert c1.layers[1].store.key_codec.codec_id == "fp8_e4m3" and c1.layers[0].store.key_codec.codec_id == "turboquant_mse"
    assert c1.nbytes < 0.6 * c1.nbytes_as(torch.float32)
    use_lowbit_attention(model)
    c2 = LowbitCache(model.config, window=8, flush=8, layer_overrides={-1: {"key_codec": {"id": "fp8_e4m3", "scale": "channel"}}})
    out2 = _generate(model, c2, ids)
    assert c2.layers[0].fused and torch.equal(out1, out2)


def test_default_cache_needs_config() -> None:
    from lowbit.kvcache import LowbitCache

    with pytest.raises(ValueError, match="config"):
        LowbitCache()
    assert np is not None


def test_cache_settings_are_checked_when_the_cache_is_built() -> None:
    """Every bad setting raises ConfigError in LowbitCache(...), naming it, before any forward."""
    from lowbit.errors import ConfigError
    from lowbit.kvcache import LowbitCache

    cfg = _model().config  # 2 layers, head_dim 8
    with pytest.raises(ConfigError, match="layer 35 is out of range for a model with 2 layers"):
        LowbitCache(cfg, layer_overrides={35: {"key_codec": "fp8_e4m3"}})
    with pytest.raises(ConfigError, match="layer -3 is out of range"):
        LowbitCache(cfg, layer_overrides={-3: {"key_codec": "fp8_e4m3"}})
    with pytest.raises(ConfigError, match="given twice"):
        LowbitCache(cfg, layer_overrides={1: {"window": 4}, -1: {"window": 8}})
    with pytest.raises(ConfigError, match=r"unknown setting 'key_codex' \(did you mean 'key_codec'\?\)"):
        LowbitCache(cfg, layer_overrides={0: {"key_codex": "fp8_e4m3"}})
    with pytest.raises(ConfigError, match="integer layer indices"):
        LowbitCache(cfg, layer_overrides={"0": {"window": 4}})
    with pytest.raises(ConfigError, match="layer 0: .*turboquant_mze"):
        LowbitCache(cfg, key_codec="turboquant_mze")
    with pytest.raises(ConfigError, match="layer 1: "):
        LowbitCache(cfg, layer_overrides={1: {"value_codec": {"id": "turboquant_mse", "bits": 9}}})
    with pytest.raises(ConfigError, match="window/flush"):
        LowbitCache(cfg, window=-1)
    with pytest.raises(ConfigError, match="blocks of 32 elements, which do not divide the model's head dimension 8"):
        LowbitCache(cfg, key_codec="q8_0")
    # good settings build, and an override applies to the layer it names
    c = LowbitCache(cfg, layer_overrides={-1: {"key_codec": {"id": "fp8_e4m3", "scale": "channel"}}})
    assert c.layers[1].kv_args["key_codec"]["id"] == "fp8_e4m3" and c.layers[0].kv_args["key_codec"]["id"] == "turboquant_mse"


@pytest.mark.parametrize("preset", ["llama.cpp:q8_0", "llama.cpp:q4_0", "llama.cpp:iq4_nl", "vllm:fp8"])
def test_engine_presets_store_the_engines_bytes(ggml, preset: str) -> None:
    """A prefill through LowbitCache(preset=...) stores, for every key and value vector, the bytes the
    engine would: ggml's own quantizer for llama.cpp's cache types (libggml-base, row = one head
    vector), a saturating FP8 cast (ml_dtypes) for vLLM's uncalibrated fp8; nothing is kept unquantized."""
    import ml_dtypes

    from lowbit.kvcache import LowbitCache

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                         max_position_embeddings=256)).eval()
    ids = torch.randint(1, 128, (2, 11), generator=torch.Generator().manual_seed(4))
    cache = LowbitCache(model.config, preset=preset)
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # what each layer was given (attention saw the codes)
    for li, layer in enumerate(cache.layers):
        def spy(k, v, *a, _u=layer.update, _i=li, **kw):
            seen[_i] = (k.detach().clone(), v.detach().clone())
            return _u(k, v, *a, **kw)
        layer.update = spy
    with torch.no_grad():
        model(ids, past_key_values=cache, use_cache=True)
    for li in range(2):
        store = cache.layers[li].store
        assert store.window_length == 0 and store.compressed_length == 11
        for want_f, grown, what in ((seen[li][0], store._k, "keys"), (seen[li][1], store._v, "values")):
            x = want_f.float().numpy()
            got = grown.view().data.numpy()
            if preset.startswith("llama.cpp:"):
                t = preset.split(":")[1]
                want = ggml.quantize(x.reshape(-1, x.shape[-1]), t).reshape(got.shape)
            else:
                want = np.clip(x, -448, 448).astype(ml_dtypes.float8_e4m3fn).view(np.uint8).reshape(got.shape)
            assert np.array_equal(got, want), f"{preset} layer {li} {what}: stored bytes differ from the engine's"


def test_unknown_preset_is_refused() -> None:
    from lowbit.errors import ConfigError
    from lowbit.kvcache import LowbitCache

    with pytest.raises(ConfigError, match=r"unknown KV preset 'llama.cpp:q8' \(did you mean 'llama.cpp:q8_0'\?\)"):
        LowbitCache(_model().config, preset="llama.cpp:q8")
