"""A run's folder: frames, settings sidecar, losses, metrics, video and resume state.

Layout and formats: docs/run-folder-format.md. Every file is written atomically. Frames,
losses and resume state go through one background writer so that PNG encoding stays off the
optimisation loop, and are written in order: the resume state never claims a frame that is
not on disk yet.

Every frame's SHA-256 is recorded, in the resume state while the run goes and in metrics.json
when it is done, so that a damaged or missing frame is found before a run resumes from, or is
taken as, a state that claims it. The resume state is rotated (`resume.pt` → `resume.prev.pt`)
only after the new one is safely on disk.
"""
from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import pickle
import queue
import re
import threading
from pathlib import Path
from typing import Any, Callable

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np
import torch
from PIL import Image

from engine.download import sha256_file
from engine.fsutil import atomic_path, atomic_write, atomic_write_json, write_file
from engine.settings import result_settings

SIDECAR_FORMAT = "vqgan-clip-run/1"


class RunFolderConflict(RuntimeError):
    """The output folder already holds a run made with other settings."""


class RunFolderDamaged(RuntimeError):
    """Frames of the run changed on disk while it ran."""


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
        self.resume_prev = self.path / "resume.prev.pt"
        # Beside the folder, not in it: the folder may become a DVC output (the grid moves it).
        self.lock_file = Path(out_dir) / f".{namespace}.lock"
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

    def frame_problems(self, hashes: list[str]) -> list[str]:
        """What is wrong with frames 1..len(hashes) against their recorded SHA-256s (empty: all good)."""
        problems = []
        for n, expected in enumerate(hashes, 1):
            path = self.frame(n)
            try:
                actual = sha256_file(path)
            except OSError as err:
                problems.append(f"frame {n} ({path}) is missing or unreadable ({err.strerror or err})")
                continue
            if actual != expected:
                problems.append(f"frame {n} ({path}) is damaged (its SHA-256 differs from the recorded one)")
        return problems

    def completion_problems(self) -> list[str]:
        """What makes this folder's finished run (metrics.json) untrustworthy (empty: nothing)."""
        try:
            metrics = json.loads(self.metrics.read_text())
            hashes = metrics["frame_sha256"]
        except (OSError, ValueError, TypeError, KeyError):
            return [f"{self.metrics} is unreadable or records no frame hashes"]
        return self.frame_problems(hashes)

    def reopen(self) -> None:
        """Make a finished run unfinished again (metrics and video go; frames and sidecar stay)."""
        for path in (self.metrics, self.video, self.resume, self.resume_prev):
            path.unlink(missing_ok=True)

    def clean_temp_files(self) -> None:
        """Delete what a killed writer left: `.<file>.<random>.tmp` and the video's `.<ns>.mp4.*.mp4`."""
        if not self.path.is_dir():
            return
        video_tmp = f".{self.video.name}."
        for p in self.path.iterdir():
            if p.name.startswith(".") and p.is_file() and (
                    p.name.endswith(".tmp") or (p.name.startswith(video_tmp) and p.name.endswith(".mp4"))):
                p.unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete this run's own files (and nothing else in the folder)."""
        for path in [*self.frames(), self.sidecar, self.losses, self.metrics, self.video, self.resume,
                     self.resume_prev]:
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


def write_video(frames: list[Path], path: Path, fps: int) -> None:
    """Encode the frames into an H.264 mp4 (imageio's bundled ffmpeg)."""
    with atomic_path(path.with_suffix(".mp4")) as tmp:
        video = tmp.with_suffix(".mp4")  # ffmpeg picks the container from the suffix
        try:
            with imageio.get_writer(video, fps=fps, codec="libx264", quality=8, macro_block_size=8,
                                    ffmpeg_log_level="fatal") as writer:  # failures: _check_video
                for frame in frames:
                    writer.append_data(imageio.imread(frame))
            _check_video(video, len(frames), path)
            video.replace(tmp)
        except BaseException:
            video.unlink(missing_ok=True)
            raise


def _check_video(video: Path, n_frames: int, path: Path) -> None:
    """imageio does not report ffmpeg's failures (a full disk): count the frames that got written."""
    try:
        written = imageio_ffmpeg.count_frames_and_secs(str(video))[0]
    except (RuntimeError, OSError):
        written = 0
    if written != n_frames:
        raise OSError(errno.EIO, f"ffmpeg wrote {written} of {n_frames} frames (is the disk full?)", str(path))


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
        if isinstance(self._error, OSError):  # names its file: the CLI reports it in one line
            raise self._error
        if self._error is not None:
            raise RuntimeError(f"writing run outputs failed: {self._error}") from self._error


def save_frame_job(path: Path, pixels: np.ndarray, n: int, hashes: list[str]) -> Callable[[], None]:
    """Write frame `n` and record its SHA-256 as `hashes[n - 1]` (dropping any later ones)."""
    def job() -> None:
        data = png_bytes(pixels)
        atomic_write(path, data)
        hashes[n - 1:] = [hashlib.sha256(data).hexdigest()]
    return job


def save_state_job(folder: RunFolder, state: dict, hashes: list[str]) -> Callable[[], None]:
    """Write the resume state (with the hashes of the frames written so far) durably, keeping the
    previous state as resume.prev.pt until the new one is in place."""
    def job() -> None:
        buffer = io.BytesIO()
        torch.save({**state, "frames": list(hashes)}, buffer)
        with atomic_path(folder.resume) as tmp:
            write_file(tmp, buffer.getvalue(), durable=True)
            if folder.resume.exists():
                os.replace(folder.resume, folder.resume_prev)
    return job


RESUME_KEYS = ("step", "z", "ema", "optimiser", "generator", "wall_time_s", "frame_start", "frames", "losses")


def load_resume_state(folder: RunFolder, device: torch.device) -> tuple[dict | None, list[str]]:
    """The newest usable resume state (resume.pt, else resume.prev.pt, else None) and why newer
    ones could not be used.

    A state is usable when it loads, has every key of `RESUME_KEYS` and every frame it claims is
    on disk with its recorded SHA-256.
    """
    problems = []
    for path in (folder.resume, folder.resume_prev):
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
            problems.append(f"{path} is damaged ({str(err).splitlines()[0] if str(err) else type(err).__name__})")
            continue
        missing = [k for k in RESUME_KEYS if not isinstance(state, dict) or k not in state]
        frames = [] if missing else folder.frame_problems(state["frames"])
        if not missing and not frames:
            return state, problems
        problems.append(f"{path} lacks {', '.join(missing)} (written by another version)" if missing
                        else f"{path} cannot be used: {'; '.join(frames)}")
    return None, problems


def write_metrics(folder: RunFolder, metrics: dict) -> None:
    atomic_write_json(folder.metrics, {"complete": True, **metrics})
