"""A small deterministic rasterizer: a palette canvas and plot axes with ticks, lines, markers,
error bars, legends and bitmap text.

Everything is integer pixel arithmetic after one rounding of each data coordinate
(floor(v + 0.5)), and lines are stepped with exact integer division, so a figure is a pure
function of its data on every machine. No anti-aliasing: crisp pixels compress well with the
simple deflate encoder in png.py, and nothing depends on blending arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rules.common import font, png

Box = tuple[int, int, int, int]  # x0, y0, x1, y1: inclusive start, exclusive end


def _round(value: float) -> int:
    return int(math.floor(value + 0.5))


class Canvas:
    """An image of palette indices; colours are named once, at construction.

    Invariant: every pixel holds an index into `palette`, so `png()` never fails on content.
    """

    def __init__(self, width: int, height: int, palette: dict[str, tuple[int, int, int]], background: str):
        if not palette or len(palette) > 256:
            raise ValueError("a canvas needs between 1 and 256 named colours")
        self.width, self.height = int(width), int(height)
        self.names = list(palette)  # insertion order fixes each colour's index
        self.palette = [palette[name] for name in self.names]
        self.pixels = np.full((self.height, self.width), self.index(background), dtype=np.uint8)

    def index(self, colour: str) -> int:
        try:
            return self.names.index(colour)
        except ValueError:
            raise ValueError(f"unknown colour {colour!r}; the palette has {self.names}") from None

    def _clip(self, clip: Box | None) -> Box:
        if clip is None:
            return (0, 0, self.width, self.height)
        x0, y0, x1, y1 = clip
        return (max(x0, 0), max(y0, 0), min(x1, self.width), min(y1, self.height))

    def points(self, xs: np.ndarray, ys: np.ndarray, colour: str, clip: Box | None = None) -> None:
        """Set integer pixel positions, dropping those outside the clip box."""
        x0, y0, x1, y1 = self._clip(clip)
        xs, ys = np.asarray(xs, dtype=np.int64), np.asarray(ys, dtype=np.int64)
        keep = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        self.pixels[ys[keep], xs[keep]] = self.index(colour)

    def fill(self, box: Box, colour: str, clip: Box | None = None) -> None:
        cx0, cy0, cx1, cy1 = self._clip(clip)
        x0, y0, x1, y1 = box
        x0, x1 = max(x0, cx0), min(x1, cx1)
        y0, y1 = max(y0, cy0), min(y1, cy1)
        if x0 < x1 and y0 < y1:
            self.pixels[y0:y1, x0:x1] = self.index(colour)

    def line(
        self, start: tuple[float, float], end: tuple[float, float], colour: str,
        width: int = 1, dash: int = 0, clip: Box | None = None,
    ) -> None:
        """A straight line `width` pixels thick; `dash` > 0 draws dash-long dashes and gaps."""
        ax, ay = _round(start[0]), _round(start[1])
        bx, by = _round(end[0]), _round(end[1])
        dx, dy = bx - ax, by - ay
        steps = max(abs(dx), abs(dy))
        k = np.arange(steps + 1, dtype=np.int64)
        if steps:
            xs = ax + (2 * dx * k + steps) // (2 * steps)
            ys = ay + (2 * dy * k + steps) // (2 * steps)
        else:
            xs, ys = np.array([ax]), np.array([ay])
        if dash > 0:
            on = (k // dash) % 2 == 0
            xs, ys = xs[on], ys[on]
        for ox in range(-(width // 2), width - width // 2):
            for oy in range(-(width // 2), width - width // 2):
                self.points(xs + ox, ys + oy, colour, clip)

    def outline(self, box: Box, colour: str) -> None:
        """A one-pixel rectangle along the inside edge of `box`."""
        x0, y0, x1, y1 = box
        for a, b in (((x0, y0), (x1 - 1, y0)), ((x0, y1 - 1), (x1 - 1, y1 - 1)),
                     ((x0, y0), (x0, y1 - 1)), ((x1 - 1, y0), (x1 - 1, y1 - 1))):
            self.line(a, b, colour)

    def polyline(self, xs: Sequence[float], ys: Sequence[float], colour: str, width: int = 1,
                 clip: Box | None = None) -> None:
        for i in range(len(xs) - 1):
            self.line((xs[i], ys[i]), (xs[i + 1], ys[i + 1]), colour, width, clip=clip)

    def marker(self, x: float, y: float, shape: str, size: int, colour: str, clip: Box | None = None) -> None:
        """A filled marker of radius `size` centred on (x, y): circle, square, triangle, diamond."""
        cx, cy = _round(x), _round(y)
        r = int(size)
        oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
        if shape == "circle":
            mask = ox * ox + oy * oy <= r * r + r
        elif shape == "square":
            mask = (np.abs(ox) <= r - 1) & (np.abs(oy) <= r - 1)
        elif shape == "diamond":
            mask = np.abs(ox) + np.abs(oy) <= r
        elif shape == "triangle":  # apex up: half-width grows one pixel per two rows down
            mask = np.abs(ox) * 2 <= (oy + r)
        else:
            raise ValueError(f"unknown marker shape {shape!r}")
        self.points(cx + ox[mask], cy + oy[mask], colour, clip)

    def text(self, x: float, y: float, text: str, colour: str, scale: int = 2, anchor: str = "left",
             valign: str = "top", vertical: bool = False) -> None:
        """Bitmap text; `vertical` turns it to read upwards (for a y-axis label).

        `anchor` (left|center|right) and `valign` (top|middle|bottom) place the text's box
        relative to (x, y), measured on the finished (possibly turned) bitmap.
        """
        bitmap = font.render(text, scale)
        if vertical:
            bitmap = np.rot90(bitmap)
        h, w = bitmap.shape
        left = {"left": 0, "center": w // 2, "right": w}[anchor]
        top = {"top": 0, "middle": h // 2, "bottom": h}[valign]
        ys, xs = np.nonzero(bitmap)
        self.points(xs + _round(x) - left, ys + _round(y) - top, colour)

    def png(self) -> bytes:
        return png.encode(self.pixels, self.palette)


def nice_ticks(lo: float, hi: float, count: int = 5) -> tuple[list[float], int]:
    """About `count` round tick values in [lo, hi] (steps of 1, 2 or 5 x 10^k) and the number
    of decimals that spells them without noise."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise ValueError(f"cannot place ticks on the range [{lo}, {hi}]")
    raw = (hi - lo) / max(count, 1)
    exponent = math.floor(math.log10(raw))
    mantissa = raw / 10.0**exponent
    step_digit = 1 if mantissa < 1.5 else 2 if mantissa < 3.5 else 5 if mantissa < 7.5 else 10
    if step_digit == 10:
        step_digit, exponent = 1, exponent + 1
    # tick k is k * step_digit * 10^exponent; dividing by 10^-exponent keeps 0.3 as 0.3
    scale = 10.0**exponent if exponent >= 0 else None
    first = math.ceil(lo / (step_digit * 10.0**exponent) - 1e-9)
    last = math.floor(hi / (step_digit * 10.0**exponent) + 1e-9)
    ticks = [
        (k * step_digit * scale) if scale is not None else (k * step_digit) / 10.0**-exponent
        for k in range(first, last + 1)
    ]
    return ticks, max(0, -exponent)


@dataclass
class Axes:
    """A plotting area on a canvas: data coordinates -> pixels inside `box`.

    y grows upwards in data and downwards in pixels; everything drawn in data coordinates is
    clipped to the box.
    """

    canvas: Canvas
    box: Box
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    def px(self, x: float) -> float:
        x0, _, x1, _ = self.box
        return x0 + (x - self.xlim[0]) / (self.xlim[1] - self.xlim[0]) * (x1 - 1 - x0)

    def py(self, y: float) -> float:
        _, y0, _, y1 = self.box
        return (y1 - 1) - (y - self.ylim[0]) / (self.ylim[1] - self.ylim[0]) * (y1 - 1 - y0)

    def frame(self, xlabel: str, ylabel: str, title: str, colour: str = "black", grid: str | None = None,
              xticks: int = 5, yticks: int = 5, scale: int = 2) -> None:
        """Axes box, ticks with labels (and optional grid lines), axis labels and title."""
        c = self.canvas
        x0, y0, x1, y1 = self.box
        ticks_x, decimals_x = nice_ticks(*self.xlim, xticks)
        ticks_y, decimals_y = nice_ticks(*self.ylim, yticks)
        char_h = font.HEIGHT * scale
        for value in ticks_x:
            x = self.px(value)
            if grid:
                c.line((x, y0), (x, y1 - 1), grid)
            c.line((x, y1 - 1), (x, y1 + 5), colour)
            c.text(x, y1 + 9, _spell(value, decimals_x), colour, scale, anchor="center")
        label_width = 0
        for value in ticks_y:
            y = self.py(value)
            if grid:
                c.line((x0, y), (x1 - 1, y), grid)
            c.line((x0 - 6, y), (x0, y), colour)
            spelt = _spell(value, decimals_y)
            label_width = max(label_width, font.text_width(spelt, scale))
            c.text(x0 - 10, y, spelt, colour, scale, anchor="right", valign="middle")
        c.outline(self.box, colour)
        c.text((x0 + x1) / 2, y1 + 9 + char_h + 10, xlabel, colour, scale, anchor="center")
        c.text(x0 - 10 - label_width - 10, (y0 + y1) / 2, ylabel, colour, scale,
               anchor="right", valign="middle", vertical=True)
        c.text((x0 + x1) / 2, y0 - 10, title, colour, scale, anchor="center", valign="bottom")

    def plot(self, xs: Sequence[float], ys: Sequence[float], colour: str, width: int = 1) -> None:
        self.canvas.polyline([self.px(x) for x in xs], [self.py(y) for y in ys], colour, width, clip=self.box)

    def scatter(self, xs: Sequence[float], ys: Sequence[float], shape: str, size: int, colour: str) -> None:
        for x, y in zip(xs, ys):
            if math.isfinite(x) and math.isfinite(y):
                self.canvas.marker(self.px(x), self.py(y), shape, size, colour, clip=self.box)

    def errorbars(self, xs: Sequence[float], lo: Sequence[float], hi: Sequence[float], colour: str,
                  cap: int = 5, width: int = 1) -> None:
        for x, a, b in zip(xs, lo, hi):
            if not (math.isfinite(x) and math.isfinite(a) and math.isfinite(b)):
                continue
            px, pa, pb = self.px(x), self.py(a), self.py(b)
            self.canvas.line((px, pa), (px, pb), colour, width, clip=self.box)
            for py in (pa, pb):
                self.canvas.line((px - cap, py), (px + cap, py), colour, width, clip=self.box)

    def hline(self, y: float, colour: str, dash: int = 0, width: int = 1) -> None:
        x0, _, x1, _ = self.box
        self.canvas.line((x0, self.py(y)), (x1 - 1, self.py(y)), colour, width, dash, clip=self.box)

    def legend(self, entries: Sequence[tuple[str, str, str | None, bool]], colour: str = "black",
               background: str = "white", scale: int = 2, corner: str = "top right") -> None:
        """Entries are (label, colour, marker shape or None, draw a line sample?)."""
        c = self.canvas
        row_h = font.HEIGHT * scale + 8
        sample_w = 30
        width = sample_w + 16 + max(font.text_width(label, scale) for label, *_ in entries) + 12
        height = row_h * len(entries) + 8
        x0, y0, x1, y1 = self.box
        left = x1 - width - 10 if "right" in corner else x0 + 10
        top = y0 + 10 if "top" in corner else y1 - height - 10
        c.fill((left, top, left + width, top + height), background)
        c.outline((left, top, left + width, top + height), colour)
        for i, (label, entry_colour, shape, with_line) in enumerate(entries):
            mid = top + 4 + i * row_h + row_h // 2
            if with_line:
                c.line((left + 8, mid), (left + 8 + sample_w, mid), entry_colour, 2)
            if shape:
                c.marker(left + 8 + sample_w / 2, mid, shape, 4, entry_colour)
            c.text(left + 8 + sample_w + 8, mid, label, colour, scale, valign="middle")


def _spell(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and text.strip("-0.") == "" else text
