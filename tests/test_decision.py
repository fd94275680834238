"""The one rebuild decision (build/decision.py): status, build -n and build agree, the
shortcuts answer as the full path does, and SCI_SHORTCUTS=verify catches one that does not.

    withenv ──▶ down            (withenv: `env: [STEP_FLAG]`)
"""

from __future__ import annotations

import json

import pytest

from conftest import Sci

PIPELINE = {
    "sci.yaml": """
        version: 1
        steps:
          withenv:
            cmd: printf '%s\\n' "$STEP_FLAG" > {outs}
            env: [STEP_FLAG]
            outs: [out.txt]
          down:
            cmd: (cat {deps}; echo down) > {outs}
            deps: [out.txt]
            outs: [down.txt]
    """,
}


def with_env(sci: Sci, **values: str) -> Sci:
    return Sci(sci.root, {**{k: v for k, v in sci.env.items() if k not in values}, **values})


def status_rows(sci: Sci, *args: str) -> dict[str, dict]:
    return {r["node"]: r for r in json.loads(sci("status", "--json", *args).stdout)["nodes"]}


def dry_rows(sci: Sci) -> dict[str, dict]:
    return {r["node"]: r for r in json.loads(sci("build", "-n", "--json").stdout)["nodes"]}


def drop_blob(root, output: str) -> None:
    """Remove the store's copy of a workspace output (a user's rm, a disk error)."""
    from sci.store.hashing import digest_file

    digest = digest_file(root / output)
    blob = root / "cas" / "blobs" / digest[:2] / digest
    blob.chmod(0o644)
    blob.unlink()


def test_a_changed_env_value_reruns_its_node_on_every_path(ws):
    """SPEC §2: the values of `env` variables enter the key — the no-op shortcut included."""
    sci = with_env(ws(PIPELINE), STEP_FLAG="one")
    assert sci.build()["executed"] == ["down", "withenv"]
    assert sci.build()["cached"] == ["down", "withenv"]  # the no-op record is written and used
    two = with_env(sci, STEP_FLAG="two")
    rows = status_rows(two)
    assert rows["withenv"]["state"] == "would run" and rows["withenv"]["reasons"] == ["definition changed: env"]
    assert rows["down"]["state"] == "waits"
    assert dry_rows(two)["withenv"]["state"] == "would run"
    assert two.build()["executed"] == ["down", "withenv"]
    assert (ws.root / "out.txt").read_text() == "two\n" and (ws.root / "down.txt").read_text() == "two\ndown\n"
    assert two.build()["cached"] == ["down", "withenv"]
    back = with_env(sci, STEP_FLAG="one")  # undoing it: the old results come back from the store
    assert back.build()["cached"] == ["down", "withenv"]
    assert (ws.root / "out.txt").read_text() == "one\n"


def test_lost_store_objects_are_decided_alike_and_stored_again(ws):
    """Blobs dropped from the store while the workspace outputs are intact: status, build -n and
    build all say up to date, and the build puts the objects back from the workspace."""
    sci = with_env(ws(PIPELINE), STEP_FLAG="x")
    sci.build()
    sci.build()  # a no-op: the record the next build checks
    for name in ("out.txt", "down.txt"):
        drop_blob(ws.root, name)
    for rows in (status_rows(sci), dry_rows(sci)):
        assert {n: r["state"] for n, r in rows.items()} == {"withenv": "up to date", "down": "up to date"}
        assert "stored again from the workspace" in rows["down"]["reasons"][0]
    assert sci.build()["cached"] == ["down", "withenv"]
    assert {n: r["reasons"] for n, r in status_rows(sci).items()} == {"withenv": [], "down": []}
    assert sci("fsck").returncode == 0
    (ws.root / "out.txt").unlink()  # the restored object serves a restore
    assert status_rows(sci)["withenv"]["state"] == "restore"
    assert sci.build()["cached"] == ["down", "withenv"] and (ws.root / "out.txt").read_text() == "x\n"


def test_an_output_lost_from_both_store_and_workspace_runs_again(ws):
    sci = with_env(ws(PIPELINE), STEP_FLAG="x")
    sci.build()
    drop_blob(ws.root, "down.txt")
    (ws.root / "down.txt").unlink()
    rows = status_rows(sci)
    assert rows["withenv"]["state"] == "up to date"
    assert rows["down"]["state"] == "would run" and "stored output lost: down.txt" in rows["down"]["reasons"][0]
    assert sci.build()["executed"] == ["down"]


def test_a_never_built_chain_says_never_built_down_the_chain(ws):
    sci = with_env(ws(PIPELINE), STEP_FLAG="x")
    rows = status_rows(sci)
    assert rows["withenv"]["reasons"] == ["never built"]
    assert rows["down"]["state"] == "waits" and rows["down"]["reasons"] == ["never built"]
    assert rows["down"]["waits_on"] == ["withenv"]
    text = sci("status").stdout
    assert "waits       down: never built (on withenv)" in text


def test_a_fast_node_is_labelled_in_the_manifest(ws):
    sci = ws({"sci.yaml": """
        version: 1
        steps:
          quick:
            cmd: echo 1 > {outs}
            determinism: fast
            outs: [q.txt]
          exact:
            cmd: echo 2 > {outs}
            outs: [e.txt]
    """})
    for _ in range(2):  # executed, then cached through the no-op record
        run = sci.build()["run_id"]
        plan = {p["node"]: p for p in json.loads((ws.root / "runs" / run / "manifest.json").read_text())["plan"]}
        assert plan["quick"]["determinism"] == "fast" and "determinism" not in plan["exact"]


@pytest.mark.parametrize("mode", ["off", "verify"])
def test_shortcut_modes_build_by_the_full_path(ws, mode):
    sci = with_env(ws(PIPELINE), STEP_FLAG="x")
    sci.build()
    checked = with_env(sci, SCI_SHORTCUTS=mode)
    out = checked.build()
    assert out["cached"] == ["down", "withenv"]
    log = (ws.root / "runs" / out["run_id"] / "logs.jsonl").read_text()
    assert '"event":"noop"' not in log.replace(" ", "")
    assert checked.build()["cached"] == ["down", "withenv"]


def test_an_unknown_shortcut_mode_is_refused(ws):
    sci = with_env(ws(PIPELINE), STEP_FLAG="x", SCI_SHORTCUTS="sometimes")
    proc = sci("build", check=2)
    assert "SCI_SHORTCUTS='sometimes'" in proc.stderr and "Traceback" not in proc.stderr


def test_verify_fails_loudly_when_a_shortcut_lies(ws):
    """A no-op record whose plan says another key (well-formed, so it is believed): `on` serves
    it, `verify` computes both answers and exits 3 naming the node and both keys."""
    from sci.build import noop

    sci = with_env(ws(PIPELINE), STEP_FLAG="x")
    sci.build()
    sci.build()
    state = ws.root / ".sci"
    record = noop.read_record(state)
    assert record is not None
    header, doc = record.header, record.doc
    true_key = doc["manifest"]["plan"][0]["key"]
    forged = "f" * 64
    doc["manifest"]["plan"][0] = dict(doc["manifest"]["plan"][0], key=forged)
    doc.pop("plan_json", None)
    noop._write(state, header, doc)
    proc = with_env(sci, SCI_SHORTCUTS="verify")("build", check=3)
    assert "disagree" in proc.stderr and forged[:12] in proc.stderr and true_key[:12] in proc.stderr
    assert "Traceback" not in proc.stderr
