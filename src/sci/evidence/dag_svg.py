"""Draws a pipeline DAG as a standalone SVG picture, laid out here (no Graphviz).

The layout is the classic layered (Sugiyama) scheme, drawn left to right so that a wide
`foreach` sweep becomes a tall column that scrolls, not a row thousands of pixels wide:

    simulate[noise=0.0] ─┐
    simulate[noise=0.1] ─┼─> fit ──> plot
    simulate[noise=0.2] ─┘

1. layers: longest path from the sources; a source is then pulled right to sit just before
   its nearest consumer, so it needs no long edge;
2. an edge spanning several layers is split by dummy vertices, one per crossed layer, so it
   bends around boxes instead of through them;
3. order within layers: barycenter sweeps, down then up, keeping the order with the fewest
   crossings; ties are broken by name (dummies by their edge's names), so the picture is a
   pure function of the graph, whatever order nodes and edges were given in;
4. vertical positions: each vertex is pulled to the mean position of its neighbours, then
   the layer's order and spacing are restored by isotonic regression (pool adjacent
   violators), which moves the boxes as little as possible;
5. edges are cubic curves through their dummy points, with a drawn arrowhead.

All coordinates are rounded to 0.1 px when written, so the text is stable.
"""

from __future__ import annotations

import heapq
import re
from html import escape

from sci.values import Value

FONT_PX = 12
CHAR_PX = 7.3  # advance of one character of a 12 px monospace font, a little generous
LINE_PX = 15
PAD_X = 10
PAD_Y = 6
MIN_BOX_W = 48
MAX_LABEL_CHARS = 44
NODE_GAP = 10  # vertical space between two boxes of a column
DUMMY_H = 4  # height a bending edge takes in a column
COLUMN_GAP = 64
FAN_GAP_PX = 4  # extra column gap per edge of the widest fan between two columns
FAN_GAP_MAX = 160
MARGIN = 12
SWEEPS = 6
PLACEMENT_ROUNDS = 4
ARROW = 7


class _Vertex(Value):
    """A box (a real node) or a bend point of a long edge (a dummy)."""

    __slots__ = _FIELDS = ("sort_key", "layer", "lines", "title", "dummy", "preds", "succs", "height", "width", "y")

    def __init__(self, sort_key: tuple, layer: int, lines: list[str] | None = None, title: str = "",
                 dummy: bool = False, preds: list[int] | None = None, succs: list[int] | None = None,
                 height: float = 0.0, width: float = 0.0, y: float = 0.0):
        self.sort_key = sort_key  # the tie-break: (name, (), -1), or (source, target, index) for a dummy
        self.layer = layer
        self.lines = lines if lines is not None else []
        self.title, self.dummy = title, dummy
        self.preds = preds if preds is not None else []
        self.succs = succs if succs is not None else []
        self.height, self.width = height, width
        self.y = y  # centre


_NUMBER = re.compile(r"(-?[0-9]+(?:\.[0-9]+)?(?:e-?[0-9]+)?)")


def name_key(name: str) -> tuple:
    """Sort key that orders numbers inside names by value: noise=0.05 before noise=0.1.

    The name itself is the last element, so two names never tie.
    """
    parts = _NUMBER.split(name)
    key = tuple((1, float(p), "") if i % 2 else (0, 0.0, p) for i, p in enumerate(parts))
    return (key, name)


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "\u2026"


def _num(v: float) -> str:
    text = f"{v:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


def _layers(names: list[str], succ: dict[str, list[str]], pred: dict[str, list[str]]) -> dict[str, int]:
    """Longest-path layering in topological order (Kahn, ties by name); raises on a cycle."""
    indeg = {n: len(pred[n]) for n in names}
    ready = [n for n in names if indeg[n] == 0]
    heapq.heapify(ready)
    layer: dict[str, int] = {}
    order = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        layer[n] = max((layer[p] + 1 for p in pred[n]), default=0)
        for s in succ[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(ready, s)
    if len(order) != len(names):
        stuck = sorted(n for n in names if indeg[n] > 0)
        raise ValueError(f"the graph has a cycle through: {', '.join(stuck)}")
    for n in names:
        if not pred[n] and succ[n]:
            layer[n] = min(layer[s] for s in succ[n]) - 1
    return layer


def _crossings(upper: list[int], lower_pos: dict[int, int], verts: list[_Vertex]) -> int:
    """Crossings between two adjacent layers: inversions of the lower ends, counted with a
    Fenwick tree over edges sorted by (upper position, lower position)."""
    ends = []
    for v in upper:
        ends.extend(sorted(lower_pos[s] for s in verts[v].succs))
    size = len(lower_pos) + 1
    tree = [0] * (size + 1)
    count = 0
    for seen, pos in enumerate(ends):
        # number of earlier ends strictly greater than pos
        i, le = pos + 1, 0
        while i > 0:
            le += tree[i]
            i -= i & -i
        count += seen - le
        i = pos + 1
        while i <= size:
            tree[i] += 1
            i += i & -i
    return count


def _total_crossings(order: list[list[int]], verts: list[_Vertex]) -> int:
    total = 0
    for a, b in zip(order, order[1:]):
        total += _crossings(a, {v: i for i, v in enumerate(b)}, verts)
    return total


def _sweep(order: list[list[int]], verts: list[_Vertex], downward: bool) -> None:
    """Reorder every layer by the barycenter of its neighbours in the layer just fixed."""
    indices = range(1, len(order)) if downward else range(len(order) - 2, -1, -1)
    for li in indices:
        fixed = order[li - 1] if downward else order[li + 1]
        pos = {v: i for i, v in enumerate(fixed)}
        current = {v: i for i, v in enumerate(order[li])}

        def key(v: int) -> tuple[float, tuple[str, ...]]:
            nbrs = verts[v].preds if downward else verts[v].succs
            if not nbrs:
                return (float(current[v]), verts[v].sort_key)
            return (sum(pos[n] for n in nbrs) / len(nbrs), verts[v].sort_key)

        order[li] = sorted(order[li], key=key)


def _isotonic(targets: list[float], offsets: list[float]) -> list[float]:
    """Positions closest (least squares) to `targets` keeping y[i+1] - y[i] >= gap.

    With z = y - offset (offset[i] = the sum of the gaps before i) the constraint becomes
    z non-decreasing, which pool-adjacent-violators solves exactly.
    """
    blocks: list[list[float]] = []  # [mean, count]
    for t, c in zip(targets, offsets):
        blocks.append([t - c, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, n2 = blocks.pop()
            m1, n1 = blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    z: list[float] = []
    for mean, count in blocks:
        z.extend([mean] * int(count))
    return [zi + c for zi, c in zip(z, offsets)]


def _place(order: list[list[int]], verts: list[_Vertex]) -> None:
    """Vertical centres: stack each layer, then pull vertices towards their neighbours."""
    offsets_by_layer = []
    for layer in order:
        offsets, acc = [], 0.0
        for i, v in enumerate(layer):
            if i:
                prev = verts[layer[i - 1]]
                acc += prev.height / 2 + verts[v].height / 2 + NODE_GAP
            offsets.append(acc)
            verts[v].y = acc
        offsets_by_layer.append(offsets)
    for left in order:  # centre every layer on y = 0
        shift = -(verts[left[-1]].y + verts[left[0]].y) / 2 if left else 0.0
        for v in left:
            verts[v].y += shift

    def relax(layer_ids: range, use_preds: bool, use_succs: bool) -> None:
        for li in layer_ids:
            layer = order[li]
            targets = []
            for v in layer:
                nbrs = (verts[v].preds if use_preds else []) + (verts[v].succs if use_succs else [])
                targets.append(sum(verts[n].y for n in nbrs) / len(nbrs) if nbrs else verts[v].y)
            for v, y in zip(layer, _isotonic(targets, offsets_by_layer[li])):
                verts[v].y = y

    n = len(order)
    for _ in range(PLACEMENT_ROUNDS):
        relax(range(1, n), True, False)
        relax(range(n - 2, -1, -1), False, True)
    relax(range(n), True, True)


def _gap_after(order: list[list[int]], li: int, verts: list[_Vertex]) -> float:
    """Space after column `li`: wider where many edges fan in or out, so curves stay apart."""
    if li + 1 >= len(order):
        return 0.0
    fan = max((max(len(verts[v].succs), 1) for v in order[li]), default=1)
    fan = max([fan] + [len(verts[v].preds) for v in order[li + 1]])
    return COLUMN_GAP + min(FAN_GAP_MAX, FAN_GAP_PX * (fan - 1))


def render_svg(nodes: list[str], edges: list[tuple[str, str]], labels: dict | None = None) -> str:
    """An SVG picture of the DAG `nodes`/`edges`, read left (upstream) to right (downstream).

    `labels` maps a node to the text drawn in its box (a str; a newline starts another
    line); a node without one shows its name. Every box carries its node's name in a
    `<title>` (the tooltip) and a `data-node` attribute. Raises ValueError on an edge to an
    unknown node, a self-loop or a cycle.
    """
    labels = labels or {}
    names = sorted(set(nodes), key=name_key)
    known = set(names)
    edge_set = sorted({(u, v) for u, v in edges})
    for u, v in edge_set:
        if u not in known or v not in known:
            raise ValueError(f"edge {u} -> {v} names a node that is not in the graph")
        if u == v:
            raise ValueError(f"the graph has a cycle through: {u}")
    succ: dict[str, list[str]] = {n: [] for n in names}
    pred: dict[str, list[str]] = {n: [] for n in names}
    for u, v in edge_set:
        succ[u].append(v)
        pred[v].append(u)
    layer_of = _layers(names, succ, pred)

    verts: list[_Vertex] = []
    index: dict[str, int] = {}
    for name in names:
        text = labels.get(name)
        lines = [_truncate(x) for x in (str(text) if text is not None else name).split("\n")]
        width = max(MIN_BOX_W, max(len(x) for x in lines) * CHAR_PX + 2 * PAD_X)
        index[name] = len(verts)
        verts.append(_Vertex((name_key(name), (), -1), layer_of[name], lines, name, False, [], [],
                             len(lines) * LINE_PX + 2 * PAD_Y, width))
    chains: list[list[int]] = []  # per edge: the vertex ids it passes through
    for u, v in edge_set:
        chain = [index[u]]
        for k, li in enumerate(range(layer_of[u] + 1, layer_of[v])):
            verts.append(_Vertex((name_key(u), name_key(v), k), li, dummy=True, height=DUMMY_H))
            chain.append(len(verts) - 1)
        chain.append(index[v])
        for a, b in zip(chain, chain[1:]):
            verts[a].succs.append(b)
            verts[b].preds.append(a)
        chains.append(chain)

    n_layers = max((v.layer for v in verts), default=-1) + 1
    order: list[list[int]] = [[] for _ in range(n_layers)]
    for i, vert in enumerate(verts):
        order[vert.layer].append(i)
    for li in range(n_layers):
        order[li].sort(key=lambda i: verts[i].sort_key)
    best = [list(x) for x in order]
    best_cross = _total_crossings(order, verts)
    for sweep in range(SWEEPS):
        _sweep(order, verts, downward=sweep % 2 == 0)
        cross = _total_crossings(order, verts)
        if cross < best_cross:
            best, best_cross = [list(x) for x in order], cross
    order = best
    _place(order, verts)

    # x: one column per layer, as wide as its widest box
    col_w = [max((verts[v].width for v in layer), default=0.0) for layer in order]
    col_x, x = [], float(MARGIN)
    for li, w in enumerate(col_w):
        col_x.append(x)
        x += w + _gap_after(order, li, verts)
    width = col_x[-1] + col_w[-1] + MARGIN if order else 2 * MARGIN
    top = min((v.y - v.height / 2 for v in verts), default=0.0)
    for vert in verts:
        vert.y += MARGIN - top
    height = max((v.y + v.height / 2 for v in verts), default=0.0) + MARGIN

    def box_left(i: int) -> float:
        vert = verts[i]
        return col_x[vert.layer] + (col_w[vert.layer] - vert.width) / 2

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sci-dag" viewBox="0 0 {_num(width)} '
        f'{_num(height)}" width="{_num(width)}" height="{_num(height)}" role="img" '
        f'aria-label="pipeline graph: {len(names)} nodes, {len(edge_set)} edges">',
        f"<title>pipeline graph: {len(names)} nodes, {len(edge_set)} edges</title>",
        '<g class="edges" fill="none" stroke="#6b7280" stroke-width="1.3">',
    ]
    heads = []
    for chain in chains:
        first, last = verts[chain[0]], verts[chain[-1]]
        points = [(box_left(chain[0]) + first.width, first.y)]
        for d in chain[1:-1]:
            li = verts[d].layer
            points += [(col_x[li], verts[d].y), (col_x[li] + col_w[li], verts[d].y)]
        end = (box_left(chain[-1]) - 1, last.y)
        points.append(end)
        path = [f"M{_num(points[0][0])} {_num(points[0][1])}"]
        for i in range(1, len(points)):
            (x1, y1), (x2, y2) = points[i - 1], points[i]
            if i % 2 == 0:  # across a column a bending edge runs straight
                path.append(f"L{_num(x2)} {_num(y2)}")
                continue
            if i == len(points) - 1:
                x2 -= ARROW
            dx = (x2 - x1) / 2
            path.append(f"C{_num(x1 + dx)} {_num(y1)} {_num(x2 - dx)} {_num(y2)} {_num(x2)} {_num(y2)}")
        names_of_edge = f"{verts[chain[0]].title} \u2192 {verts[chain[-1]].title}"
        out.append(f'<path d="{" ".join(path)}"><title>{escape(names_of_edge)}</title></path>')
        ex, ey = end
        heads.append(f'<polygon points="{_num(ex)},{_num(ey)} {_num(ex - ARROW)},{_num(ey - ARROW / 2)} '
                     f'{_num(ex - ARROW)},{_num(ey + ARROW / 2)}"/>')
    out.append("</g>")
    out.append('<g class="arrowheads" fill="#6b7280">' + "".join(heads) + "</g>")
    out.append(f'<g class="nodes" font-family="ui-monospace, SFMono-Regular, Menlo, Consolas, '
               f'\'DejaVu Sans Mono\', monospace" font-size="{FONT_PX}">')
    for name in names:
        i = index[name]
        vert = verts[i]
        left, top_y = box_left(i), vert.y - vert.height / 2
        out.append(f'<g class="node" data-node="{escape(name)}"><title>{escape(name)}</title>')
        out.append(f'<rect x="{_num(left)}" y="{_num(top_y)}" width="{_num(vert.width)}" '
                   f'height="{_num(vert.height)}" rx="4" fill="#eef2ff" stroke="#4f46e5"/>')
        for k, line in enumerate(vert.lines):
            baseline = top_y + PAD_Y + LINE_PX * k + LINE_PX - 3.5
            fill = "#111827" if k == 0 else "#4b5563"
            out.append(f'<text x="{_num(left + PAD_X)}" y="{_num(baseline)}" fill="{fill}">'
                       f"{escape(line)}</text>")
        out.append("</g>")
    out.append("</g></svg>")
    return "\n".join(out) + "\n"
