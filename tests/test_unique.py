"""sci.unique: names no other writer takes, without the tempfile module."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading

from sci import unique


def test_names_are_distinct_across_threads_and_processes(tmp_path):
    names: list[str] = []

    def take():
        names.extend(unique.name("w-") for _ in range(500))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other = subprocess.run([sys.executable, "-c", "from sci import unique; print(unique.name('w-'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert len(set(names)) == len(names) == 2000 and other not in names
    assert all(n.startswith(f"w-{os.getpid()}-{unique.SALT}-") for n in names)


def test_make_dir_makes_a_new_directory_with_the_mode_asked_for(tmp_path):
    a = unique.make_dir(tmp_path, "n-")
    b = unique.make_dir(tmp_path, "n-", 0o755)
    assert a != b and os.path.basename(a).startswith("n-") and os.listdir(a) == []
    old = os.umask(0)
    try:
        c = unique.make_dir(tmp_path, "x-", 0o750)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(a).st_mode) == 0o700 and stat.S_IMODE(os.stat(c).st_mode) == 0o750


def test_make_dir_steps_over_a_name_left_behind(tmp_path, monkeypatch):
    taken = unique.name("n-")
    os.mkdir(tmp_path / taken)
    counter = iter([taken, taken, "n-fresh"])
    monkeypatch.setattr(unique, "name", lambda prefix="": next(counter))
    assert unique.make_dir(tmp_path, "n-") == str(tmp_path / "n-fresh")


def test_unnamed_file_leaves_no_entry_and_reads_back(tmp_path):
    with unique.unnamed_file(tmp_path) as fh:
        fh.write(b"stdout bytes")
        fh.flush()
        fh.seek(0)
        assert fh.read() == b"stdout bytes"
        assert os.listdir(tmp_path) == []


def test_unnamed_file_without_o_tmpfile_creates_and_unlinks(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "O_TMPFILE")  # as on a system without it
    with unique.unnamed_file(tmp_path) as fh:
        fh.write(b"x")
        assert os.listdir(tmp_path) == []

