"""Read a folder of VQGAN+CLIP runs (ours or pytti's) into a catalog: a DataFrame, a row a run.

The scan never crashes on a bad folder and always ends: symbolic links to folders are not
followed (they may leave the root or loop back into it), nesting is bounded, names that are
not UTF-8 are not read. A folder that cannot be read is a row whose reason says why.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import pandas as pd

from engine.settings import FIELDS

from .sidecars import (
    Meta, MetadataError, from_name, parse_cell_name, parse_setting_name, read_json_object,
    read_ours, read_pytti, split_rerun,
)

log = logging.getLogger(__name__)
RUN_FILES = ("losses.csv", "metrics.json")
FRAME_RE = re.compile(r"^(?P<base>.+)_(?P<n>\d+)\.png$")
SETTINGS_RE = re.compile(r"^(?P<base>.+)_settings\.(?P<ext>json|txt)$")
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


def _is_run_folder(files: set[str]) -> bool:
    return any(FRAME_RE.match(f) or SETTINGS_RE.match(f) or f in RUN_FILES for f in files)


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
        if _is_run_folder(files) or not (inner or inner_bad):
            yield Listing(folder, files)
        elif depth >= MAX_DEPTH:
            log.warning("catalog: not searching %s: more than %d levels below the root",
                        folder, MAX_DEPTH)
        else:
            yield from run_folders(folder, skip, depth + 1, top)


def _frame_losses(losses: pd.DataFrame | None, steps: list[int]) -> list[float | None]:
    """The total loss at each frame step: the last logged row at or before it."""
    if losses is None or not {"step", "total"} <= set(losses.columns) or losses.empty:
        return [None] * len(steps)
    log_ = losses.sort_values("step")
    idx = log_["step"].searchsorted(steps, side="right") - 1
    totals = log_["total"].tolist()
    return [float(totals[i]) if i >= 0 and pd.notna(totals[i]) else None for i in idx]


def _json_safe(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every missing value as None."""
    return df.astype(object).where(df.notna(), None)


def _read_losses(folder: Path, files: set[str]) -> tuple[pd.DataFrame | None, str | None]:
    """losses.csv with every column numeric (text becomes NaN); rows without a numeric step are
    dropped and counted in the problem."""
    path = folder / "losses.csv"
    if path.name not in files:  # absent, or not a plain file (a FIFO would block the read)
        return None, None
    try:
        raw = pd.read_csv(path)
    except (OSError, ValueError) as e:
        return None, f"unreadable losses.csv: {e}"
    losses = raw.apply(pd.to_numeric, errors="coerce")
    if "step" not in losses.columns:
        return losses, None
    bad = int(losses["step"].isna().sum())
    losses = losses[losses["step"].notna()]
    return losses, (f"losses.csv: {bad} row(s) without a numeric step ignored" if bad else None)


def _read_metrics(folder: Path, files: set[str]) -> tuple[dict[str, Any] | None, str | None]:
    path = folder / "metrics.json"
    if path.name not in files:
        return None, None
    try:
        return read_json_object(path), None
    except MetadataError as e:
        return None, str(e)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _sidecar(base: str, files: set[str]) -> str | None:
    return next((f"{base}_settings.{e}" for e in ("json", "txt") if f"{base}_settings.{e}" in files),
                None)


def read_meta(folder: Path, base: str, files: set[str]) -> tuple[Meta, str | None, list[str]]:
    """The run's metadata, the settings file it came from and what went wrong. A `(k)` re-run
    without a settings file of its own reads the folder's; without any readable settings file,
    the folder name is all there is."""
    sidecar = _sidecar(base, files) or _sidecar(split_rerun(base)[0], files)
    if sidecar is None:
        problem = "no settings file"
    else:
        try:
            read = read_ours if sidecar.endswith(".json") else read_pytti
            return read(folder / sidecar), sidecar, []
        except MetadataError as e:
            problem = str(e)
    meta = from_name(base)
    return meta, None, [problem + ("; metadata from the folder name" if meta.vqgan != "?" else "")]


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


def _experiment(base: str, meta: Meta, group: str) -> tuple[str, dict[str, str]]:
    """The run's experiment and the settings its name spells (`<experiment>_<key>-<value>`)."""
    if meta.experiment:
        return meta.experiment, {}
    grid_experiment = parse_cell_name(base)[0]
    if grid_experiment:
        return grid_experiment, {}
    family = parse_setting_name(base, [*FIELDS, *meta.settings])
    return family if family else (group, {})


def read_run(root: Path, folder: Path, base: str, files: set[str]) -> dict[str, Any]:
    """One catalog row: the run whose files in `folder` are named `<base>_*`."""
    row = _blank_row(root, folder, base)
    frames = sorted(
        (int(m["n"]), name) for name in files
        if (m := FRAME_RE.match(name)) and m["base"] == base
    )
    meta, sidecar, problems = read_meta(folder, base, files)

    (losses, losses_err), (metrics, metrics_err) = (None, None), (None, None)
    if meta.source != "pytti":  # pytti writes neither file
        (losses, losses_err) = _read_losses(folder, files)
        (metrics, metrics_err) = _read_metrics(folder, files)
        problems += [e for e in (losses_err, metrics_err) if e]
    if not frames:
        problems.insert(0, "no frames")
    elif meta.source == "ours" and not metrics_err and (metrics or {}).get("complete") is not True:
        problems.append("no metrics.json: running or interrupted")
    elif meta.expected_frames and len(frames) < meta.expected_frames:
        problems.append(f"{len(frames)} of {meta.expected_frames} frames")

    steps = [n * meta.save_every for n, _ in frames]
    frame_losses = _frame_losses(losses, steps)
    final_loss = _number((metrics or {}).get("final_loss"))
    if final_loss is None:
        final_loss = next((x for x in reversed(frame_losses) if x is not None), None)
    experiment, named = _experiment(base, meta, row["experiment"])
    rel = folder.relative_to(root)
    return {
        **row, "experiment": experiment, "vqgan": meta.vqgan, "perceptors": meta.perceptors,
        "generator": "+".join(meta.perceptors) or "?", "seed": meta.seed,
        "width": meta.width, "height": meta.height,
        "size": f"{meta.width}x{meta.height}" if meta.width and meta.height else "?",
        "save_every": meta.save_every, "n_frames": len(frames),
        "frames": [(rel / name).as_posix() for _, name in frames], "frame_steps": steps,
        "frame_losses": frame_losses,
        "losses": None if losses is None else _json_safe(losses).to_dict("list"),
        "final_loss": final_loss, "metrics": metrics, "settings": meta.settings or named,
        "settings_file": sidecar, "source": meta.source, "untrained": meta.untrained,
        "status": "incomplete" if problems else "complete", "reason": "; ".join(problems),
    }


def _run_bases(folder: Path, files: set[str]) -> list[str]:
    """The base names of the runs in `folder`: the folder's own name and its `(k)` re-runs."""
    stem = split_rerun(folder.name)[0]
    found = {m["base"] for name in files if (m := FRAME_RE.match(name) or SETTINGS_RE.match(name))}
    bases = {b for b in found if split_rerun(b)[0] == stem}
    return sorted(bases or {folder.name}, key=lambda b: split_rerun(b)[1])


def _rows(root: Path, listing: Listing) -> list[dict[str, Any]]:
    """The rows of one listed folder; a folder that fails to read is one unreadable row."""
    if listing.problem:
        return [unreadable_row(root, listing.folder, listing.problem)]
    try:
        return [read_run(root, listing.folder, base, listing.files)
                for base in _run_bases(listing.folder, listing.files)]
    except Exception as e:  # noqa: BLE001 - one bad folder must never hide the others
        log.exception("catalog: cannot read %s", printable(str(listing.folder)))
        return [unreadable_row(root, listing.folder, f"{type(e).__name__}: {e}")]


def load_catalog(root: str | Path, skip: Iterable[Path] = ()) -> pd.DataFrame:
    """The catalog of every run under `root` (or of `root`, itself a run folder): one row per
    run, columns `COLUMNS`."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    files = _entries(root, root)[0]
    listings = [Listing(root, files)] if _is_run_folder(files) else run_folders(root, skip)
    rows = [row for listing in listings for row in _rows(root, listing)]
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
