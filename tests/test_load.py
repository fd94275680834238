"""YAML loading: the fast event reader must give exactly what ruamel's safe loader gives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import same
from sci.spec import load
from sci.errors import SpecError

pytestmark = pytest.mark.skipif(not load._has_c_parser(), reason="needs ruamel.yaml.clib's C parser")


def ruamel_plain(text: str):
    from ruamel.yaml import YAML

    return load._plain(YAML(typ="safe", pure=True).load(text))


TRICKY = ["0", "1", "-1", "+1", "007", "0o17", "0x1F", "0b101", "1_000", "1.5", "-0.0", "1e5", "1E-3",
          "1.5e+3", ".5", "5.", ".inf", "-.inf", ".nan", "true", "True", "TRUE", "yes", "no", "on", "off",
          "null", "Null", "~", "", "2024-01-31", "2024-1-3 10:20:30", "12:30", "1:20:30", "-", "-x",
          "+x", ".x", "<<", "=", "a b", "1a", "n", "y", "NaN", "inf", "nulls", "trueish", "0.1.2"]
scalar_text = st.one_of(st.sampled_from(TRICKY), st.from_regex(r"[a-zA-Z0-9_.+\-~ ]{0,8}", fullmatch=True))


def render(value: str, style: str) -> str:
    if style == "plain":
        return value
    if style == "single":
        return "'" + value.replace("'", "''") + "'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(scalar_text, st.sampled_from(["plain", "single", "double"])), min_size=1, max_size=6),
       st.sampled_from(["block", "flow", "nested"]))
def test_fast_reader_agrees_with_ruamel(items, shape):
    values = [render(v.strip(), s) for v, s in items]
    if shape == "block":
        text = "".join(f"k{i}: {v}\n" for i, v in enumerate(values))
    elif shape == "flow":
        text = "xs: [" + ", ".join(v if v else "''" for v in values) + "]\n"
    else:
        text = "top:\n  inner:\n" + "".join(f"    - {v}\n" for v in values) + f"  {values[0] or 'k'}: 1\n"
    try:
        expected = ruamel_plain(text)
    except Exception:  # noqa: BLE001 - text ruamel rejects must be rejected by load_yaml_text too
        with pytest.raises(SpecError):
            load.load_yaml_text(text, "p.yaml")
        return
    got, _pos = load.load_yaml_text(text, "p.yaml")
    assert same(got, expected), (text, got, expected)


@pytest.mark.parametrize("text", [
    "a: &x 1\nb: *x\n",                     # anchors and aliases
    "base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n",  # merge key
    "a: !!str 5\nb: !!float 1\n",           # explicit tags
    "%YAML 1.1\n---\na: yes\nb: 010\n",      # a YAML 1.1 document
    "1: one\nyes: t\n~: n\n2.5: f\n",      # non-text keys become text
    "a:\n  - [1, 2]\n  - {b: [c, {d: e}]}\n",
    "",
    "# only a comment\n",
])
def test_documents_the_fast_reader_hands_on(text):
    got, _pos = load.load_yaml_text(text, "p.yaml")
    assert same(got, ruamel_plain(text))


def test_fast_reader_covers_a_params_file():
    """The common case really takes the fast path (not the fallback)."""
    text = "fit:\n  degree: 3\n  alpha: 0.05\n  name: poly\n  grid: [1, 2.5, -3]\nflag: true\nnone: ~\n"
    assert load._fast_load(text) == ruamel_plain(text)


@pytest.mark.parametrize("text,line", [("a: 1\na: 2\n", 2), ("1: a\ntrue: b\n", 2), ("a: [1, 2\nb: 3\n", 2), ("a:\n\tb: 1\n", 2)])
def test_bad_yaml_is_still_reported_with_its_line(text, line):
    with pytest.raises(SpecError) as err:
        load.load_yaml_text(text, "params.yaml")
    assert err.value.location.file == "params.yaml"
    assert err.value.location.line == line


# -- the ruamel-free reader (simple_yaml) ---------------------------------------------------
from sci.spec import simple_yaml  # noqa: E402

keys = st.one_of(st.sampled_from(["a", "b_c", "d-e", "f.g", "true", "null", "y", "1a", "key"]),
                 st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True))
leaf_text = st.one_of(st.sampled_from(TRICKY + ["x # not a comment?", "a#b", "it's", "café", "a: b", "[1, 2]",
                                                "{a: 1}", "&x", "*x", "!t", "|", ">", "'q'", '"d"', "- x", "-x"]),
                      st.from_regex(r"[ -~]{0,10}", fullmatch=True))


@st.composite
def block_documents(draw, depth=0):
    """Block-style YAML text written the ways people write params files (and some ways not)."""
    step = draw(st.sampled_from([2, 4]))
    lines = []

    def emit(indent: int, level: int) -> None:
        for _ in range(draw(st.integers(1, 4))):
            key = draw(keys)
            kind = draw(st.sampled_from(["scalar", "scalar", "map", "list", "seq", "empty", "comment"]))
            pad = " " * indent
            if kind == "comment":
                lines.append(pad + "# " + draw(leaf_text))
                continue
            if kind == "map" and level < 3:
                lines.append(f"{pad}{key}:" + draw(st.sampled_from(["", "  # section"])))
                emit(indent + step, level + 1)
            elif kind == "list":
                items = draw(st.lists(st.tuples(leaf_text, st.sampled_from(["plain", "single", "double"])), max_size=4))
                lines.append(f"{pad}{key}: [" + ", ".join(render(v, s) for v, s in items) + "]")
            elif kind == "seq":
                lines.append(f"{pad}{key}:")
                seq_pad = pad + draw(st.sampled_from(["", " " * step]))
                for v, s in draw(st.lists(st.tuples(leaf_text, st.sampled_from(["plain", "single"])), min_size=1, max_size=3)):
                    lines.append(f"{seq_pad}- {render(v, s)}")
            elif kind == "empty":
                lines.append(f"{pad}{key}:")
            else:
                value = render(draw(leaf_text), draw(st.sampled_from(["plain", "plain", "single", "double"])))
                comment = draw(st.sampled_from(["", "  # note", " #", "\t# tab"]))
                lines.append(f"{pad}{key}: {value}{comment}")
            if draw(st.booleans()):
                lines.append("")

    emit(0, 0)
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))


@settings(max_examples=500, deadline=None)
@given(block_documents())
def test_simple_reader_agrees_with_ruamel_whenever_it_accepts(text):
    try:
        got = simple_yaml.load(text)
    except simple_yaml.NotSimple:
        return
    try:
        expected = ruamel_plain(text)
    except Exception:  # noqa: BLE001
        pytest.fail(f"simple_yaml accepted text ruamel rejects:\n{text}")
    assert same(got, expected), (text, got, expected)


def test_simple_reader_takes_the_params_files_sci_ships_and_generates():
    from tests.conftest import REPO

    for path in [REPO / "params.yaml"]:
        text = path.read_text()
        assert same(simple_yaml.load(text), ruamel_plain(text))
    generated = "p:\n" + "".join(f"  n{i}: {i}\n" for i in range(50))
    assert simple_yaml.load(generated) == {"p": {f"n{i}": i for i in range(50)}}


def ruamel_scalar(text: str):
    from ruamel.yaml import YAML

    value = YAML(typ="safe", pure=True).load(text)
    return text if value is None and text.strip() not in ("null", "~") else value


@settings(max_examples=300, deadline=None)
@given(st.one_of(leaf_text, st.sampled_from(["[1, 2]", "[a, 'b c']", "'x", "1 # c", " 4 ", "a: b"])))
def test_set_values_read_as_ruamel_reads_them(text):
    try:
        expected = load._plain(ruamel_scalar(text))
    except Exception:  # noqa: BLE001 - ruamel rejects it: sci takes the text as it is
        expected = text
    assert same(load._plain(load.parse_scalar(text)), expected), text
