"""The metrics table of `sci metrics`: rows of nodes (or of runs), columns of sweep items,
parameters and metrics, rendered as text, JSON, CSV or Markdown.

Two shapes:
- by node (the default): one row per selected node that has a recorded result, in
  declaration order (a sweep's items as written in sci.yaml, never string order); columns are
  the node, its `foreach` items, the parameters it declares (a parameter naming a mapping is
  spread into its leaves, `fit.max_iter`), then its metrics. Values come from the node's
  latest result (`.sci/state` → its action result in the store): what the metrics were
  computed with, not what params.yaml says now.
- by run (`--runs A B …`, `--all-runs`): one row per run; columns are the run, its `--set`
  overrides, the parameters in effect (those the selected nodes declare, when targets are
  given), then the selected nodes' metrics (`NODE:METRIC` when several nodes have metrics).
  Read from the runs index (records/index.py): 1,000 runs cost one file read.

Metric columns are in name order (records store metrics in canonical JSON, sorted); nothing
here runs a step, writes a record or touches the store.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from sci.errors import UserError
from sci.values import Value

FORMATS = ("table", "json", "csv", "md")
ID, ITEM, PARAM, METRIC = "id", "item", "param", "metric"


class Table(Value):
    """Columns (name -> kind: id, item, param or metric, in display order) and rows (column
    name -> value; a missing value is absent). `notes`: what the reader should know (nodes
    without a result, runs without parameters), printed on stderr."""

    __slots__ = _FIELDS = ("columns", "rows", "notes")

    def __init__(self, columns: dict[str, str], rows: list[dict[str, Any]], notes: list[str] | None = None):
        self.columns, self.rows = columns, rows
        self.notes = notes if notes is not None else []

    def to_json(self) -> dict:
        return {"columns": [{"name": c, "kind": k} for c, k in self.columns.items()],
                "rows": [{c: r[c] for c in self.columns if c in r} for r in self.rows]}


def flat(value: Any, prefix: str) -> dict[str, Any]:
    """A parameter's leaves: a mapping spread into dotted keys, anything else as it is."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


# -- by node ---------------------------------------------------------------------------------
def node_table(ws, targets: list[str]) -> Table:
    """One row per selected node with a recorded result (see the module's docstring)."""
    from sci.plan.pipeline import load
    from sci.records import run as records

    loaded = load(ws)
    graph = loaded.graph
    chosen = graph.requested(list(targets), ws.root)  # the nodes named, not what they depend on
    store = read_only_store(ws.store_root(loaded.store_config))
    state = records.state_of(ws)
    columns: dict[str, str] = {"node": ID}
    items: dict[str, None] = {}
    params: dict[str, None] = {}
    metrics: set[str] = set()
    rows, unbuilt = [], []
    for name in graph.nodes:  # declaration order
        if name not in chosen:
            continue
        node = graph.nodes[name]
        if node.kind == "dossier":
            continue
        last = state.get(name)
        action = store.get_action(last["key"]) if last and store is not None else None
        if action is None:
            unbuilt.append(name)
            continue
        row: dict[str, Any] = {"node": name}
        for k, v in node.item.items():
            items.setdefault(k)
            row[k] = v
        recorded = (action.get("components") or {}).get("params") or {}
        for key in node.params:  # declared order; the values the result was computed with
            for leaf, v in flat(recorded.get(key, node.params[key]), key).items():
                params.setdefault(leaf)
                row[leaf] = v
        found = action.get("metrics") or {}
        metrics.update(found)
        rows.append((row, found))
    for k in items:
        columns.setdefault(k, ITEM)
    for k in params:
        columns.setdefault(k, PARAM)
    # a metric named like an item or a parameter gets its own column, `metric:NAME`
    names = {m: f"metric:{m}" if m in columns else m for m in metrics}
    for m in sorted(metrics):
        columns[names[m]] = METRIC
    rows = [dict(row, **{names[m]: v for m, v in found.items()}) for row, found in rows]
    notes = []
    if unbuilt:
        notes.append(f"{len(unbuilt)} selected node(s) have no recorded result (first: {unbuilt[0]}); "
                     "`sci build` makes them")
    if rows and not metrics:
        notes.append("the selected nodes recorded no metrics (declare metrics: files, or use ctx.metrics)")
    return Table(columns, rows, notes)


# -- by run ----------------------------------------------------------------------------------
def run_table(ws, targets: list[str], runs: list[dict]) -> Table:
    """One row per run of `runs` (summaries, records/history.py), in the order given."""
    from sci.records.history import overrides

    graph = _graph_or_none(ws)
    wanted: set[str] | None = None
    declared: list[str] | None = None
    order: dict[str, int] = {}
    if graph is not None:
        order = {n: i for i, n in enumerate(graph.nodes)}
        if targets:
            try:
                wanted = graph.requested(list(targets), ws.root)
            except UserError:
                wanted = None
            if wanted is not None:
                declared = list(dict.fromkeys(k for n in graph.nodes if n in wanted for k in graph.nodes[n].params))
    if targets and wanted is None:  # no pipeline to resolve them against: node or step names
        names = set(targets)
        wanted_rule = lambda n: n in names or n.split("[", 1)[0] in names  # noqa: E731
    else:
        wanted_rule = (lambda n: n in wanted) if wanted is not None else (lambda n: True)  # noqa: E731
    nodes: dict[str, None] = {}
    for line in runs:
        for n in (line.get("metrics") or {}):
            if n not in nodes and wanted_rule(n):
                nodes[n] = None
    ordered = sorted(nodes, key=lambda n: (order.get(n, len(order)), n))
    single = len(ordered) == 1
    params_cols: dict[str, None] = {}
    metric_cols: set[str] = set()
    rows = []
    missing_params = 0
    for line in runs:
        row: dict[str, Any] = {"run": line["run"], "set": " ".join(overrides(line.get("command") or []))}
        p = line.get("params")
        if p is None:
            missing_params += 1
        else:
            leaves = flat(p, "")
            if declared is not None:
                leaves = {k: v for k, v in leaves.items() if any(k == d or k.startswith(d + ".") for d in declared)}
            for k, v in leaves.items():
                params_cols.setdefault(k)
                row[k] = v
        metrics = line.get("metrics") or {}
        for n in ordered:
            values = metrics.get(n)
            if not values:
                continue
            for m, v in values.items():
                col = m if single else f"{n}:{m}"
                metric_cols.add(col)
                row[col] = v
        rows.append(row)
    columns: dict[str, str] = {"run": ID, "set": ID}
    for k in params_cols:
        columns.setdefault(k, PARAM)
    if single:
        metric_order = sorted(metric_cols)
    else:  # nodes in declaration order, each node's metrics by name
        rank = {n: i for i, n in enumerate(ordered)}
        metric_order = sorted(metric_cols, key=lambda c: (rank[c.rsplit(":", 1)[0]], c))
    for c in metric_order:
        columns.setdefault(c, METRIC)
    notes = []
    if missing_params:
        notes.append(f"{missing_params} run(s) recorded no parameters (made by an older sci)")
    if targets and not ordered:
        notes.append("no selected node recorded metrics in these runs")
    return Table(columns, rows, notes)


def read_only_store(root):
    """The store at `root` opened without creating it; None where there is none yet."""
    from pathlib import Path

    from sci.store.cas import Store

    if not (Path(root) / "FORMAT").exists():
        return None
    return Store(root, create=False)  # a store of another format: its StoreError says so


def _graph_or_none(ws):
    """The current pipeline's graph, to order nodes and resolve targets; None when sci.yaml
    does not load (old runs stay readable when the pipeline is broken)."""
    from sci.errors import SciError
    from sci.plan.pipeline import load

    try:
        return load(ws).graph
    except SciError:
        return None


# -- shaping ---------------------------------------------------------------------------------
_ABSENT = object()


def only_changed(table: Table) -> Table:
    """Without the parameter and metric columns whose value is the same in every row."""
    keep: dict[str, str] = {}
    for col, kind in table.columns.items():
        if kind in (PARAM, METRIC) and len(table.rows) > 1:
            first = _cell(table.rows[0], col)
            if all(_same(_cell(r, col), first) for r in table.rows[1:]):
                continue
        keep[col] = kind
    return Table(keep, table.rows, table.notes)


def _cell(row: dict, col: str) -> Any:
    return row.get(col, _ABSENT)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def sort_rows(table: Table, spec: str) -> Table:
    """Rows by a metric's value, ascending (`-METRIC`: descending); rows without it last.
    METRIC is a metric column's name, or the metric part of one (`bias` for `fit:bias`)
    when that names one column."""
    desc = spec.startswith("-")
    name = spec[1:] if desc else spec
    metric_cols = [c for c, k in table.columns.items() if k == METRIC]
    col = name if name in metric_cols else None
    if col is None:
        tails = [c for c in metric_cols if c.rsplit(":", 1)[-1] == name]
        if len(tails) == 1:
            col = tails[0]
        elif len(tails) > 1:
            raise UserError(f"--sort {name!r} names {len(tails)} columns ({tails[0]}, {tails[1]}, ...)",
                            hint="give the whole column name, NODE:METRIC")
    if col is None:
        shown = ", ".join(metric_cols[:6]) + (" ..." if len(metric_cols) > 6 else "")
        raise UserError(f"--sort {name!r} is not a metric of this table",
                        hint=f"metrics: {shown}" if metric_cols else "the table has no metrics")
    have = [r for r in table.rows if isinstance(r.get(col), int | float)]
    rest = [r for r in table.rows if not isinstance(r.get(col), int | float)]
    have.sort(key=lambda r: r[col], reverse=desc)  # stable: equal values keep their order
    return Table(table.columns, have + rest, table.notes)


# -- rendering -------------------------------------------------------------------------------
def text(value: Any) -> str:
    """A cell as a person reads it: floats to 6 significant digits, booleans as true/false."""
    if value is None or value is _ABSENT:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int | str):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _exact(value: Any) -> str:
    """A cell for CSV: numbers exactly (shortest round-trip form)."""
    if value is None or value is _ABSENT:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def render(table: Table, fmt: str) -> str:
    cols = list(table.columns)
    if fmt == "json":
        from sci import canonical

        return canonical.dumps_text(table.to_json())
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in table.rows:
            w.writerow([_exact(r.get(c)) for c in cols])
        return buf.getvalue().rstrip("\n")
    cells = [[text(r.get(c)) for c in cols] for r in table.rows]
    numeric = [table.columns[c] in (PARAM, METRIC, ITEM) and all(
        isinstance(r.get(c), int | float) or c not in r for r in table.rows) for c in cols]
    if fmt == "md":
        def esc(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(esc(c) for c in cols) + " |",
                 "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"]
        lines += ["| " + " | ".join(esc(x) for x in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
    for row in cells:
        out.append("  ".join(x.rjust(w) if n else x.ljust(w) for x, w, n in zip(row, widths, numeric)).rstrip())
    return "\n".join(out)
