"""A catalog row per run: what `read_run` says of it (identity, models, settings, the frame
table, status, runtime), flattened into the columns `COLUMNS`, frame paths relative to the root.
A frame no recorded SHA-256 vouches for is checked from its image header (`check_frame`): one
that is not an image of the run's size marks its run damaged, named."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from engine.fsutil import BadFile, regular_file
from engine.runfolder import HashCache, RunRecord, read_run, run_bases, split_rerun
from engine.runfolder.frames import MAX_FRAME_PIXELS, PNG_SIGNATURE
from engine.runfolder.meta import to_float
from engine.runfolder.walk import Listing, printable

log = logging.getLogger(__name__)
COLUMNS = [
    "run", "cell", "rerun", "folder", "experiment", "vqgan", "perceptors", "perceptor_set", "seed",
    "width", "height", "size", "save_every", "n_frames", "frames", "frame_steps", "frame_losses",
    "frame_scenes", "scenes", "losses", "final_loss", "metrics", "settings", "settings_file",
    "source", "untrained", "status", "reason", "modified", "factors", "vqgan_factor",
    "seconds_per_step", "wall_time_s",
]
NAMED_PROBLEMS = 3  # bad frames a reason names; more are counted
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
        "vqgan_factor": None, "seconds_per_step": None, "wall_time_s": None,
    }


def unreadable_row(root: Path, folder: Path, problem: str) -> dict[str, Any]:
    """The row of a folder that cannot be read."""
    return {**_blank_row(root, folder, folder.name), "reason": f"unreadable: {problem}"}


def check_frame(path: Path, size: tuple[int, int] | None) -> None:
    """BadFile where `path` is not a regular file holding an image of `size` (w, h; None: any) and
    at most MAX_FRAME_PIXELS, read from its header alone (a PNG's IHDR; Pillow's for any other
    format): nothing is decoded."""
    from PIL import Image

    with regular_file(path) as f:
        head = f.read(24)
        if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
            w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        else:
            f.seek(0)
            try:
                with Image.open(f) as image:
                    w, h = image.size
            except (OSError, ValueError, Image.DecompressionBombError):
                raise BadFile(f"{path}: not an image") from None
    if w * h > MAX_FRAME_PIXELS or (size is not None and (w, h) != tuple(size)):
        expected = f"the run's frames are {size[0]}×{size[1]}" if size else \
            f"a reader takes at most {MAX_FRAME_PIXELS} pixels"
        raise BadFile(f"{path}: a frame of {w}×{h} pixels; {expected}")


def frame_problems(record: RunRecord) -> list[str]:
    """What is wrong with the frames of a run that no recorded SHA-256 vouches for (pytti's,
    unfinished and older runs; a verified run's frames are the engine's own): each one that
    `check_frame` refuses, the first NAMED_PROBLEMS named, the others counted."""
    if record.status != "incomplete" and all(f.sha256 for f in record.frames) and record.meta.source == "ours":
        return []
    problems = []
    for frame in record.frames:
        try:
            check_frame(record.folder / frame.name, record.frame_size)
        except (OSError, BadFile) as e:
            problems.append(f"frame {frame.n}: {getattr(e, 'strerror', None) or e}")
    extra = len(problems) - NAMED_PROBLEMS
    return problems[:NAMED_PROBLEMS] + ([f"{extra} more frames cannot be shown"] if extra > 0 else [])


def runtime(metrics: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """(seconds per step, wall time in s) of a run, from its metrics.json where it has them."""
    rate, wall = to_float((metrics or {}).get("steps_per_second")), to_float((metrics or {}).get("wall_time_s"))
    return (1 / rate if rate and rate > 0 else None), wall


def record_row(root: Path, record: RunRecord) -> dict[str, Any]:
    """One catalog row from a run's record: each frame's path (relative to `root`), step, loss and
    scene weights from its frame table; each scene's prompts as `{text, weight}`; its `factors`
    (VQGAN, perceptor set, seed and the level of each varied setting, by setting name); its VQGAN's
    downsampling factor and its runtime. A frame `frame_problems` refuses makes the run damaged."""
    row = _blank_row(root, record.folder, record.base)
    meta, rel = record.meta, record.folder.relative_to(root)
    bad = frame_problems(record)
    if bad:
        record.problems[:0] = bad
        record.status = "damaged"
    seconds_per_step, wall_time_s = runtime(record.metrics)
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
        "vqgan_factor": meta.vqgan_factor, "seconds_per_step": seconds_per_step, "wall_time_s": wall_time_s,
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
