"""The catalog's index: each run folder's rows with the size and modification time of its files,
so that a re-read reads only the folders that changed. `Index.for_root` keeps it on disk in a
cache folder outside the runs (`DASHBOARD_CACHE`, else `$XDG_CACHE_HOME/vqgan-clip-dashboard`),
rebuilt silently when stale or damaged."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from engine.fsutil import atomic_write, read_regular
from engine.runfolder import HashCache
from engine.runfolder.walk import Listing, Stamp

from .rows import folder_rows

log = logging.getLogger(__name__)
INDEX_VERSION = 5  # 3: rows carry perceptor_set, frame_scenes and scenes; 4: factors; 5: runtime
MAX_INDEX_BYTES = 1 << 30  # an index of 1000 runs of 40 frames is ~10 MB; a larger file is not read
SAVE_DELAY = 5.0  # s from a change to the background write of the index
READERS = min(4, os.cpu_count() or 1)  # run folders read at once (hashing leaves the GIL)
Entry = tuple[Stamp, list[dict[str, Any]], int]  # a folder's stamp, rows and own mtime


def cache_dir() -> Path:
    """Where on-disk indexes live: `$DASHBOARD_CACHE`, else the user's cache folder."""
    if os.environ.get("DASHBOARD_CACHE"):
        return Path(os.environ["DASHBOARD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vqgan-clip-dashboard"


class Index:
    """Each folder's rows with the stamp of its files: `rows` reads a folder only where its
    stamp changed (`reads` counts the folders read); `hashes` re-hashes a finished run's frame only
    where its size or time changed. With a `path`, kept in that file (written by a thread of its
    own `SAVE_DELAY` s later where `background`: a served page does not wait for it)."""

    def __init__(self, path: Path | None = None, background: bool = False):
        self.path = path
        self.background = background
        self.hashes = HashCache()
        self.reads = 0
        self._writing = threading.Lock()
        self._pending: dict[str, Any] | None = None
        self.folders: dict[str, Entry] = self._load()

    @classmethod
    def for_root(cls, root: str | Path, background: bool = False) -> Index:
        """The on-disk index of `root`, in `cache_dir()`."""
        key = hashlib.sha256(os.fsencode(Path(root).resolve())).hexdigest()[:24]
        return cls(cache_dir() / f"catalog-{key}.json", background)

    def _load(self) -> dict[str, Entry]:
        """The saved folders; none where the file is missing, stale, damaged, not a regular file or
        over MAX_INDEX_BYTES."""
        try:
            doc = json.loads(read_regular(self.path, MAX_INDEX_BYTES, "catalog index")) if self.path else {}
            if doc.get("version") != INDEX_VERSION:
                return {}
            return {k: (tuple(tuple(f) for f in stamp), rows, int(mtime))
                    for k, (stamp, rows, mtime) in doc["folders"].items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:  # BadFile is a ValueError
            if not isinstance(e, FileNotFoundError):
                log.debug("catalog: not reading the index %s: %s", self.path, e)
            return {}

    def save(self) -> None:
        """Write the index (atomically); an unwritable cache folder is not an error."""
        if self.path is None:
            return
        doc = {"version": INDEX_VERSION, "folders": self.folders}
        if not self.background:
            self._write(doc)
            return
        with self._writing:
            waiting, self._pending = self._pending is not None, doc
        if not waiting:  # one write, SAVE_DELAY after the first change, of the latest state
            timer = threading.Timer(SAVE_DELAY, lambda: self._write(None))
            timer.daemon = True
            timer.start()

    def _write(self, doc: dict[str, Any] | None) -> None:
        with self._writing:
            doc, self._pending = doc or self._pending, None
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.path, json.dumps(doc, separators=(",", ":"), default=str))
            except OSError as e:
                log.debug("catalog: not saving the index %s: %s", self.path, e)

    def rows(self, root: Path, listings: Iterable[Listing]) -> list[dict[str, Any]]:
        """The rows of `listings`, read again only where a folder's stamp changed (READERS
        folders at a time: hashing frames and reading files leave the GIL)."""
        listings = list(listings)
        stale = [listing for listing in listings if self._stale(listing)]
        with ThreadPoolExecutor(READERS) as pool:
            read = dict(zip((str(listing.folder) for listing in stale),
                            pool.map(lambda listing: folder_rows(root, listing, self.hashes), stale)))
        self.reads += len(stale)
        fresh: dict[str, Entry] = {}
        for listing in listings:
            key = str(listing.folder)
            fresh[key] = ((listing.stamp, read[key], listing.mtime) if key in read
                          else self.folders[key])
        changed = fresh != self.folders
        self.folders = fresh
        if changed:
            self.save()
        return [row for _, rows, _ in fresh.values() for row in rows]

    def _stale(self, listing: Listing) -> bool:
        known = self.folders.get(str(listing.folder))
        return bool(listing.problem) or known is None or known[0] != listing.stamp

    def unchanged(self, folder: Path) -> Listing | None:
        """The listing of a run folder whose own modification time is the one it was read at
        (no file made, renamed or removed since; a file rewritten in place is not seen)."""
        entry = self.folders.get(str(folder))
        try:
            if entry is None or not entry[2] or os.stat(folder).st_mtime_ns != entry[2]:
                return None
        except OSError:
            return None
        return Listing(folder, {name for name, _, _ in entry[0]}, stamp=entry[0], mtime=entry[2])
