"""Estimate the damping ratio of every noisy recording of one noise level (an `fn` step).

The science: each replicate trace is handed to three estimators (rules/common/estimators.py)
that a practitioner would use on a ringdown recording: a nonlinear least-squares fit of the
full model, linear prediction (an AR(2)/Prony fit) and the bench method, the logarithmic
decrement of successive peaks. Whatever an estimator returns is kept per replicate, failures
included, so that the summary step can measure each method's bias and scatter and count how
often it gives no answer at all. The first replicate and its fitted curve are also written
out for the figure: a reader should see what a recording at this noise level looks like.

Nothing here is random: the estimators are deterministic functions of the traces.
"""

from __future__ import annotations

import numpy as np

from rules.common import traces
from rules.common.estimators import METHODS, Estimate, ar2, logdec, nls
from rules.common.params import lookup
from rules.common.tables import Column, write_table

ESTIMATE_COLUMNS = (
    Column("noise", 4),
    Column("replicate"),
    Column("method"),
    Column("zeta_true", 6),
    Column("zeta_hat", 8),
    Column("omega_true", 6),
    Column("omega_hat", 8),
    Column("ok"),
)
EXAMPLE_COLUMNS = (
    Column("noise", 4),
    Column("t", 6),
    Column("observed", 8),
    Column("truth", 8),
    Column("fitted", 8),
)


def estimate_all(trace_set: traces.TraceSet, settings: dict) -> tuple[dict[str, Estimate], np.ndarray, int]:
    """Run the requested methods; returns per-method estimates, the fitted curves and NLS rounds.

    `settings` holds `methods` (names from METHODS, order irrelevant), `ar2_lag`,
    `logdec_cycles`, `max_iter` and `tol`. NLS always runs because its fitted curve is drawn.
    """
    requested = list(settings["methods"])
    unknown = sorted(set(requested) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown fit method(s) {unknown}; choose from {list(METHODS)}")
    t, y = trace_set.t, trace_set.noisy
    nls_estimate, nls_fit = nls(t, y, max_iter=int(settings["max_iter"]), tol=float(settings["tol"]))
    results: dict[str, Estimate] = {}
    for method in METHODS:  # a fixed order, so the table does not depend on the params' order
        if method not in requested:
            continue
        if method == "nls":
            results[method] = nls_estimate
        elif method == "ar2":
            results[method] = ar2(t, y, lag=int(settings["ar2_lag"]))
        else:
            results[method] = logdec(t, y, max_cycles=int(settings["logdec_cycles"]))
    return results, nls_fit.curve(t), nls_fit.iterations


def fit(ctx) -> None:
    """sci entry point: deps `traces` (.npy) and `description` (.json); outs `estimates`, `example`."""
    settings = {
        key: lookup(ctx.params, f"fit.{key}")
        for key in ("methods", "ar2_lag", "logdec_cycles", "max_iter", "tol")
    }
    trace_set = traces.load(ctx.deps["traces"], ctx.deps["description"])
    desc = trace_set.description
    results, curves, iterations = estimate_all(trace_set, settings)

    rows = []
    for method, est in results.items():
        for replicate in range(desc.replicates):
            rows.append(
                (
                    desc.noise,
                    replicate,
                    method,
                    desc.zeta,
                    est.zeta[replicate],
                    desc.omega,
                    est.omega[replicate],
                    bool(est.ok[replicate]),
                )
            )
    write_table(ctx.outs["estimates"], ESTIMATE_COLUMNS, rows)

    example = zip(trace_set.t, trace_set.noisy[0], trace_set.truth, curves[0])
    write_table(ctx.outs["example"], EXAMPLE_COLUMNS, [(desc.noise, *values) for values in example])

    ctx.metrics["nls_iterations"] = iterations
    for method, est in results.items():
        ctx.metrics[f"{method}.ok"] = int(est.ok.sum())
        if est.ok.any():
            zeta_mean = float(np.mean(est.zeta[est.ok]))
            ctx.metrics[f"{method}.zeta_mean"] = round(zeta_mean, 8)
            ctx.metrics[f"{method}.bias"] = round(zeta_mean - desc.zeta, 8)  # mean error of the estimate
