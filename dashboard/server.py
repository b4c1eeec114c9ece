"""Serve the app with its frames as plain files from a static route confined to the root.

Frames never travel over the websocket: the page gets `/frames/<path>` URLs and the browser
fetches and caches the files. The server binds to localhost unless told otherwise.
"""
from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

from tornado.web import HTTPError, StaticFileHandler

FRAMES_ROUTE = "/frames"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}


class FrameHandler(StaticFileHandler):
    """Serve image files under the root and nothing else: a path that leaves the root, by
    `..`, `%2e%2e` or a symlink, is refused with 403; anything not an image is 404."""

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        real_root, real = os.path.realpath(root), os.path.realpath(absolute_path)
        if os.path.commonpath([real_root, real]) != real_root:
            raise HTTPError(403, "outside the root")
        if Path(real).suffix.lower() not in IMAGE_SUFFIXES:
            raise HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)


def frame_url(path: str) -> str:
    """The URL of a frame, from its path relative to the root."""
    return f"{FRAMES_ROUTE}/{quote(path)}"


def frame_routes(root: str | Path) -> list[tuple[str, type, dict[str, Any]]]:
    """Tornado routes serving the frames under `root`."""
    return [(rf"{FRAMES_ROUTE}/(.*)", FrameHandler, {"path": str(Path(root).resolve())})]


def mount_frames(root: str | Path) -> None:
    """Add the frame route to the Bokeh server already running this process, for
    `panel serve dashboard/app.py --args --root DIR`, where no route can be passed at start."""
    from bokeh.server.tornado import BokehTornado

    for app in (o for o in gc.get_objects() if isinstance(o, BokehTornado)):
        if not getattr(app, "dashboard_frames", None):
            app.add_handlers(r".*", frame_routes(root))
            app.dashboard_frames = str(root)


def serve(root: str | Path, scores: str | Path | None = None, port: int = 5006,
          address: str = "127.0.0.1", origins: Sequence[str] = (), show: bool = False) -> None:
    """Serve the dashboard for `root` until interrupted."""
    import panel as pn

    from .app import TITLE, create_app

    if not Path(root).is_dir():
        raise SystemExit(f"no such folder: {root}")
    local = {"localhost", "127.0.0.1"}
    hosts = local if address in local else {address}
    print(f"dashboard: serving {root} at http://{address}:{port}/", flush=True)
    pn.serve(
        lambda: create_app(root, scores), port=port, address=address, show=show,
        websocket_origin=[f"{h}:{port}" for h in hosts] + list(origins),
        extra_patterns=frame_routes(root), title=TITLE, threaded=False,
    )
