"""Entry point of a Python (`fn:`) step's process: build the StepContext, apply the
determinism policy, call the function, write its metrics. Run as
`python -m sci.executors.fn_runner REQUEST.json` inside the step's sandbox."""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path


def _paths(value):
    return [Path(v) for v in value] if isinstance(value, list) else Path(value)


def main(request_path: str) -> int:
    req = json.loads(Path(request_path).read_text())
    sys.path.insert(0, os.getcwd())
    from sci.executors.context import StepContext

    ctx = StepContext(
        node=req["node"],
        deps={k: _paths(v) for k, v in req["deps"].items()},
        outs={k: Path(v) for k, v in req["outs"].items()},
        params=req["params"],
        seed=req["seed"],
        gpus=req["gpus"],
        determinism=req["determinism"],
    )
    module_name, func_name = req["fn"].split(":")
    try:
        module = importlib.import_module(module_name)
        func = getattr(module, func_name)
    except (ImportError, AttributeError) as exc:
        print(f"sci: cannot load {req['fn']}: {exc}", file=sys.stderr)
        return 2
    from sci.determinism import applied

    try:
        with applied(req["seed"], req["determinism"], threads=req["threads"]):
            func(ctx)
    except Exception:  # noqa: BLE001 - report the step's own traceback, as a step failure
        traceback.print_exc()
        return 1
    # Written as given (NaN too, NumPy scalars as plain numbers, anything else as its text):
    # sci checks the values after the step (records/metrics.py) and names a bad one.
    Path(req["metrics"]).write_text(json.dumps(ctx.metrics, default=_plain))
    return 0


def _plain(value):
    item = getattr(value, "item", None)  # a NumPy scalar
    return item() if callable(item) else repr(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
