"""A file's bytes through a memory map: read only the pages that are touched, never copied whole.

The plan cache and the action packs are read this way (a parameter edit touches ~1 MB of a 9 MB
plan cache, a look-up one record of a 15 MB pack). Where mapping is refused (an empty file, a
filesystem without mmap support), the bytes are read instead: slower, never wrong.
"""

from __future__ import annotations

import mmap
from typing import BinaryIO


def map_file(fh: BinaryIO) -> bytes | mmap.mmap:
    """The whole of an open file, mapped read-only, or read where it cannot be mapped. The map
    outlives `fh`; a file later replaced (written elsewhere, renamed over) leaves it intact."""
    try:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (ValueError, OSError):  # empty (ValueError), or mapping unsupported here
        fh.seek(0)
        return fh.read()
