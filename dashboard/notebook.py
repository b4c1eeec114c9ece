"""`dashboard.show(root)`: the dashboard as the output of a notebook cell.

No second server and no network: Panel and Bokeh load inline into the output, and each run's
frames travel inside it as the export's sprite sheets (WebP data URLs), packed once per run and
again only when its frames change. While the kernel lives, the output follows the root as the
served page does: the kernel looks at the folders' times every `poll_ms` and re-reads what
changed, until the cell that made the output runs again (Panel is not told when an output is
closed, so a re-run cell is the one sign that nobody sees the old one). Works where Panel's
notebook support does: JupyterLab and Notebook 7 (pyviz_comms), VS Code and Colab
(jupyter_bokeh).
"""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import panel as pn
from bokeh.models import Model, UIElement
from panel.io.notebook import patch_inline_stylesheets

from engine.errors import InputError

from .app import POLL_MS, create_app
from .catalog import run_size
from .export import frame_box, sheets, sprite
from .state import RootState

QUALITY = 80  # WebP quality of the inline sheets, as the export's default
MAX_RUNS = 200  # runs whose frames one output holds: 40-frame runs at 192 px are ~22 MB
LATEST = "dashboard.show:newest-output"  # pn.state.cache key: {notebook cell id: token of its newest output}


class InlineFrames:
    """The player's frame source in a notebook: a run's frames scaled to at most `width` px
    wide, as sprite sheets in data URLs; a run is packed again only when its frames change."""

    def __init__(self, root: Path, width: int):
        self.root, self.width = root, width
        self.packed: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {}

    def __call__(self, run: pd.Series) -> dict[str, Any]:
        key = tuple(run.frames)
        cached = self.packed.get(run.run)
        if cached is None or cached[0] != key:
            cached = key, self.pack(run)
            self.packed[run.run] = cached
        return cached[1]

    def pack(self, run: pd.Series) -> dict[str, Any]:
        box = frame_box(self.root, run, self.width)
        per, made = sheets(self.root, list(run.frames), run_size(run), box)  # unreadable: black
        urls = [{"url": data_url(sheet), "cols": cols, "rows": rows} for sheet, cols, rows in made]
        return sprite(urls, per, box)


def data_url(image: Any) -> str:
    """`image` (a PIL image) as a WebP data URL."""
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=QUALITY, method=4)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def inline_stylesheets(viewable: pn.viewable.Viewable, root: Model, *_: object) -> None:
    """A Panel hook: Panel's own stylesheets inline rather than from its CDN. Panel does this
    for its default notebook output but not for jupyter_bokeh's widget (VS Code, ipywidgets)."""
    for model in root.select({"type": UIElement}):
        patch_inline_stylesheets(model)


def replaced_when_rerun() -> Callable[[], bool]:
    """Whether the output made now has been replaced: true once the notebook cell running now
    runs again. Never, where the frontend names no cell (the request's `cellId` metadata, sent
    by JupyterLab, Notebook 7 and VS Code)."""
    try:
        from IPython import get_ipython

        cell = get_ipython().kernel.get_parent().get("metadata", {}).get("cellId")
    except (AttributeError, ImportError):
        cell = None
    if not cell:
        return lambda: False
    # Which output of a cell is the newest must outlive the call that made it (the next run of
    # the cell is another call): it lives in Panel's per-process cache, the kernel's lifetime.
    latest = pn.state.cache.setdefault(LATEST, {})
    token = latest[cell] = object()
    return lambda: latest.get(cell) is not token


def show(root: str | Path, *, experiments: str | list[str] | None = None,
         vqgans: str | list[str] | None = None, perceptors: str | list[str] | None = None,
         levels: dict[str, str | list[str]] | None = None,
         rows: str = "vqgan", cols: str = "perceptor_set", width: int = 192,
         scores: str | Path | None = None, poll_ms: int = POLL_MS) -> pn.viewable.Viewable:
    """The synced grid of the runs under `root` as a notebook cell's output (display it, or
    leave it last in the cell): player, keys (with the focus in the output), enlarged view, A/B
    compare, filters, losses and score panels, as `python -m dashboard serve` shows them.

    `experiments`, `vqgans`, `perceptors`: the runs ticked at first (names; None: as the
    served page opens); `levels`: {varied setting: its levels ticked at first}; `rows`, `cols`:
    the grid's axes, any of the page's (`scenes`; `generator`, the perceptor set's old name, is
    still taken, for one release); `width`: px a frame is shown at most
    (the output, and a saved notebook, hold every shown frame at this size, of MAX_RUNS runs
    at most: the summary says when more are ticked); `scores`: the
    score files' folder (default `<root>/../scores`); `poll_ms`: how often to look for new
    frames (0: never). FileNotFoundError where `root` is not a folder, ValueError for a name
    no run has.
    """
    state = RootState.open(root, scores, background=True)
    if width < 1:
        raise InputError(f"width={width}: must be at least 1 px")
    chosen = {name: value for name, value in {
        "experiments": experiments, "vqgans": vqgans, "perceptors": perceptors, "levels": levels,
        "rows": rows, "cols": cols}.items() if value is not None}
    pn.extension(inline=True)  # Bokeh's and Panel's JS inside the output: no CDN, no network
    app = create_app(state, poll_ms, frames=InlineFrames(state.root, width),
                     chosen=chosen, embedded=True, stop_when=replaced_when_rerun(),
                     max_runs=MAX_RUNS)
    return pn.Column(app, hooks=[inline_stylesheets], sizing_mode="stretch_width")
