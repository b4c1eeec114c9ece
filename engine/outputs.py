"""A run's folder: frames, settings sidecar, losses, metrics, video and resume state.

Layout and formats: docs/run-folder-format.md. Every file is written atomically. Frames,
losses and resume state go through one background writer so that PNG encoding stays off the
optimisation loop, and are written in order: the resume state never claims a frame that is
not on disk yet.
"""
from __future__ import annotations

import csv
import io
import json
import queue
import re
import threading
from pathlib import Path
from typing import Any, Callable

import imageio.v2 as imageio
import numpy as np
import torch
from PIL import Image

from engine.fsutil import atomic_path, atomic_write, atomic_write_json
from engine.settings import result_settings

SIDECAR_FORMAT = "vqgan-clip-run/1"


class RunFolderConflict(RuntimeError):
    """The output folder already holds a run made with other settings."""


class RunFolder:
    """Paths and reads of one run's folder, `<out_dir>/<file_namespace>/`."""

    def __init__(self, out_dir: str | Path, namespace: str):
        self.namespace = namespace
        self.path = Path(out_dir) / namespace
        self.sidecar = self.path / f"{namespace}_settings.json"
        self.losses = self.path / "losses.csv"
        self.metrics = self.path / "metrics.json"
        self.video = self.path / f"{namespace}.mp4"
        self.resume = self.path / "resume.pt"
        self._frame_re = re.compile(rf"^{re.escape(namespace)}_(\d+)\.png$")

    def frame(self, n: int) -> Path:
        """Path of frame n (1-based, as pytti numbers them)."""
        return self.path / f"{self.namespace}_{n}.png"

    def frames(self) -> list[Path]:
        """The frames on disk, in numeric order."""
        if not self.path.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.path.iterdir() if (m := self._frame_re.match(p.name))]
        return [p for _, p in sorted(found)]

    def read_sidecar(self) -> dict | None:
        try:
            return json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return None

    def is_complete(self) -> bool:
        return self.metrics.exists()

    def clear(self) -> None:
        """Delete this run's own files (and nothing else in the folder)."""
        for path in [*self.frames(), self.sidecar, self.losses, self.metrics, self.video, self.resume]:
            path.unlink(missing_ok=True)

    def check_settings(self, settings: dict[str, Any], allow_overwrite: bool) -> str:
        """Decide what to do with this folder: "new", "resume" or "complete".

        A folder holding a run with other settings is an error unless `allow_overwrite`, in
        which case that run's files are deleted. `settings["seed"] == -1` matches any seed.
        """
        old = self.read_sidecar()
        if old is None:
            if self.frames() or self.losses.exists():
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
        return "resume" if self.resume.exists() else "new"


def _settings_diff(old: dict, new: dict) -> list[str]:
    diff = []
    for key in sorted(set(old) | set(new)):
        if key == "seed" and new.get(key) == -1:
            continue
        if old.get(key) != new.get(key):
            diff.append(f"{key}: {old.get(key)!r} there, {new.get(key)!r} now")
    return diff


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] → (H, W, 3) uint8 on the host."""
    return image[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_losses_csv(path: Path, labels: list[str], rows: list[list[float]]) -> None:
    """losses.csv: step, scene, total, then one column per prompt label."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["step", "scene", "total", *labels])
    for row in rows:
        writer.writerow([int(row[0]), int(row[1]), *(f"{v:.6g}" for v in row[2:])])
    atomic_write(path, text.getvalue())


def read_losses_csv(path: Path, up_to_step: int) -> list[list[float]]:
    """Rows of losses.csv with step <= `up_to_step` (for resuming)."""
    if not path.exists():
        return []
    with path.open() as f:
        reader = csv.reader(f)
        next(reader, None)
        return [[float(v) for v in row] for row in reader if row and int(row[0]) <= up_to_step]


def write_video(frames: list[Path], path: Path, fps: int) -> None:
    """Encode the frames into an H.264 mp4 (imageio's bundled ffmpeg)."""
    with atomic_path(path.with_suffix(".mp4")) as tmp:
        video = tmp.with_suffix(".mp4")  # ffmpeg picks the container from the suffix
        with imageio.get_writer(video, fps=fps, codec="libx264", quality=8, macro_block_size=8,
                                ffmpeg_log_level="error") as writer:
            for frame in frames:
                writer.append_data(imageio.imread(frame))
        video.replace(tmp)


class BackgroundWriter:
    """Runs write jobs in order on one thread; errors surface on the next call or on close."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="run-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is None:
                try:
                    job()
                except BaseException as err:  # reported to the main thread
                    self._error = err

    def submit(self, job: Callable[[], None]) -> None:
        self._raise()
        self._jobs.put(job)

    def close(self) -> None:
        """Finish every queued job, then stop."""
        self._jobs.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing run outputs failed: {self._error}") from self._error


def save_frame_job(path: Path, pixels: np.ndarray) -> Callable[[], None]:
    return lambda: atomic_write(path, png_bytes(pixels))


def save_state_job(path: Path, state: dict) -> Callable[[], None]:
    def job() -> None:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    return job


def write_metrics(folder: RunFolder, metrics: dict) -> None:
    atomic_write_json(folder.metrics, {"complete": True, **metrics})
