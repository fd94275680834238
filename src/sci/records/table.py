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
here runs a step, writes a record or touches the store. The table is kept by column (a list of
values per column, None where a row has none): `--all-runs` over 1,000 runs of a 100-node
pipeline is 300,000 cells, and formatting a column at a time with `map` keeps that at a few
tens of ms where a cell at a time took ~0.5 s.
"""

from __future__ import annotations

import csv
import io
import json
from itertools import repeat
from typing import Any

from sci.errors import UserError
from sci.values import Value

FORMATS = ("table", "json", "csv", "md")
ID, ITEM, PARAM, METRIC = "id", "item", "param", "metric"


class Table(Value):
    """Columns (name -> kind: id, item, param or metric, in display order), their values
    (name -> one value per row, None where the row has none) and how many rows there are.
    `notes`: what the reader should know (nodes without a result, runs without parameters),
    printed on stderr."""

    __slots__ = _FIELDS = ("columns", "data", "size", "notes")

    def __init__(self, columns: dict[str, str], data: dict[str, list], size: int, notes: list[str] | None = None):
        self.columns, self.data, self.size = columns, data, size
        self.notes = notes if notes is not None else []

    @classmethod
    def from_rows(cls, columns: dict[str, str], rows: list[dict[str, Any]], notes: list[str] | None = None) -> Table:
        return cls(columns, {c: [r.get(c) for r in rows] for c in columns}, len(rows), notes)

    def rows(self) -> list[dict[str, Any]]:
        """Row by row, each without its missing values."""
        cols = [(c, self.data[c]) for c in self.columns]
        return [{c: v[i] for c, v in cols if v[i] is not None} for i in range(self.size)]

    def to_json(self) -> dict:
        return {"columns": [{"name": c, "kind": k} for c, k in self.columns.items()], "rows": self.rows()}


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
    columns: dict[str, str] = {"node": ID}
    for k in items:
        columns.setdefault(k, ITEM)
    for k in params:
        columns.setdefault(k, PARAM)
    # a metric named like an item or a parameter gets its own column, `metric:NAME`
    names = {m: f"metric:{m}" if m in columns else m for m in metrics}
    for m in sorted(metrics):
        columns[names[m]] = METRIC
    notes = []
    if unbuilt:
        notes.append(f"{len(unbuilt)} selected node(s) have no recorded result (first: {unbuilt[0]}); "
                     "`sci build` makes them")
    if rows and not metrics:
        notes.append("the selected nodes recorded no metrics (declare metrics: files, or use ctx.metrics)")
    return Table.from_rows(columns, [dict(row, **{names[m]: v for m, v in found.items()}) for row, found in rows],
                           notes)


# -- by run ----------------------------------------------------------------------------------
_NO_CELLS = ((), (), ())


def run_table(ws, targets: list[str], runs: list[dict]) -> Table:
    """One row per run of `runs` (summaries with their detail, records/history.py), in the
    order given."""
    from sci.records.history import overrides

    graph = graph_or_none(ws)
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
    size = len(runs)
    # runs whose metrics have the same layout (every run of one pipeline, mostly) form a group
    groups: dict[tuple, list[int]] = {}
    for i, line in enumerate(runs):
        nodes_of, names_of, _ = line.get("cells") or _NO_CELLS
        groups.setdefault((nodes_of, names_of), []).append(i)
    present = set().union(*(layout[0] for layout in groups))
    if targets and wanted is None:  # no pipeline to resolve them against: node or step names
        names = set(targets)
        wanted = {n for n in present if n in names or n.split("[", 1)[0] in names}
    ordered = sorted(present if wanted is None else present & wanted, key=lambda n: (order.get(n, len(order)), n))
    single = len(ordered) == 1
    data: dict[str, list] = {"run": [r["run"] for r in runs],
                             "set": [" ".join(overrides(r.get("command") or [])) for r in runs]}
    params_data: dict[str, list] = {}
    missing_params = 0
    for i, line in enumerate(runs):
        p = line.get("params")
        if p is None:
            missing_params += 1
        else:
            leaves = flat(p, "")
            if declared is not None:
                leaves = {k: v for k, v in leaves.items() if any(k == d or k.startswith(d + ".") for d in declared)}
            for k, v in leaves.items():
                col = params_data.get(k)
                if col is None:
                    col = params_data[k] = [None] * size
                col[i] = v
    # a group's columns are its runs' value tuples transposed (in C): 300,000 cells in a few ms
    keep = set(ordered)
    metric_data: dict[tuple[str, str], list] = {}  # (node, metric) -> its column
    for (nodes_of, names_of), rows in groups.items():
        whole = len(rows) == size  # one group: its columns are the table's
        columns_of = zip(*(runs[i]["cells"][2] for i in rows)) if nodes_of else ()
        for n, m, values in zip(nodes_of, names_of, columns_of):
            if n not in keep:
                continue
            name = (n, m)
            if whole:
                metric_data[name] = list(values)
                continue
            col = metric_data.get(name)
            if col is None:
                col = metric_data[name] = [None] * size
            for i, v in zip(rows, values):
                col[i] = v
    columns: dict[str, str] = {"run": ID, "set": ID}
    for k, col in params_data.items():
        if k not in columns:
            columns[k] = PARAM
            data[k] = col
    rank = {n: i for i, n in enumerate(ordered)}  # nodes in declaration order, each node's metrics by name
    for n, m in sorted(metric_data, key=lambda c: (rank[c[0]], c[1])):
        c = m if single else f"{n}:{m}"
        name = c if c not in columns else f"metric:{c}"
        columns[name] = METRIC
        data[name] = metric_data[n, m]
    notes = []
    if missing_params:
        notes.append(f"{missing_params} run(s) recorded no parameters (made by an older sci)")
    if targets and not ordered:
        notes.append("no selected node recorded metrics in these runs")
    return Table(columns, data, size, notes)


def read_only_store(root):
    """The store at `root` opened without creating it; None where there is none yet."""
    from pathlib import Path

    from sci.store.cas import Store

    if not (Path(root) / "FORMAT").exists():
        return None
    return Store(root, create=False)  # a store of another format: its StoreError says so


def graph_or_none(ws):
    """The current pipeline's graph, to order nodes and resolve targets; None when sci.yaml
    does not load (old runs stay readable when the pipeline is broken)."""
    from sci.errors import SciError
    from sci.plan.pipeline import load

    try:
        return load(ws).graph
    except SciError:
        return None


# -- shaping ---------------------------------------------------------------------------------
def only_changed(table: Table) -> Table:
    """Without the parameter and metric columns whose value is the same in every row (a
    missing value differs from every value; 1, 1.0 and true differ from each other)."""
    keep: dict[str, str] = {}
    for col, kind in table.columns.items():
        values = table.data[col]
        if kind in (PARAM, METRIC) and table.size > 1:
            first = values[0]
            if values.count(first) == len(values) and len({type(v) for v in values}) == 1:
                continue
        keep[col] = kind
    return Table(keep, {c: table.data[c] for c in keep}, table.size, table.notes)


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
    values = table.data[col]
    have = [i for i, v in enumerate(values) if isinstance(v, int | float)]
    rest = [i for i, v in enumerate(values) if not isinstance(v, int | float)]
    have.sort(key=values.__getitem__, reverse=desc)  # stable: equal values keep their order
    order = have + rest
    return Table(table.columns, {c: [v[i] for i in order] for c, v in table.data.items()}, table.size, table.notes)


# -- rendering -------------------------------------------------------------------------------
def _other(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


_BOOL = {True: "true", False: "false"}
# A cell as a person reads it: floats to 6 significant digits, booleans as true/false.
_TEXT = {float: "{:.6g}".format, int: str, str: str, bool: _BOOL.__getitem__, type(None): lambda v: ""}
# A cell for CSV: numbers exactly (shortest round-trip form).
_EXACT = {float: repr, int: str, str: str, bool: _BOOL.__getitem__, type(None): lambda v: ""}


_FLOAT = {float}


def text(value: Any) -> str:
    return _TEXT.get(type(value), _other)(value)


def _column(values: list, table: dict, kinds: set | None = None) -> list[str]:
    """A column's cells, formatted by type: one `map` when the column holds one type."""
    kinds = set(map(type, values)) if kinds is None else kinds
    if kinds == _FLOAT and table is _TEXT and values:  # one %-format of the whole column, in C
        return ("\0".join(["%.6g"] * len(values)) % tuple(values)).split("\0")
    if len(kinds) == 1:
        return list(map(table.get(next(iter(kinds)), _other), values))
    return [table.get(type(v), _other)(v) for v in values]


_NUMBERS = {int, float, type(None)}


def render(table: Table, fmt: str) -> str:
    cols = list(table.columns)
    if fmt == "json":
        from sci import canonical

        return canonical.dumps_text(table.to_json())
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows(zip(*(_column(table.data[c], _EXACT) for c in cols)))
        return buf.getvalue().rstrip("\n")
    kinds = [set(map(type, table.data[c])) for c in cols]
    cells = [_column(table.data[c], _TEXT, k) for c, k in zip(cols, kinds)]
    numeric = [table.columns[c] != ID and k <= _NUMBERS and k != {type(None)} for c, k in zip(cols, kinds)]
    if fmt == "md":
        def esc(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(esc(c) for c in cols) + " |",
                 "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"]
        lines += ["| " + " | ".join(row) + " |" for row in zip(*([esc(x) for x in col] for col in cells))]
        return "\n".join(lines)
    padded = []
    for name, col, num in zip(cols, cells, numeric):
        width = max(len(name), max(map(len, col), default=0))
        padded.append([name.ljust(width), *map(str.rjust if num else str.ljust, col, repeat(width))])
    return "\n".join("  ".join(row).rstrip() for row in zip(*padded))
