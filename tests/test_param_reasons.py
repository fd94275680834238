"""`sci status` names each changed parameter leaf (`fit.tol: 1e-10 → 1e-9`), never a subtree
cut off before the difference; a property test holds the named paths equal to the differing
leaves for random nested parameters."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from sci.build import keys

PIPELINE = {
    "sci.yaml": """
        version: 1
        params: params.yaml
        steps:
          fit:
            cmd: echo fit > {outs}
            params: [fit]
            outs: [fit.txt]
          label:
            cmd: echo hi > {outs}
            params: [label]
            outs: [label.txt]
        """,
    "params.yaml": """
        fit:
          tol: 1.0e-10
          method: lm
          grid: [1, 2, 4, 8]
          nested: {deep: {er: 1}}
        label: "%s"
        """ % ("x" * 60 + "A" + "y" * 60),
}


def reasons(sci, node: str) -> list[str]:
    rows = {r["node"]: r for r in json.loads(sci("status", "--json").stdout)["nodes"]}
    return rows[node]["reasons"]


def set_params(root, text: str) -> None:
    (root / "params.yaml").write_text(text)


def test_status_names_each_changed_leaf_of_a_params_subtree(ws):
    sci = ws(PIPELINE)
    sci.build()
    params = (ws.root / "params.yaml").read_text()
    set_params(ws.root, params.replace("tol: 1.0e-10", "tol: 1.0e-9").replace("[1, 2, 4, 8]", "[1, 2, 5, 8, 9]")
               .replace("method: lm", "method: trf\n  new: 3").replace("{deep: {er: 1}}", "{deep: {}}"))
    assert reasons(sci, "fit") == [
        "params changed: fit.grid[2]: 4 → 5",
        "params changed: fit.grid[4]: (absent) → 9",
        'params changed: fit.method: "lm" → "trf"',
        "params changed: fit.nested.deep: (absent) → {}",
        "params changed: fit.nested.deep.er: 1 → (absent)",
        "params changed: fit.new: (absent) → 3",
        "params changed: fit.tol: 1e-10 → 1e-9",
    ]
    text = sci("status").stdout
    assert "would run   fit: params changed: fit.grid[2]: 4 → 5; " in text
    assert "fit.tol: 1e-10 → 1e-9" in text
    set_params(ws.root, params)
    sci.build()  # back to the first values (restored from the store): status compares with these
    set_params(ws.root, params.replace("grid: [1, 2, 4, 8]", "grid: [1, 2]"))
    assert reasons(sci, "fit") == ["params changed: fit.grid[2]: 4 → (absent)",
                                   "params changed: fit.grid[3]: 8 → (absent)"]


def test_a_long_value_is_cut_around_the_difference(ws):
    sci = ws(PIPELINE)
    sci.build()
    params = (ws.root / "params.yaml").read_text()
    set_params(ws.root, params.replace("xA", "xB"))
    (reason,) = reasons(sci, "label")
    assert reason == 'params changed: label: …xxxxxxxxxxAyyyyyyyyyy… → …xxxxxxxxxxByyyyyyyyyy…', reason
    set_params(ws.root, params.replace("xA", "xAZ"))
    (reason,) = reasons(sci, "label")
    assert reason == 'params changed: label: …xxxxxxxxxAyyyyyyyyyy… → …xxxxxxxxxAZyyyyyyyyyy…', reason


def test_a_type_change_and_the_same_value_under_another_declared_key(ws):
    sci = ws(PIPELINE)
    sci.build()
    params = (ws.root / "params.yaml").read_text()
    set_params(ws.root, params.replace("tol: 1.0e-10", "tol: 1"))
    assert reasons(sci, "fit") == ["params changed: fit.tol: 1e-10 → 1"]
    set_params(ws.root, params.replace("tol: 1.0e-10", 'tol: "1.0e-10"'))
    assert reasons(sci, "fit") == ['params changed: fit.tol: 1e-10 → "1.0e-10"']


def test_odd_keys_are_quoted_so_two_paths_never_read_the_same():
    old = {"fit": {"a.b": 1, "a": {"b": 1}, "": 0, "x y": [0]}}
    new = {"fit": {"a.b": 2, "a": {"b": 2}, "": 1, "x y": [1]}}
    assert [str(r) for r in keys.param_changes(old, new)] == [
        'params changed: fit[""]: 0 → 1',
        "params changed: fit.a.b: 1 → 2",
        'params changed: fit["a.b"]: 1 → 2',
        'params changed: fit["x y"][0]: 0 → 1',
    ]


def test_many_changes_are_counted_past_the_limit():
    old = {"grid": list(range(keys.MAX_PARAM_REASONS + 5))}
    new = {"grid": [i + 1 for i in old["grid"]]}
    out = [str(r) for r in keys.param_changes(old, new)]
    assert len(out) == keys.MAX_PARAM_REASONS + 1
    assert out[0] == "params changed: grid[0]: 0 → 1"
    assert out[-1] == "params changed: 5 more changed values not shown"


# --- the property -------------------------------------------------------------------------

plain_keys = st.sampled_from(["a", "b", "c", "tol", "grid"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, 1e-9, 1.0, -0.0]),
                    st.sampled_from(["", "x", "1", "lm"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(plain_keys, inner, max_size=3)),
                      max_leaves=8)
param_maps = st.dictionaries(plain_keys, values, max_size=3)


def leaves(value, path: str, out: dict) -> None:
    """The test's own reading of "a leaf": a scalar or an empty container, by its path text."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            leaves(v, f"{path}.{k}", out)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            leaves(v, f"{path}[{i}]", out)
    else:
        out[path] = json.dumps(value)  # json tells 1 from 1.0 from true, as the key does


@settings(max_examples=400, deadline=None)
@given(param_maps, param_maps)
def test_named_paths_are_exactly_the_differing_leaves(a, b):
    la: dict = {}
    lb: dict = {}
    for params, out in ((a, la), (b, lb)):
        for k, v in params.items():
            leaves(v, k, out)
    differing = {p for p in la.keys() | lb.keys() if la.get(p) != lb.get(p)}
    out = keys.param_changes(a, b)
    if not differing:
        assert out == [] or (a != b and out[0].detail.startswith("declared keys"))
        return
    assert all(r.kind == "params changed" for r in out)
    limit = keys.MAX_PARAM_REASONS
    if len(differing) > limit:  # past the limit, the rest are counted
        assert out[-1].detail == f"{len(differing) - limit} more changed values not shown"
        out = out[:-1]
    named = [r.detail.split(": ", 1)[0] for r in out]
    assert len(named) == len(set(named)) == min(limit, len(differing))  # one reason per leaf
    assert set(named) <= differing
    assert set(named) == differing or len(differing) > limit
    for r in out:  # each side says (absent) exactly when the leaf is missing there
        path, change = r.detail.split(": ", 1)
        before, after = change.split(" → ")
        assert (before == "(absent)") == (path not in la)
        assert (after == "(absent)") == (path not in lb)


@settings(max_examples=200, deadline=None)
@given(param_maps, param_maps)
def test_explain_reports_params_only_when_they_differ(a, b):
    base = {"format": 1, "definition": {}, "deps": {}, "code": {}, "environment": "e", "seed": 1}
    out = keys.explain(dict(base, params=a), dict(base, params=b))
    assert bool(out) == (keys.key_of(dict(base, params=a)) != keys.key_of(dict(base, params=b)))
