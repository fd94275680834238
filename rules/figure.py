"""Draw the investigation's figure as a PNG (a `cmd` step: `python -m rules.figure`).

The science shown: panel A is one recording at a chosen noise level with the true response
and the least-squares fit, so a reader sees how much noise "sigma = 0.1" really is. Panel B is
the answer to the question: the bias of the recovered damping ratio (mean estimate minus
truth) against the noise level, one series per estimator, with the bootstrap interval of
each mean as error bars. An unbiased method stays on the dashed zero line.

The image is drawn by rules/common/raster.py and encoded by rules/common/png.py: no plotting
library, and the bytes are a pure function of the two input tables and the arguments.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rules.common.methods import METHODS
from rules.common.raster import Axes, Canvas
from rules.common.tables import read_table

PALETTE = {  # Okabe-Ito colours for the series: distinguishable with colour-blindness
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "grid": (226, 226, 226),
    "data": (150, 150, 150),
    "nls": (0, 114, 178),
    "ar2": (230, 159, 0),
    "logdec": (0, 158, 115),
    "truth": (60, 60, 60),
}
STYLE = {  # method -> (legend label, marker)
    "nls": ("NLS FIT", "circle"),
    "ar2": ("AR(2) / PRONY", "square"),
    "logdec": ("LOG DECREMENT", "triangle"),
}


def _padded(lo: float, hi: float, share: float = 0.08) -> tuple[float, float]:
    span = hi - lo if hi > lo else max(abs(hi), 1e-3)
    return lo - share * span, hi + share * span


def draw(bias_rows: list[dict[str, str]], example_rows: list[dict[str, str]], example_noise: float,
         width: int = 1100, height: int = 480) -> bytes:
    """The two-panel figure as PNG bytes."""
    if not bias_rows or not example_rows:
        raise ValueError("the figure needs a non-empty bias table and example table")
    canvas = Canvas(width, height, PALETTE, background="white")
    top, bottom = 50, height - 95
    mid = width // 2

    # Panel A: the recording nearest the requested noise level.
    levels = sorted({float(row["noise"]) for row in example_rows})
    shown = min(levels, key=lambda level: (abs(level - example_noise), level))
    rows = [row for row in example_rows if float(row["noise"]) == shown]
    t = [float(row["t"]) for row in rows]
    series = {key: [float(row[key]) for row in rows] for key in ("observed", "truth", "fitted")}
    values = [v for key in series for v in series[key] if math.isfinite(v)]
    a = Axes(canvas, (105, top, mid - 25, bottom), (t[0], t[-1]), _padded(min(values), max(values)))
    a.frame("TIME (S)", "DISPLACEMENT X/X(0)", f"(A) ONE RECORDING, σ = {shown:.2f}", grid="grid")
    a.scatter(t, series["observed"], "circle", 1, "data")
    a.plot(t, series["fitted"], "nls", width=2)
    a.plot(t, series["truth"], "truth", width=1)  # on top: where the fit is right, both show
    a.legend([
        ("DATA", "data", "circle", False),
        ("TRUTH", "truth", None, True),
        ("NLS FIT", "nls", None, True),
    ])

    # Panel B: bias against noise, one series per method.
    methods = [m for m in METHODS if any(row["method"] == m for row in bias_rows)]
    noises = sorted({float(row["noise"]) for row in bias_rows})
    numbers = [float(row[key]) for row in bias_rows for key in ("bias", "bias_lo", "bias_hi")]
    finite = [v for v in numbers if math.isfinite(v)] + [0.0]
    xlim = _padded(noises[0], noises[-1], 0.06)
    b = Axes(canvas, (mid + 110, top, width - 25, bottom), xlim, _padded(min(finite), max(finite)))
    b.frame("NOISE σ / X(0)", "BIAS OF ζ (MEAN - TRUE)", "(B) BIAS OF THE RECOVERED ζ", grid="grid")
    b.hline(0.0, "black", dash=6)
    pixel = (xlim[1] - xlim[0]) / (b.box[2] - b.box[0])  # data units per pixel, for dodging
    for i, method in enumerate(methods):
        rows = sorted(
            (row for row in bias_rows if row["method"] == method), key=lambda row: float(row["noise"])
        )
        dodge = (i - (len(methods) - 1) / 2) * 7 * pixel
        xs = [float(row["noise"]) + dodge for row in rows]
        ys = [float(row["bias"]) for row in rows]
        finite_pairs = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
        if finite_pairs:
            b.plot([x for x, _ in finite_pairs], [y for _, y in finite_pairs], method, width=2)
        lo = [float(row["bias_lo"]) for row in rows]
        hi = [float(row["bias_hi"]) for row in rows]
        b.errorbars(xs, lo, hi, method)
        b.scatter(xs, ys, STYLE[method][1], 5, method)
    b.legend([(STYLE[m][0], m, STYLE[m][1], True) for m in methods], corner="top left")

    truths = sorted({float(row["zeta_true"]) for row in bias_rows})
    replicates = sorted({int(row["replicates"]) for row in bias_rows})
    caption = (
        f"TRUE ζ = {', '.join(f'{z:g}' for z in truths)};  "
        f"{', '.join(str(r) for r in replicates)} RECORDINGS PER NOISE LEVEL;  "
        "BARS: BOOTSTRAP INTERVAL OF THE MEAN"
    )
    canvas.text(width / 2, height - 14, caption, "black", scale=2, anchor="center", valign="bottom")
    return canvas.png()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rules.figure", description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True, help="bias table (CSV) from summarize")
    parser.add_argument("--examples", type=Path, required=True, help="example recordings (CSV)")
    parser.add_argument("--example-noise", type=float, required=True, help="noise level shown in panel A")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--out", type=Path, required=True, help="output PNG")
    args = parser.parse_args(argv)
    try:
        image = draw(
            read_table(args.table), read_table(args.examples), args.example_noise, args.width, args.height
        )
    except (ValueError, KeyError) as error:
        parser.error(f"cannot draw the figure: {error}")
    args.out.write_bytes(image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
