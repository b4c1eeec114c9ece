"""pytti's inline previews of a run in a notebook (`engine.run(...)` in a Jupyter kernel).

pytti's `display_every` (steps between previews of the current image), `clear_every` (steps
between clearing the earlier previews) and `display_scale` (the previews' size) act only in a
Jupyter kernel (JupyterLab, Notebook 7, VS Code, Colab); elsewhere they are only recorded.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from engine.settings import Settings
from engine.writer import png_bytes


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython with a kernel attached)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


@dataclass
class Preview:
    """Inline previews every `every` steps, scaled by `scale`; all shown ones are blanked every
    `clear` steps (their display handles are emptied, so the progress bar stays)."""

    every: int
    clear: int = 0
    scale: float = 1.0
    shown: list[Any] = field(default_factory=list)

    @classmethod
    def for_settings(cls, s: Settings) -> Preview | None:
        """The previews `s` asks for, where this is a notebook; else None."""
        if not s.display_every or not in_notebook():
            return None
        return cls(s.display_every, s.clear_every, s.display_scale)

    def due(self, done: int) -> bool:
        return done % self.every == 0

    def show(self, done: int, pixels: np.ndarray, loss: float) -> None:
        """Show the image after `done` steps, with the step and loss, clearing earlier ones when due."""
        from IPython.display import HTML, Image as IPyImage, display

        if self.clear and done % self.clear == 0:
            for handle in self.shown:
                handle.update(HTML(""))
            self.shown.clear()
        self.shown.append(display(IPyImage(png_bytes(scaled(pixels, self.scale))), display_id=True))
        self.shown.append(display(HTML(f"<code>step {done} · loss {loss:.4f}</code>"), display_id=True))


def scaled(pixels: np.ndarray, scale: float) -> np.ndarray:
    """`pixels` (H, W, 3) resized by `scale` (nearest pixels when enlarged, as pytti shows them)."""
    if scale == 1:
        return pixels
    h, w = pixels.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    method = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(pixels).resize(size, method))
