"""The frame table, `frames.csv`: what the engine knew of each frame when it saved it.

One row per saved frame: its number, its step (steps done), its loss (the total of that step), its
SHA-256 and the weight of each scene at that step (they sum to 1; two scenes share it during a
transition). The engine writes it at every save point; readers read it. Only runs that have no
table (pytti's folders and runs of formats before /3) get their frames' steps, losses and scene
weights re-derived from their settings, here (`derived_frames`), with the engine's own scene
schedule (`engine.prompts`).
"""
from __future__ import annotations

import csv
import io
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engine.fsutil import BadFile, read_regular, regular_file
from engine.limits import MAX_FRAME_PIXELS
from engine.prompts import scene_blend
from engine.runfolder import names
from engine.runfolder.meta import (
    MetadataError,
    scene_count,
    to_float,
    to_int,
    total_steps,
)

MAX_TABLE_BYTES = 8_000_000  # ~60k frames; the engine writes ~100 bytes a frame
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
Losses = dict[str, list[float | None]]  # column → values, `step` in steps done
SCENE_COLUMN = "scene_"  # scene_0, scene_1, ...: each scene's weight at the frame's step


@dataclass(frozen=True)
class Frame:
    """One saved frame: its number, file name (in the run's folder), step, loss there, SHA-256 and
    each scene's weight at its step (`()`: unknown)."""

    n: int
    name: str
    step: int
    loss: float | None
    sha256: str | None = None
    scenes: tuple[float, ...] = ()


def scene_weights(index: int, n_scenes: int, steps_per_scene: int, interpolation_steps: int) -> tuple[float, ...]:
    """Each scene's weight at the step of 0-based `index` (engine.prompts' schedule), as a tuple."""
    weights = [0.0] * n_scenes
    for scene, factor in scene_blend(index, n_scenes, steps_per_scene, interpolation_steps):
        weights[scene] = factor
    return tuple(weights)


def table_text(frames: Sequence[Frame]) -> str:
    """frames.csv: `frame,step,loss,sha256,scene_0,...` (as many scene columns as the run has scenes)."""
    n_scenes = max((len(f.scenes) for f in frames), default=0)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["frame", "step", "loss", "sha256", *(f"{SCENE_COLUMN}{k}" for k in range(n_scenes))])
    for f in frames:
        writer.writerow([f.n, f.step, "" if f.loss is None else f"{f.loss:.6g}", f.sha256 or "",
                         *(f"{w:.6g}" for w in f.scenes)])
    return text.getvalue()


def read_table(path: Path, namespace: str) -> list[Frame]:
    """The frame table of the run `namespace`; MetadataError naming what is wrong with it."""
    try:
        rows = list(csv.reader(io.StringIO(read_regular(path, MAX_TABLE_BYTES, "frame table").decode("utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error, BadFile) as e:
        raise MetadataError(f"unreadable {path.name}: {e}") from e
    header = rows[0] if rows else []
    if header[:4] != ["frame", "step", "loss", "sha256"]:
        raise MetadataError(f"unreadable {path.name}: expected the columns frame,step,loss,sha256,scene_0,...")
    frames = []
    for line, row in enumerate(rows[1:], 2):
        n, step = (to_int(v) for v in row[:2]) if len(row) >= 2 else (None, None)
        if n is None or step is None or n < 1 or step < 0 or len(row) != len(header):
            raise MetadataError(f"unreadable {path.name}: line {line} is not a frame row")
        scenes = tuple(to_float(v) or 0.0 for v in row[4:])
        frames.append(Frame(n, names.frame_name(namespace, n), step, to_float(row[2]), row[3] or None, scenes))
    return frames


# ---------------------------------------------------------------- runs without a table

def losses_at(losses: Losses | None, steps: list[int]) -> list[float | None]:
    """The total loss of the last logged step at or before each of `steps` (steps done)."""
    if not losses or "step" not in losses or "total" not in losses:
        return [None] * len(steps)
    logged = sorted((s, k) for k, s in enumerate(losses["step"]) if s is not None)
    keys = [s for s, _ in logged]
    at = [bisect_right(keys, step) - 1 for step in steps]
    return [losses["total"][logged[i][1]] if i >= 0 else None for i in at]


def derived_frames(numbered: list[tuple[int, str]], settings: dict[str, Any], save_every: int,
                   losses: Losses | None, hashes: Sequence[str] = ()) -> list[Frame]:
    """The frames (n, file name) of a run without a frame table: each one's step by the run-folder
    rule, its loss from `losses`, its scene weights from the settings' schedule, its recorded
    SHA-256 (`hashes`, frame 1 first) where there is one."""
    total = total_steps(settings)
    steps = [names.frame_step(n, save_every, total) for n, _ in numbered]
    n_scenes, per_scene = scene_count(settings), to_int(settings.get("steps_per_scene"))
    interpolation = max(to_int(settings.get("interpolation_steps")) or 0, 0)
    frames = []
    for (n, name), step, loss in zip(numbered, steps, losses_at(losses, steps)):
        scenes = (scene_weights(max(step - 1, 0), n_scenes, per_scene, interpolation)
                  if n_scenes and per_scene and per_scene > 0 else ())
        frames.append(Frame(n, name, step, loss, hashes[n - 1] if n <= len(hashes) else None, scenes))
    return frames


def read_frame(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Frame `path` as (H, W, 3) uint8 RGB. Its size is read from the header first: a frame that is
    not `size` (w, h; the run's own width × height, where known) or holds more than
    `MAX_FRAME_PIXELS` is refused before it is decoded (BadFile), as is anything but a regular file."""
    from PIL import Image

    with regular_file(path) as f:
        head = f.read(24)
        f.seek(0)
        if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":  # PNG: the size before Pillow sees the file
            _check_size(path, int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), size)
        try:
            with Image.open(f) as image:
                _check_size(path, *image.size, size)
                return np.asarray(image.convert("RGB"))
        except Image.DecompressionBombError as e:
            raise BadFile(f"{path}: {e}") from None


def _check_size(path: Path, w: int, h: int, size: tuple[int, int] | None) -> None:
    if w * h > MAX_FRAME_PIXELS or (size is not None and (w, h) != tuple(size)):
        expected = f"the run's frames are {size[0]}×{size[1]}" if size else f"a reader decodes at most {MAX_FRAME_PIXELS}"
        raise BadFile(f"{path}: a frame of {w}×{h} pixels; {expected}")
