# /// script
# requires-python = ">=3.10"
# dependencies = ["tabulate==0.9.0"]
# ///
"""plot: a depth profile per sample with the called sites marked (SVG), the calls as a text
table (tabulate) and a few numbers as metrics (JSON).

Runs in its own environment (the PEP 723 metadata above, locked in plot.py.lock): tabulate is
not sci's, nor the workspace's. Deterministic: no timestamps, fixed number formats.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import tabulate

COLOURS = {"0/1": "#e69f00", "1/1": "#d55e00"}
WIDTH, ROW, PAD = 720, 90, 40


def read_counts(path: Path) -> list[int]:
    rows = [line.split("\t") for line in path.read_text().splitlines() if not line.startswith("#")]
    return [int(r[3]) for r in rows]


def read_vcf(path: Path) -> tuple[list[str], list[list[str]]]:
    samples, records = [], []
    for line in path.read_text().splitlines():
        if line.startswith("#CHROM"):
            samples = line.split("\t")[9:]
        elif not line.startswith("#"):
            records.append(line.split("\t"))
    return samples, records


def svg(samples: list[str], depths: dict[str, list[int]], records: list[list[str]]) -> str:
    length = max(len(d) for d in depths.values())
    top = max(max(d) for d in depths.values()) or 1
    x = lambda pos: PAD + (WIDTH - 2 * PAD) * (pos - 1) / max(length - 1, 1)  # noqa: E731
    height = PAD + ROW * len(samples) + PAD
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
           f'<text x="{PAD}" y="20">read depth along the reference; called sites by genotype</text>']
    for i, sample in enumerate(samples):
        base = PAD + ROW * (i + 1)
        y = lambda d: base - (ROW - 20) * d / top  # noqa: E731
        points = " ".join(f"{x(p + 1):.1f},{y(d):.1f}" for p, d in enumerate(depths[sample]))
        out.append(f'<text x="4" y="{base - ROW / 2:.1f}">{sample}</text>')
        out.append(f'<line x1="{PAD}" y1="{base}" x2="{WIDTH - PAD}" y2="{base}" stroke="#999"/>')
        out.append(f'<polyline fill="none" stroke="#0072b2" points="{points}"/>')
        for record in records:
            gt = record[9 + i].split(":")[0]
            if gt in COLOURS:
                pos = int(record[1])
                out.append(f'<circle cx="{x(pos):.1f}" cy="{base - 4}" r="4" fill="{COLOURS[gt]}">'
                           f'<title>{sample} {record[0]}:{pos} {record[3]}&gt;{record[4]} {gt}</title></circle>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vcf", type=Path, required=True)
    ap.add_argument("--counts", type=Path, nargs="+", required=True)
    ap.add_argument("--svg", type=Path, required=True)
    ap.add_argument("--table", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    args = ap.parse_args()
    samples, records = read_vcf(args.vcf)
    depths = {p.name.removesuffix(".tsv"): read_counts(p) for p in args.counts}
    args.svg.write_text(svg(samples, depths, records))
    rows = [[r[0], int(r[1]), r[3], r[4], *(s.split(":")[0] for s in r[9:])] for r in records]
    args.table.write_text(tabulate.tabulate(rows, headers=["chrom", "pos", "ref", "alt", *samples],
                                            tablefmt="github") + "\n")
    genotypes = [s.split(":")[0] for r in records for s in r[9:]]
    all_depths = [d for sample in samples for d in depths[sample]]
    metrics = {"sites": len(records), "het": genotypes.count("0/1"), "hom_alt": genotypes.count("1/1"),
               "mean_depth": round(sum(all_depths) / len(all_depths), 3)}
    args.metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    # where this ran: the step's log (`sci log plot`) shows the environment, the outputs do not
    print(f"plot: tabulate {tabulate.__version__} in {sys.prefix}", file=sys.stderr)


if __name__ == "__main__":
    main()
