"""The run's background writer: frames (PNG) and other output files, written in order on one
thread so that encoding stays off the optimisation loop."""
from __future__ import annotations

import hashlib
import io
import queue
import threading
from dataclasses import replace
from typing import Callable

import numpy as np
import torch
from PIL import Image

from engine.fsutil import atomic_write
from engine.runfolder import Frame, RunFolder


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


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] → (H, W, 3) uint8 on the host."""
    return image[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def save_frame_job(folder: RunFolder, frame: Frame, pixels: np.ndarray, table: list[Frame]) -> Callable[[], None]:
    """Write `frame`'s picture, then its row, with its SHA-256, as row n of the frame `table`
    (dropping any later ones) and the table file."""
    def job() -> None:
        data = png_bytes(pixels)
        atomic_write(folder.frame(frame.n), data)
        table[frame.n - 1:] = [replace(frame, sha256=hashlib.sha256(data).hexdigest())]
        folder.write_frame_table(table)
    return job
