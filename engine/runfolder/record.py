"""Read one run (ours or pytti's) from its folder into a typed record: `read_run`.

A run is `complete` (ours: metrics.json written, every frame as recorded; pytti's: every frame
its settings promise), `damaged` (a finished run whose frame no longer matches its recorded
SHA-256, or is gone: the frame is named) or `incomplete` (running, interrupted, or unreadable
in part: the reason says which). Reading never raises for a bad file: the problems say why.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.fsutil import BadFile, read_regular
from engine.runfolder import names
from engine.runfolder.folder import HashCache, frame_problems
from engine.runfolder.frames import Frame, Losses, derived_frames, read_table
from engine.runfolder.meta import (
    Meta,
    MetadataError,
    from_name,
    read_json_object,
    read_settings_file,
    to_float,
)

MAX_LOSSES_BYTES = 16_000_000  # ~250k steps of 5 prompts: the table a reader takes at most


@dataclass
class RunRecord:
    """Everything the readers (catalog, scores, export) use of one run."""

    folder: Path
    base: str  # the file namespace, with pytti's `(k)` re-run suffix where there is one
    meta: Meta
    experiment: str
    named: dict[str, str]  # the settings a family name spells (`<experiment>_<key>-<value>`)
    frames: list[Frame]
    losses: Losses | None
    metrics: dict[str, Any] | None
    settings_file: str | None
    status: str  # "complete", "damaged" or "incomplete"
    problems: list[str] = field(default_factory=list)

    @property
    def cell(self) -> str:
        return names.split_rerun(self.base)[0]

    @property
    def rerun(self) -> int:
        return names.split_rerun(self.base)[1]

    @property
    def varied(self) -> dict[str, str]:
        """The level of each setting the run's name says was varied, by setting name: a grid cell's
        `key-level` pairs (grid.vary), or a pytti family's (`ref-False_dsw-0.0`: reencode_each_frame,
        direct_stabilization_weight)."""
        cell = names.parse_cell_name(self.base)
        if cell is not None:
            return dict(cell.varied)
        return {names.setting_of(key): value for key, value in self.named.items()}

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(width, height) every frame of the run has, where its settings say."""
        return (self.meta.width, self.meta.height) if self.meta.width and self.meta.height else None

    @property
    def final_loss(self) -> float | None:
        value = (self.metrics or {}).get("final_loss")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return next((f.loss for f in reversed(self.frames) if f.loss is not None), None)

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)


def is_run_folder(files: set[str]) -> bool:
    """Whether a folder holding `files` holds a run (frames, a settings file or a run file)."""
    return any(names.FRAME_RE.match(f) or names.SETTINGS_RE.match(f) or f in names.RUN_FILES for f in files)


def run_bases(folder: Path, files: set[str]) -> list[str]:
    """The file namespaces of the runs in `folder`: the folder's own and its `(k)` re-runs."""
    stem = names.split_rerun(folder.name)[0]
    found = {m["base"] for f in files if (m := names.FRAME_RE.match(f) or names.SETTINGS_RE.match(f))}
    bases = {b for b in found if names.split_rerun(b)[0] == stem}
    return sorted(bases or {folder.name}, key=lambda b: names.split_rerun(b)[1])


def read_losses(path: Path, zero_based: bool = False) -> tuple[Losses, int]:
    """losses.csv as columns of numbers (text: None), `step` in steps done; rows without a
    numeric step are dropped and counted. At most `MAX_LOSSES_BYTES`; OSError, BadFile and
    csv.Error pass through."""
    text = read_regular(path, MAX_LOSSES_BYTES, "losses.csv").decode("utf-8", "replace")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = rows[0] if rows else []
    columns: Losses = {name: [] for name in header}
    dropped = 0
    for row in rows[1:]:
        values = [to_float(v) for v in row[:len(header)]] + [None] * (len(header) - len(row))
        if "step" in columns and values[header.index("step")] is None:
            dropped += 1
            continue
        for name, value in zip(header, values):
            columns[name].append(value)
    if zero_based and "step" in columns:
        columns["step"] = [s + 1 for s in columns["step"]]
    return columns, dropped


def read_meta(folder: Path, base: str, files: set[str]) -> tuple[Meta, str | None, list[str]]:
    """The run's metadata, the settings file it came from and what went wrong. A `(k)` re-run
    without a settings file of its own reads the folder's; without any readable settings file,
    the folder name is all there is."""
    candidates = [f"{b}_settings.{ext}" for b in (base, names.split_rerun(base)[0]) for ext in ("json", "txt")]
    settings_file = next((f for f in candidates if f in files), None)
    if settings_file is None:
        problem = "no settings file"
    else:
        try:
            return read_settings_file(folder / settings_file), settings_file, []
        except MetadataError as e:
            problem = str(e)
    meta = from_name(base)
    return meta, None, [problem + ("; metadata from the folder name" if meta.vqgan != "?" else "")]


def _experiment(base: str, meta: Meta, default: str, known_keys: list[str]) -> tuple[str, dict[str, str]]:
    """The run's experiment and the settings its name spells: the sidecar's, a grid cell's, a pytti
    family's (`<experiment>_<key>-<value>…`), else `default` (the parent folder)."""
    if meta.experiment:
        return meta.experiment, {}
    cell = names.parse_cell_name(base)
    if cell is not None:
        return cell.experiment, {}
    return names.parse_family(base, known_keys) or (default, {})


def read_run(folder: Path, base: str | None = None, files: set[str] | None = None, *,
             hashes: HashCache | None = None, default_experiment: str = "",
             with_losses: bool = True) -> RunRecord:
    """The run named `base` (default: the folder's name) in `folder`, whose file names are
    `files` (default: listed here). Frames of a finished run are checked against their recorded
    SHA-256 through `hashes` (pass one cache to re-read cheaply). Without `with_losses`,
    losses.csv is not read (`losses` None, frame losses None: a cheap summary)."""
    from engine.settings import FIELDS

    base = base or folder.name
    if files is None:
        files = {p.name for p in folder.iterdir() if p.is_file()}
    meta, settings_file, problems = read_meta(folder, base, files)
    losses = read_run_losses(folder, files, meta, problems) if with_losses and meta.source != "pytti" else None
    metrics = _read_metrics(folder, files, problems) if meta.source != "pytti" else None  # pytti writes none
    frames, recorded = _frames(folder, base, files, meta, losses, metrics, problems)
    status = "incomplete"
    if not frames:
        problems.insert(0, "no frames")
    elif meta.source == "ours" and (metrics or {}).get("complete") is not True:
        if metrics is not None or names.METRICS_FILE not in files:
            problems.append("no metrics.json: running or interrupted")
    elif meta.source == "ours" and recorded:
        damage = frame_problems({f.n: folder / f.name for f in frames}, recorded, hashes)
        if damage:
            problems[:0] = damage
            status = "damaged"
    elif meta.expected_frames and len(frames) < meta.expected_frames:
        problems.append(f"{len(frames)} of {meta.expected_frames} frames")
    if status != "damaged" and not problems:
        status = "complete"
    experiment, named = _experiment(base, meta, default_experiment, [*FIELDS, *meta.settings])
    return RunRecord(folder, base, meta, experiment, named, frames, losses, metrics, settings_file, status, problems)


def _frames(folder: Path, base: str, files: set[str], meta: Meta, losses: Losses | None,
            metrics: dict[str, Any] | None, problems: list[str]) -> tuple[list[Frame], list[str]]:
    """The run's frames on disk, and the SHA-256 its writer recorded for each frame (frame 1
    first; none for pytti's): from the frame table where the engine wrote one, else derived
    from the settings (`frames.derived_frames`)."""
    if meta.has_frame_table:
        try:
            table = read_table(folder / names.FRAMES_FILE, base) if names.FRAMES_FILE in files else []
        except MetadataError as e:
            problems.append(str(e))
            table = []
        return _at_most([f for f in table if f.name in files], problems), [f.sha256 or "" for f in table]
    numbered = _at_most(sorted((n, f) for f in files if (n := names.frame_number(f, base)) is not None), problems)
    recorded = (metrics or {}).get("frame_sha256")
    recorded = recorded if isinstance(recorded, list) and all(isinstance(h, str) for h in recorded) else []
    return derived_frames(numbered, meta.settings, meta.save_every, losses, recorded), recorded


def read_run_losses(folder: Path, files: set[str], meta: Meta, problems: list[str]) -> Losses | None:
    """losses.csv where present (only a plain file: a FIFO would block the read); what goes
    wrong is appended to `problems`."""
    if names.LOSSES_FILE not in files:
        return None
    try:
        losses, dropped = read_losses(folder / names.LOSSES_FILE, meta.zero_based_losses)
    except (OSError, csv.Error, BadFile) as e:
        problems.append(f"unreadable losses.csv: {e}")
        return None
    if dropped:
        problems.append(f"losses.csv: {dropped} row(s) without a numeric step ignored")
    return losses


def _at_most(frames: list, problems: list[str]) -> list:
    """The first `MAX_FRAMES` frames (a problem says where there were more)."""
    if len(frames) > names.MAX_FRAMES:
        problems.append(f"{len(frames)} frames, more than the {names.MAX_FRAMES} a reader lists; the first are shown")
    return frames[:names.MAX_FRAMES]


def _read_metrics(folder: Path, files: set[str], problems: list[str]) -> dict[str, Any] | None:
    """metrics.json where present."""
    if names.METRICS_FILE not in files:
        return None
    try:
        return read_json_object(folder / names.METRICS_FILE)
    except MetadataError as e:
        problems.append(str(e))
        return None
