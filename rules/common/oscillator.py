"""The damped harmonic oscillator: its free response, time grid and pole/ratio conversions.

An underdamped oscillator with natural angular frequency omega and damping ratio zeta, released
with unit amplitude, moves as

    x(t) = exp(-alpha t) cos(omega_d t + phase),   alpha = zeta omega,
                                                   omega_d = omega sqrt(1 - zeta^2).

Every estimator in this investigation recovers the decay rate alpha and the damped frequency
omega_d; `ratio_from_decay` turns that pair back into (zeta, omega). Keeping the conversion in
one place means the three estimators cannot disagree about what "the damping ratio" is.
"""

from __future__ import annotations

import math

import numpy as np


def time_grid(n: int, duration: float) -> np.ndarray:
    """`n` sample instants k * dt, dt = duration / n, starting at 0.

    Built from one multiplication per sample, so it is bit-identical on every IEEE-754 machine.
    """
    if n < 8:
        raise ValueError(f"need at least 8 samples per trace, got n={n}")
    if not duration > 0:
        raise ValueError(f"duration must be positive, got {duration}")
    return np.arange(n, dtype=np.float64) * (float(duration) / n)


def damped_frequency(omega: float, zeta: float) -> float:
    """The frequency at which an underdamped oscillator actually rings (rad/s)."""
    if not 0.0 <= zeta < 1.0:
        raise ValueError(f"the model is underdamped: need 0 <= zeta < 1, got {zeta}")
    return omega * math.sqrt(1.0 - zeta * zeta)


def free_response(t: np.ndarray, omega: float, zeta: float, phase: float = 0.0) -> np.ndarray:
    """The noiseless displacement x(t) for unit initial amplitude.

    Evaluated sample by sample with Python's `math` (the C library) rather than NumPy's SIMD
    kernels: the truth every estimate is compared against then does not depend on which vector
    instructions the CPU offers, and at a few hundred samples the cost is negligible.
    """
    alpha = zeta * omega
    omega_d = damped_frequency(omega, zeta)
    values = [math.exp(-alpha * tk) * math.cos(omega_d * tk + phase) for tk in t.tolist()]
    return np.asarray(values, dtype=np.float64)


def ratio_from_decay(alpha: np.ndarray, omega_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(zeta, omega) from decay rate and damped frequency: omega = |alpha + i omega_d|."""
    alpha = np.asarray(alpha, dtype=np.float64)
    omega_d = np.asarray(omega_d, dtype=np.float64)
    omega = np.hypot(alpha, omega_d)
    with np.errstate(invalid="ignore", divide="ignore"):
        zeta = np.where(omega > 0, alpha / omega, np.nan)
    return zeta, omega


def spectral_peak(y: np.ndarray, dt: float, pad: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `y`: the angular frequency and phase of the strongest spectral line.

    The spectrum is zero-padded `pad`-fold and the peak refined with a parabola through the
    log-magnitudes of the three bins around it (accurate to a small fraction of a bin for a
    decaying sinusoid). The phase is read from the bin nearest the refined peak: for
    exp(-alpha t) cos(omega_d t + phase) the transform at omega_d has argument close to
    `phase`, which is all the peak-picking estimator needs to place its windows.
    """
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    n = y.shape[1]
    n_fft = pad * n
    spectrum = np.fft.rfft(y, n=n_fft, axis=1)
    magnitude = np.abs(spectrum)
    magnitude[:, 0] = 0.0  # a constant offset is not an oscillation
    k = np.argmax(magnitude, axis=1)
    k = np.clip(k, 1, magnitude.shape[1] - 2)
    rows = np.arange(y.shape[0])
    tiny = np.finfo(np.float64).tiny
    left = np.log(magnitude[rows, k - 1] + tiny)
    mid = np.log(magnitude[rows, k] + tiny)
    right = np.log(magnitude[rows, k + 1] + tiny)
    curvature = left - 2.0 * mid + right
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
    shift = np.clip(shift, -0.5, 0.5)
    omega_peak = 2.0 * np.pi * (k + shift) / (n_fft * dt)
    phase = np.angle(spectrum[rows, k])
    return omega_peak, phase
