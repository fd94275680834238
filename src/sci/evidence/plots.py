"""The dossier's sweep section: each metric against each swept parameter, as small SVG plots
drawn here, plus the sweep's comparison table.

Drawn by hand, like the DAG (dag_svg.py), for the same reasons: the dossier's bytes must be a
pure function of its inputs (`sci repro-check dossier`), and hand-written SVG is — every
coordinate and number is formatted here, one way, with no ids, dates, font metrics or library
version inside. A plotting library (matplotlib's SVG backend) writes generated ids, a
creation date and its version, is a heavy import for one page, and is not a dependency of sci.
The plots are plain inline SVG: readable with no script, each point with a `<title>` tooltip,
and the same numbers in the table below them.

A sweep (`foreach`) with one key gives one plot per metric, the key on the x axis. With
several keys, each metric is drawn against each key in turn, one line per combination of the
other keys. Numbers go on a linear axis at their value; anything else (sample names) on evenly
spaced categories in declaration order. Points keep the sweep's declaration order, never
string order; a node without the metric leaves a gap in its line.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

W, H = 300, 210  # one plot, px
LEFT, RIGHT, TOP, BOTTOM = 54, 12, 26, 40
TICKS = 5
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif"
COLORS = ("#4f46e5", "#d97706", "#059669", "#dc2626", "#0891b2", "#7c3aed", "#65a30d", "#db2777")
MAX_SERIES = len(COLORS)


def _num(v: float) -> str:
    """A coordinate: one decimal, no trailing '.0', no '-0'."""
    text = f"{v:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


def label(v: Any) -> str:
    """A value as a tick or a cell shows it: numbers to 4 significant digits."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _nice_ticks(lo: float, hi: float, n: int = TICKS) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if hi <= lo:
        span = abs(lo) * 0.1 or 1.0
        lo, hi = lo - span, hi + span
    raw = (hi - lo) / max(1, n - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t < hi + step * 0.5:
        ticks.append(round(t, 12))
        t += step
        if len(ticks) > 20:
            break
    return ticks


def _axis(values: list[Any]) -> tuple[list[float], list[str], Any]:
    """(tick positions in data units, their labels, value -> data unit) for an x axis."""
    if values and all(_is_number(v) for v in values):
        ticks = _nice_ticks(min(values), max(values))
        return ticks, [label(t) for t in ticks], float
    cats = list(dict.fromkeys(label(v) for v in values))
    place = {c: float(i) for i, c in enumerate(cats)}
    return [float(i) for i in range(len(cats))], cats, lambda v: place[label(v)]


def plot_svg(title: str, x_name: str, series: list[tuple[str, list[tuple[Any, Any]]]]) -> str:
    """One small plot: `series` is [(legend label, [(x, y or None), ...])] in drawing order."""
    xs = [x for _, pts in series for x, _ in pts]
    ys = [float(y) for _, pts in series for _, y in pts if _is_number(y) or isinstance(y, bool)]
    xticks, xlabels, xpos = _axis(xs)
    yticks = _nice_ticks(min(ys), max(ys)) if ys else [0.0, 1.0]
    x0, x1 = min(xticks), max(xticks)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = min(yticks), max(yticks)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(v: float) -> float:
        return LEFT + (v - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return TOP + ph - (v - y0) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="sci-plot" viewBox="0 0 {W} {H}" width="{W}" '
           f'height="{H}" role="img" aria-label="{escape(title)} against {escape(x_name)}" font-family="{FONT}" '
           f'font-size="11">',
           f"<title>{escape(title)} against {escape(x_name)}</title>",
           f'<text x="{LEFT}" y="15" font-size="12" font-weight="600" fill="#111827">{escape(title)}</text>',
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fff" stroke="#e5e7eb"/>',
           '<g class="grid" stroke="#f3f4f6">']
    out += [f'<line x1="{LEFT}" y1="{_num(py(t))}" x2="{LEFT + pw}" y2="{_num(py(t))}"/>' for t in yticks[1:-1]]
    out.append("</g>")
    out.append('<g class="ticks" fill="#4b5563">')
    for t in yticks:
        out.append(f'<text x="{LEFT - 4}" y="{_num(py(t) + 3.5)}" text-anchor="end">{escape(label(t))}</text>')
    for t, text in zip(xticks, xlabels):
        out.append(f'<text x="{_num(px(t))}" y="{TOP + ph + 14}" text-anchor="middle">{escape(text)}</text>')
    out.append(f'<text x="{_num(LEFT + pw / 2)}" y="{H - 8}" text-anchor="middle" fill="#111827">'
               f"{escape(x_name)}</text>")
    out.append("</g>")
    for i, (name, pts) in enumerate(series[:MAX_SERIES]):
        color = COLORS[i]
        runs: list[list[tuple[float, float, Any, Any]]] = [[]]
        for x, y in pts:
            if y is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append((px(xpos(x)), py(float(y)), x, y))
        out.append(f'<g class="series" data-series="{escape(name)}" fill="{color}" stroke="{color}">')
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{_num(a)},{_num(b)}" for a, b, _, _ in run)
                out.append(f'<polyline points="{points}" fill="none" stroke-width="1.6"/>')
        for run in runs:
            for a, b, x, y in run:
                tip = f"{name + ': ' if name else ''}{x_name}={label(x)}, {title}={label(y)}"
                out.append(f'<circle cx="{_num(a)}" cy="{_num(b)}" r="3" stroke="none"><title>{escape(tip)}'
                           "</title></circle>")
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _series(nodes: list[dict], key: str, keys: list[str], metric: str, metrics_of: dict[str, dict]
            ) -> list[tuple[str, list[tuple[Any, Any]]]]:
    """The lines of one plot: one per combination of the other keys, in declaration order;
    points in declaration order (sorted by x on a numeric axis, so a line reads left to right)."""
    others = [k for k in keys if k != key]
    groups: dict[tuple, list[tuple[Any, Any]]] = {}
    for n in nodes:
        item = n["item"]
        group = tuple(label(item.get(k)) for k in others)
        groups.setdefault(group, []).append((item.get(key), metrics_of.get(n["node"], {}).get(metric)))
    out = []
    for group, pts in groups.items():
        if all(_is_number(x) for x, _ in pts):
            pts = sorted(pts, key=lambda p: p[0])  # stable: equal x keep their order
        name = ", ".join(f"{k}={v}" for k, v in zip(others, group))
        out.append((name, pts))
    return out


def section(dossier: dict) -> str:
    """The page's sweep section ("" when the dossier indexes no sweep with metrics)."""
    metrics_of = {n["node"]: n.get("metrics") or {} for n in dossier.get("nodes") or []}
    parts = []
    for sweep in dossier.get("sweeps") or []:
        nodes = [n for n in sweep["nodes"] if n["node"] in metrics_of]
        names = sorted({m for n in nodes for m in metrics_of[n["node"]]})
        if not nodes or not names:
            continue
        keys = list(sweep["keys"])
        plots = []
        for metric in names:
            for key in keys:
                svg = plot_svg(metric, key, _series(nodes, key, keys, metric, metrics_of))
                plots.append(f'<figure class="plot" data-metric="{escape(metric)}" data-key="{escape(key)}">'
                             f"{svg}</figure>")
        many = "" if len(keys) == 1 else " One line per combination of the other swept parameters."
        parts.append(f'<section class="sweep" id="sweep-{escape(sweep["step"])}"><h3>{escape(sweep["step"])} '
                     f'<span class="dim">over {escape(", ".join(keys))} · {len(nodes)} nodes · '
                     f'{len(names)} metrics</span></h3>'
                     f'<p class="hint">Each metric against each swept parameter, in the sweep\'s declared order.'
                     f"{many} Hover a point for its values; the table below holds the same numbers.</p>"
                     f'<div class="plots">{"".join(plots)}</div>{_table(nodes, keys, names, metrics_of)}</section>')
    if not parts:
        return ""
    return f'<section id="sweeps"><h2>Sweeps</h2>{"".join(parts)}</section>'


def _table(nodes: list[dict], keys: list[str], names: list[str], metrics_of: dict[str, dict]) -> str:
    head = ["Node", *keys, *names]
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    rows = []
    for n in nodes:
        m = metrics_of[n["node"]]
        cells = [f'<code class="node">{escape(n["node"])}</code>']
        cells += [f'<span class="num">{escape(label(n["item"].get(k)))}</span>' for k in keys]
        cells += [f'<span class="num">{escape(label(m[x]))}</span>' if x in m else "" for x in names]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<div class="scroll"><table class="sweep-table"><thead><tr>{th}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


CSS = """
.plots{display:flex;flex-wrap:wrap;gap:.6rem;margin:.6rem 0}
figure.plot{margin:0;border:1px solid var(--line);border-radius:4px;background:#fff}
figure.plot svg{display:block}
table.sweep-table{width:auto}
.sweep h3{font-size:1.05rem;margin:1.2rem 0 .2rem}
""".strip()
