"""Read a folder of VQGAN+CLIP runs (ours or pytti's) into a catalog: a DataFrame, a row a run.

The scan never crashes on a bad folder and always ends: symbolic links to folders are not
followed (they may leave the root or loop back into it), nesting is bounded, names that are
not UTF-8 are not read. A folder that cannot be read is a row whose reason says why.

The catalog is a summary (identity, models, settings, frames and their steps, status): loss
tables are read only for the runs asked for (`losses`). An `Index` keeps each folder's rows with
the size and modification time of its files, so a re-read reads only the folders that changed;
`Index.for_root` keeps it on disk in a cache folder outside the runs (`DASHBOARD_CACHE`, else
`$XDG_CACHE_HOME/vqgan-clip-dashboard`), rebuilt silently when stale or damaged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

import pandas as pd

from engine.fsutil import atomic_write
from engine.runfolder import HashCache, RunRecord, read_run, run_bases, split_rerun
from engine.runfolder.frames import losses_at
from engine.runfolder.record import read_meta, read_run_losses
from engine.runfolder.walk import Listing, Stamp, printable, run_folders

log = logging.getLogger(__name__)
COLUMNS = [
    "run", "cell", "rerun", "folder", "experiment", "vqgan", "perceptors", "generator", "seed",
    "width", "height", "size", "save_every", "n_frames", "frames", "frame_steps", "frame_losses",
    "losses", "final_loss", "metrics", "settings", "settings_file", "source", "untrained",
    "status", "reason", "modified",
]
LAZY = ["losses", "frame_losses"]  # filled by `losses` for the runs asked for
INDEX_VERSION = 2
SAVE_DELAY = 5.0  # s from a change to the background write of the index
READERS = min(4, os.cpu_count() or 1)  # run folders read at once (hashing leaves the GIL)
LOSS_CACHE = 256  # loss tables kept in memory (the runs on screen, and some)
Entry = tuple[Stamp, list[dict[str, Any]], int]  # a folder's stamp, rows and own mtime
SUMMARY = ["run", "experiment", "vqgan", "generator", "seed", "size", "n_frames", "final_loss",
           "source", "untrained", "status", "reason"]


def _json_safe(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every missing value as None."""
    return df.astype(object).where(df.notna(), None)


def _blank_row(root: Path, folder: Path, base: str) -> dict[str, Any]:
    rel = folder.relative_to(root)  # "." where the root is itself the run folder
    run = (rel if base == folder.name else rel / base).as_posix()
    cell, rerun = split_rerun(base)
    group = rel.parent.as_posix()
    return {
        "run": printable(base if run == "." else run), "cell": printable(cell), "rerun": rerun,
        "folder": printable(rel.as_posix()), "experiment": "" if group == "." else printable(group),
        "vqgan": "?", "perceptors": [], "generator": "?", "seed": None, "width": None,
        "height": None, "size": "?", "save_every": 1, "n_frames": 0, "frames": [],
        "frame_steps": [], "frame_losses": [], "losses": None, "final_loss": None,
        "metrics": None, "settings": {}, "settings_file": None, "source": "folder name",
        "untrained": False, "status": "incomplete", "reason": "", "modified": None,
    }


def unreadable_row(root: Path, folder: Path, problem: str) -> dict[str, Any]:
    """The row of a folder that cannot be read."""
    return {**_blank_row(root, folder, folder.name), "reason": f"unreadable: {problem}"}


def record_row(root: Path, record: RunRecord) -> dict[str, Any]:
    """One catalog row from a run's record (frame paths relative to `root`)."""
    row = _blank_row(root, record.folder, record.base)
    meta, rel = record.meta, record.folder.relative_to(root)
    return {
        **row, "experiment": record.experiment, "vqgan": meta.vqgan,
        "perceptors": meta.perceptors, "generator": "+".join(meta.perceptors) or "?",
        "seed": meta.seed, "width": meta.width, "height": meta.height,
        "size": f"{meta.width}x{meta.height}" if meta.width and meta.height else "?",
        "save_every": meta.save_every, "n_frames": len(record.frames),
        "frames": [(rel / f.name).as_posix() for f in record.frames],
        "frame_steps": [f.step for f in record.frames],
        "frame_losses": [f.loss for f in record.frames], "losses": record.losses,
        "final_loss": record.final_loss, "metrics": record.metrics,
        "settings": {**record.named, **meta.settings}, "settings_file": record.settings_file,
        "source": meta.source, "untrained": meta.untrained, "status": record.status,
        "reason": record.reason.replace(f"{record.folder}{os.sep}", ""),
    }


def _rows(root: Path, listing: Listing, hashes: HashCache | None) -> list[dict[str, Any]]:
    """The rows of one listed folder; a folder that fails to read is one unreadable row."""
    if listing.problem:
        return [unreadable_row(root, listing.folder, listing.problem)]
    group = listing.folder.relative_to(root).parent.as_posix()
    default = "" if group == "." else printable(group)  # the experiment of a run without one
    modified = max((mtime for _, _, mtime in listing.stamp), default=None)
    try:
        return [{**record_row(root, read_run(listing.folder, base, listing.files, hashes=hashes,
                                             default_experiment=default, with_losses=False)),
                 "modified": None if modified is None else modified / 1e9}
                for base in run_bases(listing.folder, listing.files)]
    except Exception as e:  # noqa: BLE001 - one bad folder must never hide the others
        log.exception("catalog: cannot read %s", printable(str(listing.folder)))
        return [unreadable_row(root, listing.folder, f"{type(e).__name__}: {e}")]


def cache_dir() -> Path:
    """Where on-disk indexes live: `$DASHBOARD_CACHE`, else the user's cache folder."""
    if os.environ.get("DASHBOARD_CACHE"):
        return Path(os.environ["DASHBOARD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vqgan-clip-dashboard"


class Index:
    """Each folder's rows with the stamp of its files: `rows` reads a folder only where its
    stamp changed (`reads` counts the folders read). With a `path`, kept in that file (written
    by a thread of its own `SAVE_DELAY` s later where `background`: a served page does not wait
    for it)."""

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
        """The saved folders; none where the file is missing, stale or damaged."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8")) if self.path else {}
            if doc.get("version") != INDEX_VERSION:
                return {}
            return {k: (tuple(tuple(f) for f in stamp), rows, int(mtime))
                    for k, (stamp, rows, mtime) in doc["folders"].items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
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
                            pool.map(lambda listing: _rows(root, listing, self.hashes), stale)))
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


def load_catalog(root: str | Path, skip: Iterable[Path] = (), index: Index | None = None,
                 quick: bool = False) -> pd.DataFrame:
    """The catalog of every run under `root` (or of `root`, itself a run folder): one row per
    run, columns `COLUMNS`, loss tables not read (see `losses`). Frames of finished runs are
    verified; pass one `index` to re-read only what changed (`quick`: only the folders whose
    own modification time changed, as a served page polls). FileNotFoundError where `root` is
    not a folder."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    index = index or Index()
    rows = index.rows(root, run_folders(root, skip, known=index.unchanged if quick else None))
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"seed": "Int64", "width": "Int64", "height": "Int64"})


_loss_tables: OrderedDict[tuple, tuple[Any, list[str]]] = OrderedDict()


def _run_losses(root: Path, row: Any) -> tuple[Any, list[str]]:
    """(loss table, problems) of a catalog row, cached while losses.csv is unchanged."""
    folder = root / row.folder
    try:
        listed = set(os.listdir(folder))
        stat = os.stat(folder / "losses.csv") if "losses.csv" in listed else None
    except OSError as e:
        return None, [f"unreadable losses.csv: {e}"]
    base = PurePosixPath(row.run).name
    key = (str(folder), base, stat and (stat.st_size, stat.st_mtime_ns))
    if key not in _loss_tables:
        meta = read_meta(folder, base, listed)[0]
        problems: list[str] = []
        table = None if meta.source == "pytti" else read_run_losses(folder, listed, meta, problems)
        _loss_tables[key] = (table, problems)
        while len(_loss_tables) > LOSS_CACHE:
            _loss_tables.popitem(last=False)
    _loss_tables.move_to_end(key)
    return _loss_tables[key]


def losses(df: pd.DataFrame, root: str | Path) -> pd.DataFrame:
    """`df` (catalog rows of `root`) with each run's loss table (`losses`), the loss at each
    frame (`frame_losses`) and, where metrics.json has none, the last frame's as `final_loss`;
    problems reading losses.csv join the run's `reason`."""
    root = Path(root).resolve()
    out = df.copy()
    read = [_run_losses(root, row) for row in df.itertuples()]
    out["losses"] = [table for table, _ in read]
    out["frame_losses"] = [losses_at(table, list(steps))
                           for (table, _), steps in zip(read, df["frame_steps"])]
    last = [next((v for v in reversed(fl) if v is not None), None) for fl in out["frame_losses"]]
    out["final_loss"] = [f if f is not None and not pd.isna(f) else x
                         for f, x in zip(df["final_loss"], last)]
    out["reason"] = ["; ".join(filter(None, [r, *p])) for r, (_, p) in zip(df["reason"], read)]
    return out


def select(df: pd.DataFrame, vqgans: Iterable[str] | None = None,
           perceptors: Iterable[str] | None = None,
           experiments: Iterable[str] | None = None) -> pd.DataFrame:
    """The runs with frames whose VQGAN, experiment and every perceptor are among those given
    (None = no filter). `ViT-B32` alone never brings in a `ViT-B32+RN50` run."""
    keep = df["n_frames"] > 0
    if vqgans is not None:
        keep &= df["vqgan"].isin(list(vqgans))
    if experiments is not None:
        keep &= df["experiment"].isin(list(experiments))
    if perceptors is not None:
        allowed = set(perceptors)
        keep &= df["perceptors"].map(lambda ps: set(ps) <= allowed)
    return df[keep]


def perceptor_names(df: pd.DataFrame) -> list[str]:
    """Every perceptor slug in the catalog, in order of first appearance."""
    return list(dict.fromkeys(p for ps in df["perceptors"] for p in ps))


def to_table(df: pd.DataFrame) -> str:
    """A readable table of the catalog."""
    if df.empty:
        return "no runs found"
    table = df[SUMMARY].round({"final_loss": 4}).astype(object)
    return table.where(table.notna(), "-").to_string(index=False, max_colwidth=60)


def to_json(df: pd.DataFrame, with_losses: bool = False) -> str:
    """The catalog as a JSON list of runs; loss tables (`LAZY`) only `with_losses` (read them
    first with `losses`)."""
    records = _json_safe(df if with_losses else df.drop(columns=LAZY)).to_dict("records")
    return json.dumps(records, indent=2, default=str)
