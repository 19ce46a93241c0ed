"""The ``lowbit`` command line.

    lowbit demo [--out FILE] [--codec ID] [--scale MODE] [--file F.safetensors] [--json]
    lowbit list [--json]
    lowbit info CODEC [--json]
    lowbit convert IN OUT --to LAYOUT [--json]

Errors print one line (``lowbit: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import lowbit
from lowbit.errors import LowbitError

__all__ = ["main"]


def _codec_rows() -> list[dict[str, Any]]:
    from lowbit.kernels.registry import get_kernel

    rows = []
    for cid in lowbit.list_codecs():
        c = lowbit.get_codec(cid)
        backends = []
        for be in ("cpu", "gpu"):
            try:
                get_kernel(c.family, be, "encode")
                backends.append(be)
            except LowbitError:
                pass
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
                      file=args.file, as_json=args.json)
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from lowbit.formats.layouts import convert_file

    res = convert_file(args.input, args.output, to=args.to,
                       progress=None if args.json else (lambda line: print(line, file=sys.stderr)))
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"wrote {res['output']} ({res['output_bytes']} bytes, layout {res['to']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lowbit", description="Bit-exact quantized tensor codecs: encode, decode, inspect.")
    p.add_argument("--version", action="version", version=f"lowbit {lowbit.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="encode a weight set in every codec; print rate/error/speed; write a file",
                       description="Encode a weight tensor set in every registered codec, print bits/element, "
                                   "RMSE, SQNR and CPU encode/decode speed, then write one codec's output to a "
                                   "safetensors file and check it decodes back identically.")
    d.add_argument("--out", default="lowbit-demo.safetensors", help="output file ('-' to skip writing)")
    d.add_argument("--codec", default="fp8_e4m3", help="codec for the written file (default: fp8_e4m3)")
    d.add_argument("--scale", default="channel", help="its scale mode (default: channel; '' for none)")
    d.add_argument("--file", help="use the float tensors of this safetensors file instead of the embedded set")
    d.add_argument("--json", action="store_true", help="print the results as JSON")
    d.set_defaults(fn=cmd_demo)

    lst = sub.add_parser("list", help="the registered codecs", description="List every registered codec.")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(fn=cmd_list)

    inf = sub.add_parser("info", help="one codec: parameters, layout, input policy",
                         description="Show a codec's configuration, parameters, block layout and input policy.")
    inf.add_argument("codec", help="codec id, e.g. fp8_e4m3")
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(fn=cmd_info)

    from lowbit.formats.layouts import LAYOUTS, PLAIN_TARGETS

    cv = sub.add_parser("convert", help="between checkpoint layouts, carrying codes over exactly",
                        description="Convert a checkpoint between lowbit's layout and the quantized layouts in "
                                    "the wild (compressed-tensors, modelopt, gpt-oss, bitsandbytes), or decode it "
                                    "to floats. Codes are copied, never re-quantized; when they cannot be carried "
                                    "exactly the command says why and writes nothing.")
    cv.add_argument("input", help="source file (lowbit or any supported layout, detected)")
    cv.add_argument("output", help="destination file")
    cv.add_argument("--to", required=True, choices=list(PLAIN_TARGETS) + list(LAYOUTS), help="target layout")
    cv.add_argument("--json", action="store_true", help="print the per-tensor report as JSON")
    cv.set_defaults(fn=cmd_convert)
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


if __name__ == "__main__":
    sys.exit(main())
