"""Turn per-replicate estimates into the bias table, with bootstrap intervals (an `fn` step).

The science: an estimator's bias at a noise level is the mean of its estimates minus the true
damping ratio. With a finite number of replicates that mean is itself uncertain, so each bias
comes with a percentile-bootstrap confidence interval: resample the replicates with
replacement `summarize.bootstrap` times and take the central `summarize.confidence` share of
the resampled means. A bias whose interval excludes zero is a real effect of the noise, not
replicate-to-replicate luck. The table also gives the scatter (sd), the total error (rmse),
the bias relative to the truth, and how many replicates the method could not estimate.

The bootstrap is this pipeline's seeded `fn` step: it draws from `ctx.rng()`, a generator
seeded from the node's seed, visiting the (noise, method) groups in a fixed order so the same
seed always gives the same intervals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rules.common.methods import METHODS
from rules.common.params import lookup
from rules.common.tables import Column, read_table, write_table

BIAS_COLUMNS = (
    Column("noise", 4),
    Column("method"),
    Column("replicates"),
    Column("ok"),
    Column("zeta_true", 6),
    Column("zeta_mean", 8),
    Column("bias", 8),
    Column("bias_lo", 8),
    Column("bias_hi", 8),
    Column("sd", 8),
    Column("rmse", 8),
    Column("relative_bias", 6),
)
EXAMPLE_COLUMNS = tuple(Column(name) for name in ("noise", "t", "observed", "truth", "fitted"))


def _paths(dep) -> list[Path]:
    """A glob dep arrives as a sorted list; accept a lone path too."""
    return [Path(dep)] if isinstance(dep, (str, Path)) else [Path(p) for p in dep]


def bias_rows(estimates: list[dict[str, str]], rng: np.random.Generator, resamples: int, confidence: float):
    """One row per (noise, method), in increasing noise and then METHODS order."""
    if not 0 < confidence < 1:
        raise ValueError(f"summarize.confidence must lie strictly between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"summarize.bootstrap must be >= 1, got {resamples}")
    groups: dict[tuple[float, str], list[dict[str, str]]] = {}
    for row in estimates:
        groups.setdefault((float(row["noise"]), row["method"]), []).append(row)
    order = {method: i for i, method in enumerate(METHODS)}
    tail = (1.0 - confidence) / 2.0
    rows = []
    for noise, method in sorted(groups, key=lambda key: (key[0], order.get(key[1], len(order)), key[1])):
        group = groups[(noise, method)]
        truths = {float(row["zeta_true"]) for row in group}
        if len(truths) != 1:
            raise ValueError(f"noise {noise}, method {method}: rows disagree on the true zeta")
        zeta_true = truths.pop()
        values = np.array([float(row["zeta_hat"]) for row in group if row["ok"] == "1"])
        m = values.size
        if m:
            mean = float(values.mean())
            sd = float(values.std(ddof=1)) if m > 1 else 0.0
            rmse = float(np.sqrt(np.mean((values - zeta_true) ** 2)))
            means = values[rng.integers(0, m, size=(resamples, m))].mean(axis=1)
            lo, hi = np.quantile(means, [tail, 1.0 - tail])
            lo, hi = float(lo) - zeta_true, float(hi) - zeta_true
        else:
            mean = sd = rmse = lo = hi = float("nan")
        bias = mean - zeta_true
        relative = bias / zeta_true if zeta_true else float("nan")
        rows.append((noise, method, len(group), m, zeta_true, mean, bias, lo, hi, sd, rmse, relative))
    return rows


def summarize(ctx) -> None:
    """sci entry point: deps `estimates` and `examples` (globs); outs `table` and `examples`."""
    resamples = int(lookup(ctx.params, "summarize.bootstrap"))
    confidence = float(lookup(ctx.params, "summarize.confidence"))
    estimates = [row for path in _paths(ctx.deps["estimates"]) for row in read_table(path)]
    rows = bias_rows(estimates, ctx.rng(), resamples, confidence)
    write_table(ctx.outs["table"], BIAS_COLUMNS, rows)

    examples = [row for path in _paths(ctx.deps["examples"]) for row in read_table(path)]
    examples.sort(key=lambda row: float(row["noise"]))  # stable: keeps each file's time order
    write_table(
        ctx.outs["examples"],
        EXAMPLE_COLUMNS,
        [tuple(row[column.name] for column in EXAMPLE_COLUMNS) for row in examples],
    )

    for noise, method, _, _, _, _, bias, *_ in rows:
        if not np.isnan(bias):  # a metric is a number: an undefined bias is left out
            ctx.metrics[f"bias.{method}@{noise:g}"] = round(bias, 8)
