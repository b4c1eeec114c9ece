"""A run's video: its frames as an H.264 mp4 (imageio's bundled ffmpeg), checked frame by frame."""
from __future__ import annotations

import errno
from pathlib import Path

import imageio.v2 as imageio
import imageio_ffmpeg

from engine.fsutil import atomic_path


def write_video(frames: list[Path], path: Path, fps: int) -> None:
    """Encode the frames into `path` atomically; OSError when ffmpeg wrote fewer frames (a full disk)."""
    with atomic_path(path.with_suffix(".mp4")) as tmp:
        video = tmp.with_suffix(".mp4")  # ffmpeg picks the container from the suffix
        try:
            with imageio.get_writer(video, fps=fps, codec="libx264", quality=8, macro_block_size=8,
                                    ffmpeg_log_level="fatal") as writer:  # failures: check_frame_count
                for frame in frames:
                    writer.append_data(imageio.imread(frame))
            check_frame_count(video, len(frames), path)
            video.replace(tmp)
        except BaseException:
            video.unlink(missing_ok=True)
            raise


def check_frame_count(video: Path, n_frames: int, path: Path) -> None:
    """imageio does not report ffmpeg's failures (a full disk): count the frames that got written."""
    try:
        written = imageio_ffmpeg.count_frames_and_secs(str(video))[0]
    except (RuntimeError, OSError):
        written = 0
    if written != n_frames:
        raise OSError(errno.EIO, f"ffmpeg wrote {written} of {n_frames} frames (is the disk full?)", str(path))
