"""Golden keys: literal BLAKE3 digests for fixed node definitions, so a key-format change is
always deliberate.

If one of these fails, the meaning of a cache key changed: a result stored by an earlier sci
would be served for a different computation, or never found again. Either undo the change, or
make it deliberately: bump `sci.KEY_FORMAT` (src/sci/__init__.py) and re-pin every digest here
in the same commit, saying why in its message.

Two layers are pinned:
- `keys.key_of` on literal component documents: the canonical encoding, the `sci.key` tag and
  BLAKE3;
- a real workspace built through the CLI: how sci.yaml, files, params, seeds and `env` values
  become components. The environment fingerprint (Python version, platform, packages) differs
  between machines, so it is replaced by a fixed text before the key is recomputed, as is a
  dossier's `inputs` (they hold sci's own dossier code digest and its indexed nodes' keys); that
  the recorded key is `key_of` of the recorded components is checked as recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sci import KEY_FORMAT, canonical
from sci.build import keys
from sci.store.cas import Store

D1 = "2f127cc0d22915102b3a6a4e9bec4df4fa2fa82d42df8921fdf6bb828e8fa22f"  # BLAKE3 of b"a,1\n"
D2 = "5851e58474ea5276a051e689d80eb272f607e083f59d2e54b6365fb09481e83e"  # BLAKE3 of b"b,2\n"
ENV = "0" * 64


def doc(definition: dict, **rest) -> dict:
    base = {"cmd": None, "determinism": "strict", "env": {}, "evidence": None, "fn": None, "kind": "cmd",
            "outs": {}, "sandbox": True, "threads": 1}
    out = {"format": 1, "definition": {**base, **definition}, "deps": {}, "code": {}, "params": {},
           "environment": ENV, "seed": 1}
    out.update(rest)
    return out


LITERAL = {
    "cmd": (doc({"cmd": "cat data/one.csv > all.csv", "outs": {"all.csv": "all.csv"}},
                deps={"data/one.csv": D1}),
            "ef5f7fe08621c49ae3f5ac2ef9f6e4fc8ceb7ebba821420a5d1d15be50ecadf5"),
    "fn": (doc({"fn": "rules.fit:fit", "kind": "fn", "outs": {"table": "fit.txt"}},
               code={"rules/fit.py": D1, "rules/helpers.py": D2}),
           "244e7744344a961d910c5956d6c0e44a7847ca1258a352c5986957171538c83e"),
    "foreach item": (doc({"cmd": "echo 2 3 > sweep/2.txt", "outs": {"t": "sweep/2.txt"}}, params={"n": 3},
                         seed=2103763267),
                     "e103c96f844a38b94a15bade7fcb09c653f5d0e37416415c3706016b1431ed62"),
    "params subtree": (doc({"fn": "rules.fit:fit", "kind": "fn", "outs": {"table": "fit.txt"}},
                           params={"fit": {"grid": [1, 2, 4], "tol": 1e-10, "method": "lm", "on": True, "x": None}}),
                       "6ebca94619f5c7566eac8ebf7d57e3823117efce49eb2d5162169fff1a4d71b8"),
    "env values": (doc({"cmd": "echo $FLAG > flag.txt", "env": {"FLAG": "on", "SECRET_TOKEN": "<set>", "UNSET": None},
                        "outs": {"flag.txt": "flag.txt"}}),
                   "10b7f8cdab2bc1bdf51c639594e8c057822f9547460c76933d8bda9a12a8fabd"),
    "glob dep": (doc({"cmd": "cat data/one.csv data/two.csv > all.csv", "outs": {"all.csv": "all.csv"}},
                     deps={"data/one.csv": D1, "data/two.csv": D2}),
                 "456fc0ed38ab26b4a75096430c21db33a463257d87b80eb369d214576d28aa9a"),
    "directory output, fast, 4 threads": (doc({"cmd": "mkdir -p tree", "outs": {"tree": "tree"}, "determinism": "fast",
                                               "sandbox": False, "threads": 4}),
                                          "cd4a337f93bacc1aa7522621e185794c6821c53f1ecabe7fb6661f803263aeb0"),
    "dossier": (doc({"fn": "sci.evidence.dossier:build_step", "kind": "dossier", "evidence": ["fit.txt"],
                     "outs": {"dossier": "dossier"}}, deps={"fit.txt": D1},
                    inputs={"dossier_input": D2, "implementation": D1}),
                "a966dbeb705e4b2a4854846cdaa7a75dfb844cb656d36243f522559b9687b0c3"),
    "unicode and floats": (doc({"cmd": "echo ü > ä.txt", "outs": {"ä.txt": "ä.txt"}},
                               params={"x": 0.1, "y": 1e300, "z": -0.0, "big": 2 ** 70}, seed=2 ** 32 - 1),
                           "ac09ed389822eba7b06438a79fa4c6d6e1c14a00d806fd0e3bf41d333a19ed3e"),
}


@pytest.mark.parametrize("name", list(LITERAL))
def test_key_of_literal_components(name):
    comp, golden = LITERAL[name]
    assert keys.key_of(comp) == golden, f"{name}: the key of\n{canonical.dumps_text(comp)}\nchanged (see the module docstring)"


def test_the_pre_image_is_these_bytes():
    """The encoding spelled out: a tagged document, keys sorted, no spaces, UTF-8 unescaped."""
    from blake3 import blake3

    comp = LITERAL["cmd"][0]
    pre_image = (
        '{"components":{"code":{},"definition":{"cmd":"cat data/one.csv > all.csv","determinism":"strict",'
        '"env":{},"evidence":null,"fn":null,"kind":"cmd","outs":{"all.csv":"all.csv"},"sandbox":true,'
        f'"threads":1}},"deps":{{"data/one.csv":"{D1}"}},"environment":"{ENV}","format":1,"params":{{}},'
        '"seed":1},"type":"sci.key"}'
    ).encode()
    assert canonical.dumps({"type": keys.KEY_TAG, "components": comp}) == pre_image
    assert blake3(pre_image).hexdigest() == keys.key_of(comp) == LITERAL["cmd"][1]


def test_key_format_is_the_pinned_one():
    # The digests above were pinned under this format; bumping it re-pins them all.
    assert KEY_FORMAT == 1
    assert keys.KEY_TAG == "sci.key"


# --- end to end: sci.yaml → components → key ------------------------------------------------

WORKSPACE = {
    "sci.yaml": """
        version: 1
        experiment: {title: Golden, question: Are keys stable?, authors: [{name: A B}], license: MIT}
        defaults: {seed: 7}
        params: params.yaml
        steps:
          cat:
            cmd: cat {deps} > {outs}
            deps: ["data/*.csv"]
            outs: [all.csv]
          sweep:
            foreach: {k: [1, 2]}
            cmd: echo {item.k} {params.n} > {outs.t}
            params: [n]
            outs: {t: "sweep/{item.k}.txt"}
          fit:
            fn: rules.fit:fit
            deps: {table: all.csv}
            params: [fit]
            outs: {table: fit.txt}
          flagged:
            cmd: echo $GOLDEN_FLAG > {outs}
            env: [GOLDEN_FLAG]
            outs: [flag.txt]
          tree:
            cmd: mkdir -p {outs} && cp {deps} {outs}/
            deps: [all.csv, flag.txt]
            outs: [tree/]
            resources: {cpu: 2}
          use_tree:
            cmd: ls {deps} > {outs}
            deps: [tree]
            outs: [listing.txt]
            determinism: fast
            sandbox: false
          dossier:
            kind: dossier
            steps: [cat, fit]
            evidence: [fit.txt]
            outs: [dossier/]
        """,
    "params.yaml": """
        fit: {tol: 1.0e-10, grid: [1, 2, 4], method: lm}
        n: 3
        """,
    "data/one.csv": "a,1\n",
    "data/two.csv": "b,2\n",
    "rules/__init__.py": "",
    "rules/helpers.py": "x = 1\n",
    "rules/fit.py": """
        from rules import helpers


        def fit(ctx):
            ctx.outs["table"].write_text(str(sorted(ctx.params["fit"].items())) + "\\n")
        """,
}

# (sweep[k=2]'s key is LITERAL["foreach item"]'s: the same document, reached from sci.yaml)
GOLDEN = {
    "cat": "8f580099c340c9ccfb19fedb3d163c482962d418906a7e56bd4009a8c1464115",
    "sweep[k=1]": "3dcfe5ac40790c44ca4287411d9d8d39e8c62db0369c83588f625f87e529a34a",
    "sweep[k=2]": "e103c96f844a38b94a15bade7fcb09c653f5d0e37416415c3706016b1431ed62",
    "fit": "7fd3cf71af0249401c812a9743f310d8c8a61cdfa827644a91516805e411f18e",
    "flagged": "5882a364b903e54f8698d61a5a7c9054ea4f94544e12e152c99a8e51d0195503",
    "tree": "e538dfd519b00d3e5790c3c9ce8b0c2b2666f321582ae82eb273a76aa6d8fbf0",
    "use_tree": "a12a22f3d95fca6a9be5bebc27ba50ae35a92eb518f44c1348b3fb8f06dc6c24",
    "dossier": "24441c94a68a3dd3fd9cc8cf624ccbdfdcd11139148352e30145240b9c5ecd9e",
}


def test_keys_of_a_built_workspace(ws):
    sci = ws(WORKSPACE, env={"GOLDEN_FLAG": "on"})
    out = sci.build()
    assert out["failed"] == [] and sorted(out["executed"]) == sorted(GOLDEN)
    store = Store(ws.root / "cas", create=False)
    manifest = json.loads((ws.root / "runs" / out["run_id"] / "manifest.json").read_text())
    got = {}
    for entry in manifest["plan"]:
        comp = store.get_action(entry["key"])["components"]
        assert keys.key_of(comp) == entry["key"], entry["node"]  # the recorded key is the key of its record
        assert comp["format"] == KEY_FORMAT
        fixed = dict(comp, environment=ENV)
        if "inputs" in fixed:
            fixed["inputs"] = {k: ENV for k in fixed["inputs"]}
        got[entry["node"]] = (keys.key_of(fixed), canonical.dumps_text(fixed))
    assert GOLDEN["sweep[k=2]"] == LITERAL["foreach item"][1]
    for node, golden in GOLDEN.items():
        key, text = got[node]
        assert key == golden, f"{node}: the key of\n{text}\nchanged (see the module docstring)"
