"""Reading and writing the GPU check's results: pytest's JUnit XML -> a per-codec pass/fail table,
and the markdown summary (``summary.md``) next to ``summary.json``."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any


def codec_of(test_name: str, codec_ids: list[str]) -> str:
    """The codec a parametrized test id is about: the longest registered id that appears in the
    brackets as a whole token (``test_x[q4_k-imatrix]`` -> ``q4_k``); ``(other)`` if none."""
    m = re.search(r"\[(.*)\]$", test_name)
    if not m:
        return "(other)"
    params = m.group(1)
    hits = [c for c in codec_ids if re.search(rf"(^|[-,\[=]){re.escape(c)}($|[-,\]=])", params)]
    return max(hits, key=len) if hits else "(other)"


def read_junit(path: Path) -> list[dict[str, str]]:
    """Every testcase of a JUnit XML file: id, outcome (passed/failed/error/skipped), message."""
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        outcome, msg = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome = "failed" if tag == "failure" else tag
                text = (el.get("message") or el.text or "").strip()
                msg = text.splitlines()[0][:300] if text else ""
                break
        cases.append({"id": f"{tc.get('classname', '')}::{tc.get('name', '')}", "name": tc.get("name", ""),
                      "outcome": outcome, "message": msg})
    return cases


def per_codec(cases: list[dict[str, str]], codec_ids: list[str]) -> dict[str, dict[str, Any]]:
    """codec -> counts of each outcome, the first failure/error and the first skip reason."""
    table: dict[str, dict[str, Any]] = {}
    for c in cases:
        row = table.setdefault(codec_of(c["name"], codec_ids),
                               {"passed": 0, "failed": 0, "error": 0, "skipped": 0, "first_problem": "", "first_skip": ""})
        row[c["outcome"]] += 1
        if c["outcome"] in ("failed", "error") and not row["first_problem"]:
            row["first_problem"] = f"{c['id']}: {c['message']}"
        if c["outcome"] == "skipped" and not row["first_skip"]:
            row["first_skip"] = c["message"]
    return dict(sorted(table.items()))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def markdown(doc: dict[str, Any]) -> str:
    """The human-readable summary of one run."""
    out = [f"# GPU check ({doc['mode']}): {doc['verdict']}", "",
           f"{doc['started']} UTC, {doc['env'].get('device', '?')}; " +
           ", ".join(f"{k} {v}" for k, v in doc["env"].get("versions", {}).items()), ""]
    out += ["## Steps", "", "| step | status | seconds | note |", "|---|---|---:|---|"]
    for name, st in doc["steps"].items():
        out.append(f"| {name} | {st['status']} | {st.get('seconds', 0):.1f} | {st.get('note', '')} |")
    w = doc["steps"].get("wheels", {})
    if w.get("installed") or w.get("skipped"):
        out += ["", "## Carried packages", ""]
        out += [f"- installed: {p}" for p in w.get("installed", [])]
        out += [f"- not carried / skipped: {p}" for p in w.get("skipped", [])]
    desel = doc["steps"].get("tests", {}).get("deselected", [])
    if desel:
        out += ["", "Tests left out, with the reason:", ""] + [f"- `{d['test']}`: {d['reason']}" for d in desel]
    table = doc.get("tests_by_codec", {})
    if table:
        out += ["", "## GPU tests per codec (CUDA bytes == Numba bytes and the oracles)", "",
                "| codec | pass | fail | error | skip | first problem (or skip reason) |", "|---|---:|---:|---:|---:|---|"]
        for cid, r in table.items():
            note = r["first_problem"] or (f"skipped: {r['first_skip']}" if r.get("first_skip") else "")
            out.append(f"| {cid} | {r['passed']} | {r['failed']} | {r['error']} | {r['skipped']} | {note[:160]} |")
    bench = doc.get("bench", {})
    if bench.get("rows"):
        out += ["", f"## Speed: {bench.get('shape')} float32, copy {bench.get('copy_GBps', 0):.0f} GB/s = 100 %", "",
                "| codec | status | enc f32 | enc bf16 | dec f32 | dec bf16 | Gelem/s enc bf16 / dec f32 | note |",
                "|---|---|---:|---:|---:|---:|---:|---|"]
        for r in bench["rows"]:
            f = {k: (r.get(k) or {}) for k in ("encode_f32", "encode_bf16", "decode_f32", "decode_bf16")}
            ge = f"{f['encode_bf16'].get('Gelem_s', 0):.2f} / {f['decode_f32'].get('Gelem_s', 0):.2f}" if r["status"] == "ok" else "-"
            out.append(f"| {r['codec']} | {r['status']} | " + " | ".join(_pct(f[k].get("of_copy")) for k in f) +
                       f" | {ge} | {r.get('reason', '')[:160]} |")
    if bench.get("peers"):
        out += ["", "| peer | status | of copy | Gelem/s | note |", "|---|---|---:|---:|---|"]
        for p in bench["peers"]:
            out.append(f"| {p['peer']} | {p['status']} | {_pct(p.get('of_copy'))} | "
                       f"{p.get('Gelem_s', 0):.2f} | {p.get('reason', '')[:160]} |")
    if bench.get("targets"):
        out += ["", "## Speed targets (issue 22; reported, not part of the verdict)", "",
                "| target | measured | met |", "|---|---|---|"]
        out += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |" for t in bench["targets"]]
    if doc.get("problems"):
        out += ["", "## Problems", ""] + [f"- {p}" for p in doc["problems"]]
    return "\n".join(out) + "\n"
