"""Live updates: an open page re-reads the catalog only when a run folder has changed.

A folder's modification time changes whenever a file in it is created, renamed or removed
(frames are new files; sidecars and metrics are written by atomic rename), so comparing the
times of the folders under the root, down to the catalog's `MAX_DEPTH`, tells in a few stat
calls whether anything changed (`stamp`; `state.RootState.catalog` compares them).
"""
from __future__ import annotations

import os
from pathlib import Path

import param

from engine.runfolder.walk import MAX_DEPTH

Stamp = tuple[tuple[str, int], ...]


class Live(param.Parameterized):
    """The catalog as last read; the poller replaces it when runs or frames change."""

    catalog = param.DataFrame()


def stamp(root: str | Path, depth: int = MAX_DEPTH) -> Stamp:
    """(path, mtime in ns) of `root` and every folder under it, down to `depth` levels (the
    levels the catalog reads), hidden ones and symlinks left out."""
    found, todo = [], [(str(root), 0)]
    while todo:
        path, level = todo.pop()
        try:
            found.append((path, os.stat(path).st_mtime_ns))
            if level < depth:
                with os.scandir(path) as entries:
                    todo += [(e.path, level + 1) for e in entries if not e.name.startswith(".")
                             and e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
    return tuple(sorted(found))
