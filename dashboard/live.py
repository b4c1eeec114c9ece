"""Live updates: an open page re-reads the catalog only when a run folder has changed.

A folder's modification time changes whenever a file in it is created, renamed or removed
(frames are new files; sidecars and metrics are written by atomic rename), so comparing the
times of the folders under the root, down to the catalog's `MAX_DEPTH`, tells in a few stat
calls whether anything changed. Sessions of one server share the catalog they last read and
one `catalog.Index`, so a re-read reads only the run folders whose files changed.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterable

import pandas as pd
import param

from engine.runfolder.walk import MAX_DEPTH

from .catalog import Index, load_catalog

Stamp = tuple[tuple[str, int], ...]
_lock = threading.Lock()
_reading = threading.Lock()
_shared: dict[tuple[str, tuple[str, ...]], tuple[Stamp, pd.DataFrame]] = {}
_indexes: dict[str, Index] = {}


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


def current_catalog(root: str | Path, skip: Iterable[Path] = ()) -> pd.DataFrame:
    """The catalog of `root`, read again only where a folder changed since any session of this
    process last read it."""
    skip = tuple(sorted(str(p) for p in skip))
    key = (str(Path(root).resolve()), skip)
    now = stamp(root)
    with _lock:
        cached = _shared.get(key)
        if cached and cached[0] == now:
            return cached[1]
    with _reading:  # one re-read at a time: sessions share the index
        if key[0] not in _indexes:
            _indexes[key[0]] = Index.for_root(key[0], background=True)
        index = _indexes[key[0]]
        catalog = load_catalog(root, skip=[Path(p) for p in skip], index=index,
                               quick=cached is not None)
    with _lock:
        _shared[key] = (now, catalog)
    return catalog
