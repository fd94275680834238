"""Metrics: the numbers a step reports, read from its `metrics:` files or its `ctx.metrics`.

A metrics file is a JSON or YAML mapping (nested keys joined with `.`: `{"loss": {"val": 0.3}}`
gives `loss.val`), or a CSV file with a header and exactly one row. The format is told by the
suffix (`.json`, `.yaml`/`.yml`, `.csv`); any other suffix is tried as JSON, then YAML. A metric
is a number: an int, a float (finite: records are canonical JSON, which has no NaN) or a bool.
Anything else is a MetricsError naming the file and the key, which fails the step (SPEC §11).
CSV cells are text: each must read as an int, a float or `true`/`false`.

This module is imported by the executor after every step that declares metrics, so it imports
nothing heavy at top level (YAML only for a YAML file).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from sci.errors import WorkFailed

SEP = "."


class MetricsError(WorkFailed):
    """A metrics file that cannot be read, or holds something other than numbers."""


def read_file(path: str, shown: str | None = None) -> dict[str, int | float | bool]:
    """The metrics in the file at `path` (`shown`: the name used in messages, e.g. the
    workspace-relative path), flattened, in the file's own key order."""
    shown = shown or path
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise MetricsError(f"metrics file {shown}: cannot read it ({exc.strerror or exc})",
                           hint="the step must write every file listed under metrics:") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MetricsError(f"metrics file {shown}: not UTF-8 text",
                           hint="write metrics as JSON, YAML or CSV text") from None
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".csv":
        return _from_csv(text, shown)
    if suffix in (".yaml", ".yml"):
        doc = _yaml(text, shown)
    elif suffix == ".json":
        doc = _json(text, shown)
    else:
        try:
            doc = _json(text, shown)
        except MetricsError:
            doc = _yaml(text, shown)
    if not isinstance(doc, dict):
        raise MetricsError(f"metrics file {shown}: holds {_kind(doc)}, not a mapping of names to numbers",
                           hint='write e.g. {"accuracy": 0.93, "loss": {"val": 0.31}}')
    return flatten(doc, f"file {shown}")


def _json(text: str, shown: str) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not a number a record can hold")

    try:
        return json.loads(text, parse_constant=no_constants)
    except ValueError as exc:
        raise MetricsError(f"metrics file {shown}: not valid JSON ({exc})",
                           hint="write a JSON object of names to numbers") from None


def _yaml(text: str, shown: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        problem = str(getattr(exc, "problem", "") or exc).splitlines()[0]
        raise MetricsError(f"metrics file {shown}: not valid YAML ({problem})",
                           hint="write a YAML mapping of names to numbers") from None


def _from_csv(text: str, shown: str) -> dict[str, int | float | bool]:
    import csv
    import io

    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    if len(rows) != 2:
        raise MetricsError(f"metrics file {shown}: a CSV metrics file has a header and one row, not {len(rows)} "
                           "non-empty line(s)", hint="write one header line of names and one line of numbers")
    head, row = rows
    if len(head) != len(row):
        raise MetricsError(f"metrics file {shown}: the header has {len(head)} columns and the row {len(row)}",
                           hint="give one number per header name")
    out: dict[str, int | float | bool] = {}
    for name, cell in zip(head, row):
        name = name.strip()
        if not name:
            raise MetricsError(f"metrics file {shown}: a header name is empty", hint="name every column")
        if name in out:
            raise MetricsError(f"metrics file {shown}: metric {name!r} appears twice", hint="name each column once")
        out[name] = _cell(cell.strip(), shown, name)
    return out


def _cell(cell: str, shown: str, name: str) -> int | float | bool:
    low = cell.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        value = float(cell)
    except ValueError:
        raise MetricsError(f"metrics file {shown}: metric {name!r} is {cell!r}, not a number",
                           hint="metrics are numbers: ints, floats or true/false") from None
    return check_value(value, f"file {shown}", name)


def flatten(doc: dict, shown: str, prefix: str = "") -> dict[str, int | float | bool]:
    """A nested mapping's leaves, keys joined with `.`; every leaf must be a number. `shown`
    says where the mapping came from in messages ("metrics {shown}: ...")."""
    out: dict[str, int | float | bool] = {}
    for key, value in doc.items():
        if not isinstance(key, str | int | float | bool) or isinstance(key, str) and not key:
            raise MetricsError(f"metrics {shown}: a metric name is {key!r}", hint="name metrics with non-empty text")
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if not value:
                raise MetricsError(f"metrics {shown}: {name!r} is an empty mapping", hint="give it numbers or drop it")
            inner = flatten(value, shown, name + SEP)
        else:
            inner = {name: check_value(value, shown, name)}
        for k, v in inner.items():
            if k in out:
                raise MetricsError(f"metrics {shown}: metric {k!r} is given twice", hint="give each name once")
            out[k] = v
    return out


def check_value(value: Any, shown: str, name: str) -> int | float | bool:
    """`value` if it is a metric (int, finite float, bool), else a MetricsError."""
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise MetricsError(f"metrics {shown}: metric {name!r} is {value}, which no record can hold",
                           hint="leave the metric out when it is undefined")
    raise MetricsError(f"metrics {shown}: metric {name!r} is {_kind(value)}, not a number",
                       hint="metrics are numbers: ints, floats or booleans")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        text = value if len(value) <= 30 else value[:27] + "..."
        return f"the text {text!r}"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def read_step_metrics(files: dict[str, str], base: str) -> dict[str, int | float | bool]:
    """Every metrics file of a step (name -> workspace-relative path, read under `base`), as one
    mapping. One file's metrics keep their names; with several files, a name two files share is
    an error (rename it in one of them)."""
    out: dict[str, int | float | bool] = {}
    for rel in files.values():
        for k, v in read_file(f"{base}/{rel}", rel).items():
            if k in out:
                raise MetricsError(f"metrics file {rel}: metric {k!r} is also in another metrics file of the step",
                                   hint="give each metric one file")
            out[k] = v
    return out


def merge(step_metrics: dict, ctx_metrics: dict, node: str) -> dict[str, int | float | bool]:
    """A `fn` step's ctx.metrics (checked and flattened) with its metrics files' numbers."""
    out = flatten(ctx_metrics, f"of {node} (ctx.metrics)") if ctx_metrics else {}
    for k, v in step_metrics.items():
        if k in out:
            raise MetricsError(f"metric {k!r} of {node} is both in ctx.metrics and in a metrics file",
                               hint="record it in one place")
        out[k] = v
    return out
