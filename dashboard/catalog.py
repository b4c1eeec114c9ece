"""Read a folder of VQGAN+CLIP runs (ours or pytti's) into a catalog: a DataFrame, a row a run.

The scan never crashes on a bad folder and always ends: symbolic links to folders are not
followed (they may leave the root or loop back into it), nesting is bounded, names that are
not UTF-8 are not read. A folder that cannot be read is a row whose reason says why.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import pandas as pd

from engine.runfolder import HashCache, RunRecord, is_run_folder, read_run, run_bases, split_rerun

log = logging.getLogger(__name__)
MAX_DEPTH = 8  # folder levels searched below the root
COLUMNS = [
    "run", "cell", "rerun", "folder", "experiment", "vqgan", "perceptors", "generator", "seed",
    "width", "height", "size", "save_every", "n_frames", "frames", "frame_steps", "frame_losses",
    "losses", "final_loss", "metrics", "settings", "settings_file", "source", "untrained",
    "status", "reason",
]
SUMMARY = ["run", "experiment", "vqgan", "generator", "seed", "size", "n_frames", "final_loss",
           "source", "untrained", "status", "reason"]


class Listing(NamedTuple):
    """What one folder holds, as the scan sees it."""

    folder: Path
    files: set[str]
    problem: str | None = None  # set where the folder itself cannot be read


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as lone surrogates
        return False


def printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 shown as `\\xNN`."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _inside(path: Path, root: Path) -> bool:
    try:
        return Path(os.path.realpath(path)).is_relative_to(root)
    except (OSError, ValueError):
        return False


def _entries(folder: Path, root: Path) -> tuple[set[str], list[Path], list[Listing]]:
    """(file names, sub-folders to search, sub-folders listed as unreadable) of `folder`.
    Hidden entries are left out; a link to a file counts only where it stays in `root`."""
    files: set[str] = set()
    subdirs: list[Path] = []
    bad: list[Listing] = []
    with os.scandir(folder) as scan:
        for entry in scan:
            path = folder / entry.name
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if _utf8(entry.name):
                    subdirs.append(path)
                else:
                    bad.append(Listing(path, set(), "the folder name is not UTF-8: rename it"))
            elif entry.is_symlink() and entry.is_dir():
                bad.append(Listing(path, set(), "a link to a folder: links to folders are not "
                                                f"followed (this one points to {printable(os.readlink(path))})"))
            elif not _utf8(entry.name):
                log.warning("catalog: ignoring %s: the name is not UTF-8", printable(str(path)))
            elif entry.is_file() and (not entry.is_symlink() or _inside(path, root)):
                files.add(entry.name)
    return files, sorted(subdirs), sorted(bad)


def run_folders(root: Path, skip: Iterable[Path] = (), depth: int = 1,
                top: Path | None = None) -> Iterator[Listing]:
    """Folders under `root` holding run files, or empty ones (listed as incomplete), and
    folders that cannot be read (with the problem); others are searched for nested runs, at
    most `MAX_DEPTH` levels down. `skip` is left out."""
    top = top or root
    skip = {p.resolve() for p in skip}
    try:
        _, subdirs, bad = _entries(root, top)
    except OSError as e:
        yield Listing(root, set(), f"cannot list the folder: {e.strerror or e}")
        return
    yield from bad
    for folder in subdirs:
        if folder.resolve() in skip:
            continue
        try:
            files, inner, inner_bad = _entries(folder, top)
        except OSError as e:
            yield Listing(folder, set(), f"cannot list the folder: {e.strerror or e}")
            continue
        if is_run_folder(files) or not (inner or inner_bad):
            yield Listing(folder, files)
        elif depth >= MAX_DEPTH:
            log.warning("catalog: not searching %s: more than %d levels below the root",
                        folder, MAX_DEPTH)
        else:
            yield from run_folders(folder, skip, depth + 1, top)


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
        "untrained": False, "status": "incomplete", "reason": "",
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
    try:
        return [record_row(root, read_run(listing.folder, base, listing.files, hashes=hashes,
                                          default_experiment=default))
                for base in run_bases(listing.folder, listing.files)]
    except Exception as e:  # noqa: BLE001 - one bad folder must never hide the others
        log.exception("catalog: cannot read %s", printable(str(listing.folder)))
        return [unreadable_row(root, listing.folder, f"{type(e).__name__}: {e}")]


def load_catalog(root: str | Path, skip: Iterable[Path] = (),
                 hashes: HashCache | None = None) -> pd.DataFrame:
    """The catalog of every run under `root` (or of `root`, itself a run folder): one row per
    run, columns `COLUMNS`. Frames of finished runs are verified through `hashes` (keep one
    cache to re-read cheaply). FileNotFoundError where `root` is not a folder."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    files = _entries(root, root)[0]
    listings = [Listing(root, files)] if is_run_folder(files) else run_folders(root, skip)
    rows = [row for listing in listings for row in _rows(root, listing, hashes)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"seed": "Int64", "width": "Int64", "height": "Int64"})


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


def to_json(df: pd.DataFrame) -> str:
    """The full catalog as a JSON list of runs."""
    records = _json_safe(df).to_dict("records")
    return json.dumps(records, indent=2, default=str)
