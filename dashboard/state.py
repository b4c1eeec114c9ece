"""The dashboard's state for one root, in one object: `RootState`.

`python -m dashboard serve` makes one per server and hands it to every session (a re-read by one
session serves them all), `dashboard.show` and the export one per call. Nothing else in the
dashboard keeps state between calls.
"""
from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd

from experiments.scorefiles import scores_dir

from .background import Background
from .catalog import load_catalog
from .index import Index
from .live import Stamp, stamp
from .losstables import LossTables, losses


class RootState:
    """A root of run folders as the dashboard reads it: `root`, its score files' folder `scores`
    (None: none), the catalog's `index` (rows and frame hashes of each folder), the latest
    catalog with the folders' stamp it was read at, the loss tables read, and the analyses of its
    frames (`background`: the effects and the fingerprints, computed off the page's thread)."""

    def __init__(self, root: str | Path, scores: str | Path | None = None, index: Index | None = None):
        self.root = Path(root).resolve()
        self.scores = scores_dir(self.root, scores)
        self.skip = [self.scores] if self.scores else []  # score files are not runs
        self.index = index or Index()
        self.loss_tables = LossTables()
        self.background = Background()
        self._latest: tuple[Stamp, pd.DataFrame] | None = None
        self._sizes: tuple[pd.DataFrame, dict[str, tuple[int, int] | None]] | None = None
        self._lock = threading.Lock()  # guards _latest
        self._reading = threading.Lock()  # one re-read at a time: they share the index

    @classmethod
    def open(cls, root: str | Path, scores: str | Path | None = None, background: bool = False) -> RootState:
        """The state of `root` with its on-disk index (`Index.for_root`; saved by a background
        thread where `background`). FileNotFoundError where `root` is not a folder."""
        if not Path(root).is_dir():
            raise FileNotFoundError(f"no such folder: {root}")
        return cls(root, scores, Index.for_root(root, background))

    def catalog(self) -> pd.DataFrame:
        """The catalog of the root, read again only where a folder changed since it was last read
        (then only the run folders that changed)."""
        now = stamp(self.root)
        with self._lock:
            latest = self._latest
        if latest and latest[0] == now:
            return latest[1]
        with self._reading:
            with self._lock:
                if self._latest and self._latest[0] == now:  # read meanwhile by another session
                    return self._latest[1]
            catalog = load_catalog(self.root, self.skip, self.index, quick=latest is not None)
            with self._lock:
                self._latest = (now, catalog)
        return catalog

    def frame_sizes(self) -> dict[str, tuple[int, int] | None]:
        """Each frame of the latest catalog (read now where none was), as a path relative to the
        root, with its run's (width, height) (None where unknown): what the frame route serves."""
        with self._lock:
            latest = self._latest
        catalog = latest[1] if latest else self.catalog()
        with self._lock:
            if self._sizes is None or self._sizes[0] is not catalog:
                self._sizes = (catalog, {f: None if pd.isna(w) or pd.isna(h) else (int(w), int(h))
                                         for frames, w, h in zip(catalog["frames"], catalog["width"],
                                                                 catalog["height"]) for f in frames})
            return self._sizes[1]

    def losses(self, df: pd.DataFrame) -> pd.DataFrame:
        """`df` (rows of this root's catalog) with their loss tables (`losstables.losses`)."""
        return losses(df, self.root, self.loss_tables)
