"""One run's folder on disk, as its writer (the engine) sees it: paths, checks, and the text files.

Every file is written atomically (engine.fsutil). The frames' hashes are checked through a
`HashCache`, which re-hashes a file only when its size or modification time changed.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

from engine.errors import StateError
from engine.fsutil import (
    TEMP_MARK,
    BadFile,
    atomic_write,
    atomic_write_json,
    regular_file,
)
from engine.runfolder import names
from engine.runfolder.frames import Frame, read_table, table_text
from engine.runfolder.meta import MetadataError, read_json_object
from engine.settings import result_settings

CHUNK = 1 << 20
_TEMP = re.compile(rf"^\.(?P<target>.+)\.{TEMP_MARK}[A-Za-z0-9_]+\.(?:tmp|mp4)$")  # fsutil.atomic_path's names
#: How each of a run's files begins (by suffix or name), so that a temporary file is known for one of ours.
_HEADS = {".png": (b"\x89PNG",), ".json": (b"{",), ".pt": (b"PK\x03\x04",), names.LOSSES_FILE: (b"step,",),
          names.FRAMES_FILE: (b"frame,",)}


def _head(path: str) -> bytes:
    with regular_file(path) as f:
        return f.read(8)


def _looks_like(target: str, head: bytes) -> bool:
    """Whether `head`, a temporary file's first bytes, can begin the file `target` (empty: yes)."""
    if not head:
        return True
    if target.endswith(".mp4"):
        return head[4:8] == b"ftyp"
    starts = _HEADS.get(target) or _HEADS.get(Path(target).suffix, ())
    return any(head.startswith(s) for s in starts)


class RunFolderConflict(StateError):
    """The output folder already holds a run made with other settings."""


class RunFolderDamaged(StateError):
    """Frames of the run changed on disk while it ran."""


class HashCache:
    """SHA-256 of files, re-computed only for a file whose size or mtime changed since it was
    hashed. One per reader that reads the same folders again (a served dashboard)."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, int, str]] = {}
        self._counting = threading.Lock()  # readers hash in threads (dashboard.catalog)
        self.hashed = 0  # files actually read (for tests and benchmarks)

    def sha256(self, path: Path) -> str:
        """The file's SHA-256 (OSError, or BadFile where it is not a regular file)."""
        stat = os.stat(path)
        key, stamp = str(path), (stat.st_size, stat.st_mtime_ns)
        known = self._known.get(key)
        if known and known[:2] == stamp:
            return known[2]
        digest = hashlib.sha256()
        with regular_file(path) as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
        with self._counting:
            self.hashed += 1
        self._known[key] = (*stamp, digest.hexdigest())
        return digest.hexdigest()


def frame_problems(frames: dict[int, Path], hashes: Iterable[str], cache: HashCache | None = None) -> list[str]:
    """What is wrong with frames 1..len(hashes) (`frames`: n → path) against their recorded
    SHA-256s: each missing, unreadable or changed frame, named (empty: all good)."""
    cache = cache or HashCache()
    problems = []
    for n, expected in enumerate(hashes, 1):
        path = frames.get(n)
        if path is None:
            problems.append(f"frame {n} is missing")
            continue
        try:
            actual = cache.sha256(path)
        except (OSError, BadFile) as err:
            problems.append(f"frame {n} ({path}) is missing or unreadable ({getattr(err, 'strerror', None) or err})")
            continue
        if actual != expected:
            problems.append(f"frame {n} ({path}) is damaged (its SHA-256 differs from the recorded one)")
    return problems


class RunFolder:
    """Paths and checks of one run's folder, `<out_dir>/<file_namespace>/`."""

    def __init__(self, out_dir: str | Path, namespace: str):
        self.namespace = namespace
        self.path = Path(out_dir) / namespace
        self.sidecar = self.path / names.sidecar_name(namespace)
        self.losses = self.path / names.LOSSES_FILE
        self.frame_table = self.path / names.FRAMES_FILE
        self.metrics = self.path / names.METRICS_FILE
        self.video = self.path / names.video_name(namespace)
        self.resume = self.path / names.RESUME_FILE
        self.resume_prev = self.path / names.RESUME_PREV_FILE
        self.lock_file = Path(out_dir) / names.lock_name(namespace)

    def frame(self, n: int) -> Path:
        """Path of frame n (1-based, as pytti numbers them)."""
        return self.path / names.frame_name(self.namespace, n)

    def frame_paths(self) -> dict[int, Path]:
        """The frames on disk, n → path, in numeric order."""
        if not self.path.is_dir():
            return {}
        found = ((names.frame_number(p.name, self.namespace), p) for p in self.path.iterdir())
        return dict(sorted((n, p) for n, p in found if n is not None))

    def read_sidecar(self) -> dict | None:
        """Our sidecar of this folder's run, where there is a readable one of ours (an object whose
        `settings` are an object), else None."""
        try:
            doc = read_json_object(self.sidecar)
        except MetadataError:
            return None
        return doc if isinstance(doc.get("settings"), dict) else None

    def is_complete(self) -> bool:
        return self.metrics.exists()

    def frame_problems(self, hashes: list[str]) -> list[str]:
        """What is wrong with frames 1..len(hashes) against their recorded SHA-256s (empty: all good)."""
        return frame_problems({n: self.frame(n) for n in range(1, len(hashes) + 1)}, hashes)

    def completion_problems(self) -> list[str]:
        """What makes this folder's finished run untrustworthy (empty: nothing): its frames against
        the hashes its frame table records (format /2: metrics.json's `frame_sha256`)."""
        try:
            metrics = read_json_object(self.metrics)
            if metrics.get("complete") is not True:
                raise ValueError("not complete")
            hashes = ([f.sha256 for f in read_table(self.frame_table, self.namespace)]
                      if self.frame_table.exists() else list(metrics["frame_sha256"]))
        except (OSError, ValueError, KeyError, TypeError) as err:  # MetadataError is a ValueError
            return [f"{self.metrics} or {self.frame_table.name} is unreadable ({err})"]
        return self.frame_problems(hashes) if hashes else [f"{self.frame_table.name} lists no frame"]

    def reopen(self) -> None:
        """Make a finished run unfinished again (metrics and video go; frames and sidecar stay)."""
        for path in (self.metrics, self.video, self.resume, self.resume_prev):
            path.unlink(missing_ok=True)

    def clean_temp_files(self) -> None:
        """Delete what a killed writer of this run left, and nothing else: regular files whose name
        says this project made them for one of this run's files (`.<file>.vqclip-<random>.tmp`, the
        video's `.<ns>.mp4.vqclip-<random>.mp4`) and whose first bytes are that file's kind (or none).
        Call it only once the folder is known to hold this run."""
        if not self.path.is_dir():
            return
        own = {self.sidecar.name, self.losses.name, self.frame_table.name, self.metrics.name, self.video.name,
               self.resume.name, self.resume_prev.name}
        for entry in os.scandir(self.path):
            m = _TEMP.match(entry.name)
            target = m["target"] if m else ""
            if not (target in own or names.frame_number(target, self.namespace) is not None):
                continue
            try:
                if entry.is_file(follow_symlinks=False) and _looks_like(target, _head(entry.path)):
                    os.unlink(entry.path)
            except (OSError, BadFile):
                continue

    def clear(self) -> None:
        """Delete this run's own files (and nothing else in the folder)."""
        for path in [*self.frame_paths().values(), self.sidecar, self.losses, self.frame_table, self.metrics,
                     self.video, self.resume, self.resume_prev]:
            path.unlink(missing_ok=True)

    def check_settings(self, settings: dict[str, Any], allow_overwrite: bool) -> str:
        """Decide what to do with this folder: "new", "resume" or "complete".

        A folder holding a run with other settings is an error unless `allow_overwrite`, in
        which case that run's files are deleted. `settings["seed"] == -1` matches any seed.
        """
        old = self.read_sidecar()
        if old is None:
            if self.frame_paths() or self.losses.exists():
                if not allow_overwrite:
                    raise RunFolderConflict(f"{self.path} holds frames but no readable settings sidecar; "
                                            "set allow_overwrite=true to replace them, or pick another file_namespace")
                self.clear()
            return "new"
        diff = _settings_diff(result_settings(old.get("settings", {})), result_settings(settings))
        if diff:
            if not allow_overwrite:
                raise RunFolderConflict(
                    f"{self.path} holds a run with different settings ({'; '.join(diff)}). "
                    "Set allow_overwrite=true to replace it, or pick another file_namespace or out_dir")
            self.clear()
            return "new"
        if self.is_complete():
            return "complete"
        if old.get("format") != names.FORMAT:  # an older version's unfinished run: start it afresh
            self.clear()
            return "new"
        return "resume" if self.resume.exists() else "new"

    def write_losses(self, labels: list[str], rows: list[list[float]]) -> None:
        """losses.csv: `step` (steps done), `scene`, `total`, then one column per prompt label."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["step", "scene", "total", *labels])
        for row in rows:
            writer.writerow([int(row[0]), int(row[1]), *(f"{v:.6g}" for v in row[2:])])
        atomic_write(self.losses, text.getvalue())

    def write_frame_table(self, frames: Sequence[Frame]) -> None:
        """frames.csv, the frame table (engine/runfolder/frames.py)."""
        atomic_write(self.frame_table, table_text(frames))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """metrics.json, the mark of a complete run (written last)."""
        atomic_write_json(self.metrics, {"complete": True, **metrics})


def _settings_diff(old: dict, new: dict) -> list[str]:
    diff = []
    for key in sorted(set(old) | set(new)):
        if key == "seed" and new.get(key) == -1:
            continue
        if old.get(key) != new.get(key):
            diff.append(f"{key}: {old.get(key)!r} there, {new.get(key)!r} now")
    return diff
