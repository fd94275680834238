"""The on-disk format of one simulated data set: a .npy array plus a JSON description.

The array (written by `np.save`, float64) has one row of sample times, one row of the
noiseless response and then one row per noisy replicate, so a reader needs nothing else to
fit it. The JSON file next to it records what the array is (noise level, true parameters,
seed) so later steps label their results from the data rather than from the pipeline file;
it is written with sorted keys and a trailing newline, so it is as deterministic as the array.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FORMAT = "oscillator-traces/1"  # bump when the array layout or the description changes


@dataclass(frozen=True)
class TraceSet:
    """Sample times, the noiseless truth and the noisy replicates of one noise level."""

    t: np.ndarray  # (n,)
    truth: np.ndarray  # (n,)
    noisy: np.ndarray  # (replicates, n)
    description: "Description"


@dataclass(frozen=True)
class Description:
    """What generated a trace set; every field is a plain JSON value."""

    noise: float  # standard deviation of the additive Gaussian noise, in units of x(0)
    zeta: float  # true damping ratio
    omega: float  # true natural angular frequency (rad/s)
    duration: float  # record length (s)
    n: int  # samples per trace
    replicates: int
    seed: int
    format: str = FORMAT


def save(array_path: Path, description_path: Path, traces: TraceSet) -> None:
    """Write the array with np.save and the description as sorted-key JSON."""
    stacked = np.vstack([traces.t[None, :], traces.truth[None, :], traces.noisy]).astype(np.float64)
    with open(array_path, "wb") as handle:
        np.save(handle, stacked, allow_pickle=False)
    text = json.dumps(asdict(traces.description), sort_keys=True, indent=2) + "\n"
    Path(description_path).write_bytes(text.encode("utf-8"))


def load(array_path: Path, description_path: Path) -> TraceSet:
    """Read a trace set back, checking that the array and its description agree."""
    stacked = np.load(array_path, allow_pickle=False)
    raw = json.loads(Path(description_path).read_text(encoding="utf-8"))
    if raw.get("format") != FORMAT:
        raise ValueError(f"{description_path}: expected format {FORMAT!r}, got {raw.get('format')!r}")
    description = Description(**raw)
    expected = (description.replicates + 2, description.n)
    if stacked.ndim != 2 or stacked.shape != expected:
        raise ValueError(f"{array_path}: array shape {stacked.shape}, description says {expected}")
    return TraceSet(t=stacked[0], truth=stacked[1], noisy=stacked[2:], description=description)
