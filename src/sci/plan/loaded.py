"""Loaded: a validated pipeline expanded into a graph, as the planner hands it on (and the
plan cache keeps it). A module of its own so that the plan cache and replan read it without
importing the planner."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sci.values import Value

if TYPE_CHECKING:  # for annotations only
    from sci.build.resources import Hardware
    from sci.plan.graph import Graph
    from sci.spec.load import Positions
    from sci.workspace import Workspace


class Loaded(Value):
    """A validated pipeline, expanded into a graph: everything a build needs before hashing.

    `reserved`: the directories sci owns (Workspace.owned; the rule: workspace.owns). `reads` (a
    replan.ReadIndex): which steps' expansion reads which parameter keys. `structure_key`: plan_key without the
    parameters (equal means a params edit only). What replan.py needs of the validated sci.yaml:
    `doc_head` (its `defaults` and `params`) and `step_docs` (each step's mapping pickled on its
    own, so a patch unpickles the steps it re-expands and no others). `params_text`: the params
    file's text when the simple reader took it whole and no `--set` applied; with `params`, what
    the next edit's changed lines are read against (simple_yaml.patch). `params_json`: the
    canonical JSON of `params` when this process planned them (the manifest writes it as is);
    None in a plan read from the plan cache, which does not keep it.
    """

    _FIELDS = ("ws", "graph", "pos", "params", "params_digest", "pipeline_digest", "experiment", "env_spec",
               "root_seed", "determinism", "store_config", "remotes", "hardware", "reserved", "reads",
               "structure_key", "doc_head", "step_docs", "params_text", "params_json")

    def __init__(self, ws: Workspace, graph: Graph, pos: Positions, params: dict, params_digest: str,
                 pipeline_digest: str, experiment: dict | None, env_spec: dict, root_seed: int, determinism: str,
                 store_config: str | None, remotes: dict, hardware: Hardware, reserved: tuple[str, ...] = (),
                 reads: Any = None, structure_key: str = "", doc_head: dict | None = None,
                 step_docs: Mapping[str, bytes] | None = None, params_text: str | None = None,
                 params_json: bytes | None = None):
        self.ws, self.graph, self.pos, self.params = ws, graph, pos, params
        self.params_digest, self.pipeline_digest, self.experiment = params_digest, pipeline_digest, experiment
        self.env_spec, self.root_seed, self.determinism = env_spec, root_seed, determinism
        self.store_config, self.remotes, self.hardware, self.reserved = store_config, remotes, hardware, reserved
        self.reads, self.structure_key, self.doc_head = reads, structure_key, doc_head
        self.step_docs, self.params_text, self.params_json = step_docs, params_text, params_json
