"""The placeholder syntax of sci.yaml values: `{name}`, literal `{{` and `}}`, and a lone brace.

One scan decides what every brace in a `cmd`, `deps`, `outs`, `metrics` or `code` value is; both sci.yaml
validators (spec/plain.py, spec/model.py) and the renderer (plan/nodes.py) read it from here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sci.errors import SpecError

if TYPE_CHECKING:
    from sci.spec.load import Positions

# Left to right: a literal `{{` or `}}`, a placeholder, else a brace that opens or closes none.
TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
# The same tokens, all of them, as one match: text without a lone brace (possessive, so a
# thousand steps' values are checked in one pass of the C matcher). Asked only when sci.yaml is
# validated, not by a build that reuses its plan: compiled on first use (re's own cache).
_NO_LONE = r"(?:[^{}]++|\{\{|\}\}|\{[^{}]*+\})*+"
# Between values: no placeholder spans it (it holds a brace), and it is no lone brace itself.
_APART = "\x00{{\x00"
# The step keys whose values hold placeholders (SPEC §2; `code` paths are rendered too).
FIELDS = ("cmd", "deps", "outs", "metrics", "code")


def lone_brace(text: str) -> int | None:
    """The index of the first `{` or `}` that opens or closes no placeholder, else None."""
    if "{" not in text and "}" not in text:
        return None
    for m in TOKEN.finditer(text):
        if len(m.group(0)) == 1:
            return m.start()
    return None


def any_lone_brace(texts: list[str]) -> bool:
    """Whether any of `texts` has a lone brace (lone_brace says where)."""
    return re.fullmatch(_NO_LONE, _APART.join(texts)) is None


def lone_brace_hint(text: str, index: int) -> str:
    """How to fix the lone brace at `index`: close the placeholder it seems to open, or double it."""
    if text[index] == "{":
        name = re.match(r"(?:[A-Za-z_][\w.]*)?", text[index + 1:]).group(0)
        close = f"close the placeholder ({{{name}}})" if name else "close the placeholder"
        return f"{close} or write a literal brace as {{{{"
    return "open the placeholder it closes, or write a literal brace as }}"


def lone_brace_error(text: str, index: int, pos: Positions, where: tuple) -> SpecError:
    """The error for a lone brace, located at the brace itself; `where` is the value's path."""
    field = next((p for p in reversed(where) if p in FIELDS), "value")
    step = f"step {where[1]}: " if len(where) > 1 and where[0] == "steps" else ""
    verb = "opens" if text[index] == "{" else "closes"
    return SpecError(f"{step}lone {text[index]!r} in {field}: it {verb} no placeholder",
                     location=pos.at_char(where, text, index), hint=lone_brace_hint(text, index))


def step_values(body: dict) -> list[tuple[tuple, str]]:
    """(path below the step, text) of every placeholder-holding string in one step's mapping."""
    out: list[tuple[tuple, str]] = []
    for field in FIELDS:
        value = body.get(field)
        if type(value) is str:
            out.append(((field,), value))
        elif type(value) is list:
            out.extend(((field, i), v) for i, v in enumerate(value) if type(v) is str)
        elif type(value) is dict:
            out.extend(((field, str(k)), v) for k, v in value.items() if type(v) is str)
    return out


# `foreach: {sample: "{params.samples}"}`: a sweep's items named in the parameters (SPEC §2).
# Only a pipeline with such a sweep asks, so it is compiled then (re's own cache), not at start-up.
_FOREACH_PARAM = r"^\{\s*params\.([A-Za-z0-9_][A-Za-z0-9_.-]*)\s*\}$"


def foreach_param(items: str) -> re.Match | None:
    """The match of `"{params.NAME}"` as a whole foreach value (group 1: NAME), else None."""
    return re.match(_FOREACH_PARAM, items)
