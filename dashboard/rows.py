"""A catalog row per run: what `read_run` says of it (identity, models, settings, the frame
table, status), flattened into the columns `COLUMNS`, frame paths relative to the root."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from engine.runfolder import HashCache, RunRecord, read_run, run_bases, split_rerun
from engine.runfolder.walk import Listing, printable

log = logging.getLogger(__name__)
COLUMNS = [
    "run", "cell", "rerun", "folder", "experiment", "vqgan", "perceptors", "perceptor_set", "seed",
    "width", "height", "size", "save_every", "n_frames", "frames", "frame_steps", "frame_losses",
    "frame_scenes", "scenes", "losses", "final_loss", "metrics", "settings", "settings_file",
    "source", "untrained", "status", "reason", "modified", "factors",
]
#: The factors every run has; each setting its name says was varied is one more (`RunRecord.varied`).
BASE_FACTORS = ("vqgan", "perceptor_set", "seed")
#: Renamed columns: old name → new. For one release `catalog --json` carries the old name too and
#: the axes take it (URLs, `--rows`/`--cols`, `dashboard.show`).
OLD_COLUMNS = {"generator": "perceptor_set"}


def _blank_row(root: Path, folder: Path, base: str) -> dict[str, Any]:
    rel = folder.relative_to(root)  # "." where the root is itself the run folder
    run = (rel if base == folder.name else rel / base).as_posix()
    cell, rerun = split_rerun(base)
    group = rel.parent.as_posix()
    return {
        "run": printable(base if run == "." else run), "cell": printable(cell), "rerun": rerun,
        "folder": printable(rel.as_posix()), "experiment": "" if group == "." else printable(group),
        "vqgan": "?", "perceptors": [], "perceptor_set": "?", "seed": None, "width": None,
        "height": None, "size": "?", "save_every": 1, "n_frames": 0, "frames": [],
        "frame_steps": [], "frame_losses": [], "frame_scenes": [], "scenes": [], "losses": None,
        "final_loss": None, "metrics": None, "settings": {}, "settings_file": None,
        "source": "folder name", "untrained": False, "status": "incomplete", "reason": "",
        "modified": None, "factors": {"vqgan": "?", "perceptor_set": "?", "seed": None},
    }


def unreadable_row(root: Path, folder: Path, problem: str) -> dict[str, Any]:
    """The row of a folder that cannot be read."""
    return {**_blank_row(root, folder, folder.name), "reason": f"unreadable: {problem}"}


def record_row(root: Path, record: RunRecord) -> dict[str, Any]:
    """One catalog row from a run's record: each frame's path (relative to `root`), step, loss and
    scene weights from its frame table; each scene's prompts as `{text, weight}`; its `factors`
    (VQGAN, perceptor set, seed and the level of each varied setting, by setting name)."""
    row = _blank_row(root, record.folder, record.base)
    meta, rel = record.meta, record.folder.relative_to(root)
    return {
        **row, "experiment": record.experiment, "vqgan": meta.vqgan,
        "perceptors": meta.perceptors, "perceptor_set": meta.perceptor_set,
        "seed": meta.seed, "width": meta.width, "height": meta.height,
        "size": f"{meta.width}x{meta.height}" if meta.width and meta.height else "?",
        "save_every": meta.save_every, "n_frames": len(record.frames),
        "frames": [(rel / f.name).as_posix() for f in record.frames],
        "frame_steps": [f.step for f in record.frames],
        "frame_losses": [f.loss for f in record.frames],
        "frame_scenes": [list(f.scenes) for f in record.frames],
        "scenes": [[{"text": text, "weight": weight} for text, weight in scene] for scene in meta.scenes],
        "losses": record.losses, "final_loss": record.final_loss, "metrics": record.metrics,
        "settings": {**record.named, **meta.settings}, "settings_file": record.settings_file,
        "source": meta.source, "untrained": meta.untrained, "status": record.status,
        "reason": record.reason.replace(f"{record.folder}{os.sep}", ""),
        "factors": {"vqgan": meta.vqgan, "perceptor_set": meta.perceptor_set, "seed": meta.seed,
                    **record.varied},
    }


def folder_rows(root: Path, listing: Listing, hashes: HashCache | None) -> list[dict[str, Any]]:
    """The rows of one listed folder (loss tables not read); a folder that fails to read is one
    unreadable row."""
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
