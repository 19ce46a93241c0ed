"""Sharded, resumable conversion on Dask (issue 23): dask.distributed for real, one LocalCluster of
two worker processes shared by the module.

The output of a sharded job is the same bytes whatever runs it (this process, a process pool, the
cluster), whatever happens to a worker (killed mid-shard) and whatever the run's history (stopped
after some shards, resumed, a finished shard corrupted). Split GGUF output equals the one-process
split writer's, with or without Dask, and a split GGUF quantize resumes without Dask too. Bad inputs are refused before anything is written. The zarr v3 route: a float
array encoded chunk-wise with dask.array through lowbit's zarr codec decodes to the whole-array
encoding.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.formats import gguf as G
from lowbit.tools.convert import convert_file
from lowbit.tools.quantize import prepare, quantize_file, write_direct

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
SHARD = 200_000  # output shard limit (bytes): 4 shards of the checkpoint below


@pytest.fixture(scope="module")
def client():
    import logging

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=logging.ERROR)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _llama(n_layers: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, ff, kv = 256, 512, 128
    w = {"model.embed_tokens.weight": rng.standard_normal((64, d))}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(d)
        for n, s in (("self_attn.q_proj", (d, d)), ("self_attn.k_proj", (kv, d)), ("self_attn.v_proj", (kv, d)),
                     ("self_attn.o_proj", (d, d)), ("mlp.gate_proj", (ff, d)), ("mlp.up_proj", (ff, d)),
                     ("mlp.down_proj", (d, ff))):
            w[p + n + ".weight"] = rng.standard_normal(s) * 0.05
    w["model.norm.weight"] = np.ones(d)
    return {k: v.astype(np.float32) for k, v in w.items()}


def _hf_folder(path: Path, tensors: dict[str, np.ndarray], n_shards: int = 3) -> Path:
    """A sharded checkpoint as transformers writes it: safetensors' own writer, an index json;
    the tensors dealt round-robin, so every layer's q/k/v and gate/up lie in different shards."""
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    files = [f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors" for i in range(n_shards)]
    weight_map = {n: files[k % n_shards] for k, n in enumerate(names)}
    for f in files:
        save_file({n: tensors[n] for n in names if weight_map[n] == f}, str(path / f), metadata={"format": "pt"})
    total = sum(a.nbytes for a in tensors.values())
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                   "weight_map": weight_map}, indent=2))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _hf_folder(tmp_path_factory.mktemp("ckpt") / "llama", _llama())


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


Q4K = lowbit.get_codec("q4_k")


@pytest.fixture(scope="module")
def reference(ckpt, tmp_path_factory) -> dict[str, bytes]:
    """The job run in this process, one shard after the other."""
    out = tmp_path_factory.mktemp("ref") / "q"
    r = quantize_file(ckpt, str(out) + "/", codec=Q4K, max_shard_size=SHARD, jobs=1, progress=False)
    assert r["sharded"]["written"] == r["sharded"]["shards"] == 4
    return _files(out)


# ---- identical bytes, whatever runs the shards ----------------------------------------------------

def test_same_bytes_in_process_in_a_pool_and_on_the_cluster(ckpt, reference, client, tmp_path) -> None:
    """One process, a local pool of 2 processes and the LocalCluster of 2 worker processes write
    the same bytes: shards, index, manifest. Each tensor is the one-file quantization's, the index
    is transformers' format, and the folder reads back as one checkpoint."""
    for how, kw in (("pool", {"jobs": 2}), ("dask", {"dask": client})):
        out = tmp_path / how
        r = quantize_file(ckpt, str(out) + "/", codec=Q4K, max_shard_size=SHARD, progress=False, **kw)
        assert _files(out) == reference, how
        assert r["sharded"]["written"] == 4 and r["output"] == str(out)
    assert sorted(reference) == ["lowbit-manifest.json", "model-00001-of-00004.safetensors",
                                 "model-00002-of-00004.safetensors", "model-00003-of-00004.safetensors",
                                 "model-00004-of-00004.safetensors", "model.safetensors.index.json"]
    single = tmp_path / "one.safetensors"
    quantize_file(ckpt, single, codec=Q4K, progress=False)
    r = quantize_file(ckpt, tmp_path / "one-dask.safetensors", codec=Q4K, dask=client, progress=False)
    assert r["output"] == str(tmp_path / "one-dask.safetensors") and r["sharded"]["shards"] == 1
    assert (tmp_path / "one-dask.safetensors").read_bytes() == single.read_bytes()  # one file, one task: the same
    index = json.loads(reference["model.safetensors.index.json"])
    man = json.loads(reference["lowbit-manifest.json"])
    assert man["complete"] and sorted(man["files"]) == sorted(set(index["weight_map"].values()))
    with lowbit.open_file(single) as a, lowbit.open_file(tmp_path / "dask") as b:
        assert a.names() == b.names()
        assert set(index["weight_map"]) == set(b.keys())
        assert index["metadata"]["total_size"] == sum(b.raw(k).size for k in b.keys())
        for n in a.names():
            x, y = a.get(n), b.get(n)
            assert type(x) is type(y)
            if isinstance(x, lowbit.QTensor):
                assert x.codec == y.codec and np.array_equal(np.asarray(x.data), np.asarray(y.data)), n
            else:
                assert np.array_equal(x, y), n
        assert b.metadata["format"] == "pt"  # what transformers checks on every shard
    for f, blob in reference.items():
        if f.endswith(".safetensors"):
            assert man["files"][f]["sha256"] == __import__("hashlib").sha256(blob).hexdigest()


def _gguf(path: Path, n: int = 6) -> Path:
    """A small llama-shaped F32 GGUF written with gguf-py's own writer."""
    from gguf import GGUFWriter

    rng = np.random.default_rng(3)
    gw = GGUFWriter(str(path), "llama")
    gw.add_block_count(n)
    gw.add_head_count(4)
    gw.add_head_count_kv(4)
    gw.add_file_type(0)
    for i in range(n):
        gw.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(256, np.float32))
        gw.add_tensor(f"blk.{i}.ffn_up.weight", (rng.standard_normal((64, 256)) * 0.05).astype(np.float32))
        gw.add_tensor(f"blk.{i}.attn_q.weight", (rng.standard_normal((32, 256)) * 0.05).astype(np.float32))
    gw.write_header_to_file()
    gw.write_kv_data_to_file()
    gw.write_tensors_to_file()
    gw.close()
    return path


def test_split_gguf_on_the_cluster_is_the_one_process_split(client, tmp_path) -> None:
    """A split GGUF in (llama-gguf-split's shards), a split GGUF out: the cluster's shards are the
    bytes of the one-process llama-gguf-split writer's, names and split.* keys included."""
    src = _gguf(tmp_path / "f32.gguf")
    for d in ("in", "one"):
        (tmp_path / d).mkdir()
    convert_file(src, tmp_path / "in" / "m.gguf", split_max_tensors=7, progress=False)  # a split input
    shards_in = sorted((tmp_path / "in").glob("m-*.gguf"))
    assert [p.name for p in shards_in] == ["m-00001-of-00003.gguf", "m-00002-of-00003.gguf", "m-00003-of-00003.gguf"]
    with G.read(shards_in[1]) as g:
        assert g.metadata["split.no"] == 1 and g.metadata["split.count"] == 3
    kw = dict(mix="Q8_0", split_max_tensors=5, progress=False)
    # the reference: this process, gguf_split.Writer (every shard appears at the end)
    write_direct(prepare(shards_in[0], str(tmp_path / "one" / "q.gguf"), mix="Q8_0", split_max_tensors=5))
    one = _files(tmp_path / "one")
    r = quantize_file(shards_in[2], tmp_path / "dask" / "q.gguf", dask=client, **kw)
    assert r["sharded"]["written"] == 4
    r = quantize_file(shards_in[1], tmp_path / "pool" / "q.gguf", jobs=2, **kw)  # no --dask: local processes
    assert r["sharded"]["written"] == 4
    for route in ("dask", "pool"):
        got = _files(tmp_path / route)
        assert got.pop("q.lowbit-manifest.json")
        assert got == one and len(one) == 4, route
    with lowbit.open_file(tmp_path / "dask" / "q-00004-of-00004.gguf") as g:
        assert len(g.names()) == 18 and g.metadata["general.file_type"] == 7


def test_a_split_gguf_quantize_without_dask_resumes(tmp_path) -> None:
    """``lowbit quantize ... --split-max-tensors N`` in one process: stopped after 2 of 4 shards, the
    rerun verifies those 2 against the manifest and writes only the other 2; the same bytes as an
    uninterrupted run."""
    from lowbit.tools import sharding

    src = _gguf(tmp_path / "f32.gguf")
    ref, out = tmp_path / "ref" / "q.gguf", tmp_path / "out" / "q.gguf"
    for p in (ref, out):
        p.parent.mkdir()
    r = quantize_file(src, ref, mix="Q4_K_M", split_max_tensors=5, jobs=1, progress=False)
    assert r["sharded"]["written"] == 4
    job = sharding.quantize_job(prepare(src, str(out), mix="Q4_K_M", split_max_tensors=5))
    with pytest.raises(lowbit.LowbitError, match=r"2 of 4 shards are finished"):
        sharding.run(job, jobs=1, progress=False, hook=partial(fail_from, 2))
    assert sorted(os.listdir(out.parent)) == ["q-00001-of-00004.gguf", "q-00002-of-00004.gguf", "q.lowbit-manifest.json"]
    r = quantize_file(src, out, mix="Q4_K_M", split_max_tensors=5, jobs=1, progress=False)
    assert (r["sharded"]["skipped"], r["sharded"]["written"], r["sharded"]["redone"]) == (2, 2, 0)
    assert _files(out.parent) == _files(ref.parent)


# ---- a killed worker ---------------------------------------------------------------------------------

def kill_once(marker: str, no: int) -> None:
    """Kill this worker process (SIGKILL, mid-job) the first time shard 1 starts."""
    if no == 1 and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_and_the_job_completes_identically(ckpt, reference, client, tmp_path) -> None:
    marker = tmp_path / "killed"
    out = tmp_path / "q"
    pids = set(client.run(os.getpid).values())
    r = quantize_file_hooked(ckpt, out, client, partial(kill_once, str(marker)))
    assert int(marker.read_text()) in pids  # a worker of the cluster died in shard 1 ...
    assert r["written"] == 4 and _files(out) == reference  # ... and its shard was written again, elsewhere
    client.wait_for_workers(2, timeout=60)  # the nanny brought a new worker up
    marker.unlink()  # the local pool: a process killed, the pool restarted, the same bytes
    r = quantize_file_hooked(ckpt, tmp_path / "pool", None, partial(kill_once, str(marker)), jobs=2)
    assert marker.exists() and r["written"] == 4 and _files(tmp_path / "pool") == reference


def quantize_file_hooked(ckpt: Path, out: Path, dask, hook, **kw) -> dict:
    """quantize_file's sharded route with a hook run on the worker at the start of every shard."""
    from lowbit.tools import quantize, sharding

    prep = quantize.prepare(ckpt, str(out) + "/", codec=Q4K, out_gguf=False)
    job = sharding.quantize_job(prep, max_shard_size=SHARD)
    return sharding.run(job, dask=dask, progress=False, hook=hook, **kw)


# ---- a whole run interrupted, then resumed ---------------------------------------------------------

def fail_from(k: int, no: int) -> None:
    if no >= k:
        raise RuntimeError(f"interrupted before shard {no}")


def test_interrupted_then_resumed_writes_only_the_rest(ckpt, reference, client, tmp_path) -> None:
    """Stopped after 2 of 4 shards: the 2 are recorded in the manifest (nothing else on disk, no
    index: the folder is not a checkpoint yet); the rerun, on the cluster, verifies them and
    writes only the other 2 (the 2 files are never rewritten); the result is the same bytes. A
    finished shard corrupted on disk is found by its digest and written again."""
    out = tmp_path / "q"
    with pytest.raises(lowbit.LowbitError, match=r"shard model-00003-of-00004.safetensors: RuntimeError: interrupted "
                                                 r"before shard 2; 2 of 4 shards are finished .* run the same command"):
        quantize_file_hooked(ckpt, out, None, partial(fail_from, 2), jobs=1)
    man = json.loads((out / "lowbit-manifest.json").read_text())
    assert sorted(os.listdir(out)) == ["lowbit-manifest.json", "model-00001-of-00004.safetensors",
                                       "model-00002-of-00004.safetensors"]
    assert sorted(man["files"]) == ["model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors"]
    assert not man["complete"]
    before = {f: os.stat(out / f) for f in man["files"]}
    r = quantize_file(ckpt, str(out) + "/", codec=Q4K, max_shard_size=SHARD, dask=client, progress=False)
    assert (r["sharded"]["skipped"], r["sharded"]["written"], r["sharded"]["redone"]) == (2, 2, 0)
    for f, st in before.items():
        now = os.stat(out / f)
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), f
    assert _files(out) == reference
    blob = bytearray((out / "model-00002-of-00004.safetensors").read_bytes())
    blob[-5] ^= 1
    (out / "model-00002-of-00004.safetensors").write_bytes(bytes(blob))
    r = quantize_file(ckpt, str(out) + "/", codec=Q4K, max_shard_size=SHARD, jobs=1, progress=False)
    assert (r["sharded"]["skipped"], r["sharded"]["written"], r["sharded"]["redone"]) == (3, 1, 1)
    assert _files(out) == reference


# ---- bad inputs: a clear LowbitError, nothing written -------------------------------------------------

def test_bad_inputs_are_refused_and_leave_nothing(ckpt, tmp_path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    out = tmp_path / "out"
    q = partial(quantize_file, codec=Q4K, max_shard_size=SHARD, progress=False)
    (bad / "model-00002-of-00003.safetensors").rename(bad / "gone.safetensors")
    with pytest.raises(lowbit.FormatError, match=r"missing shard\(s\) model-00002-of-00003.safetensors"):
        q(bad, str(out) + "/")
    (bad / "gone.safetensors").rename(bad / "model-00002-of-00003.safetensors")
    idx = bad / "model.safetensors.index.json"
    good = idx.read_text()
    doc = json.loads(good)
    doc["weight_map"]["model.norm.weight"] = "model-00001-of-00003.safetensors"
    idx.write_text(json.dumps(doc))
    with pytest.raises(lowbit.FormatError, match=r"'model.norm.weight': the index says model-00001-of-00003"):
        q(bad, str(out) + "/")
    idx.write_text(good[:-20])
    with pytest.raises(lowbit.FormatError, match="index"):
        q(bad, str(out) + "/")
    idx.write_text(good)
    with pytest.raises(lowbit.ConfigError, match="local:N"):
        q(bad, str(out) + "/", dask="local:0")
    with pytest.raises(lowbit.ConfigError, match="--max-shard-size: expected a positive size"):
        q(bad, str(out) + "/", max_shard_size=0)
    assert not out.exists()
    # a shard whose tensor cannot be encoded: the first shard fails, nothing is left behind
    with pytest.raises(lowbit.LowbitError, match=r"shard model-00001-of-00004.safetensors: RuntimeError: interrupted"):
        quantize_file_hooked(bad, out, None, partial(fail_from, 0), jobs=1)
    assert not out.exists()
    # an output folder holding something else, or another job's output
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(lowbit.ConfigError, match="already holds notes.txt and no manifest"):
        q(bad, str(out) + "/")
    (out / "notes.txt").unlink()
    import fcntl

    fd = os.open(out, os.O_RDONLY)  # another run holds the folder
    fcntl.flock(fd, fcntl.LOCK_EX)
    with pytest.raises(lowbit.ConfigError, match="another run is writing into"):
        q(bad, str(out) + "/")
    os.close(fd)
    q(bad, str(out) + "/")
    before = _files(out)
    with pytest.raises(lowbit.ConfigError, match="holds the output of another job"):
        quantize_file(bad, str(out) + "/", codec=lowbit.get_codec("q8_0"), max_shard_size=SHARD, progress=False)
    assert _files(out) == before


def test_cli_convert_to_a_sharded_bfloat16_folder_on_a_scheduler_address(ckpt, client, tmp_path) -> None:
    """``lowbit convert IN_DIR OUT_DIR/ --to bfloat16 --dask tcp://...`` (the running cluster's
    scheduler): a checkpoint safetensors' own reader loads shard by shard, values = the cast."""
    from safetensors.numpy import load_file

    out = tmp_path / "bf16"
    cmd = [sys.executable, "-m", "lowbit.tools.cli", "convert", str(ckpt), str(out) + "/", "--to", "bfloat16",
           "--max-shard-size", "400KB", "--dask", client.scheduler.address]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert re.search(r"shard\(s\): \d+ written \(0 redone\), 0 already finished", p.stdout), p.stdout
    index = json.loads((out / "model.safetensors.index.json").read_text())
    want = _llama()
    import ml_dtypes

    got = {}
    for f in sorted(set(index["weight_map"].values())):
        got.update(load_file(str(out / f)))
    assert sorted(got) == sorted(want)
    for n, a in want.items():
        assert np.array_equal(got[n].view(np.uint16), a.astype(ml_dtypes.bfloat16).view(np.uint16)), n


# ---- the zarr v3 route ------------------------------------------------------------------------------

def test_zarr_chunkwise_on_the_cluster_decodes_to_the_whole_array_encoding(client, tmp_path) -> None:
    """A float zarr v3 array, encoded chunk-wise by the cluster's workers with dask.array through
    lowbit's zarr codec, reads back (zarr and dask.array.from_zarr) as the whole-array encoding,
    for a block codec and a per-row-scaled one; misaligned chunks are refused clearly."""
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    from lowbit.formats.zarr_dask import to_zarr

    rng = np.random.default_rng(1)
    src = zarr.create_array(store=str(tmp_path / "f.zarr"), shape=(64, 1024), chunks=(16, 1024), dtype="float32")
    src[:] = x = rng.standard_normal((64, 1024)).astype(np.float32)
    for codec, chunks in (("q4_k", (16, 256)), ({"id": "fp8_e4m3", "scale": "channel"}, (8, 1024))):
        z = to_zarr(da.from_zarr(src), str(tmp_path / f"q{chunks[0]}.zarr"), codec, chunks=chunks)
        want = lowbit.decode(lowbit.encode(x, codec if isinstance(codec, str) else lowbit.get_codec(codec)))
        again = zarr.open_array(str(tmp_path / f"q{chunks[0]}.zarr"), mode="r")
        assert again.metadata.to_dict()["codecs"][0]["name"] == "lowbit"
        assert np.array_equal(again[:], want)
        assert np.array_equal(da.from_zarr(again).compute(), want)
        assert z.nchunks == 64 * 1024 // (chunks[0] * chunks[1])
    with pytest.raises(lowbit.ConfigError, match=r"multiple of the codec's block of 256 elements \(e.g. chunks \(16, 256\)\)"):
        to_zarr(x, str(tmp_path / "bad.zarr"), "q4_k", chunks=(16, 300))
    with pytest.raises(lowbit.ConfigError, match=r"span more than one chunk.*whole rows, e.g. \(8, 1024\)"):
        to_zarr(x, str(tmp_path / "bad.zarr"), {"id": "fp8_e4m3", "scale": "channel"}, chunks=(8, 512))
    with pytest.raises(lowbit.ConfigError, match=r"a single chunk \(64, 1024\)"):
        to_zarr(x, str(tmp_path / "bad.zarr"), {"id": "fp8_e4m3", "scale": "tensor"}, chunks=(8, 1024))
    with pytest.raises(lowbit.ConfigError, match="multiple of the codec's block of 256"):  # zarr itself, at creation
        from lowbit.formats.zarr_codecs import ZarrLowbit

        zarr.create_array(store=str(tmp_path / "bad2.zarr"), shape=(64, 1024), chunks=(16, 100), dtype="float32",
                          serializer=ZarrLowbit(codec={"id": "q4_k"}), compressors=None)
    assert not (tmp_path / "bad.zarr").exists()


def test_the_docs_zarr_example_runs(tmp_path, monkeypatch) -> None:
    """docs/distributed.md's zarr example, as written there."""
    text = (ROOT / "docs" / "distributed.md").read_text()
    code = re.search(r"<!-- zarr-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    import dask

    with dask.config.set(scheduler="threads"):  # as the example says (this module's cluster is the default)
        exec(compile(code, "docs/distributed.md", "exec"), {})


def test_the_core_and_the_local_route_never_import_dask(tmp_path) -> None:
    """Dask is imported on the --dask and zarr_dask paths only: a sharded job on local processes,
    the CLI and every module of the route load without it."""
    code = f"""
import sys, numpy as np, lowbit
import lowbit.tools.cli, lowbit.tools.sharding, lowbit.formats.sharded, lowbit.formats.zarr_dask
from lowbit.tools.quantize import prepare, quantize_file, write_direct
lowbit.save({str(tmp_path / "f.safetensors")!r}, {{"w": np.ones((4, 256), np.float32)}})
r = quantize_file({str(tmp_path / "f.safetensors")!r}, {str(tmp_path / "q")!r} + "/", codec=lowbit.get_codec("q8_0"),
                  jobs=1, progress=False)
assert r["sharded"]["written"] == 1
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed"))
assert not bad, bad
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 0, p.stderr


def test_gguf_to_a_sharded_lowbit_folder_and_back_is_the_same_file(tmp_path, capsys) -> None:
    """A quantized GGUF -> a sharded lowbit folder (blocks copied, the GGUF metadata on the first
    shard) -> one GGUF again: the original bytes. ``lowbit inspect`` reads the folder."""
    from lowbit.tools.cli import main

    q = tmp_path / "q.gguf"
    quantize_file(_gguf(tmp_path / "f32.gguf"), q, mix="Q8_0", progress=False)
    r = convert_file(q, str(tmp_path / "st") + "/", max_shard_size=60_000, jobs=2, progress=False)
    assert r["sharded"]["shards"] == 3 and {t["action"] for t in r["tensors"]} == {"codes copied", "array copied"}
    convert_file(tmp_path / "st", tmp_path / "back.gguf", progress=False)
    assert (tmp_path / "back.gguf").read_bytes() == q.read_bytes()
    assert main(["inspect", str(tmp_path / "st"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows["container"] == "safetensors (sharded)" and len(rows["tensors"]) == 18


def test_a_long_lived_cluster_never_reads_a_replaced_input_from_its_cache(client, tmp_path) -> None:
    """Workers keep inputs open between jobs; an input replaced at the same path (same header, new
    values: lowbit's writers publish by rename, a new inode) is opened again, not read stale."""
    src = tmp_path / "w.safetensors"
    for seed in (0, 1):
        x = np.random.default_rng(seed).standard_normal((8, 256)).astype(np.float32)
        lowbit.save(src, {f"{k}.weight": x * (k + 1) for k in range(8)})
        out = tmp_path / f"q{seed}"  # 8 one-tensor shards: both workers open the input
        quantize_file(src, str(out) + "/", codec=Q4K, dask=client, max_shard_size=1200, progress=False)
        with lowbit.open_file(out) as f:
            for k in range(8):
                want = np.asarray(lowbit.encode(x * (k + 1), Q4K).data)
                assert np.array_equal(np.asarray(f.get(f"{k}.weight").data), want), (seed, k)


def test_the_one_process_route_never_reads_a_replaced_input_either(tmp_path) -> None:
    """The same in one process: a second quantize_file of a path replaced since the first reads
    the new file (the process-wide open-file cache used to keep the old map)."""
    src = tmp_path / "w.safetensors"
    for seed in (0, 1):
        x = np.random.default_rng(seed).standard_normal((8, 256)).astype(np.float32)
        lowbit.save(src, {"a.weight": x})
        quantize_file(src, tmp_path / f"q{seed}.safetensors", codec=Q4K, progress=False)
        with lowbit.open_file(tmp_path / f"q{seed}.safetensors") as f:
            assert np.array_equal(np.asarray(f.get("a.weight").data), np.asarray(lowbit.encode(x, Q4K).data)), seed
