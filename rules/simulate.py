"""Simulate noisy recordings of a damped oscillator (a `cmd` step: `python -m rules.simulate`).

The science: an underdamped oscillator (natural frequency omega, damping ratio zeta) is
released from unit displacement and its position is sampled `n` times over `duration`
seconds, as a sensor would. Each recording adds independent Gaussian measurement noise of
standard deviation `noise` (in units of the initial displacement). `replicates` recordings
per noise level let the later steps measure an estimator's bias (the mean error over
replicates) separately from its scatter.

The noise is drawn from NumPy's PCG64 generator seeded with `--seed`, which sci derives from
the pipeline's root seed and the node's name: the same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rules.common import traces
from rules.common.oscillator import free_response, time_grid


def simulate(
    *, noise: float, n: int, duration: float, omega: float, zeta: float, replicates: int, seed: int
) -> traces.TraceSet:
    """One trace set: the noiseless response plus `replicates` independently noisy copies."""
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if replicates < 1:
        raise ValueError(f"need at least one replicate, got {replicates}")
    t = time_grid(n, duration)
    truth = free_response(t, omega, zeta)
    rng = np.random.default_rng(seed)
    noisy = truth[None, :] + noise * rng.standard_normal((replicates, n))
    description = traces.Description(
        noise=float(noise),
        zeta=float(zeta),
        omega=float(omega),
        duration=float(duration),
        n=int(n),
        replicates=int(replicates),
        seed=int(seed),
    )
    return traces.TraceSet(t=t, truth=truth, noisy=noisy, description=description)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rules.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, required=True, help="noise standard deviation")
    parser.add_argument("--n", type=int, required=True, help="samples per trace")
    parser.add_argument("--duration", type=float, required=True, help="record length (s)")
    parser.add_argument("--omega", type=float, required=True, help="natural angular frequency (rad/s)")
    parser.add_argument("--zeta", type=float, required=True, help="true damping ratio")
    parser.add_argument("--replicates", type=int, required=True, help="noisy traces per noise level")
    parser.add_argument("--seed", type=int, required=True, help="seed of the noise generator")
    parser.add_argument("--out", type=Path, required=True, help="output .npy (times, truth, traces)")
    parser.add_argument("--describe", type=Path, required=True, help="output .json description")
    parser.add_argument("--metrics", type=Path, help="output .json metrics (sci reads them as the step's metrics)")
    args = parser.parse_args(argv)
    try:
        trace_set = simulate(
            noise=args.noise,
            n=args.n,
            duration=args.duration,
            omega=args.omega,
            zeta=args.zeta,
            replicates=args.replicates,
            seed=args.seed,
        )
    except ValueError as error:
        parser.error(str(error))
    traces.save(args.out, args.describe, trace_set)
    if args.metrics is not None:
        write_metrics(args.metrics, trace_set)
    return 0


def noise_metrics(trace_set: traces.TraceSet) -> dict:
    """What the recordings look like, as numbers: the noise actually drawn (its standard
    deviation over every sample) and the signal-to-noise ratio in decibels (the mean power of
    the noiseless response over the noise's; left out for noiseless recordings)."""
    residual = trace_set.noisy - trace_set.truth[None, :]
    measured = float(np.std(residual))
    out: dict = {"noise": {"measured": round(measured, 10)}}
    if measured > 0:
        snr = 10 * np.log10(float(np.mean(trace_set.truth**2)) / measured**2)
        out["snr_db"] = round(float(snr), 6)
    return out


def write_metrics(path: Path, trace_set: traces.TraceSet) -> None:
    """The metrics file sci reads (`metrics:` in sci.yaml): sorted-key JSON, as deterministic
    as the traces (nested keys become `noise.measured`)."""
    text = json.dumps(noise_metrics(trace_set), sort_keys=True, indent=2) + "\n"
    Path(path).write_bytes(text.encode("utf-8"))


if __name__ == "__main__":
    raise SystemExit(main())
