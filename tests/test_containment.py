"""Nothing changed through deps, nothing written outside the workspace (issue 15, SPEC §2).

- a step's deps (and code) are copies in its sandbox: a write to one lands in that copy, never
  in the workspace source or the store object it came from, whatever SCI_LINK says;
- the sandbox lies outside the workspace: a relative escape (`../../../f`) lands there, and a
  relative read of an undeclared workspace file fails;
- an output behind a symbolic link in the workspace (`linkdir -> /elsewhere`) fails the step
  naming the path, and nothing is written through the link;
- sci.yaml, the params file, config/hardware.yaml and .git/ can never be outputs;
- an output that is not a regular file (a FIFO, a link to /dev/zero) fails the step naming the
  path, at once: it is never read.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from conftest import no_traceback


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root (sci's own folders left out) with its bytes."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.split("/")[0] in (".sci", "runs", "cas") or not p.is_file():
            continue
        out[rel] = p.read_bytes()
    return out


# -- deps are the step's own copies ------------------------------------------------------------
@pytest.mark.parametrize("link", ["copy", "hardlink", "symlink"])
def test_a_write_to_a_source_dep_lands_in_the_steps_copy(ws, link):
    sci = ws({
        "data.txt": "precious\n",
        "sci.yaml": """
            version: 1
            steps:
              greedy:
                cmd: cat {deps} > {outs} && echo x >> {deps} && printf more > {deps}
                deps: [data.txt]
                outs: [out.txt]
            """,
    }, env={"SCI_LINK": link})
    sci.build()
    assert (ws.root / "data.txt").read_text() == "precious\n"
    assert (ws.root / "out.txt").read_text() == "precious\n"
    assert sci.build()["executed"] == []


@pytest.mark.parametrize("link", ["copy", "hardlink", "symlink"])
def test_a_write_to_an_upstream_output_changes_neither_the_workspace_nor_the_store(ws, link):
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              make:
                cmd: echo original > {outs}
                outs: [made.txt]
              spoil:
                cmd: cat {deps} > {outs}; echo spoiled >> {deps}; chmod u+w {deps} 2>/dev/null; echo again >> {deps}
                deps: [made.txt]
                outs: [spoiled.txt]
            """,
    }, env={"SCI_LINK": link})
    sci.build()
    assert (ws.root / "made.txt").read_text() == "original\n"
    assert (ws.root / "spoiled.txt").read_text() == "original\n"
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True
    assert sci.build()["executed"] == []


def test_writes_into_a_directory_dep_and_to_code_stay_in_the_sandbox(ws):
    sci = ws({
        "data/a.txt": "a\n",
        "data/sub/b.txt": "b\n",
        "rules/tool.sh": "echo tool\n",
        "sci.yaml": """
            version: 1
            steps:
              scribble:
                cmd: >-
                  cat {deps}/a.txt {deps}/sub/b.txt > {outs} && echo x >> {deps}/a.txt &&
                  echo new > {deps}/sub/new.txt && rm {deps}/sub/b.txt && echo hacked > rules/tool.sh
                deps: [data/]
                code: [rules/tool.sh]
                outs: [out.txt]
            """,
    })
    before = tree_bytes(ws.root)
    sci.build()
    after = tree_bytes(ws.root)
    assert after.pop("out.txt") == b"a\nb\n"
    assert after == before


def test_a_python_step_writing_to_its_dep_changes_only_its_copy(ws):
    sci = ws({
        "data.txt": "precious\n",
        "rules/__init__.py": "",
        "rules/greedy.py": """
            def greedy(ctx):
                text = ctx.deps["data"].read_text()
                ctx.deps["data"].write_text("overwritten\\n")
                ctx.outs["out"].write_text(text)
            """,
        "sci.yaml": """
            version: 1
            steps:
              greedy:
                fn: rules.greedy:greedy
                deps: {data: data.txt}
                outs: {out: out.txt}
            """,
    })
    sci.build()
    assert (ws.root / "data.txt").read_text() == "precious\n"
    assert (ws.root / "out.txt").read_text() == "precious\n"


def test_a_reused_sandbox_gives_the_next_node_a_fresh_copy(ws):
    """One worker (-j 1), one box reused from node to node: the first node spoils its copy of
    the shared dep, the next ones must still read the original."""
    sci = ws({
        "shared.txt": "clean\n",
        "sci.yaml": """
            version: 1
            steps:
              fan:
                foreach: {i: [1, 2, 3, 4]}
                cmd: cat {deps} > {outs} && echo dirty-{item.i} >> {deps}
                deps: [shared.txt]
                outs: ["out/{item.i}.txt"]
            """,
    })
    sci.build("-j", "1")
    for i in range(1, 5):
        assert (ws.root / f"out/{i}.txt").read_text() == "clean\n"
    assert (ws.root / "shared.txt").read_text() == "clean\n"


@pytest.mark.parametrize("dep", ["shared.txt", "made.txt"])
def test_a_same_size_overwrite_of_a_kept_copy_is_never_seen_by_the_next_node(ws, dep):
    """A write that keeps the copy's size changes only its mtime (and ctime): the next node in
    the same box must still get the source's bytes, for a source written long ago
    (shared.txt, its mtime set back an hour) and for an upstream output made a moment before
    the fan-out starts (made.txt: the racily clean case, compared by digest)."""
    sci = ws({
        "shared.txt": "clean\n",
        "sci.yaml": """
            version: 1
            steps:
              make:
                cmd: printf 'clean\\n' > {outs}
                outs: [made.txt]
              fan:
                foreach: {i: [1, 2, 3, 4]}
                cmd: cat {deps} > {outs} && printf 'DIRTY\\n' > {deps}
                deps: [%s]
                outs: ["out/{item.i}.txt"]
            """ % dep,
    })
    old = time.time() - 3600
    os.utime(ws.root / "shared.txt", (old, old))
    sci.build("-j", "1")
    for i in range(1, 5):
        assert (ws.root / f"out/{i}.txt").read_text() == "clean\n", i
    assert (ws.root / dep).read_text() == "clean\n"


def test_a_box_copy_rewritten_for_the_next_node_is_cut_to_its_length_and_keeps_its_mode(ws):
    """In a chain the next node runs in the same box, and its dep copy is the last node's,
    rewritten in place where it can be (docs/performance.md, session 11). A shorter dep must
    leave no tail of the longer one, and an executable dep is never a rewritten plain one."""
    sci = ws({
        "long.txt": "a long line, longer than the next one\n",
        "0run.sh": "#!/bin/sh\necho ran\n",
        "sci.yaml": """
            version: 1
            steps:
              a:
                cmd: echo short > {outs}
                deps: [long.txt]
                outs: [a.txt]
              b:
                cmd: cat {deps} > {outs}
                deps: [a.txt]
                outs: [b.txt]
              c:
                cmd: ./0run.sh > {outs} && cat b.txt >> {outs}
                deps: [b.txt, 0run.sh]
                outs: [c.txt]
            """,
    })
    os.chmod(ws.root / "0run.sh", 0o755)
    sci.build("-j", "1")
    assert (ws.root / "b.txt").read_text() == "short\n"
    assert (ws.root / "c.txt").read_text() == "ran\nshort\n"


def test_a_dep_copy_a_step_linked_elsewhere_is_never_rewritten_for_the_next_node(ws, tmp_path):
    """A step that hard-links its dep copy to a path outside the box (absolute paths are not
    blocked, SPEC §2) changed the copy's ctime and link count: the box removes that copy instead
    of rewriting it for the next node, so sci never writes to the bytes behind the link."""
    holder = tmp_path / "holder.txt"
    sci = ws({
        "one.txt": "one\n",
        "sci.yaml": """
            version: 1
            steps:
              linker:
                cmd: ln {deps} %s && cat {deps} {deps} > {outs}
                deps: [one.txt]
                outs: [linked.txt]
              after:
                cmd: cat {deps} > {outs}
                deps: [linked.txt]
                outs: [after.txt]
            """ % holder,
    })
    sci.build("-j", "1")
    assert holder.read_text() == "one\n"
    assert (ws.root / "after.txt").read_text() == "one\none\n"
    assert (ws.root / "one.txt").read_text() == "one\n"


def test_an_unsandboxed_step_that_writes_to_its_dep_fails_naming_it(ws):
    """`sandbox: false` runs in the workspace itself (the documented escape hatch): a write to
    a dep cannot be stopped there, but it fails the step, naming the dep."""
    sci = ws({
        "data.txt": "precious\n",
        "sci.yaml": """
            version: 1
            steps:
              greedy:
                cmd: cat {deps} > {outs} && echo x >> {deps}
                deps: [data.txt]
                outs: [out.txt]
                sandbox: false
            """,
    })
    out = sci.build(check=1)
    assert "modified its input data.txt" in out["stderr"]


# -- the sandbox is outside the workspace ----------------------------------------------------------
def test_relative_escapes_from_the_sandbox_never_land_in_the_workspace(ws, tmp_path):
    scratch = tmp_path / "scratch"
    sci = ws({
        "secret.txt": "undeclared\n",
        "sci.yaml": """
            version: 1
            steps:
              escape:
                cmd: >-
                  for up in .. ../.. ../../.. ../../../..; do echo x > $up/escaped.txt || true; done;
                  echo done > {outs}
                outs: [out.txt]
              peek:
                cmd: cat ../../../secret.txt ../../secret.txt ../secret.txt > {outs}
                outs: [peek.txt]
            """,
    }, env={"SCI_SCRATCH": str(scratch)})
    before = tree_bytes(ws.root)
    out = sci.build("--keep-going", check=1)
    assert out["executed"] == ["escape"] and out["failed"] == ["peek"]
    after = tree_bytes(ws.root)
    assert after.pop("out.txt") == b"done\n"
    assert after == before
    assert not list(ws.root.rglob("escaped.txt"))
    assert list(tmp_path.rglob("escaped.txt"))  # they went somewhere: the sandbox's parents


def test_sandboxes_are_made_outside_the_workspace(ws):
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              where:
                cmd: pwd > {outs}
                outs: [where.txt]
            """,
    })
    sci.build()
    box = Path((ws.root / "where.txt").read_text().strip())
    assert ws.root.resolve() not in box.resolve().parents
    assert not (ws.root / ".sci" / "scratch").exists()


def _inode_flags(path: Path) -> int | None:
    """The inode flags of a directory (FS_IOC_GETFLAGS), or None where the filesystem has none."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, 0x80086601, buf)
        return int.from_bytes(buf, sys.byteorder)
    except OSError:
        return None
    finally:
        os.close(fd)


def _keeps_topdir_flag(parent: Path) -> bool:
    """Whether a directory made in `parent` keeps FS_TOPDIR_FL once set (ext2/3/4 do)."""
    import fcntl
    import tempfile

    probe = tempfile.mkdtemp(dir=parent)
    try:
        flags = _inode_flags(Path(probe))
        if flags is None:
            return False
        fd = os.open(probe, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, 0x40086602, (flags | 0x00020000).to_bytes(4, sys.byteorder))
        except OSError:
            return False
        finally:
            os.close(fd)
        return bool(_inode_flags(Path(probe)) & 0x00020000)
    finally:
        os.rmdir(probe)


def test_boxes_are_spread_over_the_disk_where_the_filesystem_can(ws):
    """The box's folder is marked as the top of a hierarchy (ext4's FS_TOPDIR_FL), so each new
    box goes to a block group of its own: on ext4 without a journal, a new file in a group where
    many were just removed costs ~1 ms (docs/performance.md, session 11)."""
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              where:
                cmd: dirname "$PWD" > {outs}
                outs: [where.txt]
            """,
    })
    sci.build()
    folder = Path((ws.root / "where.txt").read_text().strip())
    if not _keeps_topdir_flag(folder.parent):
        pytest.skip(f"the filesystem of {folder} does not keep FS_TOPDIR_FL (an ext2/3/4 flag)")
    assert _inode_flags(folder) & 0x00020000, f"{folder} is not marked as the top of a hierarchy (lsattr: T)"


# -- outputs behind symbolic links -----------------------------------------------------------------
@pytest.mark.parametrize("sandbox", [True, False])
@pytest.mark.parametrize("out", ["linkdir/x.txt", "linkdir/sub/", "linkdir/deeper/x.txt"])
def test_an_output_behind_a_symlink_fails_naming_it_and_writes_nothing_there(ws, tmp_path, sandbox, out):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    is_dir = out.endswith("/")
    cmd = "mkdir -p {outs} && echo x > {outs}/f.txt" if is_dir else "mkdir -p $(dirname {outs}) && echo x > {outs}"
    sci = ws({
        "sci.yaml": f"""
            version: 1
            steps:
              leak:
                cmd: {cmd}
                outs: ["{out}"]
                sandbox: {str(sandbox).lower()}
            """,
    })
    os.symlink(elsewhere, ws.root / "linkdir")
    res = sci("build", check=1)
    assert "linkdir" in res.stderr and "symbolic link" in res.stderr, res.stderr
    assert no_traceback(res.stderr)
    assert list(elsewhere.rglob("*")) == []


def test_a_restore_never_writes_through_a_symlink_put_in_place_of_a_directory(ws, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              make:
                cmd: echo x > {outs}
                outs: [out/x.txt]
            """,
    })
    sci.build()
    (ws.root / "out" / "x.txt").unlink()
    (ws.root / "out").rmdir()
    os.symlink(elsewhere, ws.root / "out")
    res = sci("build", check=1)
    assert "out/x.txt" in res.stderr and "symbolic link" in res.stderr, res.stderr
    assert list(elsewhere.rglob("*")) == []


@pytest.mark.parametrize("out,params", [
    ("sci.yaml", None), ("params.yaml", "params.yaml"), ("conf/p.yaml", "conf/p.yaml"), ("conf/", "conf/p.yaml"),
    (".git/hooks/pre-commit", None), (".git/", None), ("config/hardware.yaml", None), (".", None),
])
def test_files_sci_reads_can_never_be_outputs(ws, out, params):
    files = {
        "sci.yaml": f"""
            version: 1
            {'params: ' + params if params else ''}
            steps:
              clobber:
                cmd: echo x > {{outs}}
                outs: ["{out}"]
            """,
        ".git/HEAD": "ref: refs/heads/main\n",
    }
    if params:
        files[params] = "a: 1\n"
    sci = ws(files)
    before = tree_bytes(ws.root)
    res = sci("build", check=2)
    assert "sci.yaml:" in res.stderr and "output" in res.stderr, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.split("sci.yaml:")[1].split(":")[0].isdigit()  # a line number
    assert tree_bytes(ws.root) == before


# -- outputs that are no regular files -------------------------------------------------------------
@pytest.mark.parametrize("sandbox", [True, False])
@pytest.mark.parametrize("make,what", [
    ("ln -s /dev/zero {outs}", "device"),
    ("mkfifo {outs}", "FIFO"),
    ("ln -s /nonexistent/target {outs}", "nowhere"),
    ("mkdir {outs} && echo a > {outs}/a.txt && mkfifo {outs}/pipe", "FIFO"),
    ("mkdir {outs} && ln -s /dev/zero {outs}/zero", "device"),
])
def test_an_output_that_is_not_a_regular_file_fails_the_step_at_once(ws, sandbox, make, what):
    target = "out" if "mkdir" in make else "out.bin"
    sci = ws({
        "sci.yaml": f"""
            version: 1
            steps:
              odd:
                cmd: {make}
                outs: [{target + ('/' if 'mkdir' in make else '')}]
                sandbox: {str(sandbox).lower()}
            """,
    })
    res = sci("build", check=1, timeout=60)
    assert what in res.stderr and target in res.stderr, res.stderr
    assert no_traceback(res.stderr)
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True


@pytest.mark.parametrize("bad", ["mkfifo b.txt", "ln -s /nonexistent b.txt", "mkdir b.txt && mkfifo b.txt/p"])
def test_a_step_whose_second_output_is_no_output_leaves_the_first_where_it_was(ws, bad):
    """Outputs reach the workspace together or not at all: a sandboxed step whose second output
    cannot be one fails, and its first output (already a good file) is not placed either — the
    workspace keeps what it held, not bytes of a failed run."""
    sci = ws({
        "sci.yaml": f"""
            version: 1
            steps:
              two:
                cmd: "echo new > a.txt && {bad}"
                outs: [a.txt, b.txt]
            """,
        "a.txt": "old\n",
    })
    res = sci("build", check=1, timeout=60)
    assert "b.txt" in res.stderr and no_traceback(res.stderr), res.stderr
    assert (ws.root / "a.txt").read_text() == "old\n"
    assert not os.path.lexists(ws.root / "b.txt")
    assert json.loads(sci("fsck", "--json").stdout)["ok"] is True


def test_a_fifo_in_place_of_a_built_output_is_replaced_not_read(ws):
    sci = ws({
        "sci.yaml": """
            version: 1
            steps:
              make:
                cmd: echo x > {outs}
                outs: [out.txt]
            """,
    })
    sci.build()
    (ws.root / "out.txt").unlink()
    os.mkfifo(ws.root / "out.txt")
    assert sci("status", timeout=60).returncode == 0
    out = sci.build()
    assert out["executed"] == [] and (ws.root / "out.txt").read_text() == "x\n"
