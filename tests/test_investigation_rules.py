"""The bundled investigation: its science, its determinism, its figure and its sci.yaml.

The engine is tested elsewhere; here the step code in rules/ is exercised directly, and a small
stand-in runner (`_Runner`) executes the real sci.yaml the way SPEC §2 describes a sandboxed
build: each node in a scratch directory holding only its declared deps and code, `cmd` steps
through `sh -c` with the venv's python first on PATH and no PYTHONPATH, `fn` steps called with
a hand-made StepContext whose paths are relative to that scratch directory.

    simulate[noise=…] ──> fit[noise=…] ──> summarize ──> figure
"""

from __future__ import annotations

import ast
import csv
import glob
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ruamel.yaml import YAML  # noqa: E402

from rules.common import font, png, traces  # noqa: E402
from rules.common.estimators import METHODS, ar2, logdec, nls  # noqa: E402
from rules.common.oscillator import free_response, ratio_from_decay, time_grid  # noqa: E402
from rules.common.params import lookup  # noqa: E402
from rules.common.raster import Axes, Canvas, nice_ticks  # noqa: E402
from rules.common.tables import Column, format_float, read_table, write_table  # noqa: E402
from rules.fit import fit  # noqa: E402
from rules.simulate import simulate  # noqa: E402
from rules.summarize import bias_rows, summarize  # noqa: E402
from sci.executors.context import StepContext  # noqa: E402

PYTHON_BIN = Path(sys.executable).parent
FIT_SETTINGS = {"methods": list(METHODS), "max_iter": 100, "tol": 1e-10, "ar2_lag": 13, "logdec_cycles": 0}


def _yaml(path: Path):
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def _trace_set(noise: float, replicates: int = 40, seed: int = 1, zeta: float = 0.05, omega: float = 6.0):
    return simulate(noise=noise, n=500, duration=10.0, omega=omega, zeta=zeta, replicates=replicates, seed=seed)


# --- the science ---------------------------------------------------------------------------


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zeta=st.floats(0.01, 0.2), omega=st.floats(3.0, 9.0))
def test_zero_noise_recovers_the_true_damping_ratio_with_every_method(zeta, omega):
    data = _trace_set(0.0, replicates=1, zeta=zeta, omega=omega)
    estimates = {"nls": nls(data.t, data.noisy)[0], "ar2": ar2(data.t, data.noisy, lag=13),
                 "logdec": logdec(data.t, data.noisy)}
    for method, est in estimates.items():
        assert est.ok.all(), method
        assert abs(est.zeta[0] - zeta) < 1e-3, (method, est.zeta[0], zeta)
        assert abs(est.omega[0] - omega) < 1e-2 * omega, (method, est.omega[0], omega)


def test_bias_grows_with_noise_in_opposite_directions_while_least_squares_stays_unbiased():
    bias = {method: [] for method in METHODS}
    for noise in (0.01, 0.05, 0.2):
        data = _trace_set(noise, replicates=60, seed=int(noise * 1000))
        estimates = {"nls": nls(data.t, data.noisy)[0], "ar2": ar2(data.t, data.noisy, lag=13),
                     "logdec": logdec(data.t, data.noisy)}
        for method, est in estimates.items():
            values = est.zeta[est.ok]
            assert values.size >= 55, (method, noise)
            bias[method].append((float(values.mean()) - 0.05, float(values.std(ddof=1) / math.sqrt(values.size))))
    ar2_bias = [b for b, _ in bias["ar2"]]
    logdec_bias = [b for b, _ in bias["logdec"]]
    assert 0 < ar2_bias[0] < ar2_bias[1] < ar2_bias[2]  # linear prediction over-estimates damping
    assert 0 > logdec_bias[0] > logdec_bias[1] > logdec_bias[2]  # peak picking under-estimates it
    for b, sem in bias["nls"]:
        assert abs(b) < 4 * sem + 1e-6  # no bias beyond replicate-to-replicate luck
    assert abs(bias["nls"][2][0]) < 0.05 * min(ar2_bias[2], -logdec_bias[2])


def test_logdec_on_early_cycles_trades_bias_for_scatter():
    data = _trace_set(0.1, replicates=60, seed=3)
    every = logdec(data.t, data.noisy, max_cycles=0)
    early = logdec(data.t, data.noisy, max_cycles=4)
    assert abs(np.mean(early.zeta) - 0.05) < abs(np.mean(every.zeta) - 0.05)
    assert np.std(early.zeta) > np.std(every.zeta)


def test_ar2_lag_one_on_finely_sampled_noisy_data_fails_loudly_not_silently():
    data = _trace_set(0.05, replicates=20, seed=4)
    est = ar2(data.t, data.noisy, lag=1)
    assert np.all(np.isnan(est.zeta[~est.ok]))
    assert est.ok.sum() < 20  # real roots on most recordings: reported as failures
    with pytest.raises(ValueError, match="lag"):
        ar2(data.t, data.noisy, lag=400)


def test_ratio_from_decay_inverts_the_model():
    zeta, omega = ratio_from_decay(np.array([0.3]), np.array([6.0 * math.sqrt(1 - 0.05**2)]))
    assert zeta[0] == pytest.approx(0.05, abs=1e-12)
    assert omega[0] == pytest.approx(6.0, abs=1e-12)


def test_model_rejects_overdamped_and_tiny_grids():
    with pytest.raises(ValueError, match="underdamped"):
        free_response(time_grid(10, 1.0), 6.0, 1.2)
    with pytest.raises(ValueError, match="at least 8"):
        time_grid(3, 1.0)


# --- the steps, called directly --------------------------------------------------------------


def _run_simulate(cwd: Path, seed: int, noise: float = 0.1, replicates: int = 5) -> subprocess.CompletedProcess:
    """`python -m rules.simulate` as a sandboxed cmd step runs it: from a scratch copy, no PYTHONPATH."""
    for rel in ["rules/__init__.py", "rules/simulate.py", *glob.glob("rules/common/*.py", root_dir=ROOT)]:
        (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, cwd / rel)
    (cwd / "data").mkdir(exist_ok=True)
    args = ["python", "-m", "rules.simulate", "--noise", str(noise), "--n", "200", "--duration", "8",
            "--omega", "6", "--zeta", "0.05", "--replicates", str(replicates), "--seed", str(seed),
            "--out", "data/t.npy", "--describe", "data/t.json"]
    env = {"PATH": f"{PYTHON_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def test_simulate_script_is_a_pure_function_of_its_seed(tmp_path):
    outputs = {}
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        (tmp_path / name).mkdir()
        done = _run_simulate(tmp_path / name, seed)
        assert done.returncode == 0, done.stderr
        outputs[name] = ((tmp_path / name / "data/t.npy").read_bytes(), (tmp_path / name / "data/t.json").read_bytes())
    assert outputs["a"] == outputs["b"]
    assert outputs["a"][0] != outputs["c"][0]
    loaded = traces.load(tmp_path / "a/data/t.npy", tmp_path / "a/data/t.json")
    assert loaded.noisy.shape == (5, 200)
    assert json.loads(outputs["a"][1])["seed"] == 11
    np.testing.assert_array_equal(loaded.truth, free_response(loaded.t, 6.0, 0.05))


def test_simulate_script_rejects_bad_arguments_with_usage_error(tmp_path):
    done = _run_simulate(tmp_path, 1, noise=-0.1)
    assert done.returncode == 2
    assert "noise must be >= 0" in done.stderr


def test_zero_noise_traces_do_not_depend_on_the_seed():
    a, b = _trace_set(0.0, replicates=3, seed=1), _trace_set(0.0, replicates=3, seed=2)
    assert a.noisy.tobytes() == b.noisy.tobytes()


def _fit_context(workdir: Path, params: dict, noise: float = 0.05) -> StepContext:
    data = _trace_set(noise, replicates=8, seed=5)
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    (workdir / "results").mkdir(exist_ok=True)
    traces.save(workdir / "data/t.npy", workdir / "data/t.json", data)
    return StepContext(
        node=f"fit[noise={noise}]",
        deps={"traces": workdir / "data/t.npy", "description": workdir / "data/t.json"},
        outs={"estimates": workdir / "results/e.csv", "example": workdir / "results/x.csv"},
        params=params,
        seed=0,
    )


def test_fit_writes_every_recording_and_method_deterministically(tmp_path):
    first = _fit_context(tmp_path / "one", {"fit": FIT_SETTINGS})
    fit(first)
    rows = read_table(first.outs["estimates"])
    assert [r["method"] for r in rows] == [m for m in METHODS for _ in range(8)]
    assert {r["ok"] for r in rows} == {"1"}
    assert all(abs(float(r["zeta_hat"]) - 0.05) < 0.05 for r in rows)
    example = read_table(first.outs["example"])
    assert len(example) == 500 and list(example[0]) == ["noise", "t", "observed", "truth", "fitted"]
    assert first.metrics["nls.ok"] == 8 and "logdec.zeta_mean" in first.metrics
    # the same inputs declared leaf by leaf give the same bytes
    second = _fit_context(tmp_path / "two", {f"fit.{k}": v for k, v in FIT_SETTINGS.items()})
    fit(second)
    assert first.outs["estimates"].read_bytes() == second.outs["estimates"].read_bytes()
    assert first.outs["example"].read_bytes() == second.outs["example"].read_bytes()


def test_fit_can_run_a_subset_of_methods_and_rejects_unknown_ones(tmp_path):
    ctx = _fit_context(tmp_path / "subset", {"fit": {**FIT_SETTINGS, "methods": ["logdec", "nls"]}})
    fit(ctx)
    assert [r["method"] for r in read_table(ctx.outs["estimates"])][::8] == ["nls", "logdec"]
    bad = _fit_context(tmp_path / "bad", {"fit": {**FIT_SETTINGS, "methods": ["nls", "magic"]}})
    with pytest.raises(ValueError, match="magic"):
        fit(bad)


def _estimate_rows(values_by_group: dict[tuple[float, str], list[float | None]]) -> list[dict[str, str]]:
    rows = []
    for (noise, method), values in values_by_group.items():
        for i, v in enumerate(values):
            rows.append({"noise": f"{noise:.4f}", "replicate": str(i), "method": method, "zeta_true": "0.050000",
                         "zeta_hat": "nan" if v is None else f"{v:.8f}", "omega_true": "6.000000",
                         "omega_hat": "6.00000000", "ok": "0" if v is None else "1"})
    return rows


def test_bias_table_counts_failures_and_orders_rows():
    rows = _estimate_rows({(0.1, "logdec"): [0.04, None, 0.03], (0.0, "ar2"): [None, None],
                           (0.0, "nls"): [0.05, 0.05]})
    table = bias_rows(rows, np.random.default_rng(0), resamples=50, confidence=0.9)
    assert [(r[0], r[1]) for r in table] == [(0.0, "nls"), (0.0, "ar2"), (0.1, "logdec")]
    nls_row, ar2_row, logdec_row = table
    assert nls_row[6] == pytest.approx(0.0, abs=1e-15) and nls_row[3] == 2
    assert ar2_row[3] == 0 and math.isnan(ar2_row[6])  # no estimate: the bias is unknown, not zero
    assert logdec_row[2:4] == (3, 2) and logdec_row[6] == pytest.approx(-0.015)
    assert logdec_row[7] <= logdec_row[6] <= logdec_row[8]
    with pytest.raises(ValueError, match="confidence"):
        bias_rows(rows, np.random.default_rng(0), 10, 1.5)


def test_summarize_bootstrap_follows_the_seed(tmp_path):
    est_dir = tmp_path / "results"
    est_dir.mkdir()
    rng = np.random.default_rng(9)
    rows = _estimate_rows({(0.05, m): list(0.05 + 0.01 * rng.standard_normal(30)) for m in METHODS})
    with open(est_dir / "estimates-0.05.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (est_dir / "example-0.05.csv").write_text("noise,t,observed,truth,fitted\n0.0500,0.000000,1.0,1.0,1.0\n")

    def run(seed: int, tag: str) -> StepContext:
        ctx = StepContext(
            node="summarize",
            deps={"estimates": [est_dir / "estimates-0.05.csv"], "examples": [est_dir / "example-0.05.csv"]},
            outs={"table": tmp_path / f"bias-{tag}.csv", "examples": tmp_path / f"examples-{tag}.csv"},
            params={"summarize": {"bootstrap": 300, "confidence": 0.95}},
            seed=seed,
        )
        summarize(ctx)
        return ctx

    a, b, c = run(1, "a"), run(1, "b"), run(2, "c")
    assert a.outs["table"].read_bytes() == b.outs["table"].read_bytes()
    table_a, table_c = read_table(a.outs["table"]), read_table(c.outs["table"])
    assert [r["bias"] for r in table_a] == [r["bias"] for r in table_c]  # the estimate is not random
    assert [r["bias_lo"] for r in table_a] != [r["bias_lo"] for r in table_c]  # its interval is
    assert set(a.metrics) == {f"bias.{m}@0.05" for m in METHODS}


# --- deterministic tables and parameters -----------------------------------------------------


def test_format_float_spells_each_number_one_way():
    assert format_float(-0.0, 3) == "0.000"
    assert format_float(-1e-9, 4) == "0.0000"
    assert format_float(float("nan"), 2) == "nan"
    assert format_float(-1.25, 1) == "-1.2"  # round-half-even, as Python formats
    assert format_float(float("-inf"), 2) == "-inf"


def test_tables_round_trip_and_refuse_unformatted_floats(tmp_path):
    path = tmp_path / "t.csv"
    write_table(path, [Column("name"), Column("x", 3), Column("flag")], [("a,b", 1.23456, True)])
    assert path.read_bytes() == b'name,x,flag\n"a,b",1.235,1\n'
    assert read_table(path) == [{"name": "a,b", "x": "1.235", "flag": "1"}]
    with pytest.raises(TypeError, match="precision"):
        write_table(path, [Column("x")], [(0.5,)])
    with pytest.raises(ValueError, match="cells"):
        write_table(path, [Column("x", 1)], [(0.5, 1.0)])


def test_param_lookup_accepts_leaf_and_subtree_declarations():
    assert lookup({"fit.ar2_lag": 13}, "fit.ar2_lag") == 13
    assert lookup({"fit": {"ar2_lag": 13}}, "fit.ar2_lag") == 13
    assert lookup({"a.b": {"c": {"d": 1}}}, "a.b.c.d") == 1
    assert lookup({}, "fit.tol", default=None) is None
    with pytest.raises(KeyError, match="fit.tol"):
        lookup({"fit": {"ar2_lag": 13}}, "fit.tol")


# --- the PNG writer and the rasterizer -------------------------------------------------------


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == png.SIGNATURE
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, payload = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        chunks.append((kind, payload))
        at += 12 + length
    assert at == len(data)
    return chunks


def _decode_indexed(data: bytes) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Pixels and palette of an 8-bit indexed PNG whose rows all use filter 0."""
    chunks = _chunks(data)
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 3, 0, 0, 0)
    plte = dict(chunks)[b"PLTE"]
    palette = [tuple(plte[i : i + 3]) for i in range(0, len(plte), 3)]
    raw = zlib.decompress(b"".join(payload for kind, payload in chunks if kind == b"IDAT"))
    assert len(raw) == height * (width + 1)
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, width + 1)
    assert not rows[:, 0].any()
    return rows[:, 1:], palette


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3000), row_length=st.integers(0, 400))
def test_deflate_output_inflates_back_to_the_input(data, row_length):
    assert zlib.decompress(png.deflate(data, row_length)) == data


@settings(max_examples=25, deadline=None)
@given(runs=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 700)), max_size=12))
def test_deflate_handles_long_runs_and_repeated_rows(runs):
    data = b"".join(bytes([value]) * count for value, count in runs) * 2
    assert zlib.decompress(png.deflate(data, max(1, len(data) // 2))) == data


def test_png_encodes_indexed_and_rgb_images_exactly():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 3, size=(17, 23)).astype(np.uint8)
    pixels[5:9] = 1
    palette = [(255, 255, 255), (0, 0, 0), (200, 10, 10)]
    data = png.encode(pixels, palette)
    decoded, decoded_palette = _decode_indexed(data)
    np.testing.assert_array_equal(decoded, pixels)
    assert decoded_palette == palette
    assert png.encode(pixels, palette) == data
    rgb = rng.integers(0, 256, size=(4, 5, 3)).astype(np.uint8)
    ihdr, idat = _chunks(png.encode(rgb))[0][1], _chunks(png.encode(rgb))[1][1]
    assert struct.unpack(">IIBB", ihdr[:10]) == (5, 4, 8, 2)
    assert zlib.decompress(idat) == np.hstack([np.zeros((4, 1), np.uint8), rgb.reshape(4, 15)]).tobytes()
    with pytest.raises(ValueError, match="beyond the palette"):
        png.encode(pixels, palette[:2])
    with pytest.raises(ValueError, match="RGB"):
        png.encode(pixels)


@settings(max_examples=80, deadline=None)
@given(lo=st.floats(-1e4, 1e4), span=st.floats(1e-6, 1e4), count=st.integers(2, 8))
def test_nice_ticks_are_round_evenly_spaced_and_inside_the_range(lo, span, count):
    hi = lo + span
    ticks, decimals = nice_ticks(lo, hi, count)
    assert 1 <= len(ticks) <= 4 * count + 2
    tolerance = 1e-9 * max(abs(lo), abs(hi), span)
    assert all(lo - tolerance <= t <= hi + tolerance for t in ticks)
    steps = np.diff(ticks)
    if steps.size:
        assert np.allclose(steps, steps[0], rtol=1e-6)
        assert round(steps[0] * 10**decimals) >= 1  # the labels can tell neighbouring ticks apart


def test_canvas_draws_lines_markers_text_and_clips():
    canvas = Canvas(40, 30, {"white": (255, 255, 255), "ink": (0, 0, 0)}, background="white")
    canvas.line((2, 3), (30, 20), "ink")
    assert canvas.pixels[3, 2] == 1 and canvas.pixels[20, 30] == 1
    assert int(canvas.pixels.sum()) == 29  # one pixel per step along the major axis
    canvas.marker(39, 29, "circle", 3, "ink", clip=(0, 0, 40, 30))  # partly outside: clipped, no error
    canvas.text(1, 1, "Z1", "ink", scale=1)
    assert canvas.pixels[1:8, 1:12].any()
    with pytest.raises(ValueError, match="unknown colour"):
        canvas.line((0, 0), (1, 1), "red")
    axes = Axes(canvas, (5, 5, 35, 25), (0.0, 1.0), (0.0, 1.0))
    assert axes.px(0.0) == 5 and axes.px(1.0) == 34 and axes.py(0.0) == 24 and axes.py(1.0) == 5


def test_font_glyphs_are_five_by_seven_and_text_width_is_exact():
    for char in "0123456789ABCXYZ.-()ζσ?":
        assert font.glyph(char).shape == (7, 5)
    assert font.glyph("a").tolist() == font.glyph("A").tolist()
    assert font.render("AB-1", scale=3).shape == (21, font.text_width("AB-1", scale=3))


# --- the real sci.yaml, run by a stand-in for the engine -------------------------------------


PLACEHOLDER = re.compile(r"\{([A-Za-z_]+(?:\.[A-Za-z0-9_]+)*)\}")


def _param(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        node = node[part]
    return node


class _Runner:
    """Expands and runs the pipeline the way SPEC §2 describes, with test-sized overrides."""

    def __init__(self, workspace: Path, scratch: Path, seed: int, overrides: dict, noise_levels: list[float]):
        self.ws, self.scratch, self.seed = workspace, scratch, seed
        self.spec = _yaml(ROOT / "sci.yaml")
        self.params = _yaml(ROOT / "params.yaml")
        for dotted, value in overrides.items():
            head, _, leaf = dotted.rpartition(".")
            _param(self.params, head)[leaf] = value
        self.noise_levels = noise_levels

    def nodes(self):
        for name, step in self.spec["steps"].items():
            if "foreach" in step:
                for noise in self.noise_levels:  # the sweep is shortened for speed
                    yield f"{name}[noise={noise}]", step, {"noise": str(noise)}
            else:
                yield name, step, {}

    def render(self, template: str, item: dict, deps: dict, outs: dict, seed: int) -> str:
        def one(match: re.Match) -> str:
            head, _, rest = match.group(1).partition(".")
            if head == "item":
                return item[rest]
            if head == "params":
                return str(_param(self.params, rest))
            if head == "deps":
                return deps[rest]
            if head == "outs":
                return outs[rest]
            if head == "seed" and not rest:
                return str(seed)
            raise AssertionError(f"placeholder {match.group(0)} is not handled")

        return PLACEHOLDER.sub(one, template)

    def run(self, name: str, step: dict, item: dict) -> None:
        seed = zlib.crc32(f"{self.seed}:{name}".encode())
        box = self.scratch / re.sub(r"[^A-Za-z0-9]+", "_", name)
        box.mkdir(parents=True)
        deps, outs = {}, {}
        for dep_name, pattern in (step.get("deps") or {}).items():
            rendered = self.render(pattern, item, {}, {}, seed)
            matches = sorted(glob.glob(rendered, root_dir=self.ws))
            assert matches, f"{name}: dep {rendered} matched nothing"
            for rel in matches:
                (box / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.ws / rel, box / rel)
            deps[dep_name] = matches if any(c in rendered for c in "*?[") else rendered
        for out_name, path in {**step["outs"], **(step.get("metrics") or {})}.items():  # metrics files are outputs
            outs[out_name] = self.render(path, item, {}, {}, seed)
            (box / outs[out_name]).parent.mkdir(parents=True, exist_ok=True)
        if "cmd" in step:
            for pattern in step.get("code", []):
                for rel in sorted(glob.glob(pattern, root_dir=ROOT)):
                    (box / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(ROOT / rel, box / rel)
            command = self.render(step["cmd"], item, {k: str(v) for k, v in deps.items()}, outs, seed)
            env = {"PATH": f"{PYTHON_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONDONTWRITEBYTECODE": "1"}
            done = subprocess.run(["sh", "-c", command], cwd=box, env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"{name}: {command}\n{done.stderr}"
        else:
            module_name, _, function_name = step["fn"].partition(":")
            function = getattr(__import__(module_name, fromlist=[function_name]), function_name)
            ctx = StepContext(
                node=name,
                deps={k: [Path(p) for p in v] if isinstance(v, list) else Path(v) for k, v in deps.items()},
                outs={k: Path(v) for k, v in outs.items()},
                params={key: _param(self.params, key) for key in step.get("params", [])},
                seed=seed,
            )
            here = Path.cwd()
            os.chdir(box)  # relative paths only: the step sees nothing but its scratch directory
            try:
                function(ctx)
            finally:
                os.chdir(here)
        for rel in outs.values():  # only declared outputs are kept
            (self.ws / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(box / rel, self.ws / rel)

    def build(self) -> None:
        for name, step, item in self.nodes():  # declaration order is a topological order here
            if step.get("kind") == "dossier":
                continue
            self.run(name, step, item)


NOISE_LEVELS = [0.0, 0.05, 0.2]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Three builds of the real pipeline (fewer recordings and noise levels): seed 1, seed 1, seed 2."""
    out = {}
    for tag, seed in (("a", 1), ("b", 1), ("c", 2)):
        base = tmp_path_factory.mktemp(f"build-{tag}")
        runner = _Runner(base / "ws", base / "scratch", seed,
                         {"simulate.replicates": 30, "summarize.bootstrap": 300}, NOISE_LEVELS)
        runner.build()
        out[tag] = base / "ws"
    return out


def _outputs(workspace: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workspace)): p.read_bytes() for p in sorted(workspace.rglob("*")) if p.is_file()}


def test_pipeline_produces_every_declared_output(builds):
    names = set(_outputs(builds["a"]))
    for noise in NOISE_LEVELS:
        assert {f"data/traces-{noise}.npy", f"data/traces-{noise}.json",
                f"results/estimates-{noise}.csv", f"results/example-{noise}.csv"} <= names
    assert {"results/bias.csv", "results/examples.csv", "results/bias.png"} <= names


def test_pipeline_is_byte_identical_for_one_seed(builds):
    assert _outputs(builds["a"]) == _outputs(builds["b"])


def test_another_seed_changes_exactly_the_noisy_outputs(builds):
    a, c = _outputs(builds["a"]), _outputs(builds["c"])
    assert a.keys() == c.keys()
    differs = {name for name in a if a[name] != c[name]}
    assert "data/traces-0.0.npy" not in differs  # no noise, nothing random
    assert "results/estimates-0.0.csv" not in differs
    assert {"data/traces-0.05.npy", "data/traces-0.2.npy", "results/estimates-0.2.csv",
            "results/bias.csv", "results/bias.png"} <= differs


def test_pipeline_answers_the_question(builds):
    table = read_table(builds["a"] / "results/bias.csv")
    bias = {(float(r["noise"]), r["method"]): r for r in table}
    assert len(table) == len(NOISE_LEVELS) * len(METHODS)
    for method in METHODS:
        assert abs(float(bias[(0.0, method)]["bias"])) < 1e-3
    assert 0 < float(bias[(0.05, "ar2")]["bias"]) < float(bias[(0.2, "ar2")]["bias"])
    assert 0 > float(bias[(0.05, "logdec")]["bias"]) > float(bias[(0.2, "logdec")]["bias"])
    for noise in (0.05, 0.2):
        row = bias[(noise, "nls")]
        assert abs(float(row["bias"])) < 4 * float(row["sd"]) / math.sqrt(int(row["ok"]))
        assert float(bias[(noise, "ar2")]["bias_lo"]) > 0 > float(bias[(noise, "logdec")]["bias_hi"])


def test_pipeline_figure_is_a_valid_png_of_the_configured_size(builds):
    data = (builds["a"] / "results/bias.png").read_bytes()
    pixels, palette = _decode_indexed(data)
    params = _yaml(ROOT / "params.yaml")["figure"]
    assert pixels.shape == (params["height"], params["width"])
    assert int(pixels.max()) < len(palette)
    used = set(np.unique(pixels).tolist())
    assert len(used) >= 6  # background, ink, grid, data and the method colours all appear


def test_figure_script_fails_with_a_usage_error_on_an_empty_table(tmp_path):
    (tmp_path / "empty.csv").write_text("noise,method\n")
    done = subprocess.run(
        [sys.executable, "-m", "rules.figure", "--table", "empty.csv", "--examples", "empty.csv",
         "--example-noise", "0.1", "--out", "f.png"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True,
    )
    assert done.returncode == 2 and "cannot draw the figure" in done.stderr
    assert not (tmp_path / "f.png").exists()


# --- sci.yaml and params.yaml follow SPEC §2 --------------------------------------------------


def test_sci_yaml_has_the_spec_shape():
    spec = _yaml(ROOT / "sci.yaml")
    assert spec["version"] == 1
    experiment = spec["experiment"]
    assert {"title", "question", "authors", "license", "keywords"} <= set(experiment)
    assert all({"name", "orcid"} <= set(author) for author in experiment["authors"])
    assert spec["defaults"]["determinism"] == "strict" and isinstance(spec["defaults"]["seed"], int)
    assert spec["env"] == {"files": ["uv.lock"]}
    assert spec["environments"] == {"project": {"python": "."}}  # SPEC §10: the bundled one declares itself
    assert spec["defaults"]["environment"] == "project"
    assert spec["params"] == "params.yaml"
    for name, step in spec["steps"].items():
        assert sum(key in step for key in ("cmd", "fn", "kind")) == 1, name


def test_every_parameter_a_step_names_exists_and_is_declared():
    spec, params = _yaml(ROOT / "sci.yaml"), _yaml(ROOT / "params.yaml")
    for name, step in spec["steps"].items():
        declared = step.get("params", [])
        for key in declared:
            _param(params, key)  # raises KeyError when missing
        for match in PLACEHOLDER.finditer(step.get("cmd", "")):
            head, _, rest = match.group(1).partition(".")
            assert head in {"item", "params", "deps", "outs", "seed"}, (name, match.group(0))
            if head == "params":
                _param(params, rest)
                assert any(rest == key or rest.startswith(key + ".") for key in declared), (name, rest)
            if head in {"deps", "outs"}:
                named = {**step[head], **(step.get("metrics") or {})} if head == "outs" else step[head]
                assert rest in named, (name, match.group(0))
            if head == "item":
                assert rest in step["foreach"], (name, match.group(0))


def test_steps_code_exists_and_functions_are_importable():
    spec = _yaml(ROOT / "sci.yaml")
    for name, step in spec["steps"].items():
        for pattern in step.get("code", []):
            assert glob.glob(pattern, root_dir=ROOT), (name, pattern)
        if "fn" in step:
            module_name, _, function_name = step["fn"].partition(":")
            assert callable(getattr(__import__(module_name, fromlist=[function_name]), function_name))


def test_outputs_are_disjoint_and_evidence_comes_from_the_pipeline():
    spec = _yaml(ROOT / "sci.yaml")
    steps = spec["steps"]
    assert steps["fit"]["foreach"] == steps["simulate"]["foreach"]
    outs = [path for step in steps.values() if "kind" not in step for path in step["outs"].values()]
    assert len(outs) == len(set(outs))
    assert all(path.split("/")[0] in {"data", "results"} for path in outs)
    dossier = steps["dossier"]
    assert dossier["kind"] == "dossier" and dossier["outs"] == ["dossier/"]
    assert set(dossier["steps"]) <= set(steps) and "dossier" not in dossier["steps"]
    assert set(dossier["evidence"]) <= set(outs)


def _local_imports(rel: str) -> set[str]:
    """The workspace files `rel` needs: itself, its packages' __init__.py, and what it imports
    from `rules`, transitively."""
    needed, todo = set(), [rel]
    while todo:
        current = todo.pop()
        if current in needed:
            continue
        needed.add(current)
        parts = Path(current).parts[:-1]
        for depth in range(1, len(parts) + 1):  # importing rules.common.x runs rules/__init__.py too
            todo.append(str(Path(*parts[:depth], "__init__.py")))
        for node in ast.walk(ast.parse((ROOT / current).read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                if name.split(".")[0] != "rules":
                    continue
                path = Path(*name.split("."))
                for candidate in (path.with_suffix(".py"), path / "__init__.py"):
                    if (ROOT / candidate).is_file():
                        todo.append(str(candidate))
    return needed


def test_cmd_steps_declare_exactly_the_code_they_import():
    """Editing a file re-runs exactly the nodes whose code includes it (SPEC §8.3): so a cmd step
    lists every workspace module its script imports (or the sandbox would miss it) and nothing
    more (or unrelated edits would re-run it)."""
    for name, step in _yaml(ROOT / "sci.yaml")["steps"].items():
        if "cmd" not in step:
            continue
        module = re.search(r"python -m (rules\.[a-z_]+)", step["cmd"]).group(1)
        declared = {rel for pattern in step["code"] for rel in glob.glob(pattern, root_dir=ROOT)}
        assert declared == _local_imports(module.replace(".", "/") + ".py"), name


def test_simulate_metrics_measure_the_noise_drawn(tmp_path):
    """The metrics file `simulate` writes (sci.yaml `metrics:`): the measured noise, and an
    SNR that a noiseless recording leaves out rather than writing infinity."""
    from rules.simulate import main as simulate_main
    from sci.records.metrics import read_file

    args = ["--n", "200", "--duration", "4", "--omega", "6", "--zeta", "0.05", "--replicates", "50", "--seed", "1"]
    for noise in ("0.0", "0.1"):
        out = tmp_path / noise
        assert simulate_main(["--noise", noise, *args, "--out", f"{out}.npy", "--describe", f"{out}.json",
                              "--metrics", f"{out}-m.json"]) == 0
    quiet, noisy = read_file(str(tmp_path / "0.0-m.json")), read_file(str(tmp_path / "0.1-m.json"))
    assert quiet == {"noise.measured": 0.0}
    assert abs(noisy["noise.measured"] - 0.1) < 0.005 and 0 < noisy["snr_db"] < 20
