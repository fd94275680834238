"""Secrets (SPEC §7) are never written anywhere sci writes, nor shown: a secret-named variable's
value, a secret-looking `--set` value, a signing key. Each test plants a secret, runs the real
CLI, then searches every byte sci wrote (runs/, .sci/, the store) and printed for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import no_traceback
from hypothesis import given
from hypothesis import strategies as st

from sci import redact

TOKEN = "tok-3f9a1c7e5b2d"  # what a CI secret looks like
PASSWORD = "hunter2-correct-horse"


def everything_written(root: Path) -> bytes:
    """Every file under the workspace, concatenated (the store included)."""
    return b"\n".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())


def leaks(root: Path, secret: str, *texts: str) -> list[str]:
    found = [t[:200] for t in texts if secret in t]
    data = everything_written(root)
    for form in {secret, json.dumps(secret)[1:-1]}:
        if form.encode() in data:
            found.append(f"{form!r} in a file under {root}")
    return found


def test_a_step_printing_its_secret_env_leaks_it_nowhere(ws):
    sci = ws({"sci.yaml": """
        version: 1
        steps:
          talk:
            cmd: echo "my token is $API_TOKEN"; echo "ok" > {outs}
            env: [API_TOKEN]
            outs: [talk.txt]
          fail:
            cmd: 'echo "out $API_TOKEN"; echo "debug, token=$API_TOKEN" >&2; exit 3'
            env: [API_TOKEN]
            outs: [never.txt]
        """}, env={"API_TOKEN": TOKEN})
    proc = sci("build", "--keep-going", check=1)
    assert "FAILED    fail" in proc.stderr and "token=<redacted>" in proc.stderr, proc.stderr
    assert leaks(sci.root, TOKEN, proc.stdout, proc.stderr) == []
    # what the stored logs now say instead (sci log shows them): the step's words, the value masked
    logs = everything_written(sci.root / "cas")
    assert b"my token is <redacted>" in logs
    events = [json.loads(line) for run in (sci.root / "runs").iterdir() for line in
              (run / "logs.jsonl").read_text().splitlines()]
    failed = [e for e in events if e["event"] == "node_failed"]
    assert failed and "token=<redacted>" in failed[0]["data"]["stderr_tail"]


def test_a_secret_in_scis_environment_is_masked_even_when_not_declared(ws):
    """The step echoes a value it was not given through env: sci still knows it is a secret."""
    sci = ws({"sci.yaml": f"""
        version: 1
        steps:
          oops:
            cmd: echo "{PASSWORD}" >&2; exit 1
            outs: [x.txt]
        """}, env={"DB_PASSWORD": PASSWORD})
    proc = sci("build", check=1)
    assert "<redacted>" in proc.stderr
    for run in (sci.root / "runs").iterdir():
        assert PASSWORD not in (run / "logs.jsonl").read_text()
    assert PASSWORD not in proc.stderr


@pytest.mark.parametrize("form", ["one argument", "two arguments"])
def test_a_secret_set_value_is_redacted_in_the_manifest(ws, form):
    sci = ws({"sci.yaml": """
        version: 1
        params: {db: {password: placeholder, host: localhost}}
        steps:
          show:
            cmd: echo ok > {outs}
            outs: [ok.txt]
        """})
    args = [f"--set=db.password={PASSWORD}"] if form == "one argument" else ["--set", f"db.password={PASSWORD}"]
    proc = sci("build", *args, "--set=db.host=example.org")
    (run,) = list((sci.root / "runs").iterdir())
    manifest = json.loads((run / "manifest.json").read_text())
    assert "db.password=<redacted>" in " ".join(manifest["command"])
    assert "--set=db.host=example.org" in manifest["command"]  # only secrets are hidden
    assert PASSWORD not in (run / "manifest.json").read_text() + (run / "logs.jsonl").read_text()
    assert PASSWORD not in proc.stderr + proc.stdout


def test_a_failing_step_echoing_a_secret_set_value_is_masked(ws):
    sci = ws({"sci.yaml": """
        version: 1
        params: {api: {secret: placeholder}}
        steps:
          leak:
            cmd: echo "secret={params.api.secret}" >&2; exit 1
            outs: [x.txt]
        """})
    proc = sci("build", f"--set=api.secret={PASSWORD}", check=1)
    assert "secret=<redacted>" in proc.stderr and PASSWORD not in proc.stderr
    for run in (sci.root / "runs").iterdir():
        assert PASSWORD not in (run / "logs.jsonl").read_text() + (run / "manifest.json").read_text()


@pytest.mark.parametrize("value", ["/nowhere/secret-signer-key-path.pem", "not-a-pem-but-a-secret-text",
                                   "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n"])
def test_the_signing_key_is_never_echoed(ws, value):
    sci = ws({"sci.yaml": "version: 1\nsteps: {}\n", "d/dossier.json": "{}"}, env={"SCI_SIGNING_KEY": value})
    proc = sci("sign", "d", check=2)
    assert len(proc.stderr.strip().splitlines()) == 1 and no_traceback(proc.stderr)
    assert "SCI_SIGNING_KEY" in proc.stderr
    for line in value.splitlines():
        if len(line) >= redact.MIN_LENGTH and not line.startswith("-----"):
            assert line not in proc.stderr


# -- the masking itself ----------------------------------------------------------------------------
@given(st.text(min_size=redact.MIN_LENGTH, max_size=20).filter(lambda s: s.strip() == s and "\x00" not in s),
       st.text(max_size=30), st.text(max_size=30))
def test_a_remembered_value_never_survives_redaction(secret, before, after):
    redact.forget_all()
    try:
        redact.remember(secret)
        text = before + secret + after + secret
        assert secret not in redact.redact(text)
        assert secret.encode() not in redact.redact_bytes(text.encode())
        doc = json.dumps({"tail": text}, ensure_ascii=False)  # a logs.jsonl line holding it
        assert json.dumps(secret, ensure_ascii=False)[1:-1] not in redact.redact(doc)
    finally:
        redact.forget_all()


def test_short_values_and_plain_names_are_left_alone():
    redact.forget_all()
    redact.remember_overrides(["db.password=abc", "fit.degree=4", "api_key=longer-secret"])
    assert redact.redact("abc 4 longer-secret") == "abc 4 <redacted>"
    assert redact.redact_argv(["build", "--set", "api_key=x", "--set=TOKEN=y", "--set=fit.degree=4", "--json"]) == \
        ["build", "--set", "api_key=<redacted>", "--set=TOKEN=<redacted>", "--set=fit.degree=4", "--json"]
    redact.forget_all()


_params = st.recursive(
    st.one_of(st.integers(), st.text(max_size=4)),
    lambda inner: st.dictionaries(
        st.text(alphabet="aekKyYtoTOnNsSpPwWdD_.ß", max_size=9), inner, max_size=4),
    max_leaves=12)


@given(_params)
def test_params_are_redacted_by_their_dotted_key(params):
    """A parameter whose dotted key (`db.api_key`) looks like a secret is hidden, and nothing
    else: the rule `--set KEY=VALUE` follows, applied to every key path of the mapping."""
    def by_path(value, prefix=""):  # the rule, written out on whole dotted paths
        if not isinstance(value, dict):
            return value
        return {k: redact.MASK if redact.is_secret_name(prefix + k) else by_path(v, f"{prefix}{k}.")
                for k, v in value.items()}

    assert redact.redact_params(params) == by_path(params)


@given(_params)
def test_parameters_said_to_hide_nothing_hide_nothing(params):
    """The manifest writes the planned parameters' JSON as is only when redaction would change
    nothing: hides_nothing_in never says so of parameters with a secret-looking key."""
    from sci import canonical

    if redact.hides_nothing_in(canonical.dumps(params)):
        assert redact.redact_params(params) == params
