"""How a sandboxed step's output reaches the workspace and the store (Store.put_and_place).

The step's own file is renamed into the workspace and the store gets its own copy; whatever
the step did (identical outputs, a hard link or symlink to an input, an executable bit), the
workspace file and the store never share bytes, and a built output looks like a restored one."""

from __future__ import annotations

import json
import os
import stat

from conftest import no_traceback
from sci.store.cas import Store


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _blob(root, out, node, name):
    rec = next(n for n in out["nodes"] if n["node"] == node)
    action = Store(root / "cas", create=False).get_action(rec["key"])
    return root / "cas" / "blobs" / action["outputs"][name]["digest"][:2] / action["outputs"][name]["digest"]


def test_identical_outputs_are_separate_files_and_an_edit_touches_neither_the_other_nor_the_store(ws):
    sci = ws({"sci.yaml": """
        version: 1
        steps:
          same:
            foreach: {i: [1, 2, 3]}
            cmd: echo same > {outs}
            outs: ["out/{item.i}.txt"]
        """})
    out = sci.build()
    files = [ws.root / "out" / f"{i}.txt" for i in (1, 2, 3)]
    blob = _blob(ws.root, out, "same[i=1]", "out/{item.i}.txt".replace("{item.i}", "1"))
    inodes = {os.stat(p).st_ino for p in files} | {os.stat(blob).st_ino}
    assert len(inodes) == 4  # three workspace files and one blob, no shared inode
    with open(files[0], "a") as fh:  # an in-place edit of one output
        fh.write("edited\n")
    assert blob.read_text() == "same\n" and files[1].read_text() == "same\n"
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
    assert sci.build()["executed"] == []  # the edited output is restored, not rebuilt
    assert files[0].read_text() == "same\n"


def test_an_output_hard_linked_to_an_input_does_not_tie_the_input_to_the_store(ws):
    sci = ws({
        "data/in.txt": "input\n",
        "sci.yaml": """
            version: 1
            steps:
              link:
                cmd: ln {deps} {outs}
                deps: [data/in.txt]
                outs: [out/linked.txt]
              soft:
                cmd: ln -s "$PWD/{deps}" {outs}
                deps: [data/in.txt]
                outs: [out/soft.txt]
            """})
    src, linked, soft = ws.root / "data/in.txt", ws.root / "out/linked.txt", ws.root / "out/soft.txt"
    mode = _mode(src)
    out = sci.build()
    assert set(out["executed"]) == {"link", "soft"}
    assert _mode(src) == mode  # storing the outputs did not chmod the input through a link
    assert os.stat(src).st_nlink == 1 and os.stat(linked).st_ino != os.stat(src).st_ino
    assert not os.path.islink(soft) and soft.read_text() == "input\n"
    blob = _blob(ws.root, out, "link", "out/linked.txt")
    assert os.stat(blob).st_ino not in {os.stat(src).st_ino, os.stat(linked).st_ino}
    with open(src, "a") as fh:  # the user edits the input in place
        fh.write("more\n")
    assert blob.read_text() == "input\n" and linked.read_text() == "input\n"
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True


def test_a_built_output_has_the_mode_a_restored_one_gets(ws):
    sci = ws({"sci.yaml": """
        version: 1
        steps:
          tool:
            cmd: printf '#!/bin/sh\\necho hi\\n' > {outs} && chmod 0755 {outs}
            outs: [bin/tool.sh]
          quiet:
            cmd: echo x > {outs} && chmod 0600 {outs}
            outs: [q.txt]
        """})
    proc = sci("build")
    assert no_traceback(proc.stderr)
    built = {p: _mode(ws.root / p) for p in ("bin/tool.sh", "q.txt")}
    for p in built:
        (ws.root / p).unlink()
    assert sci.build()["executed"] == []
    restored = {p: _mode(ws.root / p) for p in ("bin/tool.sh", "q.txt")}
    assert built == restored
    assert all(m & 0o200 for m in built.values())  # the owner can edit an output
