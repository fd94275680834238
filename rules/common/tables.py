"""Deterministic CSV tables: fixed float precision, fixed column order, '\\n' line ends.

Outputs of this investigation must be byte-identical whenever their inputs are, so floats are
never written with repr() of whatever the arithmetic produced: each column states how many
decimals it keeps, which also hides last-bit differences between machines in all but the
rarest rounding ties. Negative zero prints as zero and NaN as `nan`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path


def format_float(value: float, decimals: int) -> str:
    """`value` with exactly `decimals` digits after the point; `nan` for NaN."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = f"{value:.{decimals}f}"
    if text.startswith("-") and text.strip("-0.") == "":
        text = text[1:]  # -0.000 is the same number as 0.000; keep one spelling
    return text


class Column:
    """A table column: its header and how each cell is spelt."""

    def __init__(self, name: str, decimals: int | None = None):
        self.name = name
        self.decimals = decimals  # None: the cell is written with str() (ints, words, flags)

    def cell(self, value) -> str:
        if self.decimals is None:
            if isinstance(value, float):
                raise TypeError(f"column {self.name!r} holds floats: give it a precision")
            if isinstance(value, bool):
                return "1" if value else "0"
            return str(value)
        return format_float(value, self.decimals)


def write_table(path: Path, columns: Sequence[Column], rows: Iterable[Sequence]) -> None:
    """Write `rows` (one value per column, in column order) as CSV."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([column.name for column in columns])
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row has {len(row)} cells, table has {len(columns)} columns")
        writer.writerow([column.cell(value) for column, value in zip(columns, row)])
    Path(path).write_bytes(buffer.getvalue().encode("utf-8"))


def read_table(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV written by `write_table`, as header -> cell text."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
