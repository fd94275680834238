"""Three ways to recover the damping ratio from sampled traces, batched over replicates.

Each estimator takes the sample times `t` (n,) and traces `y` (replicates, n) and returns an
`Estimate` of per-replicate arrays. They are the three a practitioner actually reaches for:

- `nls`: nonlinear least squares of the full model exp(-alpha t)(a cos omega_d t + b sin omega_d t)
  by Levenberg-Marquardt. Under white Gaussian noise this is the maximum-likelihood estimator,
  so its bias is expected to stay small (second order in the noise).
- `ar2`: the linear-prediction (Prony) estimator. A sampled damped sinusoid obeys exactly
  y[k] = c1 y[k-1] + c2 y[k-2]; least squares gives c1, c2 and the poles give alpha, omega_d.
  Noise in the regressors attenuates the coefficients (errors-in-variables), which pulls the
  poles towards the origin: the damping is over-estimated, increasingly with noise.
- `logdec`: the bench method, the logarithmic decrement. Take the highest sample in each
  oscillation cycle and regress the log of those peaks on their times. Noise inflates small
  late peaks (the maximum of signal plus noise exceeds the signal's maximum), flattening the
  decay: the damping is under-estimated.

A replicate on which a method cannot produce an estimate (real poles, fewer than two positive
peaks, a diverged fit) gets NaN and `ok = False`; the summary counts them instead of hiding them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rules.common.methods import METHODS
from rules.common.oscillator import ratio_from_decay, spectral_peak

__all__ = ["METHODS", "Estimate", "NlsFit", "ar2", "logdec", "nls"]


@dataclass(frozen=True)
class Estimate:
    """Per-replicate results of one method; arrays share the replicate axis."""

    zeta: np.ndarray
    omega: np.ndarray
    ok: np.ndarray

    @classmethod
    def from_decay(cls, alpha: np.ndarray, omega_d: np.ndarray, ok: np.ndarray) -> "Estimate":
        zeta, omega = ratio_from_decay(alpha, omega_d)
        ok = ok & np.isfinite(zeta) & np.isfinite(omega)
        return cls(np.where(ok, zeta, np.nan), np.where(ok, omega, np.nan), ok)


@dataclass(frozen=True)
class NlsFit:
    """The fitted model parameters of `nls`, kept to draw the fitted curve."""

    a: np.ndarray
    b: np.ndarray
    alpha: np.ndarray
    omega_d: np.ndarray
    iterations: int

    def curve(self, t: np.ndarray) -> np.ndarray:
        return _model(t, self.a, self.b, self.alpha, self.omega_d)


def _model(t, a, b, alpha, omega_d):
    phase = omega_d[:, None] * t[None, :]
    envelope = np.exp(-alpha[:, None] * t[None, :])
    return envelope * (a[:, None] * np.cos(phase) + b[:, None] * np.sin(phase))


def _linear_amplitudes(envelope, cos, sin, y):
    """Best (a, b) for a fixed envelope and carrier: the model is linear in the amplitudes."""
    c = envelope * cos
    s = envelope * sin
    cc = np.einsum("rn,rn->r", c, c)
    ss = np.einsum("rn,rn->r", s, s)
    cs = np.einsum("rn,rn->r", c, s)
    cy = np.einsum("rn,rn->r", c, y)
    sy = np.einsum("rn,rn->r", s, y)
    det = cc * ss - cs * cs
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(det > 0, (ss * cy - cs * sy) / det, 0.0)
        b = np.where(det > 0, (cc * sy - cs * cy) / det, 0.0)
    sse = np.einsum("rn,rn->r", y, y) - a * cy - b * sy  # residual at the least-squares optimum
    return a, b, sse


def _initial_guess(t, y):
    """Start values that use the data only, never the true parameters.

    omega_d comes from the spectral peak; alpha from a one-dimensional scan (geometric grid,
    1e-3 .. 2 times omega_d) of the residual with the amplitudes solved linearly at each point.
    The scan makes the start robust at high noise, where a local method started far away
    can wander to a wrong minimum.
    """
    dt = float(t[1] - t[0])
    omega_d, _ = spectral_peak(y, dt)
    cos = np.cos(omega_d[:, None] * t[None, :])
    sin = np.sin(omega_d[:, None] * t[None, :])
    best_sse = np.full(y.shape[0], np.inf)
    best = np.zeros((y.shape[0], 3))
    # ties keep the smaller alpha: the scan runs upwards and '<' is strict
    for factor in np.geomspace(1e-3, 2.0, 40):
        alpha = factor * omega_d
        a, b, sse = _linear_amplitudes(np.exp(-alpha[:, None] * t[None, :]), cos, sin, y)
        better = sse < best_sse
        best_sse = np.where(better, sse, best_sse)
        best = np.where(better[:, None], np.stack([a, b, alpha], axis=1), best)
    return np.column_stack([best, omega_d])


def nls(
    t: np.ndarray, y: np.ndarray, max_iter: int = 100, tol: float = 1e-10
) -> tuple[Estimate, NlsFit]:
    """Levenberg-Marquardt on (a, b, alpha, omega_d), every replicate in one batch.

    Each replicate keeps its own damping factor `lam`: a step that lowers the residual is
    taken and `lam` shrinks tenfold, otherwise the step is refused and `lam` grows tenfold.
    A replicate has settled once its proposed step moves no parameter by more than `tol`
    relative to the parameter's size; iteration stops when all have (or after `max_iter`
    rounds). Settled replicates keep iterating with the batch, but their steps are then below
    the tolerance, so batching changes no individual fit beyond it.
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    p = _initial_guess(t, y)
    lam = np.full(y.shape[0], 1e-3)
    eye = np.eye(4)

    def evaluate(params):
        a, b, alpha, omega_d = params.T
        envelope = np.exp(-alpha[:, None] * t[None, :])
        cos = np.cos(omega_d[:, None] * t[None, :])
        sin = np.sin(omega_d[:, None] * t[None, :])
        model = envelope * (a[:, None] * cos + b[:, None] * sin)
        residual = y - model
        return residual, np.einsum("rn,rn->r", residual, residual), (envelope, cos, sin, model)

    r, sse, parts = evaluate(p)
    iterations = 0
    for iterations in range(1, max_iter + 1):
        envelope, cos, sin, model = parts
        a, b = p[:, 0:1], p[:, 1:2]
        jac = np.stack(
            [envelope * cos, envelope * sin, -t * model, t * envelope * (b * cos - a * sin)],
            axis=1,
        )  # (replicates, 4, n)
        jtj = jac @ jac.transpose(0, 2, 1)
        jtr = (jac @ r[:, :, None])[:, :, 0]
        diag = np.maximum(np.einsum("rii->ri", jtj), 1e-300)
        try:
            step = np.linalg.solve(jtj + lam[:, None, None] * diag[:, :, None] * eye, jtr[:, :, None])
        except np.linalg.LinAlgError:
            break
        step = step[:, :, 0]
        trial = p + step
        r_trial, sse_trial, parts_trial = evaluate(trial)
        accept = np.isfinite(sse_trial) & (sse_trial < sse)
        p = np.where(accept[:, None], trial, p)
        r = np.where(accept[:, None], r_trial, r)
        sse = np.where(accept, sse_trial, sse)
        parts = tuple(np.where(accept[:, None], new, old) for new, old in zip(parts_trial, parts))
        lam = np.where(accept, np.maximum(lam / 10.0, 1e-12), np.minimum(lam * 10.0, 1e12))
        relative = np.max(np.abs(step) / (np.abs(p) + 1e-12), axis=1)
        if np.all(relative < tol):
            break
    a, b, alpha, omega_d = p.T
    # omega_d and -omega_d describe the same curve (b changes sign); report the positive one
    flip = omega_d < 0
    omega_d = np.abs(omega_d)
    b = np.where(flip, -b, b)
    ok = np.all(np.isfinite(p), axis=1) & (omega_d > 0)
    fit = NlsFit(a=a, b=b, alpha=alpha, omega_d=omega_d, iterations=iterations)
    return Estimate.from_decay(alpha, omega_d, ok), fit


def ar2(t: np.ndarray, y: np.ndarray, lag: int = 1) -> Estimate:
    """Linear prediction y[k] = c1 y[k-m] + c2 y[k-2m] by least squares, per replicate.

    A damped sinusoid sampled every h = m dt obeys this recursion exactly, for any lag m. The
    characteristic roots z = r exp(+-i theta) of z^2 - c1 z - c2 give alpha = -ln(r) / h and
    omega_d = theta / h (so omega_d h must stay below pi). With m = 1 on finely sampled data the
    roots sit almost on z = 1 and the tiniest noise moves them far; a lag of a fraction of a
    period spreads them out. Real roots (c1^2 + 4 c2 >= 0) or |z| >= 1 mean the noisy data no
    longer look like a decaying oscillation at all: no estimate.
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    if lag < 1 or 2 * lag + 2 > t.size:
        raise ValueError(f"ar2 lag must be between 1 and {(t.size - 2) // 2}, got {lag}")
    dt = float(t[1] - t[0]) * lag
    target, lag1, lag2 = y[:, 2 * lag :], y[:, lag:-lag], y[:, : -2 * lag]
    g11 = np.einsum("rn,rn->r", lag1, lag1)
    g22 = np.einsum("rn,rn->r", lag2, lag2)
    g12 = np.einsum("rn,rn->r", lag1, lag2)
    h1 = np.einsum("rn,rn->r", lag1, target)
    h2 = np.einsum("rn,rn->r", lag2, target)
    det = g11 * g22 - g12 * g12
    with np.errstate(invalid="ignore", divide="ignore"):
        c1 = (g22 * h1 - g12 * h2) / det
        c2 = (g11 * h2 - g12 * h1) / det
        radius2 = -c2
        complex_roots = (c1 * c1 + 4.0 * c2 < 0) & (radius2 > 0) & (radius2 < 1)
        radius = np.sqrt(np.where(complex_roots, radius2, 1.0))
        cos_theta = np.clip(c1 / (2.0 * radius), -1.0, 1.0)
        alpha = -np.log(radius) / dt
        omega_d = np.arccos(cos_theta) / dt
    ok = complex_roots & (det > 0)
    return Estimate.from_decay(alpha, omega_d, ok)


def _slope(x: list[float], y: list[float]) -> float:
    """Ordinary least-squares slope of y on x (x not all equal)."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx = xa - xa.mean()
    return float(np.dot(dx, ya - ya.mean()) / np.dot(dx, dx))


def logdec(t: np.ndarray, y: np.ndarray, max_cycles: int = 0) -> Estimate:
    """Logarithmic decrement from the highest sample of each cycle, per replicate.

    The spectral peak gives a first ringing frequency and phase; cycle k's window is centred
    on the predicted k-th crest, (2 pi k - phase) / omega_d, and spans one period, so window
    edges fall on troughs. Each window's highest sample is refined by a parabola through it
    and its neighbours. As at the bench, the slope of log(peak) against peak time is -alpha
    and the slope of peak time against cycle number is the period. Only windows that lie
    wholly inside the record count, at most `max_cycles` of them from the start (0 = all),
    and only positive peaks (a logarithm needs them).
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    dt = float(t[1] - t[0])
    n = t.size
    omega_first, phase = spectral_peak(y, dt)
    alpha = np.full(y.shape[0], np.nan)
    omega_d = np.full(y.shape[0], np.nan)
    for row in range(y.shape[0]):  # replicates have different windows; the loop is short
        trace, w, ph = y[row], float(omega_first[row]), float(phase[row])
        if not w > 0:
            continue
        period = 2.0 * np.pi / w
        k = int(np.ceil((ph + np.pi) / (2.0 * np.pi)))  # first window starting at t >= 0
        cycles, times, peaks = [], [], []
        windows = 0
        while not (max_cycles and windows >= max_cycles):
            centre = (2.0 * np.pi * k - ph) / w
            lo = max(int(np.ceil((centre - period / 2.0) / dt)), 0)
            hi = int(np.ceil((centre + period / 2.0) / dt))
            if hi > n:
                break
            j = lo + int(np.argmax(trace[lo:hi]))
            value, offset = float(trace[j]), 0.0
            if 0 < j < n - 1:
                left, right = float(trace[j - 1]), float(trace[j + 1])
                curvature = left - 2.0 * value + right
                if curvature < 0:
                    offset = min(max(0.5 * (left - right) / curvature, -0.5), 0.5)
                    value -= 0.25 * (left - right) * offset
            if value > 0:
                cycles.append(float(k))
                times.append((j + offset) * dt)
                peaks.append(float(np.log(value)))
            k += 1
            windows += 1
        if len(peaks) >= 2:
            alpha[row] = -_slope(times, peaks)
            omega_d[row] = 2.0 * np.pi / _slope(cycles, times)
    ok = np.isfinite(alpha) & (omega_d > 0)
    return Estimate.from_decay(alpha, omega_d, ok)
