"""Rendering benchmark results: one Markdown table of medians and sci/peer ratios, plus JSON."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from harness import Results, Row

TOOL_ORDER = ["sci", "sci-base", "make", "doit", "snakemake", "dvc"]
LABELS = {"sci": "sci", "sci-base": "sci (baseline)", "make": "make", "doit": "doit", "snakemake": "Snakemake",
          "dvc": "DVC"}
BASELINES = ["python -c pass", "raw BLAKE3"]

BENCH_LABELS = {
    "startup": "start-up (`--version`)",
    "chain/cold": "chain: cold build -j 2",
    "chain/noop": "chain: no-op re-run",
    "chain/edit": "chain: edit 1 param (2 nodes affected)",
    "fanout/cold": "fan-out: cold build -j 2",
    "fanout/noop": "fan-out: no-op re-run",
    "fanout/edit": "fan-out: edit 1 param (1 node affected)",
    "hash/one/cold": "hashing one big file: first look",
    "hash/one/warm": "hashing one big file: status after",
    "hash/many/cold": "hashing many files: first look",
    "hash/many/warm": "hashing many files: status after",
    "status/small": "status, many small files unchanged",
}


def _seconds(value: float) -> str:
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    if value < 10:
        return f"{value:.3f} s"
    return f"{value:.1f} s"


def _cell(row: Row | None) -> str:
    if row is None:
        return ""
    if row.status == "capped":
        return "—"
    if row.status == "failed":
        return "failed"
    if row.status == "n/a":
        return "n/a"
    if row.median is None:
        return ""
    text = _seconds(row.median)
    if "bytes" in row.extra:
        text += f" ({row.extra['bytes'] / row.median / 1e9:.2f} GB/s)"
    if row.expected is not None:
        text += f" ✓{max(row.ran)}" if row.exact else f" ✗ ran {max(row.ran)}"
    return text


def _ratio(sci: Row | None, peer: Row | None, paired: bool = False) -> str:
    """sci's median over the peer's; `paired` adds the median of the repetitions' own ratios
    (the two ran in turn in each repetition, so a drift of the machine's speed between
    repetitions falls on both sides of each ratio)."""
    if sci is None or peer is None or sci.median is None or peer.median is None or peer.median == 0:
        return ""
    text = f"{sci.median / peer.median:.2f}×"
    if paired and len(sci.samples) == len(peer.samples) >= 3 and all(peer.samples):
        text += f" (paired {statistics.median(a / b for a, b in zip(sci.samples, peer.samples)):.2f}×)"
    return text


def table(results: Results, size_label=lambda bench, n: f"{n:,}" if n else "") -> str:
    """The Markdown table: one line per (benchmark, N); tools, baseline, then sci/peer ratios."""
    tools = [t for t in TOOL_ORDER if any(k[2] == t for k in results.rows)]
    peers = [t for t in tools if t != "sci"]
    head = ["benchmark", "N"] + [LABELS[t] for t in tools] + ["baseline"] + [f"sci/{LABELS[p]}" for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    seen = []
    for bench, n, _ in results.rows:
        if (bench, n) not in seen:
            seen.append((bench, n))
    for bench, n in seen:
        cells = [BENCH_LABELS.get(bench, bench), size_label(bench, n)]
        cells += [_cell(results.get(bench, n, t)) for t in tools]
        base = [f"{b}: {_cell(results.get(bench, n, b))}" for b in BASELINES if results.get(bench, n, b)]
        cells.append("; ".join(base))
        sci = results.get(bench, n, "sci")
        cells += [_ratio(sci, results.get(bench, n, p), paired=p == "sci-base") for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_json(path: Path, meta: dict, results: Results) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "rows": results.to_json()}, indent=1, ensure_ascii=False) + "\n")


def load_json(path: Path) -> tuple[dict, Results]:
    doc = json.loads(Path(path).read_text())
    results = Results()
    for r in doc.pop("rows"):
        row = results.row(r["bench"], r["n"], r["tool"])
        row.samples, row.status, row.detail = r["samples_s"], r["status"], r.get("detail", "")
        if "expected_reruns" in r:
            row.expected, row.ran, row.exact = r["expected_reruns"], r["reruns"], r["exact"]
        if "bytes" in r:
            row.extra["bytes"] = r["bytes"]
    return doc, results
