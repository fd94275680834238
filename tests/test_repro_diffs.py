"""The drill-down of a repro-check mismatch (SPEC §7): sizes, the first differing byte and its
line, a short bounded diff for text, a hex window for binary data, added/removed/changed
entries for directories, and diffoscope's report where it is installed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from sci.evidence import diffs
from sci.store.cas import Store

# A header line with a clock in it, in the middle of an otherwise stable text file: the
# case of a `##bcftools_callCommand=…; Date=` header.
TEXT_STEP = {
    "sci.yaml": """
        version: 1
        steps:
          calls:
            cmd: >-
              python -c "import time; lines = ['##format=1'] * 40 + ['##date=' + str(time.time_ns())] +
              ['chr1\\t%d\\tA\\tT' % i for i in range(2000)]; print('\\n'.join(lines))" > {outs}
            outs: [calls.vcf]
        """,
}


def _report(root: Path) -> dict:
    runs = sorted(p for p in (root / "runs").iterdir() if (p / "repro.json").exists())
    return json.loads((runs[-1] / "repro.json").read_text())


def test_text_mismatch_names_byte_line_column_and_shows_a_short_diff(ws):
    sci = ws(TEXT_STEP)
    sci.build()
    proc = sci("repro-check", "calls", check=1)
    f = _report(ws.root)["nodes"][0]["files"][0]
    assert f["path"] == "calls.vcf" and f["kind"] == "text"
    start = 40 * len("##format=1\n")  # where line 41 begins
    assert start + len("##date=") <= f["first_difference"] < start + len("##date=") + 19
    assert f["column"] == f["first_difference"] - start + 1
    assert f["line"] == 41 and f["recorded_line"].startswith("##date=") and f["rebuilt_line"].startswith("##date=")
    assert f["recorded_size"] > 20_000
    diff = f["diff"]
    assert diff[0] == "--- recorded" and diff[1] == "+++ rebuilt"
    assert any(line.startswith("-##date=") for line in diff) and any(line.startswith("+##date=") for line in diff)
    assert len(diff) <= diffs.DIFF_LINES + 1  # bounded: the 2,000 equal lines never show
    assert "(line 41, column" in proc.stdout and "recorded: ##date=" in proc.stdout
    assert "| -##date=" in proc.stdout


def test_binary_and_directory_mismatches(ws):
    sci = ws({"sci.yaml": """
        version: 1
        steps:
          blob:
            cmd: >-
              python -c "import os, time; open('{outs}', 'wb').write(bytes(range(256)) * 4 + time.time_ns().to_bytes(8, 'little'))"
            outs: [blob.bin]
          tree:
            cmd: >-
              mkdir -p {outs} && echo same > {outs}/same.txt && python -c "import time; print(time.time_ns())" > {outs}/stamp.txt
              && touch {outs}/only-$(python -c "import time; print(time.time_ns())").txt
            outs: [tree/]
        """})
    sci.build()
    sci("repro-check", "blob", check=1)
    f = _report(ws.root)["nodes"][0]["files"][0]
    assert f["kind"] == "binary" and f["first_difference"] >= 1024
    assert f["window_start"] == f["first_difference"] - diffs.HEX_WINDOW
    assert len(f["recorded_bytes"].split()) == len(f["rebuilt_bytes"].split()) > diffs.HEX_WINDOW
    proc = sci("repro-check", "tree", check=1)
    d = _report(ws.root)["nodes"][0]["files"][0]
    assert d["kind"] == "directory" and d["path"] == "tree"
    assert d["counts"] == {"added": 1, "removed": 1, "changed": 1, "mode_changed": 0}
    assert d["added"][0].startswith("only-") and d["removed"][0].startswith("only-")
    assert [c["path"] for c in d["changed"]] == ["tree/stamp.txt"]
    assert "only in the rebuild" in proc.stdout and "only in the record" in proc.stdout
    assert "tree/stamp.txt" in proc.stdout


@pytest.mark.skipif(shutil.which("diffoscope") is None,
                    reason="diffoscope is not installed (.ci/setup installs Debian's diffoscope-minimal)")
def test_diffoscope_report_is_stored_under_the_run(ws):
    sci = ws(TEXT_STEP)
    sci.build()
    proc = sci("repro-check", "calls", "--diffoscope", check=1)
    rep = _report(ws.root)
    f = rep["nodes"][0]["files"][0]
    assert f["diffoscope"].startswith(f"runs/{rep['run_id']}/diffoscope/")
    text = (ws.root / f["diffoscope"]).read_text()
    assert "##date=" in text
    assert "diffoscope report:" in proc.stdout
    assert not (ws.root / "runs" / rep["run_id"] / "diffoscope" / ".inputs").exists()


def test_diffoscope_missing_is_said_not_failed(ws, tmp_path):
    sci = ws(TEXT_STEP)
    sci.build()
    empty = tmp_path / "bin"
    empty.mkdir()
    for tool in ("python", "python3", "cat", "sh"):
        found = shutil.which(tool)
        if found:
            (empty / tool).symlink_to(found)
    sci.env["PATH"] = str(empty)
    proc = sci("repro-check", "calls", "--diffoscope", check=1)
    assert "diffoscope is not installed" in proc.stdout
    assert "diffoscope is not installed" in _report(ws.root)["diffoscope"]


# -- the comparison itself, on arbitrary bytes --------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(common=st.binary(max_size=3000), a=st.binary(min_size=0, max_size=50), b=st.binary(min_size=0, max_size=50))
def test_first_difference_is_the_first_differing_byte(tmp_path_factory, common, a, b):
    d = tmp_path_factory.mktemp("fd")
    pa, pb = d / "a", d / "b"
    pa.write_bytes(common + a)
    pb.write_bytes(common + b)
    got = diffs.first_difference(pa, pb)
    x, y = common + a, common + b
    if x == y:
        assert got is None
    else:
        want = next((i for i in range(min(len(x), len(y))) if x[i] != y[i]), min(len(x), len(y)))
        assert got == want


def test_first_difference_across_chunks(tmp_path):
    a = bytes(diffs.CHUNK * 3)
    b = bytearray(a)
    b[diffs.CHUNK * 2 + 7] = 1
    (tmp_path / "a").write_bytes(a)
    (tmp_path / "b").write_bytes(bytes(b))
    assert diffs.first_difference(tmp_path / "a", tmp_path / "b") == diffs.CHUNK * 2 + 7


def test_line_of_a_difference_in_a_large_text_file(tmp_path):
    store_a, store_b = Store(tmp_path / "a"), Store(tmp_path / "b")
    lines = [f"line {i} é" for i in range(200_000)]  # ~2.6 MB: past TEXT_LIMIT, so no unified diff
    old = "\n".join(lines).encode()
    lines[150_000] = "line 150000 changed"
    new = "\n".join(lines).encode()
    da, db = store_a.put_bytes(old), store_b.put_bytes(new)
    f = diffs.describe_file("big.txt", store_a, da, store_b, db)
    assert f["kind"] == "text" and f["line"] == 150_001 and f["column"] == len("line 150000 ") + 1
    assert f["recorded_line"] == "line 150000 é" and f["rebuilt_line"] == "line 150000 changed"
    assert "diff" not in f
