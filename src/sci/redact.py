"""Secrets kept out of everything sci shows or records (SPEC §7): which names are secret, and
the known secret values masked wherever a step's or sci's own text is shown, logged or stored.

A name is secret when it holds TOKEN, SECRET, PASSWORD (or PASSWD) or KEY, in any case. Such a
variable's value never enters a key or a record by value (build/inputs.py, fingerprint.py),
and a `--set` whose key is secret is recorded as `KEY=<redacted>` (`redact_argv`).

Known secret values — those of secret-named variables in sci's environment and in a step's
declared `env`, and those given by secret-named `--set` overrides — are replaced by MASK in:
the stderr tail of a failed step (console and logs.jsonl), every logs.jsonl line, the run
manifest, the error line the CLI prints, and the stdout and stderr sci stores of a step (which
`sci log` shows: they then differ from what the step printed, by exactly the masked values).
Declared outputs are the step's data and are stored as written. Values shorter than
MIN_LENGTH characters are not masked: a `KEYBOARD=us` would otherwise blank every "us".
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

# SPEC §7 names TOKEN, SECRET, PASSWORD and KEY; PASSWD is the same secret spelt the Unix way.
SECRET_MARKERS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY")
MASK = "<redacted>"
MIN_LENGTH = 6

_given: set[str] = set()  # from `--set` overrides (remember_overrides) and callers (remember)
_known: tuple[str, ...] | None = None  # every known value and its JSON-escaped form, longest first


def _has_marker(upper: str) -> bool:
    """Whether an upper-cased text holds a marker (five substring searches: twice as fast as
    one alternation pattern over a 130 KB parameters text, and nothing compiled at start-up)."""
    return any(marker in upper for marker in SECRET_MARKERS)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's (or a parameter's) name looks like it holds a secret."""
    return _has_marker(name.upper())


def redact_params(params: Any) -> Any:
    """The parameters with the values of secret-looking keys hidden, by the rule `redact_argv`
    applies to `--set KEY=VALUE` (a dotted key that looks like a secret). Each key is tested
    alone: a marker cannot span the dots of a dotted key, and below a secret-looking key
    everything is hidden already (a sweep of 10,000 parameters: ~2 ms)."""
    if not isinstance(params, dict):
        return params
    return {k: MASK if _has_marker(f"{k}".upper()) else redact_params(v) for k, v in params.items()}


def hides_nothing_in(params_json: bytes) -> bool:
    """Whether redact_params would hide nothing of the parameters whose canonical JSON this is:
    no marker anywhere in its upper-cased text. Each key stands in that text verbatim (canonical
    JSON escapes no letter) and upper-casing goes character by character, so a secret-looking
    key could not pass unseen; a marker in a value only costs the walk."""
    return not _has_marker(params_json.decode("utf-8").upper())


def env_value(name: str) -> str | None:
    """A variable's value as it enters a key or the fingerprint: a secret-looking name only as
    set (`"<set>"`) or not (None); any other as text — UserError (exit 2) naming the variable
    when its bytes are not UTF-8, which no record could hold."""
    value = os.environ.get(name)
    if is_secret_name(name):
        return "<set>" if value is not None else None
    if value is not None and not value.isascii():
        from sci.canonical import not_text

        if not_text(value):
            from sci.errors import UserError

            raise UserError(f"environment variable {name} is not UTF-8 text",
                            hint=f"set {name} to UTF-8 text, or leave it out of env")
    return value


def remember(value: str) -> None:
    """Mask `value` from now on in this process."""
    global _known
    if len(value) >= MIN_LENGTH and value not in _given:
        _given.add(value)
        _known = None


def remember_overrides(overrides: Iterable[str]) -> None:
    """The values of `--set KEY=VALUE` overrides whose key looks secret (db.password=…)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and is_secret_name(key.strip()):
            remember(value.strip())


def forget_all() -> None:
    """Start over from the environment (for a long-lived caller, and for tests)."""
    global _known
    _given.clear()
    _known = None


def secret_values(env: dict[str, str] | None = None) -> list[str]:
    """The values of the secret-named variables in `env` (default: this process's)."""
    env = os.environ if env is None else env
    return [v for k, v in env.items() if len(v) >= MIN_LENGTH and is_secret_name(k)]


def known() -> tuple[str, ...]:
    """Every value to mask: remembered ones and the environment's, longest first (a secret
    that contains another is masked whole), each also in its JSON-escaped spelling."""
    global _known
    if _known is None:
        values = set(_given) | set(secret_values())
        values |= {json.dumps(v, ensure_ascii=False)[1:-1] for v in values}
        _known = tuple(sorted(values, key=lambda v: (-len(v), v)))
    return _known


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every known secret value (and each of `extra`) replaced by MASK."""
    values = known()
    if extra:
        values = tuple(sorted({*values, *(v for v in extra if len(v) >= MIN_LENGTH)}, key=lambda v: (-len(v), v)))
    if not text or not values:
        return text
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact_bytes(data: bytes, extra: Iterable[str] = ()) -> bytes:
    """`redact` for UTF-8 bytes (a stored log, a record): other bytes are left as they are."""
    values = {*known(), *(v for v in extra if len(v) >= MIN_LENGTH)}
    if not data or not values:
        return data
    for value in sorted((v.encode("utf-8", "surrogateescape") for v in values), key=lambda v: (-len(v), v)):
        if value in data:
            data = data.replace(value, MASK.encode())
    return data


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with the values of secret-looking assignments hidden: `--set K=V`,
    `--set=K=V` and `NAME=VALUE` alike (K or NAME secret), and any known secret value."""
    out = []
    for a in argv:
        body = a[len("--set="):] if a.startswith("--set=") else a
        name, sep, _ = body.partition("=")
        if sep and is_secret_name(name):
            out.append(f"{a[:len(a) - len(body)]}{name}={MASK}")
        else:
            out.append(redact(a))
    return out
